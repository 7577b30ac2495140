"""Fixtures shared by the test files (kept small and generic)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

#: fixtures that several test files share live with the other shared helpers
pytest_plugins = ("tests._helpers", "tests._object_store")


@pytest.fixture
def record_counts(request: pytest.FixtureRequest) -> Callable[[dict[str, object]], None]:
    """Print a test's counts (shown with ``-s`` or ``-rA``) and, when ``BESTLINK_COUNTS_DIR``
    is set, write them to ``<dir>/<test id>.json``."""

    def record(counts: dict[str, object]) -> None:
        name = request.node.name
        print(f"\n[counts] {name}: {json.dumps(counts, sort_keys=True)}")
        out = os.environ.get("BESTLINK_COUNTS_DIR")
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            (Path(out) / f"{safe}.json").write_text(json.dumps({"test": request.node.nodeid, **counts}, indent=2))

    return record
