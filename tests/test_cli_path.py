"""``lightning-bestlink path DIR|ALIAS``: the best checkpoint's path and nothing else, for scripts."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests._cli import BEST, cli, faults, held, holds, make_run, needs_symlinks

from lightning_bestlink import BestLinker, LatestLinker, save_and_link
from lightning_bestlink._storage.local import LocalStorage


@pytest.mark.parametrize("link", ["symlink", "hardlink", "copy"])
def test_prints_the_target_of_a_healthy_alias(tmp_path: Path, link: str) -> None:
    make_run(tmp_path / "ckpt", link=link)
    expected = f"{tmp_path / 'ckpt' / BEST}\n"
    for arg in ("ckpt", "ckpt/best.ckpt", "ckpt/best.ckpt.bestlink.json", str(tmp_path / "ckpt")):
        result = cli("path", arg, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (0, expected, ""), arg


@pytest.mark.skipif(os.name == "nt", reason="a POSIX shell")
def test_in_a_command_substitution(tmp_path: Path) -> None:
    make_run(tmp_path / "runs" / "exp")
    (tmp_path / "runs" / "exp" / BEST).write_bytes(b"the best weights")
    script = f'cat "$("{sys.executable}" -m lightning_bestlink path runs/exp)"'
    result = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "the best weights")


def test_an_alias_of_any_name_and_a_directory_checkpoint(tmp_path: Path) -> None:
    shard = tmp_path / "step=100"
    shard.mkdir()
    (shard / ".metadata").write_bytes(b"m")
    BestLinker(tmp_path / "model-best").update(0.1, shard)  # no suffix, a name of the user's choice
    assert cli("path", tmp_path).stdout == f"{shard}\n"
    assert cli("path", tmp_path / "model-best").stdout == f"{shard}\n"


@pytest.mark.parametrize("json_out", [False, True], ids=["path", "path --json"])
def test_an_alias_moved_on_while_it_is_checked_prints_the_checkpoint_the_check_vouched_for(
    tmp_path: Path, json_out: bool
) -> None:
    make_run(tmp_path, link="copy")  # a copy: its check reads the record again
    newer = tmp_path / "epoch=9.ckpt"
    newer.write_bytes(b"newer weights")
    # training moves the alias on, and deletes the checkpoint it named, after the record was read
    env = {"BESTLINK_TEST_MOVE_ON_CHECK": f"{tmp_path / 'best.ckpt'}|{newer}|0.01"}
    result = faults("path", *(["--json"] if json_out else []), tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["target"] if json_out else result.stdout) == (
        str(newer) if json_out else f"{newer}\n"
    )


@needs_symlinks
@pytest.mark.parametrize("command", ["path", "verify"])
def test_a_symlink_alias_moved_on_while_it_is_checked_is_no_false_alarm(tmp_path: Path, command: str) -> None:
    """Found ahead of the record read before it (training moved both on meanwhile, and deleted the
    checkpoint the first record named), the alias is looked at again, not reported broken."""
    make_run(tmp_path, link="symlink")
    newer = tmp_path / "epoch=9.ckpt"
    newer.write_bytes(b"newer weights")
    env = {"BESTLINK_TEST_MOVE_ON_CHECK": f"{tmp_path / 'best.ckpt'}|{newer}|0.01"}
    result = faults(command, tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert str(newer) in result.stdout if command == "path" else "epoch=9.ckpt" in result.stdout


@needs_symlinks
def test_no_healthy_alias_prints_nothing_on_stdout(tmp_path: Path) -> None:
    make_run(tmp_path / "broken")
    (tmp_path / "broken" / "best.ckpt").unlink()
    os.symlink("epoch=0.ckpt", tmp_path / "broken" / "best.ckpt")
    result = cli("path", tmp_path / "broken")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"lightning-bestlink path: {tmp_path / 'broken' / 'best.ckpt'} is not healthy: ")
    assert f"mismatch: best.ckpt points at epoch=0.ckpt, but its record names {BEST}" in result.stderr
    assert f"run: lightning-bestlink repair {tmp_path / 'broken'}" in result.stderr

    (tmp_path / "empty").mkdir()
    result = cli("path", tmp_path / "empty")
    assert (result.returncode, result.stdout) == (1, "")
    message = f"no lightning-bestlink alias in {tmp_path / 'empty'} (no .bestlink.json record)"
    assert result.stderr == f"lightning-bestlink path: {message}\n"


def test_several_aliases_must_be_named(tmp_path: Path) -> None:
    make_run(tmp_path)
    BestLinker(tmp_path / "best-acc.ckpt", mode="max").update(0.9, tmp_path / "epoch=1.ckpt")
    result = cli("path", tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert "holds 2 aliases (best-acc.ckpt, best.ckpt); name one of them" in result.stderr
    assert cli("path", tmp_path / "best-acc.ckpt").stdout == f"{tmp_path / 'epoch=1.ckpt'}\n"


def test_best_checkpoint_deleted(tmp_path: Path) -> None:
    make_run(tmp_path, link="copy")
    (tmp_path / BEST).unlink()  # the copy is still there, but what the record names is gone
    result = cli("path", tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert "is not healthy" in result.stderr


def test_nothing_there_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("path", tmp_path / "nope")
    assert (result.returncode, result.stdout) == (2, "")
    assert "does not exist" in result.stderr
    (tmp_path / "file.ckpt").write_bytes(b"w")
    result = cli("path", tmp_path / "file.ckpt")
    assert (result.returncode, result.stdout) == (1, "")
    assert "is not a folder and has no .bestlink.json record next to it" in result.stderr


# --- names a line of output cannot carry ----------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="a POSIX shell, and a line break in a file name")
def test_a_name_the_shell_would_change_is_refused_and_null_or_json_carry_it(tmp_path: Path) -> None:
    target = tmp_path / "epoch=1.ckpt\n"
    target.write_bytes(b"the best weights")
    (tmp_path / "epoch=1.ckpt").write_bytes(b"another file")  # what "$(...)" would make of the name
    BestLinker(tmp_path / "best.ckpt").update(0.1, target)

    refused = cli("path", tmp_path)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "holds a line break" in refused.stderr and "--null" in refused.stderr and "--json" in refused.stderr
    script = f'cat "$("{sys.executable}" -m lightning_bestlink path {shlex.quote(str(tmp_path))})"'
    shell = subprocess.run(["sh", "-c", script], capture_output=True, timeout=60, check=False)
    assert b"another file" not in shell.stdout  # the documented use never reads a file it was not given

    null = subprocess.run(
        [sys.executable, "-m", "lightning_bestlink", "path", "--null", str(tmp_path)], capture_output=True
    )
    assert (null.returncode, null.stdout) == (0, os.fsencode(target) + b"\0")
    document = json.loads(cli("path", "--json", tmp_path).stdout)
    assert (document["target"], document["alias"], document["held"]) == (str(target), str(tmp_path / "best.ckpt"), None)
    assert (document["score"], document["kind"], document["version"]) == (0.1, "symlink", 1)
    assert cli("path", "--null", "--json", tmp_path).returncode == 2  # one form at a time


# --- a best alias next to latest ones (the README's plain loop) -----------------------------------


def readme_loop(folder: Path, scores: list[float]) -> tuple[BestLinker, LatestLinker]:
    """A folder as the README's plain-loop quick start leaves it: best.pt and last.pt, by save_and_link."""
    best, last = BestLinker(folder / "best.pt", mode="max"), LatestLinker(folder / "last.pt")

    def save(state: dict[str, Any], path: str) -> None:  # torch.save's order; no torch needed here
        Path(path).write_bytes(pickle.dumps(state))

    folder.mkdir(parents=True, exist_ok=True)
    for epoch, score in enumerate(scores):
        state = {"epoch": epoch, "best": best, "last": last}
        save_and_link(save, folder / f"epoch={epoch}.pt", state, score=score, linker=best, latest=last, step=epoch)
    return best, last


