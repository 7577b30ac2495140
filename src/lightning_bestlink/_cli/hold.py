"""Holding a checkpoint for a one-shot reader (``lightning-bestlink path --hold SECONDS``).

``path`` exits at once, so the hold must belong to a process that lives on: a detached
child (``python -m lightning_bestlink._cli.hold TARGET SECONDS``, a session of its own,
none of the caller's streams, so ``"$(lightning-bestlink path --hold 600 DIR)"`` returns at
once) makes the hold, names it on a pipe to the parent, sleeps, then releases it. The hold
carries the child's pid: if the child is killed, the next ``path --hold`` or ``watch
--exec`` in that folder removes what it left (``Storage.release_stale``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from lightning_bestlink._cli.survey import parent, reason, storage_of

_log = logging.getLogger(__name__)


def hold_detached(target: str, seconds: float) -> tuple[str | None, int]:
    """Hold ``target`` for ``seconds`` in a detached process: the held path (None when the storage
    cannot hold anything: an object store) and the process, which releases it when sent SIGTERM.
    Raises ``FileNotFoundError`` when ``target`` is gone, ``OSError`` when no hold can be made."""
    keeper = subprocess.Popen(
        [sys.executable, "-m", __name__, target, repr(seconds)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert keeper.stdout is not None
    with keeper.stdout:
        line = keeper.stdout.readline()
    keeper.returncode = keeper.returncode or 0  # detached, never waited for: no warning when this object goes
    try:
        answer = json.loads(line)
    except ValueError:
        raise OSError(f"the process that holds the checkpoint stopped before it answered ({line[:200]!r})") from None
    if "error" in answer:
        raise (FileNotFoundError if answer.get("gone") else OSError)(str(answer["error"]))
    held = answer["held"]
    return None if held is None else str(held), keeper.pid


def _answer(document: dict[str, object]) -> None:
    """Tell the parent, then let go of the pipe (the parent reads to its end)."""
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    """The keeper: hold ``argv[0]`` for ``argv[1]`` seconds (see the module docstring)."""
    target, seconds = argv[0], float(argv[1])
    try:
        storage = storage_of(target)
        storage.release_stale(parent(target))
        held = storage.hold(target)
    except OSError as err:
        _answer({"error": f"cannot hold {target}: {reason(err)}", "gone": isinstance(err, FileNotFoundError)})
        return 1
    if held is None:
        _answer({"held": None})
        return 0
    for polite in (signal.SIGTERM, signal.SIGHUP):  # released on a polite kill too
        signal.signal(polite, _stop)
    try:
        _answer({"held": held})
        time.sleep(seconds)
    finally:
        storage.release(held)
        _log.debug("released %s", held)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
