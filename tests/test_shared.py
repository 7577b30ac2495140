"""shared=True: many processes, one alias, the best of all of them (the sweep of issue 14)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from tests._helpers import fill_of, leftovers, write_ckpt

from lightning_bestlink import BestLinker, BestLinkWarning, read_record
from lightning_bestlink._errors import AliasBusyError

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX processes and signals")

WRITER = textwrap.dedent(
    """
    import json, os, random, sys, time
    from lightning_bestlink import BestLinker
    alias, link, trial, updates, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    paths = sys.argv[6:]
    rng = random.Random(trial)
    linker = BestLinker(alias, mode="min", link=link, shared=True)
    while not os.path.exists(go):  # all writers start together
        time.sleep(0.001)
    offered, moved = [], 0
    for i in range(updates):
        # mostly improving, interleaved with the other writers: many updates take the lock
        score, path = (updates - i + rng.random()) / updates, rng.choice(paths)
        offered.append((score, path))
        moved += linker.update(score, path, extra={"trial": trial, "i": i})
    print(json.dumps({"offered": offered, "moved": moved}))
    """
)


def _lock_path(alias: Path) -> str:
    return str(alias.parent / f".{alias.name}.bestlink.lock")


KIND_TARGET = [("symlink", "file"), ("hardlink", "file"), ("copy", "file"), ("symlink", "dir"), ("copy", "dir")]


@posix_only
@pytest.mark.slow
@pytest.mark.parametrize(("link", "target"), KIND_TARGET)
def test_many_writers_end_at_the_best_of_all(tmp_path: Path, link: str, target: str, record_counts: Any) -> None:
    writers, updates = 4, 60
    sweep = tmp_path / "sweep"
    alias = sweep / "best.ckpt"
    go = tmp_path / "go"
    trials = {}
    for trial in range(writers):
        # each trial's own checkpoints; the fill byte tells which checkpoint a read returns
        paths = [
            write_ckpt(sweep / f"trial-{trial}" / f"c{k}", 10 * trial + k, size=64 << 10, kind=target) for k in range(3)
        ]
        trials[trial] = [str(p) for p in paths]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(alias), link, str(trial), str(updates), str(go), *trials[trial]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for trial in range(writers)
    ]
    time.sleep(1.0)  # let every writer import and wait at the gate (no harm if one is late)
    go.touch()
    # what any writer sees when it holds the lock: the record and the alias agree
    checks = 0
    while any(p.poll() is None for p in procs):
        with FileLock(_lock_path(alias)):
            record = read_record(alias)
            if record is not None:
                assert fill_of(alias) == fill_of(record["target"]), "alias and record disagree"
                checks += 1
        time.sleep(0.002)
    offered: list[tuple[float, str]] = []
    moved = 0
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        result = json.loads(out)
        offered += [tuple(pair) for pair in result["offered"]]  # type: ignore[misc]
        moved += result["moved"]
    best_score, best_path = min(offered)
    record = read_record(alias)
    assert record is not None
    assert (record["score"], record["target"]) == (best_score, best_path)
    assert record["extra"]["trial"] == int(Path(best_path).parent.name.split("-")[1])
    assert fill_of(alias) == fill_of(best_path)
    assert BestLinker(alias, mode="min", link=link, shared=True).verify().ok  # type: ignore[arg-type]
    assert leftovers(sweep) == []
    assert moved > writers, "the writers hardly competed: the test proved little"
    record_counts({"writers": writers, "updates_each": updates, "moves": moved, "checks_under_lock": checks})


def test_a_writer_that_has_not_seen_the_best_adopts_it(tmp_path: Path) -> None:
    a, b, c = (write_ckpt(tmp_path / n, i) for i, n in enumerate("abc"))
    first = BestLinker(tmp_path / "best", shared=True)
    second = BestLinker(tmp_path / "best", shared=True)
    assert first.update(0.1, a, extra={"trial": 1})
    assert not second.update(0.5, b, extra={"trial": 2})  # better than nothing it knew, worse than disk
    assert (second.best_score, second.best_path) == (0.1, str(a))
    assert fill_of(second.link_path) == 0
    assert second.update(0.05, c)
    assert not first.update(0.07, b)  # first learns of 0.05 only when it offers something better than 0.1
    assert (first.best_score, fill_of(first.link_path)) == (0.05, 2)
    assert read_record(tmp_path / "best")["extra"] == {}  # type: ignore[index]


def test_resuming_a_writer_never_puts_back_a_beaten_best(tmp_path: Path) -> None:
    a, b = write_ckpt(tmp_path / "a", 1), write_ckpt(tmp_path / "b", 2)
    one = BestLinker(tmp_path / "best", shared=True)
    assert one.update(0.5, a)
    state = one.state_dict()
    assert BestLinker(tmp_path / "best", shared=True).update(0.1, b)  # another trial does better
    os.unlink(tmp_path / "best")  # and the alias is damaged
    resumed = BestLinker(tmp_path / "best", shared=True)
    resumed.load_state_dict(state)
    assert resumed.repair().ok
    assert (resumed.best_score, fill_of(tmp_path / "best")) == (0.1, 2)


def test_a_score_that_is_not_better_does_no_file_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best", shared=True)
    assert linker.update(0.5, a)

    def forbid(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("file I/O during a non-improving update")

    with monkeypatch.context() as m:
        for name in ("open", "stat", "lstat", "scandir", "replace", "rename"):
            m.setattr(os, name, forbid)
        m.setattr("builtins.open", forbid)
        assert not linker.update(0.7, a)
        assert not linker.update(0.5, a)


def test_the_lock_that_cannot_be_taken_is_a_clear_error(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best", shared=True, lock_timeout=0.3)
    with FileLock(_lock_path(tmp_path / "best")), pytest.raises(AliasBusyError, match=r"more than 0\.3 s"):
        linker.update(0.5, a)
    assert not os.path.lexists(tmp_path / "best")
    assert linker.best_score is None
    assert linker.update(0.5, a)


def _libc_fork() -> int:
    """fork(2) from C: Python's fork hooks (os.register_at_fork) do not run in the child."""
    import ctypes

    return int(ctypes.CDLL(None, use_errno=True).fork())