def test_a_best_alias_is_taken_before_latest_ones(tmp_path: Path) -> None:
    readme_loop(tmp_path, [0.5, 0.9, 0.7])  # the best: epoch=1; the latest: epoch=2
    result = cli("path", tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{tmp_path / 'epoch=1.pt'}\n", "")
    assert cli("path", tmp_path / "last.pt").stdout == f"{tmp_path / 'epoch=2.pt'}\n"  # named: taken

    BestLinker(tmp_path / "best-loss.pt").update(0.2, tmp_path / "epoch=0.pt")  # two best aliases compete
    competing = cli("path", tmp_path)
    assert (competing.returncode, competing.stdout) == (1, "")
    assert "holds 2 best aliases (best-loss.pt, best.pt); name one of them" in competing.stderr


# --- holding the checkpoint for a reader that comes later -----------------------------------------


def keeper_of(path: str) -> int:
    """The pid of the process that keeps the hold ``path`` (the hold's name says it)."""
    return int(os.path.basename(os.path.dirname(path)).rsplit("-", 2)[1].split(".")[0])


def ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie has: nothing may reap it in a container)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals, and /proc to tell a process has ended")
def test_hold_keeps_the_checkpoint_readable_after_training_deletes_it(tmp_path: Path) -> None:
    make_run(tmp_path)
    expected = (tmp_path / BEST).read_bytes()
    script = f'echo "$("{sys.executable}" -m lightning_bestlink path --hold 3600 {shlex.quote(str(tmp_path))})"'
    # returns at once: the process that keeps the hold for an hour holds none of the shell's pipes
    shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert shell.returncode == 0, shell.stderr
    path = shell.stdout[:-1]
    assert held(path, tmp_path) and os.path.basename(path) == BEST
    (tmp_path / BEST).unlink()  # training deletes it: a better one came
    assert Path(path).read_bytes() == expected
    assert ".bestlink-hold" not in cli("show", tmp_path).stdout  # show ignores holds
    with pytest.raises(ValueError, match="a checkpoint held for a reader"):  # and no alias may point into one
        BestLinker(tmp_path / "best-held.ckpt").update(0.0, path)

    os.kill(keeper_of(path), signal.SIGTERM)  # a polite stop releases it
    wait_for(lambda: not holds(tmp_path))

    make_run(tmp_path)  # the checkpoint back; a keeper killed without a word leaves its hold...
    path = cli("path", "--hold", "3600", tmp_path).stdout[:-1]
    os.kill(keeper_of(path), signal.SIGKILL)
    wait_for(lambda: ended(keeper_of(path)))
    assert holds(tmp_path) == [os.path.basename(os.path.dirname(path))]
    short = cli("path", "--hold", "0.2", tmp_path)  # ...which the next hold in this folder removes
    assert short.returncode == 0 and not os.path.exists(path)
    wait_for(lambda: not holds(tmp_path))  # and this one goes by itself once its time is up


