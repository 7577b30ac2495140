"""Writers of one alias update each, for tests/test_kill_syscalls.py, forked from this warmed-up process.

This process imports the library and makes one update on a scratch alias of each link kind, so
no import or first-use cost shows in a traced update. Then, for each line ``FOLDER KIND SHARED FIFO``
on stdin, it forks a writer, which restores its linker from FOLDER/state.json, prints
``ready <pid>``, waits for a byte on FIFO (strace attaches meanwhile), makes one improving update
and exits at once (nothing of interpreter shutdown is traced); then this process prints
``status <exit status>`` (negative: killed by that signal).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from lightning_bestlink import BestLinker


def warm_up() -> None:
    scratch = tempfile.mkdtemp()
    for kind in ("symlink", "hardlink", "copy"):
        for shared in (False, True):
            for name in ("a", "b"):
                with open(os.path.join(scratch, name), "w") as fh:
                    fh.write(name)
            linker = BestLinker(os.path.join(scratch, f"best-{kind}-{shared}"), link=kind, shared=shared)  # type: ignore[arg-type]
            linker.update(1.0, os.path.join(scratch, "a"))
            linker.update(0.5, os.path.join(scratch, "b"))
            linker.verify()
            os.makedirs(os.path.join(scratch, "d"), exist_ok=True)


def writer(folder: str, kind: str, shared: bool, fifo: str) -> None:
    linker = BestLinker(os.path.join(folder, "best"), link=kind, shared=shared)  # type: ignore[arg-type]
    with open(os.path.join(folder, "state.json")) as fh:
        linker.load_state_dict(json.load(fh))
    linker.repair()  # the check after a resume, done before the traced part
    go = os.open(fifo, os.O_RDWR)  # a FIFO opened read-write never blocks in open()
    os.write(1, f"ready {os.getpid()}\n".encode())
    os.read(go, 1)
    linker.update(0.1, os.path.join(folder, "b"))


def main() -> None:
    warm_up()
    print("warm", flush=True)
    for line in sys.stdin:
        folder, kind, shared, fifo = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                writer(folder, kind, shared == "1", fifo)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(f"status {code}", flush=True)


if __name__ == "__main__":
    main()
