"""The examples in the core's docstrings run (no torch needed)."""

from __future__ import annotations

import doctest
import importlib

import pytest

CORE = [
    "lightning_bestlink._score",
    "lightning_bestlink._record",
    "lightning_bestlink.linker",
    "lightning_bestlink._state",
    "lightning_bestlink._storage.base",
    "lightning_bestlink._trainer_api",
]


@pytest.mark.parametrize("name", CORE)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    assert result.attempted > 0