IN_A_PID_NAMESPACE = """
import os, subprocess, sys
# pid 1 of a new pid namespace: the reader it starts gets the pid asked for, one no process has outside
with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
    fh.write(str(int(sys.argv[1]) - 1))
reader = "from lightning_bestlink._storage import _hold; print(_hold.hold(sys.argv[1]), flush=True); sys.stdin.read()"
subprocess.run([sys.executable, "-c", "import sys; " + reader, sys.argv[2]], check=True)
"""


def free_pid() -> int:
    """A pid no process of this pid namespace has."""
    with open("/proc/sys/kernel/pid_max") as fh:
        pid = int(fh.read()) - 1000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="a pid namespace of its own (unshare) needs root"
)
def test_a_reader_in_another_pid_namespace_keeps_its_hold(tmp_path: Path) -> None:
    make_run(tmp_path)
    expected = (tmp_path / BEST).read_bytes()
    # a container that shares the host's name and the run folder, but not its processes
    reader = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            IN_A_PID_NAMESPACE,
            str(free_pid()),
            str(tmp_path / BEST),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert reader.stdout is not None
        path = reader.stdout.readline()[:-1]
        assert held(path, tmp_path) and not os.path.exists(f"/proc/{keeper_of(path)}")  # its pid means nothing here
        assert cli("path", "--hold", "0.1", tmp_path).returncode == 0  # removes the holds of ended readers
        (tmp_path / BEST).unlink()  # training deletes it: a better one came
        assert Path(path).read_bytes() == expected
    finally:
        reader.communicate("", timeout=60)
    # its reader ended without releasing it: kept, as no process here can tell it ended (the price of never
    # taking a live reader of another namespace for dead); the short hold above went by itself
    wait_for(lambda: holds(tmp_path) == [os.path.basename(os.path.dirname(path))])


