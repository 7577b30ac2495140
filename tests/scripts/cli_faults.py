"""Run ``lightning-bestlink`` with faults and counters the environment asks for (tests only).

- ``BESTLINK_TEST_UNREADABLE``: folders (``os.pathsep``-separated) whose listing fails with
  EACCES, as a folder of another user does (the tests run as root, which chmod cannot stop).
- ``BESTLINK_TEST_COUNTS``: a file; every 10 stats of a ``*.bestlink.json`` record and at
  exit, the counts of record stats, record opens and listings of folders under
  ``BESTLINK_TEST_FOLDER`` are written there.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

blocked = {os.path.abspath(p) for p in os.environ.get("BESTLINK_TEST_UNREADABLE", "").split(os.pathsep) if p}
counts_file = os.environ.get("BESTLINK_TEST_COUNTS")
watched = os.path.abspath(os.environ.get("BESTLINK_TEST_FOLDER", "/nonexistent"))
counts = {"record_stats": 0, "record_opens": 0, "listings": 0}

real_scandir, real_listdir, real_stat = os.scandir, os.listdir, os.stat


def _check(path: Any) -> None:
    text = os.path.abspath(os.fspath(path if path is not None else "."))
    if text in blocked:
        raise PermissionError(13, "Permission denied", text)


def scandir(path: Any = None) -> Any:
    _check(path)
    return real_scandir(path) if path is not None else real_scandir()


def listdir(path: Any = None) -> Any:
    _check(path)
    return real_listdir(path) if path is not None else real_listdir()


def dump() -> None:
    if counts_file:
        with open(counts_file + ".tmp", "w") as fh:
            json.dump(counts, fh)
        os.replace(counts_file + ".tmp", counts_file)


def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(path, str) and path.endswith(".bestlink.json"):
        counts["record_stats"] += 1
        if counts["record_stats"] % 10 == 0:
            dump()
    return real_stat(path, *args, **kwargs)


def audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and isinstance(args[0], str) and args[0].endswith(".bestlink.json"):
        counts["record_opens"] += 1
    elif event in ("os.scandir", "os.listdir") and isinstance(args[0], str) and args[0].startswith(watched):
        counts["listings"] += 1


os.scandir, os.listdir = scandir, listdir
if counts_file:
    os.stat = stat
    sys.addaudithook(audit)
    atexit.register(dump)

from lightning_bestlink.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