@posix_only
@pytest.mark.parametrize("fork", [os.fork, _libc_fork], ids=["os.fork", "fork from C"])
def test_a_forked_child_takes_the_lock_for_itself(tmp_path: Path, fork: Any) -> None:
    """A lock file opened before a fork would be shared with the child (flock locks belong to the open
    file, not the process): the child must open its own, and wait for the parent like any other writer."""
    a, b = write_ckpt(tmp_path / "a", 1), write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", lock_timeout=0.3)
    assert linker.update(0.5, a)  # the lock file is open in this process now
    with linker.storage.lock(linker.link_path, 0.3):
        child = fork()
        if child == 0:  # the child: its update must find the parent's lock held
            try:
                linker.update(0.4, b)
            except AliasBusyError:
                os._exit(0)
            except BaseException:
                os._exit(2)
            os._exit(1)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child updated the alias under its parent's lock"
    assert fill_of(linker.link_path) == 1
    assert linker.update(0.4, b)  # the parent's own lock still works


@posix_only
def test_a_forked_child_is_another_writer(tmp_path: Path) -> None:
    """Two processes writing one alias without shared=True replace each other's best: a child forked
    from a writer is warned about like any other process, under its own pid."""
    a, b = write_ckpt(tmp_path / "a", 1), write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best")
    assert linker.update(0.5, a)
    child = os.fork()
    if child == 0:
        os._exit(0 if linker.update(0.4, b) else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pattern = rf"another writer \(host {socket.gethostname()!r}, pid {child}\) updated .* to 'b'"
    with pytest.warns(BestLinkWarning, match=pattern):
        assert linker.update(0.3, a)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from lightning_bestlink import BestLinker
    from lightning_bestlink._storage import _clone
    alias, first, second = sys.argv[1:4]
    linker = BestLinker(alias, link="copy", shared=True)
    linker.update(0.5, first)
    real = _clone.copyfile  # what makes a copy's bytes

    def copy_then_hang(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        print("holding", flush=True)  # the lock is held, a temporary copy exists
        time.sleep(600)

    _clone.copyfile = copy_then_hang
    linker.update(0.4, second)
    """
)


@posix_only
@pytest.mark.slow
def test_a_writer_killed_while_holding_the_lock_blocks_nobody(tmp_path: Path) -> None:
    a, b, c = (write_ckpt(tmp_path / n, i) for i, n in enumerate("abc"))
    alias = tmp_path / "best.ckpt"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(alias), str(a), str(b)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    assert leftovers(tmp_path), "the killed writer should leave a temporary copy behind"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdout.close()
    other = BestLinker(alias, link="copy", shared=True, lock_timeout=30)
    assert other.update(0.3, c)  # the kernel released the dead writer's lock
    assert fill_of(alias) == 2 and other.verify().ok  # c
    assert leftovers(tmp_path) == []


def test_shared_needs_a_filesystem_with_locks() -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(ValueError, match="shared=True needs a filesystem with file locks"):
        BestLinker("memory://sweep/best.ckpt", shared=True)


def test_follow_and_a_mode_mismatch_are_refused(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best", shared=True)
    with pytest.raises(ValueError, match="update"):
        linker.follow(0.5, a)
    assert linker.update(0.5, a)
    with pytest.raises(ValueError, match="mode='min'"):
        BestLinker(tmp_path / "best", mode="max", shared=True).update(0.9, a)


def test_show_on_the_sweep_folder_names_the_best_trial(tmp_path: Path) -> None:
    from tests._cli import cli, row

    for trial, score in ((0, 0.5), (1, 0.3), (0, 0.4)):
        path = write_ckpt(tmp_path / f"trial-{trial}" / f"epoch={int(score * 10)}.ckpt", trial)
        BestLinker(tmp_path / "best.ckpt", shared=True).update(score, path, extra={"trial": trial})
    proc = cli("show", tmp_path)
    assert proc.returncode == 0, proc
    assert row(proc.stdout, "best.ckpt").split() == [
        "best.ckpt",
        "symlink",
        "trial-1/epoch=3.ckpt",
        "0.3",
        "(min,",
        "trial",
        "1)",
        "ok",
    ]
    (alias,) = json.loads(cli("show", "--json", tmp_path).stdout)["folders"][0]["aliases"]
    assert (alias["score"], alias["extra"]) == (0.3, {"trial": 1})
