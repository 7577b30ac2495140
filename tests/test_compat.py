"""Each version flag of the tests checks exactly what its name says; the package compares no versions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("lightning_utilities")

from tests import _compat

pytestmark = pytest.mark.lightning  # lightning_utilities comes with Lightning

FLAGS = {name: value for name, value in vars(_compat).items() if re.fullmatch(r"_[A-Z_]+_(GE_\d+_\d+|AVAILABLE)", name)}


def test_there_are_flags() -> None:
    assert {"_LIGHTNING_GE_2_1", "_LIGHTNING_GE_2_4", "_PYTORCH_LIGHTNING_GE_2_4"} <= set(FLAGS)


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


def test_the_package_compares_no_versions() -> None:
    import lightning_bestlink

    root = Path(lightning_bestlink.__file__).parent
    assert not (root / "_compat.py").exists()
    for path in root.rglob("*.py"):
        text = path.read_text()
        for needle in ("RequirementCache", "__version__ <", "Version(", "lightning_utilities.core.imports"):
            assert needle not in text, f"{path} has {needle!r}"
