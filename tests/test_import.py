"""``import lightning_bestlink`` pulls in neither torch nor Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ["torch", "lightning", "pytorch_lightning", "lightning_fabric", "numpy"]
# also where torch and Lightning are installed: only there can an import of them show
pytestmark = pytest.mark.torch


def run(code: str) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    result: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_with_torch_and_lightning_unimportable() -> None:
    result = run(
        f"""
        import json, sys
        for name in {HEAVY!r}:
            sys.modules[name] = None  # any import of it now raises ImportError
        import lightning_bestlink
        from lightning_bestlink import BestLinker, AliasConflictError, AliasWriteError, read_record
        import lightning_bestlink.linker, lightning_bestlink._score, lightning_bestlink._record
        import lightning_bestlink._storage.local
        assert BestLinker.__module__ == "lightning_bestlink.linker"
        loaded = [m for m in {HEAVY!r} if sys.modules.get(m) is not None]
        print(json.dumps({{"loaded": loaded}}))
        """
    )
    assert result["loaded"] == []


def test_import_does_not_load_torch_or_lightning() -> None:
    # nothing blocked: whatever is installed, importing the package must not load it
    result = run(
        """
        import json, sys, tempfile, os
        import lightning_bestlink
        from lightning_bestlink import BestLinker
        d = tempfile.mkdtemp()
        open(os.path.join(d, "a"), "w").write("a")
        BestLinker(os.path.join(d, "best")).update(1.0, os.path.join(d, "a"))
        heavy = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "numpy", "fsspec")
        print(json.dumps({"loaded": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
        """
    )
    assert result["loaded"] == []


def test_callback_name_is_lazy() -> None:
    # the Trainer callback is resolved on first use only (PEP 562)
    result = run(
        """
        import json, sys
        import lightning_bestlink
        names = [n for n in lightning_bestlink.__all__ if n != "ModelCheckpointWithLinkBest"]
        for n in names:
            getattr(lightning_bestlink, n)
        print(json.dumps({"loaded": sorted(m for m in sys.modules if m.startswith("lightning_bestlink.callbacks"))}))
        """
    )
    assert result["loaded"] == []


def test_unknown_attribute() -> None:
    import lightning_bestlink

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lightning_bestlink.nope  # noqa: B018


def _package_imports() -> dict[str, set[str]]:
    """Each package module and the package modules it imports, function-level imports included."""
    import ast
    from pathlib import Path

    import lightning_bestlink

    root = Path(lightning_bestlink.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = ["lightning_bestlink", *path.relative_to(root).with_suffix("").parts]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module in modules:
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in modules else node.module)
        graph[name] = edges - {name}
    return graph


def test_no_import_cycle_inside_the_package() -> None:
    graph = _package_imports()
    assert graph.get("lightning_bestlink.linker"), "the scan found nothing"
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, f"import cycle: {' -> '.join([*path[path.index(name) :], name])}"
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_core_imports_no_adapter() -> None:
    graph = _package_imports()
    trainer = ("_trainer", "_trainer_api", "_trainer_async", "_trainer_log", "_trainer_resume", "callbacks")
    adapters = {f"lightning_bestlink.{name}" for name in (*trainer, "pytorch_lightning", "fabric")}
    for core in ("linker", "_storage", "_storage.local", "_storage.fsspec", "_record", "_score", "_health"):
        assert not graph[f"lightning_bestlink.{core}"] & adapters, core


def _is_cli(name: str) -> bool:
    """Whether ``name`` is a module of the command line: the entry point, and everything under ``_cli``."""
    return name in ("lightning_bestlink.cli", "lightning_bestlink.__main__") or name.startswith(
        "lightning_bestlink._cli"
    )


#: what each module of the command line may import from the rest of the package. The commands
#: read folders through the survey, the survey reads through the storage seam and BestLinker;
#: no module of the command line imports a concrete storage (local, fsspec) or its parts.
CLI_LAYERS = {
    "lightning_bestlink.__main__": set(),
    "lightning_bestlink.cli": set(),  # main only
    "lightning_bestlink._cli": set(),
    "lightning_bestlink._cli.parser": {"lightning_bestlink", "_storage"},  # __version__; is_url
    # the survey: the only modules that read folders and records
    "lightning_bestlink._cli.survey": {"_record", "_storage", "_storage.base"},
    "lightning_bestlink._cli.alias": {"_errors", "_health", "_record", "_storage", "_storage.base", "linker"},
    # the commands, on top of it
    "lightning_bestlink._cli.commands": {"_errors", "_record", "_storage", "linker"},  # repair acts through BestLinker
    "lightning_bestlink._cli.path": {"_storage"},
    "lightning_bestlink._cli.hold": set(),
    "lightning_bestlink._cli.watch": {"_record", "_storage"},
    "lightning_bestlink._cli.render": {"_record", "_storage"},
    "lightning_bestlink._cli.render_json": {"_record"},  # the one codec of what is stored (plain)
    "lightning_bestlink._cli.demo": {"_errors", "linker", "latest", "callbacks", "fabric"},  # the only one with torch
}


def test_nothing_outside_the_command_line_imports_it() -> None:
    graph = _package_imports()
    for name, edges in graph.items():
        if not _is_cli(name):
            assert not {e for e in edges if _is_cli(e)}, f"{name} imports the command line"


def test_the_command_line_reads_through_the_survey_and_the_seam() -> None:
    graph = _package_imports()
    cli = sorted(name for name in graph if _is_cli(name))
    assert cli == sorted(CLI_LAYERS), "a module of the command line is missing from CLI_LAYERS (or gone)"
    for name in cli:
        outside = {e.removeprefix("lightning_bestlink.") for e in graph[name] if not _is_cli(e)}
        assert outside <= CLI_LAYERS[name], f"{name} imports {sorted(outside - CLI_LAYERS[name])}"
        if name != "lightning_bestlink._cli.survey":  # one alias is the survey's part: read through it
            assert "lightning_bestlink._cli.alias" not in graph[name], name
