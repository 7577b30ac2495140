"""What the command-line tests share: running the command as a user does, and run folders.

Checkpoint folders are built from plain files with :class:`BestLinker`, so the tests
run without torch or Lightning.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from lightning_bestlink import BestLinker

SCORES = [0.9, 0.5, 0.3, 0.4]  # mode="min": epoch=2 is the best
BEST = "epoch=2.ckpt"

needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="the damage is made with symlinks")


def environ(env: Mapping[str, str | None] | None) -> dict[str, str] | None:
    """This process's environment with ``env`` applied (a None value removes the variable)."""
    if env is None:
        return None
    merged = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    return {k: v for k, v in merged.items() if env.get(k, "") is not None}


def cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 120,
    preload: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``lightning-bestlink ARGS`` in a subprocess; a hang fails the test at ``timeout``. ``preload``:
    forked from a parent that has imported those modules (tests/_fork.py), not a fresh interpreter."""
    if preload:
        from tests._fork import run_forked

        argv = ["-m", "lightning_bestlink", *map(str, args)]
        return run_forked(argv, preload=preload, cwd=cwd, env=environ(env), timeout=timeout)
    return subprocess.run(
        [sys.executable, "-m", "lightning_bestlink", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ(env),
        timeout=timeout,
        check=False,
    )


def make_run(d: Path, *, link: str = "auto", last: bool = True, scores: list[float] = SCORES) -> BestLinker:
    """A folder as a training run leaves it: epoch=N.ckpt, last.ckpt, best.ckpt and its record."""
    d.mkdir(parents=True, exist_ok=True)
    linker = BestLinker(d / "best.ckpt", mode="min", link=link)  # type: ignore[arg-type]
    for epoch, score in enumerate(scores):
        path = d / f"epoch={epoch}.ckpt"
        path.write_bytes(b"w" * (100 + epoch))  # distinct sizes: a wrong copy is detectable
        linker.update(score, path, extra={"monitor": "val_loss", "epoch": epoch, "step": 4 * (epoch + 1)})
    if last:
        (d / "last.ckpt").write_bytes(b"w" * (100 + len(scores) - 1))
    return linker


def row(output: str, name: str) -> str:
    """The line of ``show``'s table that starts with ``name``."""
    lines = [line for line in output.splitlines() if line.strip().startswith(name + " ") or line.strip() == name]
    assert lines, f"no row {name!r} in:\n{output}"
    return lines[0]


SCRIPTS = Path(__file__).parent / "scripts"
FAULTS = SCRIPTS / "cli_faults.py"
#: the user the permission tests run the command as (nobody)
NOBODY = 65534


def faults(
    *args: str | Path, env: Mapping[str, str | None], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``lightning-bestlink ARGS`` through tests/scripts/cli_faults.py, with the faults, counters or
    user that ``env`` asks for (its docstring lists them)."""
    return subprocess.run(
        [sys.executable, str(FAULTS), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ(env),
        timeout=timeout,
        check=False,
    )


def as_nobody(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command run by the user nobody (privileges dropped once it is imported)."""
    return faults(*args, env={"BESTLINK_TEST_UID": str(NOBODY)}, cwd=cwd)


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, which another user can reach: its parents are made searchable while the test runs."""
    changed = []
    for parent in tmp_path.parents:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH:
            break
        changed.append((parent, mode))
        parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    tmp_path.chmod(0o755)
    try:
        yield tmp_path
    finally:
        for parent, mode in changed:
            parent.chmod(stat.S_IMODE(mode))


class Lines:
    """The lines a stream of a child process writes, read by a thread, with a timeout per wait."""

    def __init__(self, stream: Any) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def next(self, timeout: float = 60) -> str | None:
        """The next line (None at the end of the stream); fails the test after ``timeout``."""
        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no line in {timeout} s; so far: {self.seen}")
        if line is not None:
            self.seen.append(line)
        return line

    def until(self, text: str, timeout: float = 60) -> str:
        """Read lines until one contains ``text``."""
        while True:
            line = self.next(timeout)
            assert line is not None, f"the stream ended without {text!r}: {self.seen}"
            if text in line:
                return line

    def text(self, timeout: float = 60) -> str:
        """Everything the stream wrote, once it has ended (the process exited or was stopped)."""
        while self.next(timeout) is not None:
            pass
        self.queue.put(None)  # ended: later calls return at once
        return "".join(self.seen)

    def pending(self) -> list[str]:
        """The lines written so far and not read yet (does not wait)."""
        lines = []
        while not self.queue.empty():
            line = self.queue.get()
            if line is not None:
                self.seen.append(line)
                lines.append(line)
        return lines


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    """A child process with its stdin open and its stdout and stderr read line by line."""

    def __init__(
        self, argv: list[str], *, cwd: Path | None = None, env: Mapping[str, str | None] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=environ(env),
            # as from a terminal: a test run started in the background (`cmd &` in a script, as CI
            # may do) ignores SIGINT, and a child would inherit that and never see its Ctrl-C
            preexec_fn=_default_sigint if os.name != "nt" else None,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out, self.err = Lines(self.proc.stdout), Lines(self.proc.stderr)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


PROBE = SCRIPTS / "cli_exec_probe.py"


def probe(log: Path, *placeholders: str) -> str:
    """A ``watch --exec`` CMD that logs what it was given (tests/scripts/cli_exec_probe.py says what)."""
    return shlex.join([sys.executable, str(PROBE), str(log), *placeholders])


def log_lines(log: Path) -> list[dict[str, Any]]:
    """What the probe logged, one entry per run."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


#: what the name of every hold folder starts with (``watch --exec``, ``path --hold``)
HOLD_MARK = ".bestlink-hold-"


def held(path: str, folder: Path) -> bool:
    """Whether ``path`` is a checkpoint held in ``folder``: ``folder/.bestlink-hold-.../<name>``."""
    hold = os.path.dirname(path)
    return os.path.dirname(hold) == str(folder) and os.path.basename(hold).startswith(HOLD_MARK)


def holds(folder: Path) -> list[str]:
    """The hold folders in ``folder``."""
    return sorted(name for name in os.listdir(folder) if name.startswith(HOLD_MARK))


class Writer(Child):
    """A training run in another process (tests/scripts/cli_writer.py)."""

    def __init__(self, alias: Path | str, link: str = "symlink", *flags: str) -> None:
        super().__init__([sys.executable, str(SCRIPTS / "cli_writer.py"), str(alias), link, *flags])
        assert self.out.next() == "ready\n", self.err.pending()

    def update(self, score: float, name: str) -> bool:
        self.send(f"update {score} {name}")
        answer = self.out.next()
        assert answer in ("True\n", "False\n"), (answer, self.err.pending())
        return answer == "True\n"


def watch(
    *args: str | Path, env: Mapping[str, str | None] | None = None, faults: bool = False, cwd: Path | None = None
) -> Child:
    """``lightning-bestlink watch ARGS`` in the background (with the fault/counter wrapper if asked)."""
    head = [str(FAULTS)] if faults else ["-m", "lightning_bestlink"]
    return Child([sys.executable, *head, "watch", *map(str, args)], env=env, cwd=cwd)
