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
        from lightning_bestlink import BestLinker, AliasConflictError, AliasWriteError, read_metadata
        import lightning_bestlink.linker, lightning_bestlink._score, lightning_bestlink._metadata
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
    adapters = {"lightning_bestlink._trainer", "lightning_bestlink.callbacks", "lightning_bestlink.fabric"}
    for core in ("linker", "_storage", "_storage.local", "_storage.fsspec", "_metadata", "_score", "_health"):
        assert not graph[f"lightning_bestlink.{core}"] & adapters, core
