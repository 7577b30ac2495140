"""BestLinker on local paths, file:// and memory:// URLs (no torch, no Lightning)."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from tests._helpers import KIND_TARGET, KINDS, fill_of, leftovers, write_ckpt

from lightning_bestlink import AliasConflictError, BestLinker, BestLinkWarning, read_record
from lightning_bestlink._score import is_better
from lightning_bestlink._storage import Storage
from lightning_bestlink._storage.local import LocalStorage


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[str, Path], ids=["str", "Path"])
def as_path(request: pytest.FixtureRequest) -> Any:
    return request.param


def record(linker: BestLinker) -> dict[str, Any]:
    with open(linker.record_path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def assert_consistent(linker: BestLinker, fill: int) -> None:
    """Alias, state and metadata all describe the same checkpoint."""
    assert linker.best_path is not None
    assert fill_of(linker.link_path) == fill
    assert linker.verify().ok, linker.verify()
    meta = record(linker)
    assert meta["score"] == linker.best_score
    assert os.path.normpath(os.path.join(os.path.dirname(linker.link_path), meta["target"])) == linker.best_path
    assert leftovers(os.path.dirname(linker.link_path)) == []


# --- the parametrized stack: link kind x str/Path x file/directory ------------------


def test_a_directory_cannot_have_a_hard_link_alias(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "epoch=1.ckpt", 1, kind="dir")
    linker = BestLinker(tmp_path / "best.ckpt", link="hardlink")
    # documented: directories have no hard links; the error names the path, nothing is written
    with pytest.raises(IsADirectoryError, match=r"hardlink.*epoch=1\.ckpt"):
        linker.update(0.5, a)
    assert sorted(os.listdir(tmp_path)) == ["epoch=1.ckpt"]
    assert linker.best_score is None and linker.best_path is None


@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
def test_first_update(tmp_path: Path, kind: str, as_path: Any, target: str) -> None:
    a = write_ckpt(tmp_path / "epoch=1.ckpt", 1, kind=target)
    linker = BestLinker(as_path(tmp_path / "best.ckpt"), link=kind)  # type: ignore[arg-type]
    assert linker.link_path == str(tmp_path / "best.ckpt")
    assert linker.update(0.5, as_path(a), extra={"monitor": "val_loss", "epoch": 1, "step": 10}) is True
    assert linker.best_score == 0.5
    assert linker.best_path == str(a)
    assert_consistent(linker, 1)
    if kind in ("symlink", "auto"):
        assert os.readlink(linker.link_path) == "epoch=1.ckpt"  # relative
    meta = record(linker)
    assert meta["mode"] == "min"
    assert meta["target"] == "epoch=1.ckpt"
    assert meta["link"] == (linker.link_kind if kind == "auto" else kind)
    assert meta["extra"] == {"monitor": "val_loss", "epoch": 1, "step": 10}
    assert abs(datetime.fromisoformat(meta["time"]).timestamp() - meta["unix_time"]) < 1e-3
    assert read_record(as_path(tmp_path / "best.ckpt"))["target"] == str(a)  # type: ignore[index]


@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
def test_update_semantics(tmp_path: Path, kind: str, as_path: Any, target: str) -> None:
    paths = [write_ckpt(tmp_path / f"c{i}", i, kind=target) for i in range(4)]
    linker = BestLinker(as_path(tmp_path / "best"), mode="min", link=kind)  # type: ignore[arg-type]
    assert linker.update(0.5, as_path(paths[0]), extra={"step": 0})
    assert_consistent(linker, 0)
    before = record(linker)
    assert not linker.update(0.7, as_path(paths[1]))  # worse
    assert not linker.update(0.5, as_path(paths[2]))  # a tie keeps the first
    assert not linker.update(float("nan"), as_path(paths[2]))
    assert record(linker) == before
    assert fill_of(linker.link_path) == 0
    assert linker.update(0.25, as_path(paths[3]), extra={"step": 3})
    assert linker.best_score == 0.25 and linker.best_path == str(paths[3])
    assert_consistent(linker, 3)
    assert record(linker)["extra"] == {"step": 3}
    assert fill_of(paths[0]) == 0  # the old target kept its bytes


@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
def test_moving_the_folder_keeps_the_alias(tmp_path: Path, kind: str, target: str) -> None:
    run = tmp_path / "run"
    a = write_ckpt(run / "a.ckpt", 7, kind=target)
    BestLinker(run / "best.ckpt", link=kind).update(1.0, a)
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    os.rename(run, moved)
    assert fill_of(moved / "best.ckpt") == 7
    if os.path.islink(moved / "best.ckpt"):
        assert not os.path.isabs(os.readlink(moved / "best.ckpt"))


@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
def test_symlink_at_alias_is_replaced_not_written_through(tmp_path: Path, kind: str, target: str) -> None:
    other = write_ckpt(tmp_path / "other.ckpt", 9, kind=target)
    a = write_ckpt(tmp_path / "a.ckpt", 1, kind=target)
    alias = tmp_path / "best.ckpt"
    os.symlink("other.ckpt", alias)  # e.g. left by another tool, or Lightning's own link
    linker = BestLinker(alias, link=kind)
    assert linker.update(1.0, a)
    assert_consistent(linker, 1)
    assert fill_of(other) == 9  # never opened for writing
    if target == "dir":
        assert sorted(os.listdir(other)) == sorted(os.listdir(a))


@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
@pytest.mark.parametrize("foreign", ["file", "dir"])
def test_foreign_alias_is_never_destroyed(tmp_path: Path, kind: str, target: str, foreign: str) -> None:
    a = write_ckpt(tmp_path / "a.ckpt", 1, kind=target)
    alias = tmp_path / "best.ckpt"
    if foreign == "file":
        alias.write_text("precious")
    else:
        alias.mkdir()
        (alias / "inside.txt").write_text("precious")
    linker = BestLinker(alias, link=kind)
    with pytest.raises(AliasConflictError, match=r"best\.ckpt") as info:
        linker.update(1.0, a)
    assert isinstance(info.value, FileExistsError)
    assert pickle.loads(pickle.dumps(info.value)).args == info.value.args
    if foreign == "file":
        assert alias.read_text() == "precious"
    else:
        assert (alias / "inside.txt").read_text() == "precious"
    assert linker.best_score is None and linker.best_path is None
    assert not os.path.exists(linker.record_path)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
def test_rerun_into_the_same_folder(tmp_path: Path, kind: str, as_path: Any, target: str) -> None:
    a = write_ckpt(tmp_path / "a", 1, kind=target)
    b = write_ckpt(tmp_path / "b", 2, kind=target)
    c = write_ckpt(tmp_path / "c", 3, kind=target)
    first = BestLinker(as_path(tmp_path / "best"), link=kind)  # type: ignore[arg-type]
    assert first.update(0.1, as_path(a))
    assert first.update(0.05, as_path(b))
    # a new process, a new linker: it recognises the alias it wrote through the record
    second = BestLinker(as_path(tmp_path / "best"), link=kind)  # type: ignore[arg-type]
    assert second.update(0.9, as_path(c))
    assert_consistent(second, 3)
    assert fill_of(b) == 2 and fill_of(a) == 1
    third = BestLinker(as_path(tmp_path / "best"), link=kind)  # type: ignore[arg-type]
    assert third.update(0.9, as_path(a))
    assert_consistent(third, 1)


@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
def test_same_target_again_leaves_no_temp(tmp_path: Path, kind: str, target: str) -> None:
    # rename(2) of a hard link onto another name of the same inode is a no-op that
    # would leave the temporary name behind
    a = write_ckpt(tmp_path / "a", 1, kind=target)
    linker = BestLinker(tmp_path / "best", link=kind)
    for score in (0.5, 0.4, 0.3):
        assert linker.update(score, a)
        assert_consistent(linker, 1)
    again = BestLinker(tmp_path / "best", link=kind)
    assert again.update(0.9, a)
    assert_consistent(again, 1)
    if kind == "hardlink":
        assert os.path.samefile(a, again.link_path)


@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
def test_state_dict_and_repair(tmp_path: Path, kind: str, target: str) -> None:
    a = write_ckpt(tmp_path / "a", 1, kind=target)
    b = write_ckpt(tmp_path / "b", 2, kind=target)
    c = write_ckpt(tmp_path / "c", 3, kind=target)
    linker = BestLinker(tmp_path / "best", mode="max", link=kind)
    linker.update(0.8, a)
    state = linker.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert pickle.loads(pickle.dumps(state)) == state

    # the alias was deleted: the next update repairs it, even with a worse score
    remove(linker.link_path)
    fresh = BestLinker(tmp_path / "best", mode="max", link=kind)
    fresh.load_state_dict(state)
    assert fresh.best_score == 0.8 and fresh.best_path == str(a)
    assert not fresh.update(0.1, b)  # worse: does not move the alias ...
    assert_consistent(fresh, 1)  # ... but the alias was rebuilt

    # the alias points at the wrong checkpoint: repair() fixes it now
    other = BestLinker(tmp_path / "best", mode="max", link=kind)
    other.update(0.0, c)  # a fresh linker accepts anything
    assert fill_of(tmp_path / "best") == 3
    fresh.load_state_dict(state)
    assert fresh.verify().status == "mismatch"
    assert fresh.repair().ok
    assert_consistent(fresh, 1)
    assert fill_of(c) == 3

    # damaged and then offered a worse score: repaired, alias stays on the best
    other.update(0.0, c)
    fresh.load_state_dict(state)
    assert not fresh.update(0.5, b)
    assert_consistent(fresh, 1)
    assert fresh.update(0.9, b)
    assert_consistent(fresh, 2)


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


# --- semantics that do not depend on the link kind ----------------------------------


def test_mode_max_and_ties_last(tmp_path: Path) -> None:
    a, b, c = (write_ckpt(tmp_path / n, i) for i, n in enumerate("abc"))
    linker = BestLinker(tmp_path / "best", mode="max", ties="last")
    assert linker.update(1, a)
    assert not linker.update(0, b)
    assert linker.update(1, b)  # a tie moves the alias with ties="last"
    assert fill_of(linker.link_path) == 1
    assert linker.update(2, c)
    assert linker.best_score == 2.0


def test_update_never_moves_the_alias_to_a_worse_score(tmp_path: Path) -> None:
    a, b = write_ckpt(tmp_path / "a", 1), write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", mode="min")
    assert linker.update(0.1, a)
    assert not linker.update(0.9, b)
    assert (linker.best_score, linker.best_path, fill_of(linker.link_path)) == (0.1, str(a), 1)
    assert linker.is_better(0.05) and not linker.is_better(0.5)


def test_follow_records_a_decision_made_elsewhere(tmp_path: Path) -> None:
    a, b, c = (write_ckpt(tmp_path / n, i) for i, n in enumerate("abc"))
    linker = BestLinker(tmp_path / "best", mode="min")
    assert linker.update(0.1, a)
    assert linker.follow(0.9, b)  # whoever decided says b is the best now
    assert (linker.best_score, fill_of(linker.link_path), record(linker)["score"]) == (0.9, 1, 0.9)
    assert linker.follow(None, c)  # a decision without a score: the latest save
    assert (linker.best_score, linker.best_path, record(linker)["score"]) == (None, str(c), None)
    assert read_record(linker.link_path)["score"] is None  # type: ignore[index]
    restored = BestLinker(tmp_path / "best", mode="min")
    restored.load_state_dict(json.loads(json.dumps(linker.state_dict())))
    assert (restored.best_score, restored.best_path) == (None, str(c))
    assert restored.repair().ok


def test_nan_never_becomes_best(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best")
    assert not linker.update(float("nan"), a)
    assert not os.path.lexists(linker.link_path)
    assert linker.update(math.inf, a)  # +inf is a number: the first one becomes the best
    assert not linker.follow(float("nan"), a)
    assert linker.best_score == math.inf
    assert record(linker)["score"] == "inf"
    assert read_record(linker.link_path)["score"] == math.inf  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "best"}, "mode must be 'min' or 'max', got 'best'"),
        ({"link": "junction"}, "link must be one of"),
        ({"ties": "random"}, "ties must be 'first'"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BestLinker(tmp_path / "best", **kwargs)


def test_non_improving_update_does_no_file_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    b = write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", mode="min")
    assert linker.update(0.5, a)
    calls: list[str] = []

    def forbid(name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called during a non-improving update")

        return fail

    with monkeypatch.context() as m:
        for name in ("open", "stat", "lstat", "symlink", "link", "replace", "rename", "unlink", "scandir", "listdir"):
            m.setattr(os, name, forbid(f"os.{name}"))
        m.setattr("builtins.open", forbid("open"))
        m.setattr(shutil, "copyfile", forbid("shutil.copyfile"))
        m.setattr(shutil, "copytree", forbid("shutil.copytree"))
        for name, value in vars(Storage).items():
            if callable(value) and not name.startswith("__"):
                m.setattr(LocalStorage, name, forbid(f"storage.{name}"), raising=False)
        assert not linker.update(0.7, b)
        assert not linker.update(0.5, b)
        assert not linker.update(float("nan"), b)
        assert not linker.update(0.9, "/does/not/exist")  # only checked when it would become best
    assert calls == []
    assert fill_of(linker.link_path) == 1


def test_an_improving_symlink_update_makes_only_the_system_calls_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an update costs is mostly its system calls: each one here has a reason (the two renameat2
    swaps, of the record and of the alias, go through ctypes and are not in this list)."""
    from lightning_bestlink._storage import _syscalls

    a, b = write_ckpt(tmp_path / "a", 1), write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", mode="min", link="symlink")
    assert linker.update(0.5, a)
    calls: list[str] = []

    def counted(name: str, call: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return call(*args, **kwargs)

        return run

    with monkeypatch.context() as m:
        for name in ("lstat", "stat", "readlink", "getpid", "symlink", "open", "write", "fstat", "close", "unlink"):
            m.setattr(os, name, counted(name, getattr(os, name)))
        m.setattr(_syscalls, "exchange", counted("exchange", _syscalls.exchange))
        assert linker.update(0.4, b)
    assert calls == [
        "lstat",  # the checkpoint: there, and a file or a folder
        "getpid",  # the lock: a process forked since opens a lock file of its own
        "stat",  # the record: still the one this writer wrote (or read again)
        "lstat",  # the alias: what is there, to publish only over that
        "symlink",  # the new alias, under a temporary name
        "getpid",  # who writes, named in the record
        *("open", "write", "fstat", "close"),  # the new record, under a temporary name; its identity
        *("exchange", "unlink"),  # the record swapped in, the old one removed
        *("exchange", "lstat", "unlink"),  # the alias swapped in, the old one checked and removed
    ]
    assert os.readlink(linker.link_path) == "b"


def test_a_relative_path_is_read_from_the_working_folder_of_each_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for run in ("x", "y"):
        write_ckpt(tmp_path / run / "a.ckpt", ord(run))
    linker = BestLinker(tmp_path / "best", mode="min", link="symlink")
    monkeypatch.chdir(tmp_path / "x")
    assert linker.update(1.0, "a.ckpt")
    monkeypatch.chdir(tmp_path / "y")
    assert linker.update(0.5, "a.ckpt")
    assert linker.best_path == str(tmp_path / "y" / "a.ckpt")
    assert os.readlink(tmp_path / "best") == os.path.join("y", "a.ckpt")


def test_a_path_through_a_linked_folder_names_the_file_the_link_names_at_each_call(tmp_path: Path) -> None:
    for run in ("run1", "run2"):
        write_ckpt(tmp_path / run / "a.ckpt", int(run[-1]))
    os.symlink("run1", tmp_path / "latest")
    linker = BestLinker(tmp_path / "best", mode="min", link="symlink")
    assert linker.update(1.0, tmp_path / "latest" / "a.ckpt")
    os.unlink(tmp_path / "latest")
    os.symlink("run2", tmp_path / "latest")  # the newer run
    assert linker.update(0.5, tmp_path / "latest" / "a.ckpt")
    assert fill_of(tmp_path / "best") == 2
    assert read_record(tmp_path / "best")["target"] == os.path.realpath(tmp_path / "run2" / "a.ckpt")  # type: ignore[index]


def test_path_must_exist(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best")
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        linker.update(1.0, tmp_path / "missing.ckpt")
    assert os.listdir(tmp_path) == []
    assert linker.best_score is None
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        linker.update(1.0, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_path_equal_to_link_path(tmp_path: Path, kind: str) -> None:
    linker = BestLinker(tmp_path / "best.ckpt", link=kind)  # type: ignore[arg-type]
    write_ckpt(tmp_path / "best.ckpt", 1)
    with pytest.raises(ValueError, match="must not be the alias itself"):
        linker.update(1.0, tmp_path / "best.ckpt")
    # also once the alias exists (a symlink must not be resolved to slip past the check)
    os.unlink(tmp_path / "best.ckpt")
    a = write_ckpt(tmp_path / "a.ckpt", 2)
    assert linker.update(1.0, a)
    with pytest.raises(ValueError, match="must not be the alias itself"):
        linker.update(0.5, str(tmp_path / "best.ckpt"))
    assert linker.best_score == 1.0
    assert fill_of(linker.link_path) == 2


def test_extra_must_be_json(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best")
    with pytest.raises(TypeError, match="extra must hold JSON values"):
        linker.update(1.0, a, extra={"x": object()})
    with pytest.raises(TypeError, match="extra must be a dict with str keys"):
        linker.update(1.0, a, extra={1: 2})  # type: ignore[dict-item]
    assert os.listdir(tmp_path) == ["a"]


def test_foreign_record_is_a_conflict(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best")
    Path(linker.record_path).write_text('{"not": "ours"}')
    with pytest.raises(AliasConflictError, match="not a lightning-bestlink record"):
        linker.update(1.0, a)
    assert Path(linker.record_path).read_text() == '{"not": "ours"}'
    assert not os.path.lexists(linker.link_path)


def test_load_state_dict_when_best_is_gone(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    b = write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", link="copy")
    linker.update(0.1, a)
    state = linker.state_dict()
    os.unlink(a)
    fresh = BestLinker(tmp_path / "best", link="copy")
    fresh.load_state_dict(state)
    with pytest.warns(BestLinkWarning, match="no longer exists"):
        assert fresh.update(0.9, b)  # the lost best is forgotten: the next one becomes best
    assert_consistent(fresh, 2)


def test_load_state_dict_rejects_other_mode_and_junk(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best", mode="max")
    with pytest.raises(ValueError, match="mode='min'"):
        linker.load_state_dict({"mode": "min", "best_score": 1.0, "best_path": "x"})
    with pytest.raises(ValueError, match="state must be a dict"):
        linker.load_state_dict({"nothing": 1})
    linker.load_state_dict({"best_score": None, "best_path": None})
    assert linker.best_score is None


def test_moved_run_folder_state_follows_relative_path(tmp_path: Path) -> None:
    run = tmp_path / "run"
    a = write_ckpt(run / "a", 1)
    linker = BestLinker(run / "best")
    linker.update(0.1, a)
    state = linker.state_dict()
    moved = tmp_path / "moved"
    os.rename(run, moved)
    fresh = BestLinker(moved / "best")
    fresh.load_state_dict(state)
    assert fresh.best_path == str(moved / "a")
    assert fresh.verify().ok


# --- scores ------------------------------------------------------------------


def test_scores_int_and_float(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best", mode="max")
    assert linker.update(3, a)
    assert linker.best_score == 3.0 and type(linker.best_score) is float
    assert linker.update(3.5, a)


def test_scores_numpy(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best", mode="max")
    for i, score in enumerate([np.float32(1), np.float64(2), np.int64(3), np.array(4.0), np.array([5.0])]):
        assert linker.update(score, a), score
        assert linker.best_score == float(i + 1) and type(linker.best_score) is float
    json.dumps(linker.state_dict())
    with pytest.raises(ValueError, match=r"score must hold exactly one number.*\(2,\)"):
        linker.update(np.array([1.0, 2.0]), a)
    with pytest.raises(TypeError, match="score"):
        linker.update(np.bool_(True), a)


@pytest.mark.torch
def test_scores_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best", mode="min")
    assert linker.update(torch.tensor(0.5), a)
    assert linker.best_score == 0.5 and type(linker.best_score) is float
    assert linker.update(torch.tensor(0.25, dtype=torch.float64), a)
    assert not linker.update(torch.tensor(float("nan")), a)
    json.dumps(linker.state_dict())
    with pytest.raises(ValueError, match=r"score must hold exactly one number.*3 elements"):
        linker.update(torch.tensor([0.1, 0.2, 0.3]), a)


@pytest.mark.parametrize(
    ("score", "error"),
    [("0.5", TypeError), (None, TypeError), (True, TypeError), (b"1", TypeError), ([0.1], TypeError), (1j, TypeError)],
)
def test_scores_rejected(tmp_path: Path, score: Any, error: type[Exception]) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best")
    with pytest.raises(error, match="score"):
        linker.update(score, a)
    with pytest.raises(error, match="score"):
        linker.is_better(score)
    assert os.listdir(tmp_path) == ["a"]


# --- URLs ----------------------------------------------------------------------


def test_file_url(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    b = write_ckpt(tmp_path / "b.ckpt", 2)
    linker = BestLinker(f"file://{tmp_path}/best.ckpt")
    assert linker.link_path == str(tmp_path / "best.ckpt")
    assert linker.update(0.5, f"file://{a}")
    assert linker.update(0.4, str(b))
    assert_consistent(linker, 2)


@pytest.fixture
def memory_root() -> Any:
    fsspec = pytest.importorskip("fsspec")
    root = f"memory://bestlink-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    yield root, fs
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_memory_url(memory_root: Any) -> None:
    root, fs = memory_root
    for i, name in enumerate(["a.ckpt", "b.ckpt", "c.ckpt"]):
        fs.pipe_file(f"{root}/{name}", bytes([i]) * 100)
    linker = BestLinker(f"{root}/best.ckpt", mode="max")
    assert linker.update(1, f"{root}/a.ckpt", extra={"epoch": 0})
    assert fs.cat_file(f"{root}/best.ckpt") == bytes([0]) * 100
    assert linker.update(2, f"{root}/b.ckpt")
    assert not linker.update(1.5, f"{root}/c.ckpt")
    assert fs.cat_file(f"{root}/best.ckpt") == bytes([1]) * 100
    assert fs.cat_file(f"{root}/a.ckpt") == bytes([0]) * 100
    meta = read_record(f"{root}/best.ckpt")
    assert meta is not None and meta["score"] == 2.0 and meta["target"].endswith("b.ckpt")
    assert linker.verify().ok
    # a rerun recognises its own copy
    again = BestLinker(f"{root}/best.ckpt", mode="max")
    assert again.update(0, f"{root}/c.ckpt")
    assert fs.cat_file(f"{root}/best.ckpt") == bytes([2]) * 100
    # a foreign object at the alias is never replaced
    fs.pipe_file(f"{root}/other.ckpt", b"precious")
    with pytest.raises(AliasConflictError, match=r"other\.ckpt"):
        BestLinker(f"{root}/other.ckpt").update(0, f"{root}/a.ckpt")
    assert fs.cat_file(f"{root}/other.ckpt") == b"precious"
    with pytest.raises(ValueError, match="not possible"):
        BestLinker(f"{root}/x", link="symlink")
    with pytest.raises(ValueError, match="same filesystem"):
        linker.update(5, "/tmp/local.ckpt")


# --- property: the alias always resolves to the best score seen ---------------------

SCORES = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 2.5, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
)
N_PATHS = 4


class AliasMachine(RuleBasedStateMachine):
    """Any sequence of (score, path), with NaN, ties and repeated paths, on a fresh folder."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="bestlink-hyp-")
        self.paths = [str(write_ckpt(os.path.join(self.dir, f"c{i}"), i, size=64)) for i in range(N_PATHS)]
        self.linker: BestLinker
        self.best: tuple[float, int] | None = None  # the model: (score, path index)
        self.history: list[float] = []

    @initialize(
        mode=st.sampled_from(["min", "max"]),
        ties=st.sampled_from(["first", "last"]),
        link=st.sampled_from(["symlink", "hardlink", "copy", "auto"]),
    )
    def start(self, mode: str, ties: str, link: str) -> None:
        self.mode, self.ties, self.link = mode, ties, link
        self.linker = BestLinker(os.path.join(self.dir, "best"), mode=mode, ties=ties, link=link)  # type: ignore[arg-type]

    @rule(score=SCORES, index=st.integers(0, N_PATHS - 1))
    def update(self, score: float, index: int) -> None:
        # the policy itself is specified in test_score.py; here: the linker follows it
        expected = is_better(float(score), None if self.best is None else self.best[0], self.mode, self.ties)  # type: ignore[arg-type]
        assert self.linker.update(score, self.paths[index]) is expected
        if expected:
            self.best = (float(score), index)

    @rule()
    def resume(self) -> None:
        state = json.loads(json.dumps(self.linker.state_dict()))
        self.linker = BestLinker(os.path.join(self.dir, "best"), mode=self.mode, ties=self.ties, link=self.link)  # type: ignore[arg-type]
        self.linker.load_state_dict(state)

    @invariant()
    def alias_is_the_best(self) -> None:
        if self.best is None:
            assert self.linker.best_score is None
            assert not os.path.lexists(os.path.join(self.dir, "best"))
            return
        score, index = self.best
        assert self.linker.best_score == score
        assert self.linker.best_path == self.paths[index]
        assert fill_of(self.linker.link_path) == index
        assert read_record(self.linker.link_path)["score"] == score  # type: ignore[index]
        assert leftovers(self.dir) == []

    @invariant()
    def never_gets_worse(self) -> None:
        score = self.linker.best_score
        if score is None:
            return
        if self.history:
            last = self.history[-1]
            assert score <= last if self.mode == "min" else score >= last
        self.history.append(score)

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


AliasMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
test_alias_machine = AliasMachine.TestCase


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "copy"])
def test_alias_folder_is_created_on_demand(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "a.ckpt"
    target.write_bytes(b"checkpoint")
    linker = BestLinker(tmp_path / "not" / "yet" / "best.ckpt", link=kind)  # type: ignore[arg-type]
    assert linker.update(1.0, target)
    assert (tmp_path / "not" / "yet" / "best.ckpt").read_bytes() == b"checkpoint"
    assert linker.verify().ok


def test_record_changed_by_someone_else_is_read_again(tmp_path: Path) -> None:
    # the linker remembers the record it wrote; a change made behind its back must still count
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    assert linker.update(2.0, a)
    record = Path(linker.record_path)
    text = record.read_text()
    record.write_text(text.replace('"lightning-bestlink/1"', '"lightning-bestlink/9"'))  # in place, same size
    with pytest.raises(AliasConflictError):
        linker.update(1.0, b)
    assert (tmp_path / "best.ckpt").read_bytes() == b"a"


def test_a_linker_pickles_and_deep_copies_after_updates(tmp_path: Path) -> None:
    import copy

    a, b = write_ckpt(tmp_path / "a", 1), write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, a)
    restored = pickle.loads(pickle.dumps(linker))  # Lightning pickles and deep-copies callbacks
    assert (restored.best_score, restored.best_path) == (0.5, str(a)) and restored.verify().ok
    clone = copy.deepcopy(linker)
    assert clone.update(0.4, b)  # its own lock, its own state
    assert fill_of(linker.link_path) == 2 and linker.best_score == 0.5


def test_on_move_is_told_each_move_with_the_record_and_never_a_kept_best(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    a, b = write_ckpt(tmp_path / "a.ckpt", 1), write_ckpt(tmp_path / "b.ckpt", 2)
    linker = BestLinker(tmp_path / "best.ckpt", on_move=seen.append)
    assert linker.update(0.5, a, extra={"epoch": 1})
    assert not linker.update(0.9, b)  # not better: the hook is not called
    assert linker.follow(0.7, b)
    assert [(r["target"], r["score"], r["extra"]) for r in seen] == [
        (str(a), 0.5, {"epoch": 1}),
        (str(b), 0.7, {}),
    ]
    assert seen[-1] == read_record(linker.link_path)  # the record as read_record returns it


def test_an_on_move_that_raises_is_reported_and_changes_nothing(tmp_path: Path) -> None:
    def broken(record: dict[str, Any]) -> None:
        raise RuntimeError("evaluation server down")

    a = write_ckpt(tmp_path / "a.ckpt", 1)
    linker = BestLinker(tmp_path / "best.ckpt", on_move=broken)
    with pytest.warns(BestLinkWarning, match=r"on_move .* raised RuntimeError: evaluation server down; the alias"):
        assert linker.update(0.5, a)
    assert linker.best_path == str(a) and fill_of(linker.link_path) == 1 and linker.verify().ok


def test_on_move_must_be_callable(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"on_move must be a function taking the record \(or None\), got 'print'"):
        BestLinker(tmp_path / "best.ckpt", on_move="print")  # type: ignore[arg-type]


def test_state_dict_after_a_save_is_the_state_once_it_is_linked(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    ahead = linker.state_dict(after=(0.25, tmp_path / "next.ckpt"))  # no I/O: the file need not exist
    assert (ahead["best_score"], ahead["best_path"]) == (0.25, str(tmp_path / "next.ckpt"))
    assert linker.state_dict()["best_path"] is None  # the linker itself is unchanged


def test_the_metadata_names_of_0_1_still_work_with_a_deprecation_warning(tmp_path: Path) -> None:
    import lightning_bestlink

    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    with pytest.warns(DeprecationWarning, match=r"read_metadata is deprecated, use lightning_bestlink\.read_record"):
        assert lightning_bestlink.read_metadata(linker.link_path) == read_record(linker.link_path)
    with pytest.warns(DeprecationWarning, match=r"METADATA_SUFFIX is deprecated"):
        assert lightning_bestlink.METADATA_SUFFIX == lightning_bestlink.RECORD_SUFFIX == ".bestlink.json"
    with pytest.warns(DeprecationWarning, match=r"metadata_path is deprecated, use BestLinker\.record_path"):
        assert linker.metadata_path == linker.record_path
    with pytest.warns(DeprecationWarning, match=r"from_metadata\(\) is deprecated, use BestLinker\.from_record\(\)"):
        assert BestLinker.from_metadata(linker.link_path).best_path == linker.best_path


def test_a_latest_alias_is_rebuilt_from_its_record_as_a_latest_alias(tmp_path: Path) -> None:
    from lightning_bestlink import LatestLinker

    last = LatestLinker(tmp_path / "last.ckpt")
    last.update(7, write_ckpt(tmp_path / "step7.ckpt", 7))
    again = LatestLinker.from_record(last.link_path)
    assert (type(again), again.latest_step, again.best_path) == (LatestLinker, 7, last.best_path)


@pytest.mark.parametrize("target", ["same", "other"])
def test_repair_keeps_the_records_extra_only_for_the_checkpoint_it_describes(tmp_path: Path, target: str) -> None:
    # the record's extra (epoch, step, file name) describes its own target: a repair that points the
    # alias at another checkpoint (restored from a state) must not hand it the old description
    old = BestLinker(tmp_path / "best.ckpt")
    old.update(1.0, write_ckpt(tmp_path / "e1.ckpt", 1), extra={"epoch": 1, "step": 8})
    best = tmp_path / ("e1.ckpt" if target == "same" else "e4.ckpt")
    write_ckpt(best, 4)
    (tmp_path / "best.ckpt").unlink()
    restored = BestLinker(tmp_path / "best.ckpt")
    restored.load_state_dict({"best_score": 0.2, "best_path": str(best)})
    assert restored.repair().ok
    record = read_record(tmp_path / "best.ckpt")
    assert record is not None and record["target"] == str(best)
    assert record["extra"] == ({"epoch": 1, "step": 8} if target == "same" else {})
