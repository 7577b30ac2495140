"""``import lightning_bestlink`` pulls in neither torch nor Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ["torch", "lightning", "pytorch_lightning", "lightning_fabric", "numpy"]


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
        import lightning_bestlink._publish
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
