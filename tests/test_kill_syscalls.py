"""A writer killed at each of its system calls in turn never leaves a missing, dangling or half-written
alias, and a check never says "ok" about an alias that does not hold exactly what its record names;
the next writer (here: a repair) brings the two together (issue 21 item 6).

How: a warmed-up process forks a writer that restores a linker and waits; strace attaches and lists
every system call of one improving update; then, for each call that can change the disk, a fresh
writer is killed by strace just before that call (``-e inject=CALL:error=EIO:signal=KILL:when=N``:
the call does not run). Killing before a call that only reads leaves the same disk as killing before
the next one that writes, so those are covered too. Every link kind, files and shard directories,
the plain and the shared writer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._helpers import SCRIPTS, fill_of, leftovers, write_ckpt

from lightning_bestlink import BestLinker, read_record

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace; .ci/run does)"),
]

#: system calls that can change what is on disk, or who holds the alias's lock (an openat only when it
#: opens for writing, an ioctl only when it clones); a kill before any other call leaves the disk as a
#: kill before the next of these does
WRITES = {
    "creat", "write", "pwrite64", "writev", "ftruncate", "fsync", "fdatasync", "rename", "renameat",
    "renameat2", "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir",
    "utimensat", "futimesat", "fchmod", "fchmodat", "copy_file_range", "sendfile", "flock",
}  # fmt: skip
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT")


def _writes(name: str, line: str) -> bool:
    if name in ("open", "openat"):
        return any(flag in line for flag in _WRITE_FLAGS)
    if name == "ioctl":
        return "FICLONE" in line
    return name in WRITES


#: (link=, checkpoint kind): every combination that makes an alias
CASES = [
    ("symlink", "file"),
    ("hardlink", "file"),
    ("copy", "file"),
    ("symlink", "dir"),
    ("copy", "dir"),
]
_CALL = re.compile(r"^(?:\[pid +\d+\] )?([a-z0-9_]+)\(")


def _prepare(folder: Path, kind: str, target: str, shared: bool) -> None:
    """The alias points at ``a`` (fill 1); ``b`` (fill 2, better) is about to be offered."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    write_ckpt(folder / "a", 1, kind=target)
    write_ckpt(folder / "b", 2, kind=target)
    linker = BestLinker(folder / "best", link=kind, shared=shared)  # type: ignore[arg-type]
    linker.update(0.5, folder / "a")
    (folder / "state.json").write_text(json.dumps(linker.state_dict()))


class Writers:
    """The warmed-up process that forks one writer per update (tests/scripts/syscall_writer.py)."""

    def __init__(self, tmp: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "syscall_writer.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.fifo = tmp / "go"
        os.mkfifo(self.fifo)
        assert self.line() == "warm"

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def update(self, folder: Path, kind: str, shared: bool, *strace_args: str) -> int:
        """Fork a writer, attach strace to it, let it update; its exit status (negative: killed)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{folder} {kind} {int(shared)} {self.fifo}\n")
        self.proc.stdin.flush()
        ready, pid = self.line().split()
        assert ready == "ready"
        with subprocess.Popen(["strace", "-p", pid, *strace_args], stderr=subprocess.PIPE, text=True) as strace:
            assert strace.stderr is not None and "attached" in strace.stderr.readline()
            with open(self.fifo, "w") as go:
                go.write("g")
            word, status = self.line().split()
            strace.wait(timeout=60)
        assert word == "status"
        return int(status)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def writers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Writers]:
    server = Writers(tmp_path_factory.mktemp("writers"))
    yield server
    server.close()


def _check(folder: Path, where: str, *, window: bool = False) -> bool:
    """What a kill left: a complete alias that verify vouches for only if it is what the record names;
    the next writer (a repair) brings them together and leaves nothing behind. ``window``: the alias
    path may be empty (a directory alias between its two renames, where there is no exchange): the
    next writer puts back the new alias the record names. Whether the alias path was empty."""
    alias = folder / "best"
    empty = window and not os.path.lexists(alias)
    if empty:
        assert not BestLinker.from_record(alias).verify().ok, f"{where}: verify says ok about no alias"
        made = read_record(alias)["alias_id"]  # type: ignore[index]
        assert BestLinker.from_record(alias).repair().ok, f"{where}: repair did not make the alias again"
        assert read_record(alias)["alias_id"] == made, f"{where}: the copy the record names was not put back"  # type: ignore[index]
    assert os.path.lexists(alias), f"{where}: no alias"
    held = fill_of(alias)  # follows a symlink: a dangling one fails here
    assert held in (1, 2), f"{where}: the alias is not a complete checkpoint"
    record = read_record(alias)
    assert record is not None, f"{where}: no record"
    named = fill_of(record["target"])
    report = BestLinker.from_record(alias).verify()
    assert not report.ok or held == named, (
        f"{where}: verify says ok, but the alias holds {held}, the record names {named}"
    )
    repaired = BestLinker.from_record(alias).repair()
    assert repaired.ok, f"{where}: repair left {repaired}"
    assert fill_of(alias) == fill_of(read_record(alias)["target"]), f"{where}: after repair"  # type: ignore[index]
    assert leftovers(folder) == [], f"{where}: leftovers after the next writer"
    return empty


#: renameat2 as the host has it, or refused as NFS refuses its flags (the library then renames, and
#: a directory alias is moved aside before the new one moves in)
EXCHANGE = {"exchange": (), "no-exchange": ("-e", "inject=renameat2:error=EINVAL")}


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "shared"])
@pytest.mark.parametrize(("kind", "target"), CASES, ids=[f"{k}-{t}" for k, t in CASES])
@pytest.mark.parametrize("exchange", list(EXCHANGE))
def test_a_kill_at_any_system_call_of_an_update_never_makes_verify_vouch_for_the_wrong_checkpoint(
    tmp_path: Path, writers: Writers, kind: str, target: str, shared: bool, exchange: str
) -> None:
    folder = tmp_path / "run"
    _prepare(folder, kind, target, shared)
    trace = tmp_path / "trace.txt"
    refused = EXCHANGE[exchange]
    assert writers.update(folder, kind, shared, "-o", str(trace), *refused) == 0
    assert fill_of(folder / "best") == 2  # the update, untouched, moved the alias
    calls = [(m.group(1), line) for line in trace.read_text().splitlines() if (m := _CALL.match(line))]
    seen: Counter[str] = Counter()
    killed = empty = 0
    for index, (name, line) in enumerate(calls):
        seen[name] += 1
        if not _writes(name, line) or (refused and name == "renameat2"):
            continue
        _prepare(folder, kind, target, shared)
        inject = f"inject={name}:error=EIO:signal=KILL:when={seen[name]}"
        traced = f"trace={name},renameat2" if refused else f"trace={name}"
        status = writers.update(folder, kind, shared, "-o", os.devnull, "-e", traced, "-e", inject, *refused)
        where = f"killed before call {index} ({name} #{seen[name]}: {line[:120]})"
        assert status == -9, f"{where}: the writer was not killed (exit {status})"
        window = bool(refused) and (kind, target) == ("copy", "dir")
        empty += _check(folder, where, window=window)
        killed += 1
    assert killed >= 5  # an update that wrote this little would not be one
    assert bool(empty) == window, "the window of two renames, and only it, was killed in"
