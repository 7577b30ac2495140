"""Folders the command cannot read are reported, never skipped in silence (exit 1).

Permissions are tested as a user meets them: the command runs as nobody (a child that
dropped its privileges), since root reads everything. A folder of another user is also
simulated by failing its listing (tests/scripts/cli_faults.py), which works as any user.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tests._cli import BEST, as_nobody, faults, make_run, shared_tmp
from tests._helpers import as_root

from lightning_bestlink import BestLinker

__all__ = ["shared_tmp"]  # a fixture, used by name

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX permissions and directory descriptors")


def logs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Three runs: v0 healthy, v1 unreadable (it holds a broken alias), v2 with its alias deleted."""
    runs = tuple(tmp_path / "lightning_logs" / f"version_{i}" / "checkpoints" for i in range(3))
    for run in runs:
        make_run(run)
    (runs[1] / "best.ckpt").unlink()
    (runs[2] / "best.ckpt").unlink()
    return runs  # type: ignore[return-value]


def test_unreadable_folders_are_reported_and_the_rest_checked(tmp_path: Path) -> None:
    _, v1, v2 = logs(tmp_path)
    env = {"BESTLINK_TEST_UNREADABLE": str(v1.parent)}
    shown_v1 = os.path.join("lightning_logs", "version_1")

    verified = faults("verify", "-r", "lightning_logs", env=env, cwd=tmp_path)
    assert verified.returncode == 1
    assert f"FAILED  {shown_v1}: cannot read this folder: Permission denied; its aliases were not checked" in (
        verified.stdout
    )
    assert f"ok      {os.path.join('lightning_logs', 'version_0', 'checkpoints', 'best.ckpt')}" in verified.stdout
    assert f"FAILED  {os.path.join('lightning_logs', 'version_2', 'checkpoints', 'best.ckpt')}: missing" in (
        verified.stdout
    )
    assert verified.stderr == "verify: 1 of 2 aliases needs attention; 1 folder could not be read\n"

    shown = faults("show", "-r", "lightning_logs", env=env, cwd=tmp_path)
    assert shown.returncode == 1  # the survey is incomplete
    assert f"{shown_v1}  (cannot read this folder: Permission denied)" in shown.stdout
    assert shown.stdout.count("(alias healthy)") == 1 and "(1 of 1 alias needs attention)" in shown.stdout
    assert shown.stderr == f"show: {shown_v1}: cannot read this folder: Permission denied\n"

    document = json.loads(faults("show", "--json", "-r", tmp_path, env=env).stdout)
    errors = {f["path"]: f["error"] for f in document["folders"]}
    assert errors[str(v1.parent)] == "cannot read this folder: Permission denied"
    assert document["summary"]["unreadable_folders"] == 1 and document["ok"] is False

    repaired = faults("repair", "-r", tmp_path, env=env)
    assert repaired.returncode == 1
    assert f"repaired  {v2 / 'best.ckpt'}" in repaired.stdout
    assert repaired.stderr == "repair: 1 folder could not be read\n"
    assert not os.path.lexists(v1 / "best.ckpt")  # not touched: it could not be surveyed

    only = faults("verify", v1, env={"BESTLINK_TEST_UNREADABLE": str(v1)})  # DIR itself
    assert only.returncode == 1
    assert f"FAILED  {v1}: cannot read this folder: Permission denied" in only.stdout


# --- as another user ------------------------------------------------------------------------------

NOT_ENTERED = "cannot read this folder: Permission denied: its names can be listed, but not looked at"


@as_root
def test_a_folder_of_another_user_that_cannot_be_listed(shared_tmp: Path) -> None:
    _, v1, _ = logs(shared_tmp)
    v1.parent.chmod(0o700)  # root's, nothing for others
    verified = as_nobody("verify", "-r", shared_tmp)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert f"FAILED  {v1.parent}: cannot read this folder: Permission denied" in verified.stdout


@as_root
@pytest.mark.parametrize(
    "args",
    [
        ("verify", "{run}"),
        ("verify", "-r", "{root}"),
        ("repair", "-r", "{root}"),
        ("show", "{run}"),
        ("show", "-r", "{root}"),
    ],
    ids=" ".join,
)
def test_a_folder_that_can_be_listed_but_not_entered_is_unreadable(shared_tmp: Path, args: tuple[str, ...]) -> None:
    run = shared_tmp / "runs" / "exp"
    make_run(run)
    (run / "best.ckpt").unlink()  # a broken alias that a silent skip would hide
    run.chmod(0o744)  # r-- for others: its names can be read, nothing in it looked at
    result = as_nobody(*(a.format(run=run, root=shared_tmp / "runs") for a in args))
    assert result.returncode == 1, result.stdout + result.stderr
    assert NOT_ENTERED in result.stdout + result.stderr
    assert "nothing to check" not in result.stderr