@pytest.mark.skipif(sys.platform != "linux", reason="/proc to tell when a process started")
def test_a_hold_whose_pid_a_later_process_took_is_released(tmp_path: Path) -> None:
    make_run(tmp_path)
    path = cli("path", "--hold", "3600", tmp_path).stdout[:-1]
    keeper = keeper_of(path)
    os.kill(keeper, signal.SIGKILL)
    wait_for(lambda: ended(keeper))
    place = Path(path).parent
    # the same hold, as if the pid had been given to this test's process since (a pid is reused)
    host, process, rand = place.name.rsplit("-", 2)
    _, namespace, _ = process.split(".")
    reused = place.rename(place.with_name(f"{host}-{os.getpid()}.{namespace}.1-{rand}"))
    assert cli("path", "--hold", "0.1", tmp_path).returncode == 0
    assert not reused.exists()


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Wait until ``condition()`` holds; fail the test after ``timeout`` seconds (not a measure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.02)


@pytest.mark.parametrize("own_group", [True, False], ids=["its group given", "its group not given"])
def test_a_hold_that_must_copy_exposes_the_checkpoint_to_no_one_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_group: bool
) -> None:
    """Where no hard link can be made (protected_hardlinks: another user's file), the hold copies:
    readable by its maker alone while it fills, then the checkpoint's group and mode, or no group
    rights where the maker cannot give it that group."""
    from lightning_bestlink._storage import _clone

    checkpoint = tmp_path / "epoch=1.ckpt"
    checkpoint.write_bytes(b"weights of another user")
    os.chown(checkpoint, -1, 4321)
    checkpoint.chmod(0o640)
    modes_while_filling = []
    real_copy_range = _clone._copy_range

    def copy_range(fin: Any, fout: Any) -> bool:
        modes_while_filling.append(stat.S_IMODE(os.fstat(fout.fileno()).st_mode))
        return bool(real_copy_range(fin, fout))

    def no_hard_link(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    def chown_refused(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_link)
    monkeypatch.setattr(_clone, "_copy_range", copy_range)
    if not own_group:
        monkeypatch.setattr(os, "fchown", chown_refused)
    held = os.stat(LocalStorage().hold(str(checkpoint)))  # type: ignore[arg-type]
    assert modes_while_filling == [0o600]
    assert (held.st_gid, stat.S_IMODE(held.st_mode)) == ((4321, 0o640) if own_group else (os.getgid(), 0o600))


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_hold_holds_what_the_alias_still_names_once_held(tmp_path: Path, kind: str) -> None:
    """A directory is held file by file: one deleted meanwhile would be held in part. Training deletes
    a checkpoint only after the alias moved on, so a directory's hold the alias no longer names is
    let go, and the new best is held instead. A file's hold is whole (a hard link) or fails."""
    older, newer = tmp_path / "epoch=1.ckpt", tmp_path / "epoch=9.ckpt"
    for checkpoint in (older, newer):
        weights = f"weights of {checkpoint.name}".encode()
        if kind == "dir":
            checkpoint.mkdir()
            (checkpoint / "shard").write_bytes(weights)
        else:
            checkpoint.write_bytes(weights)
    BestLinker(tmp_path / "best.ckpt").update(0.5, older)
    env = {"BESTLINK_TEST_MOVE_ON_HOLD": f"{tmp_path / 'best.ckpt'}|{newer}|0.01"}
    result = faults("path", "--hold", "3600", tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout[:-1])
    assert held(str(path), tmp_path)
    expected = newer if kind == "dir" else older  # the file was held whole before training deleted it
    assert path.name == expected.name
    assert (path / "shard" if kind == "dir" else path).read_bytes() == f"weights of {expected.name}".encode()
    wait_for(lambda: holds(tmp_path) == [path.parent.name])  # a first hold of the directory, let go
    os.kill(keeper_of(str(path)), signal.SIGTERM)
    wait_for(lambda: not holds(tmp_path))


def test_hold_refuses_a_bad_time(tmp_path: Path) -> None:
    make_run(tmp_path)
    for value in ("0", "-1", "nan", "inf", "soon"):
        result = cli("path", "--hold", value, tmp_path)
        assert (result.returncode, result.stdout) == (2, ""), value
    assert not holds(tmp_path)
