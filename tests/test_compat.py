"""Each version flag checks exactly what its name says."""

from __future__ import annotations

import re

import pytest

from lightning_bestlink import _compat

FLAGS = {name: value for name, value in vars(_compat).items() if re.fullmatch(r"_[A-Z_]+_(GE_\d+_\d+|AVAILABLE)", name)}


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_flag_name_matches_its_requirement(name: str) -> None:
    requirement = str(FLAGS[name].requirement).replace("-", "_").lower()
    package = name[1:].rsplit("_GE_", 1)[0].removesuffix("_AVAILABLE").lower()
    if name.endswith("_AVAILABLE"):
        assert requirement == f"{package}>=2.0"
    else:
        major, minor = name.rsplit("_GE_", 1)[1].split("_")
        assert requirement == f"{package}>={major}.{minor}"


def test_flags_read_the_installed_packages() -> None:
    from importlib.util import find_spec

    assert bool(_compat._LIGHTNING_AVAILABLE) == (find_spec("lightning") is not None)
    assert bool(_compat._PYTORCH_LIGHTNING_AVAILABLE) == (find_spec("pytorch_lightning") is not None)


def test_no_version_checks_outside_compat() -> None:
    from pathlib import Path

    import lightning_bestlink

    root = Path(lightning_bestlink.__file__).parent
    for path in root.rglob("*.py"):
        if path.name == "_compat.py":
            continue
        text = path.read_text()
        assert "RequirementCache" not in text, path
        assert "__version__ <" not in text and "Version(" not in text, path