@as_root
def test_json_is_not_ok_over_a_folder_that_cannot_be_entered(shared_tmp: Path) -> None:
    run = shared_tmp / "exp"
    make_run(run)
    (run / "best.ckpt").unlink()
    os.symlink("epoch=9.ckpt", run / "best.ckpt")  # dangling
    run.chmod(0o744)
    result = as_nobody("verify", "--json", run)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["summary"]["unreadable_folders"] == 1
    assert document["folders"][0]["error"].startswith(NOT_ENTERED)


# --- deep trees -------------------------------------------------------------------------------------


def chain(root: Path, depth: int, name: str) -> int:
    """Make ``root/name/name/...`` ``depth`` levels deep, relative to directory descriptors (its path
    may be longer than the system takes); returns a descriptor of the deepest folder."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        deeper = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    return fd


def test_a_tree_deeper_than_path_max_is_reported(tmp_path: Path) -> None:
    make_run(tmp_path / "sample")  # a record to copy: it names epoch=2.ckpt next to it
    record = (tmp_path / "sample" / "best.ckpt.bestlink.json").read_bytes()
    fd = chain(tmp_path / "tree", 24, "d" * 200)  # 24 x 201 bytes: past PATH_MAX (4096)
    try:
        os.symlink(BEST, "best.ckpt", dir_fd=fd)  # dangling: nothing is named epoch=2.ckpt down there
        out = os.open("best.ckpt.bestlink.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, record)
        os.close(out)
    finally:
        os.close(fd)
    tree = tmp_path / "tree"
    for args in (("verify", "-r", tree), ("repair", "-r", tree), ("show", "-r", tree)):
        result = faults(*args, env={})
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "cannot read this folder: its path is" in result.stdout + result.stderr, args
        assert "more than this system takes" in result.stdout + result.stderr, args
    document = json.loads(faults("verify", "--json", "-r", tree, env={}).stdout)
    assert document["ok"] is False and document["summary"]["unreadable_folders"] == 1


def test_verify_r_costs_the_same_per_folder_at_any_depth(tmp_path: Path) -> None:
    # what the command passes to the system, counted: a walk that resolves or names each folder by
    # its full path costs more per folder the deeper it goes (1,900 levels took 70 s that way)
    cost = {}
    for depth in (100, 1900):
        os.close(chain(tmp_path / str(depth), depth, "d"))
        counts = tmp_path / f"syscalls-{depth}.json"
        try:
            result = faults("verify", "-r", tmp_path / str(depth), env={"BESTLINK_TEST_SYSCALLS": str(counts)})
        finally:  # pytest's own clean-up removes trees recursively: 1,900 levels would overflow its stack
            subprocess.run(["rm", "-rf", str(tmp_path / str(depth))], check=True, timeout=120)
        nothing = f"no lightning-bestlink alias under {tmp_path / str(depth)}: nothing to check\n"
        assert (result.returncode, result.stderr) == (0, nothing)
        seen = json.loads(counts.read_text())
        cost[depth] = (seen["calls"] / depth, seen["path_bytes"] / depth)
    assert cost[1900][0] <= 1.25 * cost[100][0], cost  # system calls per folder
    assert cost[1900][1] <= 1.25 * cost[100][1], cost  # bytes of path per folder


# --- a checkpoint the user cannot reach ----------------------------------------------------------


@as_root
@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_a_checkpoint_in_a_folder_the_user_cannot_enter_is_not_a_damaged_record(shared_tmp: Path, link: str) -> None:
    run = shared_tmp / "run"
    (run / "sub").mkdir(parents=True)
    (run / "sub" / BEST).write_bytes(b"w" * 102)
    BestLinker(run / "best.ckpt", link=link).update(0.3, run / "sub" / BEST)  # type: ignore[arg-type]
    (run / "sub").chmod(0o700)  # root's: nobody cannot look inside

    verified = as_nobody("verify", run)
    assert verified.returncode == 1
    assert verified.stdout.splitlines() == [
        f"FAILED  {run / 'best.ckpt'}: unreadable checkpoint: cannot look at {os.path.join('sub', BEST)}, which its "
        "record names: Permission denied",
        "        the record is fine: check the permissions of the folders on the way to the checkpoint it names",
    ]
    document = json.loads(as_nobody("verify", "--json", run).stdout)
    (alias,) = document["folders"][0]["aliases"]
    assert (alias["status"], alias["target"]) == ("unreadable-checkpoint", str(run / "sub" / BEST))
    assert faults("verify", run, env={}).returncode == 0  # for its owner, the alias is healthy
