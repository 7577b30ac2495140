"""The latest alias (LatestLinker), the retention policy and save_and_link for plain loops (no torch).

Retention keeps the ``keep_best`` best by score, the current best and the latest, and deletes
the rest, after the aliases moved. What it may delete is what its own run saved (or the run it
resumed from), on the authority of that run's state, carried inside the checkpoints: never a
file of the folder. It deletes a checkpoint only if it is still the file or directory saved,
owned by this user, reached from the alias's folder without following a link.
"""

from __future__ import annotations

import contextlib
import doctest
import json
import math
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests._fork import run_forked
from tests._helpers import KINDS, as_nobody, as_root, fill_of, leftovers, write_ckpt

from lightning_bestlink import (
    AliasWriteError,
    BestLinker,
    BestLinkWarning,
    LatestLinker,
    Retention,
    _keep,
    latest,
    loop,
    read_record,
    retention,
    save_and_link,
)
from lightning_bestlink._ranks import on_rank_zero
from lightning_bestlink._score import is_better
from lightning_bestlink._storage import _files, _remove
from lightning_bestlink._storage import local as local_storage

SCORES = [3.0, 1.0, 2.0, 0.5, 4.0, 0.7, 5.0]  # mode="min": the best is epoch 3
REPO = str(Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("module", [_keep, latest, loop, retention])
def test_docstring_examples(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


# --- the policy (pure) ---------------------------------------------------------------------------


saved_lists = st.lists(
    st.one_of(st.none(), st.floats(allow_infinity=True), st.sampled_from([0.0, 1.0, 2.0])), max_size=12
).map(lambda scores: [_keep.Saved(f"e{i}", s, i) for i, s in enumerate(scores)])


@given(
    saved=saved_lists,
    keep_best=st.integers(0, 4),
    mode=st.sampled_from(["min", "max"]),
    ties=st.sampled_from(["first", "last"]),
    protect=st.sets(st.integers(0, 12)),
)
def test_the_policy_deletes_only_what_it_may(
    saved: list[_keep.Saved], keep_best: int, mode: Any, ties: Any, protect: set[int]
) -> None:
    protected = {f"e{i}" for i in protect}
    gone = _keep.to_delete(saved, keep_best=keep_best, mode=mode, ties=ties, protected=protected)
    kept = [s for s in saved if s not in gone]
    assert all(s in saved for s in gone) and gone == sorted(gone, key=lambda s: s.seq)
    assert not {s.path for s in gone} & protected, "what an alias points at stays"
    if saved:
        assert max(saved, key=lambda s: s.seq) in kept, "the newest save stays"
    assert all(s.score is not None for s in gone), "a save without a score cannot be ranked: it stays"
    # the kept scored saves that are not otherwise protected are at most keep_best, and none of
    # them is worse than one that went
    newest = max((s.seq for s in saved), default=-1)
    ranked_kept = [s for s in kept if s.score is not None and s.path not in protected and s.seq != newest]
    assert len(ranked_kept) <= keep_best
    for k in ranked_kept:
        for g in gone:
            assert not strictly_better(g.score, k.score, mode), f"{g} went while the worse {k} stayed"


def strictly_better(a: Any, b: Any, mode: Any) -> bool:
    """``a`` beats ``b`` whatever the ties: the alias's own rule, with a NaN worse than any number."""
    if math.isnan(a):
        return False
    return math.isnan(b) or is_better(a, b, mode, "first")


def test_the_policy_keeps_the_k_best_the_protected_and_the_newest() -> None:
    saved = [_keep.Saved(f"e{i}", s, i) for i, s in enumerate(SCORES)]
    gone = _keep.to_delete(saved, keep_best=2, mode="min", ties="first", protected={"e4"})
    assert [s.path for s in gone] == ["e0", "e1", "e2"]  # kept: e3, e5 (best two), e4 (protected), e6 (newest)
    gone = _keep.to_delete(saved, keep_best=0, mode="max", ties="first")
    assert [s.path for s in gone] == ["e0", "e1", "e2", "e3", "e4", "e5"]
    ties = [_keep.Saved("a", 1.0, 1), _keep.Saved("b", 1.0, 2), _keep.Saved("c", 9.0, 3)]
    assert [s.path for s in _keep.to_delete(ties, keep_best=1, mode="min", ties="first")] == ["b"]
    assert [s.path for s in _keep.to_delete(ties, keep_best=1, mode="min", ties="last")] == ["a"]
    nan = [_keep.Saved("n", float("nan"), 1), _keep.Saved("x", 5.0, 2), _keep.Saved("y", 6.0, 3)]
    assert [s.path for s in _keep.to_delete(nan, keep_best=1, mode="min", ties="first")] == ["n"]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_keep_best_must_be_a_whole_number(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match=rf"keep_best must be a whole number >= 0.*got {bad!r}"):
        Retention(BestLinker(tmp_path / "best.ckpt"), keep_best=bad)


@pytest.mark.parametrize(
    ("protect", "message"),
    [
        ([None], r"protect\[0\] must be a BestLinker or LatestLinker, got NoneType None"),
        (["best.ckpt"], r"protect\[0\] must be a BestLinker or LatestLinker, got str"),
        ("sweep.ckpt", r"protect must be a list of BestLinker aliases, got 'sweep.ckpt'"),
        (None, r"protect must be a list of BestLinker aliases, got None"),
    ],
)
def test_protect_must_be_a_list_of_aliases(tmp_path: Path, protect: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Retention(BestLinker(tmp_path / "best.ckpt"), protect=protect)


def test_protect_given_one_alias_instead_of_a_list(tmp_path: Path) -> None:
    sweep = BestLinker(tmp_path / "sweep.ckpt")
    with pytest.raises(TypeError, match=r"protect must be a list of BestLinker aliases.*protect=\[sweep\]"):
        Retention(BestLinker(tmp_path / "best.ckpt"), protect=sweep)  # type: ignore[arg-type]


# --- the latest alias ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_latest_alias_follows_the_step_and_keeps_every_guarantee(tmp_path: Path, kind: str) -> None:
    paths = [write_ckpt(tmp_path / f"step={s}.ckpt", s) for s in (10, 20, 30)]
    last = LatestLinker(tmp_path / "last.ckpt", link=kind)  # type: ignore[arg-type]
    assert last.update(10, paths[0]) and last.update(20, paths[1])
    assert not last.update(15, paths[0]), "an earlier step never moves it back"
    assert last.update(20, paths[0]), "the same step saved again is the newer checkpoint"
    assert last.update(30, paths[2], extra={"epoch": 3})
    assert fill_of(last.link_path) == 30 and last.latest_step == 30 and last.verify().ok
    record = json.loads(Path(last.record_path).read_text())
    assert record["extra"] == {"step": 30, "follows": "latest", "epoch": 3}
    assert record["score"] == 30 and record["mode"] == "max"
    assert leftovers(tmp_path) == []
    # resumed in a new linker: its state restores the step; a damaged alias is rebuilt
    state = last.state_dict()
    os.unlink(last.link_path)
    again = LatestLinker(tmp_path / "last.ckpt", link=kind)  # type: ignore[arg-type]
    again.load_state_dict(state)
    assert again.repair().ok and fill_of(again.link_path) == 30 and again.latest_step == 30
    assert not again.update(29, paths[1])


def test_latest_alias_refuses_a_best_alias_state_and_bad_steps(tmp_path: Path) -> None:
    write_ckpt(tmp_path / "a.ckpt", 1)
    best = BestLinker(tmp_path / "best.ckpt")
    best.update(0.5, tmp_path / "a.ckpt")
    last = LatestLinker(tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=r"saved with mode='min'.*construct the linker with mode='min'"):
        last.load_state_dict(best.state_dict())
    for bad, exc in ((-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError), (None, TypeError)):
        with pytest.raises(exc, match="step must be a whole number >= 0"):
            last.update(bad, tmp_path / "a.ckpt")
    assert last.best_path is None and not os.path.lexists(last.link_path)


# --- retention: what it deletes, and what it never deletes -----------------------------------------


def run_epochs(
    tmp_path: Path, scores: list[float], *, kind: str = "symlink", target: str = "file", keep_best: int = 1
) -> tuple[BestLinker, LatestLinker, Retention]:
    best = BestLinker(tmp_path / "best.ckpt", link=kind)  # type: ignore[arg-type]
    last = LatestLinker(tmp_path / "last.ckpt", link=kind)  # type: ignore[arg-type]
    keep = Retention(best, last, keep_best=keep_best)
    for epoch, score in enumerate(scores):
        path = write_ckpt(tmp_path / f"epoch={epoch}.ckpt", epoch, kind=target)
        best.update(score, path)
        last.update(epoch, path)
        keep.saved(path, score)
        assert best.verify().ok and last.verify().ok, "every alias resolves after every deletion"
    return best, last, keep


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("epoch="))


def listed(keep: Retention) -> list[str]:
    return [e["path"] for e in keep.state_dict()["saved"]]


@pytest.mark.parametrize(
    ("kind", "target"), [(k, "file") for k in KINDS] + [(k, "dir") for k in KINDS if k != "hardlink"]
)
def test_retention_keeps_the_best_the_k_best_and_the_latest(tmp_path: Path, kind: str, target: str) -> None:
    best, last, keep = run_epochs(tmp_path, SCORES, kind=kind, target=target, keep_best=2)
    # the two best (epochs 3 and 5) and the latest (6)
    assert checkpoints(tmp_path) == ["epoch=3.ckpt", "epoch=5.ckpt", "epoch=6.ckpt"]
    assert fill_of(best.link_path) == 3 and fill_of(last.link_path) == 6
    assert leftovers(tmp_path) == []
    assert listed(keep) == ["epoch=3.ckpt", "epoch=5.ckpt", "epoch=6.ckpt"]
    assert not os.path.exists(str(best.link_path) + retention.OLD_LIST_SUFFIX), "no list in the folder"


def test_keep_best_zero_keeps_the_best_and_the_latest(tmp_path: Path) -> None:
    run_epochs(tmp_path, SCORES, keep_best=0)
    assert checkpoints(tmp_path) == ["epoch=3.ckpt", "epoch=6.ckpt"]


def save_one(best: BestLinker, keep: Retention, path: Path, score: float, fill: int) -> list[str]:
    write_ckpt(path, fill)
    best.update(score, path)
    return keep.saved(path, score)


@pytest.mark.parametrize(
    ("replace", "detail"),
    [
        (lambda p: write_ckpt(p, 77, size=100), "another file is there now"),
        (lambda p: (p.unlink(), p.mkdir()), "a directory is there now, where a file was saved"),
        (lambda p: (p.unlink(), p.symlink_to("epoch=99-mine.ckpt")), "a symbolic link is there now"),
        (lambda p: (p.unlink(), os.mkfifo(p)), "a special file is there now"),
    ],
)
def test_never_deletes_what_it_did_not_see_saved_or_what_changed_since(
    tmp_path: Path, replace: Any, detail: str
) -> None:
    foreign = write_ckpt(tmp_path / "epoch=99-mine.ckpt", 99)
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=1)
    save_one(best, keep, tmp_path / "epoch=0.ckpt", 1.0, 0)
    save_one(best, keep, tmp_path / "epoch=1.ckpt", 2.0, 1)
    replace(tmp_path / "epoch=1.ckpt")  # someone puts something else at epoch=1.ckpt: no longer ours
    write_ckpt(tmp_path / "epoch=2.ckpt", 2)
    best.update(3.0, tmp_path / "epoch=2.ckpt")
    with pytest.warns(
        BestLinkWarning, match=rf"epoch=1\.ckpt' is no longer the checkpoint this run saved.*{detail}"
    ) as seen:
        assert keep.saved(tmp_path / "epoch=2.ckpt", 3.0) == []
    assert seen[0].filename == __file__, "shown at the line that called saved()"
    assert os.path.lexists(tmp_path / "epoch=1.ckpt") and fill_of(foreign) == 99
    assert listed(keep) == ["epoch=0.ckpt", "epoch=2.ckpt"], "forgotten, never retried"


def test_never_deletes_what_an_alias_points_at(tmp_path: Path) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    acc = BestLinker(tmp_path / "best-acc.ckpt", mode="max")  # another metric's alias, made known to it
    keep = Retention(best, keep_best=0, protect=[acc])
    for epoch, (loss, accuracy) in enumerate([(1.0, 0.9), (0.5, 0.1), (0.7, 0.2)]):
        path = write_ckpt(tmp_path / f"epoch={epoch}.ckpt", epoch)
        best.update(loss, path)
        acc.update(accuracy, path)
        keep.saved(path, loss)
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    # resumed in a new process whose best linker has no state: the alias on disk still resolves to epoch 1
    fresh = Retention(BestLinker(tmp_path / "best.ckpt"), keep_best=0)
    fresh.load_state_dict(keep.state_dict())
    path = write_ckpt(tmp_path / "epoch=3.ckpt", 3)
    assert fresh.saved(path, 0.9) == [str(tmp_path / "epoch=0.ckpt"), str(tmp_path / "epoch=2.ckpt")]
    assert checkpoints(tmp_path) == ["epoch=1.ckpt", "epoch=3.ckpt"]
    assert os.readlink(tmp_path / "best.ckpt") == "epoch=1.ckpt"


def test_a_best_saved_before_the_list_began_counts_among_the_best_and_is_never_deleted(tmp_path: Path) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    best.update(0.1, write_ckpt(tmp_path / "pretrained.ckpt", 9))  # linked, never listed
    keep = Retention(best, keep_best=1)
    after = []
    for epoch, score in enumerate([0.5, 0.6, 0.05, 0.7]):
        save_one(best, keep, tmp_path / f"epoch={epoch}.ckpt", score, epoch)
        after.append(checkpoints(tmp_path))
    # epoch 0 went when epoch 1 came: the one best slot was the pre-existing best's
    assert after[1] == ["epoch=1.ckpt"]
    assert after[3] == ["epoch=2.ckpt", "epoch=3.ckpt"]
    assert fill_of(tmp_path / "pretrained.ckpt") == 9, "not seen saved: never deleted, even once not the best"


def test_a_file_that_cannot_be_deleted_is_retried_after_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    assert save_one(best, keep, tmp_path / "epoch=0.ckpt", 1.0, 0) == []
    assert save_one(best, keep, tmp_path / "epoch=1.ckpt", 2.0, 1) == []
    with monkeypatch.context() as m:
        m.setattr(os, "unlink", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
        with pytest.warns(BestLinkWarning, match=r"could not delete .*epoch=1\.ckpt.*Permission denied.*tried again"):
            assert save_one(best, keep, tmp_path / "epoch=2.ckpt", 3.0, 2) == []
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"], "put back under its name"
    assert leftovers(tmp_path) == []
    gone = save_one(best, keep, tmp_path / "epoch=3.ckpt", 4.0, 3)
    assert gone == [str(tmp_path / "epoch=1.ckpt"), str(tmp_path / "epoch=2.ckpt")]
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=3.ckpt"]


def test_a_directory_half_deleted_is_finished_after_the_next_save_and_a_look_alike_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    for epoch, score in enumerate([1.0, 2.0]):
        path = write_ckpt(tmp_path / f"epoch={epoch}.ckpt", epoch, kind="dir")
        best.update(score, path)
        keep.saved(path, score)
    # someone else's hidden folder with the name a deletion would use: not ours, whatever its name
    look_alike = write_ckpt(tmp_path / f".epoch=1.ckpt{_remove.TRASH}4242-0123abcd", 5, kind="dir")
    real_remove = _remove._remove_at

    def one_shard_then_fail(fd: int, name: str, kind: Any) -> None:
        os.unlink(os.path.join(name, "shard-0.bin"), dir_fd=fd)
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(_remove, "_remove_at", one_shard_then_fail)
        path = write_ckpt(tmp_path / "epoch=2.ckpt", 2, kind="dir")
        best.update(3.0, path)
        with pytest.warns(BestLinkWarning, match=r"could not delete .*epoch=1\.ckpt.*tried again"):
            keep.saved(path, 3.0)
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=2.ckpt"], "half a checkpoint never under its name"
    assert real_remove is _remove._remove_at
    path = write_ckpt(tmp_path / "epoch=3.ckpt", 3, kind="dir")
    best.update(4.0, path)
    assert keep.saved(path, 4.0) == [str(tmp_path / "epoch=1.ckpt"), str(tmp_path / "epoch=2.ckpt")]
    assert leftovers(tmp_path) == [look_alike.name] and fill_of(look_alike) == 5


def test_saved_refuses_what_it_cannot_manage(tmp_path: Path) -> None:
    best = BestLinker(tmp_path / "run" / "best.ckpt")
    keep = Retention(best)
    outside = write_ckpt(tmp_path / "elsewhere.ckpt", 1)
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match=r"only inside the best alias's folder .*elsewhere\.ckpt"):
        keep.saved(outside, 1.0)
    (tmp_path / "run" / "out.ckpt").symlink_to(outside)
    with pytest.raises(ValueError, match=r"only inside the best alias's folder .*out\.ckpt"):
        keep.saved(tmp_path / "run" / "out.ckpt", 1.0)
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        keep.saved(tmp_path / "run" / "missing.ckpt", 1.0)
    write_ckpt(tmp_path / "run" / "a.ckpt", 1)
    best.update(1.0, tmp_path / "run" / "a.ckpt")
    with pytest.raises(ValueError, match="is an alias, not a checkpoint"):
        keep.saved(best.link_path, 1.0)
    with pytest.raises(ValueError, match=r"is the record of an alias, not a checkpoint"):
        keep.saved(best.record_path, 1.0)
    with pytest.raises(TypeError, match="score must be a real number"):
        keep.saved(tmp_path / "run" / "a.ckpt", "0.5")
    assert keep.state_dict()["saved"] == [] and fill_of(outside) == 1


def test_saved_refuses_a_nul_byte_and_a_symlink_loop_with_the_argument_named(tmp_path: Path) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best)
    with pytest.raises(ValueError, match=r"path must not contain a NUL byte, got '.*a\\x00b\.ckpt'"):
        keep.saved(str(tmp_path / "a\0b.ckpt"), 1.0)
    (tmp_path / "loop-a.ckpt").symlink_to("loop-b.ckpt")
    (tmp_path / "loop-b.ckpt").symlink_to("loop-a.ckpt")
    with pytest.raises(ValueError, match=r"path '.*loop-a\.ckpt' is a loop of symbolic links"):
        keep.saved(tmp_path / "loop-a.ckpt", 1.0)
    with pytest.raises(ValueError, match="path must not contain a NUL byte"):
        save_and_link(json_save, str(tmp_path / "x\0.ckpt"), {}, score=1.0, retention=keep)
    assert keep.state_dict()["saved"] == []


def test_a_path_that_is_a_symlink_is_refused_and_what_it_leads_to_is_never_listed(tmp_path: Path) -> None:
    pretrained = write_ckpt(tmp_path / "pretrained.ckpt", 9)  # the user's own, reached by a link
    (tmp_path / "epoch=0.ckpt").symlink_to(pretrained.name)
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    with pytest.raises(ValueError, match=r"path '.*epoch=0\.ckpt' is a symbolic link.*pretrained\.ckpt.*not a link"):
        keep.saved(tmp_path / "epoch=0.ckpt", 0.9)
    with pytest.raises(ValueError, match=r"epoch=0\.ckpt' is a symbolic link"):  # before save() writes through it
        save_and_link(json_save, tmp_path / "epoch=0.ckpt", {"keep": keep}, score=0.9, retention=keep)
    assert listed(keep) == [] and fill_of(pretrained) == 9 and os.path.islink(tmp_path / "epoch=0.ckpt")


# --- issue 21: a file in the folder cannot make it delete anything ---------------------------------


def plant_old_list(folder: Path, entries: list[dict[str, Any]]) -> Path:
    """The retention list of 0.1, as anyone who can write the folder could plant it."""
    record = {"format": "lightning-bestlink-retention/1", "alias": "best.ckpt", "mode": "min", "ties": "first"}
    path = folder / "best.ckpt.bestlink.retention.json"
    path.write_text(json.dumps({**record, "saved": entries}))
    return path


def old_entry(folder: Path, name: str, kind: str) -> dict[str, Any]:
    """An entry of 0.1's list with the right fingerprint: size and mtime, which anyone reads with stat."""
    st_ = os.lstat(folder / name)
    fingerprint = [st_.st_size, st_.st_mtime_ns]
    return {"path": name, "score": 9.0, "step": 1, "seq": 1, "kind": kind, "fingerprint": fingerprint}


@pytest.mark.parametrize(
    ("name", "kind", "make"),
    [
        ("notes.txt", "file", lambda p: p.write_text("my notes")),
        ("data", "dir", lambda p: write_ckpt(p, 4, kind="dir")),
        ("private/keys.pem", "file", lambda p: (p.parent.mkdir(), p.write_text("key"))),
        (".best.ckpt.bestlink.lock", "file", lambda p: p.write_text("")),
        ("link", "file", lambda p: p.symlink_to("notes-elsewhere.txt")),
    ],
)
def test_a_planted_list_cannot_make_it_delete_a_file_of_the_right_size_and_time(
    tmp_path: Path, name: str, kind: str, make: Any, recwarn: pytest.WarningsRecorder
) -> None:
    (tmp_path / "notes-elsewhere.txt").write_text("other notes")
    make(tmp_path / name)
    plant_old_list(tmp_path, [old_entry(tmp_path, name, kind)])
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    save_one(best, keep, tmp_path / "a.ckpt", 1.0, 1)
    save_one(best, keep, tmp_path / "b.ckpt", 0.5, 2)
    assert os.path.lexists(tmp_path / name)
    assert sorted(p.name for p in tmp_path.glob("?.ckpt")) == ["b.ckpt"], "what it saved, it still deletes"
    assert said(recwarn, r"retention list of lightning-bestlink 0\.1: it is no longer read") == 1, "said once"


def said(recwarn: pytest.WarningsRecorder, pattern: str) -> int:
    """How many BestLinkWarnings matched ``pattern`` (asserted after the files, which matter most)."""
    return sum(issubclass(w.category, BestLinkWarning) and bool(re.search(pattern, str(w.message))) for w in recwarn)


@as_root
def test_another_users_planted_list_in_a_shared_folder_deletes_nothing(
    shared_folder: Path, recwarn: pytest.WarningsRecorder
) -> None:
    dataset = write_ckpt(shared_folder / "dataset", 7, kind="dir")  # root's, which nobody may delete
    notes = shared_folder / "notes.txt"
    notes.write_text("root's notes")
    as_nobody(
        """
        folder = Path(sys.argv[1])
        entries = []
        for name, kind in (("dataset", "dir"), ("notes.txt", "file")):
            st = os.lstat(folder / name)
            entries.append({"path": name, "score": 9.0, "step": 1, "seq": 1, "kind": kind,
                            "fingerprint": [st.st_size, st.st_mtime_ns]})
        head = {"format": "lightning-bestlink-retention/1", "alias": "best.ckpt", "mode": "min", "ties": "first"}
        (folder / "best.ckpt.bestlink.retention.json").write_text(json.dumps({**head, "saved": entries}))
        """,
        str(shared_folder),
    )
    assert (shared_folder / "best.ckpt.bestlink.retention.json").stat().st_uid == 65534
    best = BestLinker(shared_folder / "best.ckpt")  # root's run
    keep = Retention(best, keep_best=0)
    for epoch, score in enumerate([1.0, 0.5, 0.7]):
        save_one(best, keep, shared_folder / f"epoch={epoch}.ckpt", score, epoch)
    assert fill_of(dataset) == 7 and notes.read_text() == "root's notes"
    assert checkpoints(shared_folder) == ["epoch=1.ckpt", "epoch=2.ckpt"]
    assert said(recwarn, "no longer read") == 1


@as_root
def test_a_saved_checkpoint_now_owned_by_another_user_is_never_deleted(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    save_one(best, keep, tmp_path / "epoch=0.ckpt", 1.0, 0)
    save_one(best, keep, tmp_path / "epoch=1.ckpt", 2.0, 1)
    os.chown(tmp_path / "epoch=1.ckpt", 65534, 65534)  # handed over: same inode, size and time
    save_one(best, keep, tmp_path / "epoch=2.ckpt", 3.0, 2)
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    assert said(recwarn, r"epoch=1\.ckpt.*owned by another user \(uid 65534\)") == 1


@as_root
def test_a_directory_checkpoint_holding_a_file_of_another_user_is_never_deleted(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    for epoch, score in enumerate([1.0, 2.0]):
        path = write_ckpt(tmp_path / f"epoch={epoch}.ckpt", epoch, kind="dir")
        best.update(score, path)
        keep.saved(path, score)
    theirs = tmp_path / "epoch=1.ckpt" / "shard-1.bin"
    os.chown(theirs, 65534, 65534)  # handed to another user: the directory itself is unchanged
    path = write_ckpt(tmp_path / "epoch=2.ckpt", 2, kind="dir")
    best.update(3.0, path)
    keep.saved(path, 3.0)
    assert fill_of(tmp_path / "epoch=1.ckpt") == 1, "all of it, under its name"
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"] and leftovers(tmp_path) == []
    assert said(recwarn, r"epoch=1\.ckpt.*shard-1\.bin' \(uid 65534\), owned by another user") == 1


@as_root
def test_a_file_of_another_user_arriving_in_a_directory_while_it_is_deleted_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    from lightning_bestlink._storage import _remove

    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    for epoch, score in enumerate([1.0, 2.0]):
        path = write_ckpt(tmp_path / f"epoch={epoch}.ckpt", epoch, kind="dir")
        best.update(score, path)
        keep.saved(path, score)
    real = _remove._changed_inside

    def arrives_after_the_look(fd: int, name: str, ident: Any) -> Any:
        found = real(fd, name, ident)
        os.chown(os.path.join(name, "shard-1.bin"), 65534, 65534, dir_fd=fd)
        return found

    monkeypatch.setattr(_remove, "_changed_inside", arrives_after_the_look)
    path = write_ckpt(tmp_path / "epoch=2.ckpt", 2, kind="dir")
    best.update(3.0, path)
    keep.saved(path, 3.0)
    [hidden] = leftovers(tmp_path)
    assert sorted(os.listdir(tmp_path / hidden)) == ["shard-1.bin"], "theirs stays, with the folder around it"
    assert said(recwarn, r"could not delete .*epoch=1\.ckpt.*tried again") == 1


def save_nested_dir(best: BestLinker, keep: Retention, path: Path, score: float) -> list[str]:
    """A directory checkpoint as sharded saves write one: a file at the top, then a sub-folder filled last."""
    write_ckpt(path / ".metadata", 0)
    write_ckpt(path / "model" / "shard-0.distcp", 0)  # written after the top last changed
    best.update(score, path)
    return keep.saved(path, score)


def a_second_later(*paths: Path) -> None:
    """As if written a second later: a file system's clock ticks coarser than a test runs."""
    for p in paths:
        st_ = os.lstat(p)
        os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9), follow_symlinks=False)


@pytest.mark.parametrize(
    "change",
    [
        lambda ckpt: (ckpt / "model" / "my_eval.json").write_text("hours of evaluation") and ckpt / "model",
        lambda ckpt: (ckpt / "model" / "shard-0.distcp").write_bytes(b"fine-tuned by hand") and ckpt / "model",
    ],
    ids=["a file added in a sub-folder", "a file in a sub-folder rewritten"],
)
def test_a_directory_checkpoint_changed_below_its_top_after_the_save_is_kept_whole(
    tmp_path: Path, change: Any, recwarn: pytest.WarningsRecorder
) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    assert save_nested_dir(best, keep, tmp_path / "epoch=0.ckpt", 0.5) == []
    assert save_nested_dir(best, keep, tmp_path / "epoch=1.ckpt", 0.6) == []
    before = {p.relative_to(tmp_path) for p in (tmp_path / "epoch=1.ckpt").rglob("*")}
    folder = change(tmp_path / "epoch=1.ckpt")
    a_second_later(*folder.iterdir(), folder)
    assert save_nested_dir(best, keep, tmp_path / "epoch=2.ckpt", 0.7) == []
    assert {p.relative_to(tmp_path) for p in (tmp_path / "epoch=1.ckpt").rglob("*")} >= before, "all of it"
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"] and leftovers(tmp_path) == []
    assert said(recwarn, r"epoch=1\.ckpt' is no longer.*'model[^']*' inside it was modified or added after") == 1
    gone = save_nested_dir(best, keep, tmp_path / "epoch=3.ckpt", 0.4)
    assert gone == [str(tmp_path / "epoch=0.ckpt"), str(tmp_path / "epoch=2.ckpt")], "unchanged ones still go"
    assert checkpoints(tmp_path) == ["epoch=1.ckpt", "epoch=3.ckpt"] and leftovers(tmp_path) == []


def test_a_folder_swapped_for_a_symlink_never_leads_the_deletion_out(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    best = BestLinker(run / "best.ckpt")
    keep = Retention(best, keep_best=0)
    save_one(best, keep, run / "sub" / "epoch=0.ckpt", 5.0, 0)
    save_one(best, keep, run / "epoch=1.ckpt", 6.0, 1)
    # sub moves out of the run folder (the very same files), and a symlink takes its place
    os.rename(run / "sub", outside / "sub")
    (run / "sub").symlink_to(outside / "sub")
    save_one(best, keep, run / "epoch=2.ckpt", 1.0, 2)
    assert fill_of(outside / "sub" / "epoch=0.ckpt") == 0
    assert sorted(p.name for p in run.glob("epoch=*")) == ["epoch=2.ckpt"]
    assert said(recwarn, r"sub/epoch=0\.ckpt' is no longer.*a symbolic link .* on the way") == 1


def test_a_file_moved_onto_the_path_while_it_is_deleted_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    save_one(best, keep, tmp_path / "epoch=0.ckpt", 1.0, 0)
    victim = tmp_path / "epoch=1.ckpt"
    save_one(best, keep, victim, 2.0, 1)
    saved_inode = victim.stat().st_ino
    theirs = write_ckpt(tmp_path / "theirs.tmp", 42)
    real = _files.ident_of
    moved = []

    def move_theirs_in_right_after_the_check(st_: os.stat_result) -> Any:
        ident = real(st_)
        if st_.st_ino == saved_inode and not moved:
            moved.append(True)
            os.replace(theirs, victim)  # another process moves its file onto the listed path
        return ident

    path = write_ckpt(tmp_path / "epoch=2.ckpt", 2)
    best.update(3.0, path)
    keep.record(path, 3.0)
    with monkeypatch.context() as m:
        for module in (_files, local_storage):
            m.setattr(module, "ident_of", move_theirs_in_right_after_the_check)
        with pytest.warns(BestLinkWarning, match=r"epoch=1\.ckpt.*another file is there now.*put back"):
            assert keep.prune() == []
    assert moved and fill_of(victim) == 42, "their file, under the name it was moved to"
    assert leftovers(tmp_path) == []


RUN = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {repo!r})
    from tests._helpers import write_ckpt
    from lightning_bestlink import BestLinker, LatestLinker, Retention

    folder, prefix, keep_best, scores = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    best = BestLinker(os.path.join(folder, "best.ckpt"))
    last = LatestLinker(os.path.join(folder, "last.ckpt"))
    keep = Retention(best, last, keep_best=keep_best)
    for epoch, score in enumerate(map(float, scores)):
        if not sys.stdin.readline():  # the parent says when to save the next one
            break
        path = write_ckpt(os.path.join(folder, f"{{prefix}}{{epoch}}.ckpt"), epoch)
        best.update(score, path)
        last.update(epoch, path)
        keep.saved(path, score)
        print("saved", flush=True)
    """
)


class Run:
    """A training run in its own process, saving one checkpoint each time it is told to."""

    def __init__(self, tmp_path: Path, folder: Path, prefix: str, keep_best: int, scores: list[float]) -> None:
        script = tmp_path / "run.py"
        script.write_text(RUN.format(repo=REPO))
        args = [sys.executable, str(script), str(folder), prefix, str(keep_best), *map(str, scores)]
        self.prefix, self.folder = prefix, folder
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def save(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line == b"saved\n", self.finish()

    def finish(self) -> str:
        _, err = self.proc.communicate(timeout=120)
        return err.decode()[-2000:]

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob(f"{self.prefix}*.ckpt"))


def test_two_runs_in_one_folder_never_delete_each_others_checkpoints(tmp_path: Path) -> None:
    # two runs at once in one folder: their own file names, the same alias names, keep_best=1 each
    a = Run(tmp_path, tmp_path, "a-", 1, [3.0, 0.05, 2.0, 0.5])
    b = Run(tmp_path, tmp_path, "b-", 1, [0.1, 5.0, 6.0, 7.0])
    for _ in range(4):
        before = a.files()
        b.save()
        assert a.files() == before, "b deleted a checkpoint of a"
        before = b.files()
        a.save()
        assert b.files() == before, "a deleted a checkpoint of b"
    said_a, said_b = a.finish(), b.finish()
    # they share the aliases without shared=True: each is told, with the other one named
    assert f"another writer (host {socket.gethostname()!r}, pid {b.proc.pid}) updated" in said_a
    assert f"another writer (host {socket.gethostname()!r}, pid {a.proc.pid}) updated" in said_b
    assert "Traceback" not in said_a + said_b
    assert a.files() == ["a-1.ckpt", "a-3.ckpt"], "its best and its newest: it deleted its own as its policy says"
    assert b.files() == ["b-0.ckpt", "b-3.ckpt"]


def test_a_fresh_run_never_deletes_the_best_of_an_earlier_run_in_the_folder(tmp_path: Path) -> None:
    earlier = Run(tmp_path, tmp_path, "epoch=", 1, [3.0, 1.0, 2.0])
    for _ in range(3):
        earlier.save()
    assert earlier.finish() == "" and earlier.files() == ["epoch=1.ckpt", "epoch=2.ckpt"]
    fresh = Run(tmp_path, tmp_path, "new-", 0, [5.0, 6.0, 7.0])  # not a resume
    for _ in range(3):
        fresh.save()
    assert fresh.finish() == ""
    assert earlier.files() == ["epoch=1.ckpt", "epoch=2.ckpt"], "the earlier run's best and latest survive"
    assert fresh.files() == ["new-0.ckpt", "new-2.ckpt"]


# --- the list in the run's state -------------------------------------------------------------------


def test_the_state_lists_what_it_saved_and_a_resume_goes_on_deleting_it(tmp_path: Path) -> None:
    best, last, keep = run_epochs(tmp_path, SCORES[:5], keep_best=1)
    state = keep.state_dict()
    assert state["version"] == 1 and (state["mode"], state["ties"]) == ("min", "first")
    assert [(e["path"], e["score"], e["kind"]) for e in state["saved"]] == [
        ("epoch=3.ckpt", 0.5, "file"),
        ("epoch=4.ckpt", 4.0, "file"),
    ]
    assert state["saved"][0]["identity"] == _files.ident_of(os.lstat(tmp_path / "epoch=3.ckpt"))
    assert json.loads(json.dumps(state)) == state, "plain data"
    assert pickle.loads(pickle.dumps(keep)).state_dict() == state, "picklable (Fabric 2.0 pickles what state holds)"
    after = keep.state_dict(after=(0.7, tmp_path / "epoch=5.ckpt"))  # what epoch 5 carries, itself included
    assert after["saved"][-1] == {"path": "epoch=5.ckpt", "score": 0.7, "seq": 6, "kind": None, "identity": None}
    assert listed(keep) == ["epoch=3.ckpt", "epoch=4.ckpt"], "state_dict(after=) changes nothing"
    # a new process resumes from epoch 5, which it loads (so its own entry is identified as it is now)
    write_ckpt(tmp_path / "epoch=5.ckpt", 5)
    best2, last2 = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    best2.load_state_dict(best.state_dict())  # 0.7 is not better than 0.5
    last2.load_state_dict(last.state_dict(after=(5, tmp_path / "epoch=5.ckpt")))
    keep2 = Retention(best2, last2, keep_best=1)
    keep2.load_state_dict(after, saved_in=tmp_path / "epoch=5.ckpt")
    assert last2.repair().ok
    save_one(best2, keep2, tmp_path / "epoch=6.ckpt", 5.0, 6)
    assert checkpoints(tmp_path) == ["epoch=3.ckpt", "epoch=5.ckpt", "epoch=6.ckpt"], "the latest stays"
    last2.update(6, tmp_path / "epoch=6.ckpt")
    keep2.prune()
    assert checkpoints(tmp_path) == ["epoch=3.ckpt", "epoch=6.ckpt"]


def state_with(folder: Path | None = None, **entry: Any) -> dict[str, Any]:
    """A state listing one entry; ``folder``: the folder it names (None: one saved before states named it)."""
    base = {"path": "a.ckpt", "score": 1.0, "seq": 1, "kind": "file", "identity": [1, 2, 3, 4]}
    state = {"version": 1, "mode": "min", "ties": "first", "saved": [{**base, **entry}]}
    return state if folder is None else {**state, "folder": f"{folder}{os.sep}"}


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([], r"state must be a dict from Retention\.state_dict\(\), got list"),
        ({"saved": []}, r"state\['version'\] must be 1, got None"),
        ({**state_with(), "mode": "max"}, r"saved with mode='max' but the best alias has mode='min'"),
        (state_with(path="../secret.ckpt"), r"\[0\] 'path' must be a relative path of plain names.*'\.\./secret"),
        (state_with(path="/etc/passwd"), r"'path' must be a relative path of plain names"),
        (state_with(path="a/./b.ckpt"), r"'path' must be a relative path of plain names"),
        (state_with(path="s3://bucket/x"), r"'path' must be a relative path of plain names"),
        (state_with(path="a\0.ckpt"), r"'path' must be a relative path of plain names"),
        (state_with(path="best.ckpt.bestlink.json"), r"'path' names the record of an alias, not a checkpoint"),
        (state_with(path=".best.ckpt.bestlink.lock"), r"'path' names the lock of an alias"),
        (state_with(score="x"), r"'score' must be a number or null"),
        (state_with(score=10**400), r"'score' is out of range"),
        (state_with(seq=-1), r"'seq' must be a whole number >= 0"),
        (state_with(kind="fifo"), r"'kind' must be 'file', 'dir' or None"),
        (state_with(identity={"a": 1}), r"'identity' must be a string, a list of integers or None"),
        (state_with(kind=None), r"'kind' and 'identity' must both be set or both be None"),
    ],
)
def test_a_damaged_state_is_a_clear_error_and_nothing_changes(tmp_path: Path, state: Any, message: str) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    save_one(best, keep, tmp_path / "mine.ckpt", 1.0, 1)
    before = keep.state_dict()
    with pytest.raises(ValueError, match=message):
        keep.load_state_dict(state)
    assert keep.state_dict() == before


def test_a_listed_entry_that_is_a_symlink_when_first_looked_at_is_not_deleted(tmp_path: Path) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    target = write_ckpt(tmp_path / "precious.bin", 3)
    resumed = write_ckpt(tmp_path / "epoch=0.ckpt", 0)
    keep.load_state_dict(state_with(tmp_path, path=resumed.name, kind=None, identity=None, score=9.0), saved_in=resumed)
    resumed.unlink()  # then, before Retention first looks at it, a link is put in its place
    resumed.symlink_to(target.name)
    save_one(best, keep, tmp_path / "epoch=1.ckpt", 1.0, 1)
    assert os.path.islink(tmp_path / "epoch=0.ckpt") and fill_of(target) == 3
    assert listed(keep) == ["epoch=1.ckpt"]


def a_run(folder: Path, scores: list[float]) -> Retention:
    """A run of save_and_link in ``folder``, one checkpoint per score, keep_best=0."""
    best = BestLinker(folder / "best.ckpt")
    keep = Retention(best, keep_best=0)
    for epoch, score in enumerate(scores):
        save_and_link(
            json_save, folder / f"epoch={epoch}.ckpt", {"best": best, "keep": keep}, score=score, retention=keep
        )
    return keep


def saved_state(path: Path) -> dict[str, Any]:
    """The retention's state saved inside a checkpoint written by json_save."""
    return dict(json.loads(path.read_text())["keep"])


def test_a_state_of_another_folder_loads_empty_and_deletes_nothing_there_or_here(tmp_path: Path) -> None:
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    a.mkdir(), b.mkdir()
    a_run(a, [0.5, 0.4, 0.3])
    assert checkpoints(a) == ["epoch=2.ckpt"]
    mine = write_ckpt(b / "epoch=2.ckpt", 7)  # the user's own, of the name run A's last checkpoint has
    keep = Retention(BestLinker(b / "best.ckpt"), keep_best=0)
    with pytest.warns(BestLinkWarning, match=r"saved by a Retention of '.*run_a/', not of this best alias's folder"):
        keep.load_state_dict(saved_state(a / "epoch=2.ckpt"))  # fine-tuning A's epoch 2 in a new folder
    assert listed(keep) == []
    for epoch, score in [(3, 0.2), (4, 0.25)]:
        state = {"best": keep.best, "keep": keep}
        save_and_link(json_save, b / f"epoch={epoch}.ckpt", state, score=score, retention=keep)
    assert fill_of(mine) == 7 and checkpoints(a) == ["epoch=2.ckpt"]


def test_entries_without_an_identity_are_never_deleted_unless_the_checkpoint_the_state_was_saved_in(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.txt").write_text("my notes")
    dataset = write_ckpt(tmp_path / "dataset", 4, kind="dir")
    state = state_with(tmp_path, path="notes.txt", kind=None, identity=None, score=9.0)
    state["saved"].append({"path": "dataset", "score": 9.0, "seq": 2, "kind": None, "identity": None})
    state["saved"].append({"path": "epoch=0.ckpt", "score": 9.0, "seq": 3, "kind": "file", "identity": [1, 2, 3, 4]})
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    with pytest.warns(BestLinkWarning, match=r"'dataset', 'notes\.txt' without an identity.*never deletes them"):
        keep.load_state_dict(state)
    for epoch, score in enumerate([0.5, 0.4, 0.3]):
        save_one(best, keep, tmp_path / f"epoch={epoch}.ckpt", score, epoch)
    assert (tmp_path / "notes.txt").read_text() == "my notes" and fill_of(dataset) == 4
    assert checkpoints(tmp_path) == ["epoch=2.ckpt"], "what it saved, it still deletes"


@pytest.mark.parametrize("told", [True, False], ids=["saved_in given", "saved_in not given"])
def test_a_state_cannot_make_a_users_file_deletable_by_naming_it_as_the_checkpoint_it_was_saved_in(
    tmp_path: Path, told: bool
) -> None:
    a_run(tmp_path, [0.5, 0.4])
    notes = tmp_path / "notes.txt"
    notes.write_text("hours of evaluation")
    state = saved_state(tmp_path / "epoch=1.ckpt")  # edited: its newest entry names the user's file
    seq = max(e["seq"] for e in state["saved"]) + 1
    state["saved"].append({"path": notes.name, "score": 0.99, "seq": seq, "kind": None, "identity": None})
    resumed = Retention(BestLinker(tmp_path / "best.ckpt"), keep_best=0)
    no_longer_newest = r"lists 'epoch=1\.ckpt' without an identity, and not as the checkpoint it was saved in"
    named = r"lists 'notes\.txt' as the checkpoint it was saved in.*never deletes it"
    with pytest.warns(BestLinkWarning, match=no_longer_newest), pytest.warns(BestLinkWarning, match=named):
        resumed.load_state_dict(state, **({"saved_in": tmp_path / "epoch=1.ckpt"} if told else {}))
    resumed.best.load_state_dict(json.loads((tmp_path / "epoch=1.ckpt").read_text())["best"])
    for epoch, score in ((2, 0.3), (3, 0.2)):
        save_and_link(json_save, tmp_path / f"epoch={epoch}.ckpt", {"keep": resumed}, score=score, retention=resumed)
    assert notes.read_text() == "hours of evaluation"
    assert "notes.txt" not in listed(resumed)


@pytest.mark.parametrize("target", ["file", "dir"])
def test_a_checkpoint_a_killed_run_was_deleting_is_put_back_for_a_resume_that_keeps_it_or_else_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    for epoch, score in ((0, 0.5), (1, 0.4)):
        path = tmp_path / f"epoch={epoch}.ckpt"
        save = partial(json_save_as, target)
        if epoch == 1:  # renamed aside to be deleted, then killed before anything was removed
            monkeypatch.setattr(_remove, "_remove_at", lambda *args: kill())
        with contextlib.suppress(KeyboardInterrupt):
            save_and_link(save, path, {"best": best, "keep": keep}, score=score, retention=keep)
    monkeypatch.undo()
    assert checkpoints(tmp_path) == ["epoch=1.ckpt"] and len(leftovers(tmp_path)) == 1
    saved = json_state(tmp_path / "epoch=1.ckpt")
    resumed = Retention(BestLinker(tmp_path / "best.ckpt"), keep_best=5)  # a new process keeps more
    resumed.load_state_dict(saved["keep"], saved_in=tmp_path / "epoch=1.ckpt")
    resumed.best.load_state_dict(saved["best"])
    save_and_link(
        partial(json_save_as, target), tmp_path / "epoch=2.ckpt", {"keep": resumed}, score=0.3, retention=resumed
    )
    assert leftovers(tmp_path) == []
    if target == "file":  # renamed aside, not yet removed: whole, and put back
        assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
        assert json_state(tmp_path / "epoch=0.ckpt")["keep"]["saved"][-1]["path"] == "epoch=0.ckpt"
    else:  # checked, and its removal begun (it may have lost files): finished
        assert checkpoints(tmp_path) == ["epoch=1.ckpt", "epoch=2.ckpt"]


def test_a_resume_from_an_older_checkpoint_keeps_its_best_that_a_killed_run_was_deleting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best, last = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    keep = Retention(best, last, keep_best=0)
    for epoch, score in enumerate([0.5, 0.3, 0.45, 0.2]):
        if epoch == 3:  # 0.2 beats 0.3: epoch 1 goes, and the run is killed while deleting it
            monkeypatch.setattr(_remove, "_remove_at", lambda *args: kill())
        state = {"best": best, "last": last, "keep": keep}
        with contextlib.suppress(KeyboardInterrupt):
            save_and_link(json_save, tmp_path / f"epoch={epoch}.ckpt", state, score=score, step=epoch, retention=keep)
    monkeypatch.undo()
    assert "epoch=1.ckpt" not in checkpoints(tmp_path)
    # a new process goes back to epoch 2 (its best: epoch 1, 0.3) and trains another way
    saved = json.loads((tmp_path / "epoch=2.ckpt").read_text())
    best, last = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    keep = Retention(best, last, keep_best=0)
    best.load_state_dict(saved["best"])
    last.load_state_dict(saved["last"])
    keep.load_state_dict(saved["keep"], saved_in=tmp_path / "epoch=2.ckpt")
    state = {"best": best, "last": last, "keep": keep}
    save_and_link(json_save, tmp_path / "epoch=3b.ckpt", state, score=0.6, step=3, retention=keep)
    assert (best.best_path, best.best_score) == (str(tmp_path / "epoch=1.ckpt"), 0.3)
    assert best.verify().ok and json.loads((tmp_path / "epoch=1.ckpt").read_text())["keep"]
    assert leftovers(tmp_path) == []


def kill() -> None:
    raise KeyboardInterrupt  # stands for the kill


def json_save_as(target: str, state: dict[str, Any], path: str) -> None:
    """json_save, as a checkpoint file, or a shard directory holding the state."""
    if target == "dir":
        os.mkdir(path)
        path = os.path.join(path, "state.json")
    Path(path).write_text(json.dumps(state))


def json_state(path: Path) -> dict[str, Any]:
    """What :func:`json_save_as` saved in the checkpoint at ``path``."""
    return dict(json.loads((path / "state.json" if path.is_dir() else path).read_text()))


def test_a_state_that_names_no_folder_lists_nothing_deletable(tmp_path: Path) -> None:
    a_run(tmp_path, [0.4, 0.5])  # epoch 0 the best, epoch 1 the newest: both kept, both listed
    state = saved_state(tmp_path / "epoch=1.ckpt")
    del state["folder"]  # as states were written before they named their folder
    resumed = Retention(BestLinker(tmp_path / "best.ckpt"), keep_best=0)
    with pytest.warns(BestLinkWarning, match=r"2 checkpoint\(s\) saved by a state that names no folder"):
        resumed.load_state_dict(state)
    resumed.best.load_state_dict(json.loads((tmp_path / "epoch=1.ckpt").read_text())["best"])
    state = {"best": resumed.best, "keep": resumed}
    save_and_link(json_save, tmp_path / "epoch=2.ckpt", state, score=0.1, retention=resumed)
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"], "nothing deleted on its word"


def test_a_resume_in_the_same_folder_names_the_resumed_checkpoint_by_identity_and_goes_on_deleting(
    tmp_path: Path,
) -> None:
    a_run(tmp_path, [0.5, 0.4])
    resumed = Retention(BestLinker(tmp_path / "best.ckpt"), keep_best=0)  # another process, from epoch 1
    resumed.load_state_dict(saved_state(tmp_path / "epoch=1.ckpt"), saved_in=tmp_path / "epoch=1.ckpt")
    state = {"best": resumed.best, "keep": resumed}
    resumed.best.load_state_dict(json.loads((tmp_path / "epoch=1.ckpt").read_text())["best"])
    save_and_link(json_save, tmp_path / "epoch=2.ckpt", state, score=0.6, retention=resumed)
    carried = {e["path"]: e for e in saved_state(tmp_path / "epoch=2.ckpt")["saved"]}
    assert carried["epoch=1.ckpt"]["kind"] == "file", "identified before epoch 2 was written"
    assert carried["epoch=1.ckpt"]["identity"] == _files.ident_of(os.lstat(tmp_path / "epoch=1.ckpt"))
    again = Retention(BestLinker(tmp_path / "best.ckpt"), keep_best=0)  # a third process, from epoch 2
    again.load_state_dict(saved_state(tmp_path / "epoch=2.ckpt"), saved_in=tmp_path / "epoch=2.ckpt")
    again.best.load_state_dict(json.loads((tmp_path / "epoch=2.ckpt").read_text())["best"])
    state = {"best": again.best, "keep": again}
    save_and_link(json_save, tmp_path / "epoch=3.ckpt", state, score=0.1, retention=again)
    assert checkpoints(tmp_path) == ["epoch=3.ckpt"], "the run's own checkpoints, from both resumes, deleted"


# --- save_and_link for plain loops -----------------------------------------------------------------


def json_save(state: dict[str, Any], path: str) -> None:
    """Stands in for torch.save (same argument order): writes the state as JSON."""
    Path(path).write_text(json.dumps(state))


def test_save_and_link_saves_once_with_the_states_after_this_save(tmp_path: Path) -> None:
    best, last = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    keep = Retention(best, last, keep_best=1)
    calls = []

    def save(state: dict[str, Any], path: str) -> None:
        calls.append(path)
        json_save(state, path)

    for epoch, score in enumerate(SCORES[:4]):
        state = {"epoch": epoch, "best": best, "last": last, "keep": keep}
        path = tmp_path / f"epoch={epoch}.ckpt"
        became = save_and_link(save, path, state, score=score, step=epoch, retention=keep)
        assert became == (epoch in (0, 1, 3))
    assert len(calls) == 4
    saved = json.loads((tmp_path / "epoch=3.ckpt").read_text())
    assert saved["best"]["best_path"] == str(tmp_path / "epoch=3.ckpt") and saved["best"]["best_score"] == 0.5
    assert saved["last"]["best_path"] == str(tmp_path / "epoch=3.ckpt") and saved["last"]["best_score"] == 3
    # the list as it is once epoch 3 is saved: epoch 1 (the best until then), epoch 2, and itself
    assert [(e["path"], e["kind"]) for e in saved["keep"]["saved"]] == [
        ("epoch=1.ckpt", "file"),
        ("epoch=2.ckpt", "file"),
        ("epoch=3.ckpt", None),
    ]
    assert checkpoints(tmp_path) == ["epoch=3.ckpt"]


def test_save_and_link_without_retention_deletes_nothing(tmp_path: Path) -> None:
    best, last = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    for epoch, score in enumerate(SCORES[:4]):
        state = {"epoch": epoch, "best": best, "last": last}
        save_and_link(
            json_save, tmp_path / f"epoch={epoch}.ckpt", state, score=score, linker=best, latest=last, step=epoch
        )
    assert checkpoints(tmp_path) == [f"epoch={i}.ckpt" for i in range(4)]
    assert (
        os.readlink(tmp_path / "best.ckpt") == "epoch=3.ckpt" and os.readlink(tmp_path / "last.ckpt") == "epoch=3.ckpt"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_link_refuses_the_alias_and_the_aliased_checkpoint_before_saving(tmp_path: Path, kind: str) -> None:
    best = BestLinker(tmp_path / "best.ckpt", link=kind)  # type: ignore[arg-type]
    last = LatestLinker(tmp_path / "last.ckpt", link=kind)  # type: ignore[arg-type]
    calls: list[str] = []

    def save(state: dict[str, Any], path: str) -> None:
        calls.append(path)
        json_save(state, path)

    def offer(path: Path, score: float, step: int) -> bool:
        return save_and_link(save, path, {"best": best, "last": last}, score=score, linker=best, latest=last, step=step)

    assert offer(tmp_path / "a.ckpt", 1.0, 0)
    assert not offer(tmp_path / "b.ckpt", 2.0, 1)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.ckpt")}
    for path, score, why in [
        (tmp_path / "best.ckpt", 9.0, "is the alias"),
        (tmp_path / "last.ckpt", 0.1, "is the alias"),
        (tmp_path / "a.ckpt", 9.0, "is the checkpoint 'best.ckpt' points at"),  # worse: would replace the best
        (tmp_path / "a.ckpt", 0.1, "is the checkpoint 'best.ckpt' points at"),  # better: half-written meanwhile
        (tmp_path / "b.ckpt", 9.0, "is the checkpoint 'last.ckpt' points at"),
    ]:
        with pytest.raises(ValueError, match=why):
            offer(path, score, 2)
    assert len(calls) == 2, "nothing was saved"
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.ckpt")} == before
    assert best.verify().ok and last.verify().ok and best.best_score == 1.0


def test_save_and_link_takes_the_aliases_from_one_source(tmp_path: Path) -> None:
    best, last = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    other = BestLinker(tmp_path / "other.ckpt")
    keep = Retention(best, last)
    path = tmp_path / "a.ckpt"
    with pytest.raises(TypeError, match="needs the best alias: pass linker=best, or retention=keep"):
        save_and_link(json_save, path, {}, score=1.0)
    with pytest.raises(TypeError, match="needs the step"):
        save_and_link(json_save, path, {}, score=1.0, linker=best, latest=last)
    with pytest.raises(TypeError, match="needs the step"):
        save_and_link(json_save, path, {}, score=1.0, retention=keep)  # its latest alias needs it too
    with pytest.raises(ValueError, match=r"linker=.*other\.ckpt.* is not the alias the retention holds"):
        save_and_link(json_save, path, {}, score=1.0, linker=other, retention=keep, step=1)
    with pytest.raises(ValueError, match=r"latest=.*last\.ckpt.* is not the alias the retention holds \(None\)"):
        save_and_link(json_save, path, {}, score=1.0, latest=last, retention=Retention(best), step=1)
    with pytest.raises(TypeError, match="latest must be a LatestLinker"):
        save_and_link(json_save, path, {}, score=1.0, linker=best, latest=other, step=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"state\['keep'\] is a Retention this save does not go through"):
        save_and_link(json_save, path, {"keep": Retention(other)}, score=1.0, retention=keep, step=1)
    assert not path.exists()


def test_save_and_link_with_the_aliases_of_0_1_still_works_with_a_deprecation(tmp_path: Path) -> None:
    best, last = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    keep = Retention(best, last, keep_best=0)
    state = {"best": best, "last": last, "keep": keep}
    with pytest.warns(DeprecationWarning, match="passing linker= together with retention= is deprecated") as seen:
        save_and_link(json_save, tmp_path / "epoch=0.ckpt", state, score=1.0, linker=best, step=0, retention=keep)
    assert seen[0].filename == __file__, "shown at the caller's line"
    with pytest.warns(DeprecationWarning, match="Retention.saved\\(\\)/record\\(\\) no longer take step="):
        keep.saved(write_ckpt(tmp_path / "epoch=1.ckpt", 1), 2.0, step=1)
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt"]


def test_a_checkpoint_better_than_the_alias_is_kept_when_the_alias_failed_to_move_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    state = {"best": best, "keep": keep}
    save_and_link(json_save, tmp_path / "epoch=0.ckpt", state, score=0.5, retention=keep)
    with monkeypatch.context() as m:
        m.setattr(best.storage, "commit", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "I/O error")))
        with pytest.raises(AliasWriteError):
            save_and_link(json_save, tmp_path / "epoch=1.ckpt", state, score=0.1, retention=keep)  # the run's best
    assert best.best_score == 0.5 and os.readlink(best.link_path) == "epoch=0.ckpt", "the alias did not move"
    save_and_link(json_save, tmp_path / "epoch=2.ckpt", state, score=0.6, retention=keep)
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"], "0.1 beats the alias: kept"
    save_and_link(json_save, tmp_path / "epoch=3.ckpt", state, score=0.05, retention=keep)
    assert checkpoints(tmp_path) == ["epoch=3.ckpt"], "once the alias moved past it, it goes as the policy says"


def test_with_ties_last_a_checkpoint_tied_with_the_alias_is_not_kept_as_better_than_it(tmp_path: Path) -> None:
    # ties="last" moves the alias to each tie; one tied with what the alias holds is no better than it
    best = BestLinker(tmp_path / "best.ckpt", mode="max", ties="last")
    keep = Retention(best, keep_best=1)
    state = {"best": best, "keep": keep}
    for epoch, accuracy in enumerate([0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 0.95, 0.97]):
        save_and_link(json_save, tmp_path / f"epoch={epoch}.ckpt", state, score=accuracy, retention=keep)
    assert os.readlink(best.link_path) == "epoch=5.ckpt", "the last of the ties"
    assert checkpoints(tmp_path) == ["epoch=5.ckpt", "epoch=7.ckpt"], "the best (also the one best kept), the newest"


def test_save_and_link_warns_when_the_retention_is_not_in_the_state(tmp_path: Path) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    with pytest.warns(BestLinkWarning, match=r"retention= is not in state.*state\['keep'\] = keep") as seen:
        save_and_link(json_save, tmp_path / "epoch=0.ckpt", {"best": best}, score=1.0, retention=keep)
    assert seen[0].filename == __file__


def test_retention_on_fsspec_memory_urls() -> None:
    import fsspec

    root = f"memory://bestlink-retention-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    best, last = BestLinker(f"{root}/best.ckpt"), LatestLinker(f"{root}/last.ckpt")
    keep = Retention(best, last, keep_best=1)

    def save(state: dict[str, Any], p: str) -> None:
        fs.pipe_file(p, json.dumps(state).encode())

    for epoch, score in enumerate(SCORES):
        state = {"best": best, "last": last, "keep": keep}
        save_and_link(save, f"{root}/epoch={epoch}.ckpt", state, score=score, step=epoch, retention=keep)
        assert best.verify().ok and last.verify().ok
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(root, detail=False))
    assert [n for n in names if n.startswith("epoch=")] == ["epoch=3.ckpt", "epoch=6.ckpt"]
    assert json.loads(fs.cat(f"{root}/best.ckpt"))["best"]["best_score"] == 0.5
    # an object written again at a listed key is not the one saved: kept
    resumed = Retention(BestLinker(f"{root}/best.ckpt"), keep_best=0)
    resumed.load_state_dict(keep.state_dict())
    fs.pipe_file(f"{root}/epoch=3.ckpt", b"someone else's")
    fs.pipe_file(f"{root}/epoch=7.ckpt", b"x")
    with pytest.warns(BestLinkWarning, match=r"epoch=3\.ckpt' is no longer.*another object is there now"):
        gone = resumed.saved(f"{root}/epoch=7.ckpt", 0.1)
    assert [g.rsplit("/", 1)[1] for g in gone] == ["epoch=6.ckpt"]
    assert fs.cat(f"{root}/epoch=3.ckpt") == b"someone else's"
    fs.mkdir(f"{root}/sharded")
    fs.pipe_file(f"{root}/sharded/shard-0", b"x")
    with pytest.raises(IsADirectoryError, match="directory checkpoint"):
        keep.saved(f"{root}/sharded", 0.1)
    fs.rm(root, recursive=True)


# --- two processes: a resume ------------------------------------------------------------------------

LOOP = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from lightning_bestlink import BestLinker, LatestLinker, save_and_link

    folder, scores = sys.argv[1], [float(s) for s in sys.argv[2:]]
    best = BestLinker(os.path.join(folder, "best.ckpt"))
    last = LatestLinker(os.path.join(folder, "last.ckpt"))
    start = 0
    if os.path.lexists(last.link_path):  # a resume, as the README shows it
        ckpt = json.loads(Path(last.link_path).read_text())
        best.load_state_dict(ckpt["best"])
        last.load_state_dict(ckpt["last"])
        start = ckpt["epoch"] + 1

    def save(state, path):
        Path(path).write_text(json.dumps(state))

    for epoch in range(start, len(scores)):
        state = {"epoch": epoch, "best": best, "last": last}
        save_and_link(save, os.path.join(folder, f"epoch={epoch}.ckpt"), state, score=scores[epoch],
                      linker=best, latest=last, step=epoch)
    """
)


def test_a_deleted_best_alias_is_rebuilt_by_the_first_save_after_a_resume(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    run = tmp_path / "run"
    run.mkdir()

    def train(*scores: float) -> None:
        proc = subprocess.run(
            [sys.executable, str(script), str(run), *map(str, scores)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]

    train(3.0, 1.0, 2.0)
    (run / "best.ckpt").unlink()
    train(3.0, 1.0, 2.0, 5.0)  # resumed: epoch 3 is not a new best
    assert os.readlink(run / "best.ckpt") == "epoch=1.ckpt"
    assert BestLinker.from_record(run / "best.ckpt").verify().ok


# --- ranks: every rank mirrors rank zero, also when rank zero fails ----------------------------------


def test_every_rank_mirrors_the_aliases_and_the_retention_before_an_error_is_raised(tmp_path: Path) -> None:
    def linkers(folder: Path) -> tuple[BestLinker, LatestLinker, Retention]:
        best, last = BestLinker(folder / "best.ckpt"), LatestLinker(folder / "last.ckpt")
        return best, last, Retention(best, last, keep_best=0)

    zero, one = linkers(tmp_path), linkers(tmp_path)
    path = write_ckpt(tmp_path / "epoch=0.ckpt", 0)
    sent: list[Any] = []

    def half_way() -> None:  # the best alias moved and the checkpoint is listed; then the latest fails
        zero[0].update(0.5, path)
        zero[2].record(path, 0.5)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        on_rank_zero(True, lambda obj: sent.append(obj) or obj, list(zero), half_way, "update")
    with pytest.raises(RuntimeError, match=r"rank zero could not update the aliases: OSError.*No space left"):
        on_rank_zero(False, lambda obj: sent[0], list(one), half_way, "update")
    assert (one[0].best_score, one[0].best_path) == (0.5, str(path))
    assert one[1].latest_step is None
    assert one[2].state_dict() == zero[2].state_dict() and listed(one[2]) == ["epoch=0.ckpt"]


# --- kill and resume: two processes ----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests._helpers import write_ckpt
    from lightning_bestlink import BestLinker, LatestLinker, Retention, save_and_link
    from lightning_bestlink import latest
    from lightning_bestlink._storage import _remove, local

    folder, kind, target, kill_at, epochs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    scores = {scores!r}
    point, _, when = kill_at.partition(":")
    counts = {{}}

    def maybe_die(name):
        counts[name] = counts.get(name, 0) + 1
        if name == point and counts[name] == int(when):
            os.kill(os.getpid(), signal.SIGKILL)

    def hook(owner, attr, name, after=False):
        real = getattr(owner, attr)
        def wrapped(*a, **k):
            if not after:
                maybe_die(name)
            out = real(*a, **k)
            if after:
                maybe_die(name)
            return out
        setattr(owner, attr, wrapped)

    hook(latest.LatestLinker, "follow", "latest")                # the best alias moved, the latest not yet
    hook(Retention, "record", "listed", after=True)              # listed, the aliases not moved yet
    hook(Retention, "prune", "retention")                        # both aliases moved, nothing deleted yet
    hook(_remove, "_remove_at", "removing")                      # renamed to a hidden name, not yet removed
    hook(local.LocalStorage, "remove_saved", "deleted", after=True)  # one checkpoint deleted

    best = BestLinker(os.path.join(folder, "best.ckpt"), link=kind)
    last = LatestLinker(os.path.join(folder, "last.ckpt"), link=kind)
    keep = Retention(best, last, keep_best=1)
    epoch = 0
    if os.path.lexists(last.link_path):  # resume: the states saved inside the latest checkpoint
        ckpt = os.path.join(last.link_path, "state.json") if os.path.isdir(last.link_path) else last.link_path
        saved = json.loads(Path(ckpt).read_bytes().split(b"\\n", 1)[0])
        best.load_state_dict(saved["best"]); best.repair()
        last.load_state_dict(saved["last"]); last.repair()
        keep.load_state_dict(saved["keep"], saved_in=last.link_path)
        epoch = saved["epoch"] + 1

    def save(state, path):
        maybe_die("save")
        write_ckpt(path, state["epoch"], kind=target)
        head = json.dumps(state).encode() + b"\\n"
        if target == "dir":
            Path(path, "state.json").write_bytes(head)
        else:
            Path(path).write_bytes(head + Path(path).read_bytes())
        maybe_die("saved")

    for epoch in range(epoch, epochs):
        state = {{"epoch": epoch, "best": best, "last": last, "keep": keep}}
        save_and_link(save, os.path.join(folder, f"epoch={{epoch}}.ckpt"), state, score=scores[epoch],
                      step=epoch, retention=keep)
    """
)

#: what CHILD imports (tests._helpers imports pytest)
CHILD_IMPORTS = ("pytest", "lightning_bestlink", "lightning_bestlink.latest", "lightning_bestlink._storage._remove")
KILL_POINTS = ["save:3", "saved:3", "listed:4", "latest:3", "latest:4", "retention:4", "deleted:2", "removing:2"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["file", "dir"])
@pytest.mark.parametrize("kind", ["symlink", "copy"])
@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_latest_alias_and_retention_across_a_kill_and_a_resume(
    tmp_path: Path, kill_at: str, kind: str, target: str
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=REPO, scores=SCORES))
    run = tmp_path / "run"
    run.mkdir()

    def child(kill: str) -> subprocess.CompletedProcess[str]:
        # a process of its own, forked from a parent that has imported what the script imports
        args = [str(script), str(run), kind, target, kill, str(len(SCORES))]
        return run_forked(args, preload=CHILD_IMPORTS, timeout=120)

    first = child(kill_at)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    second = child("none:0")
    assert second.returncode == 0, second.stderr[-2000:]
    # as if never killed: the best (epoch 3), the latest (epoch 6), the one best kept; nothing else
    assert checkpoints(run) == ["epoch=3.ckpt", "epoch=6.ckpt"]
    for linker in (BestLinker.from_record(run / "best.ckpt"), LatestLinker.from_record(run / "last.ckpt")):
        assert linker.verify().ok, linker.verify().detail
    assert fill_of_any(run / "best.ckpt") == 3 and fill_of_any(run / "last.ckpt") == 6
    assert leftovers(run) == []


def fill_of_any(path: Path) -> int:
    """The epoch a checkpoint written by CHILD holds (its JSON head names it)."""
    head = (path / "state.json" if path.is_dir() else path).read_bytes().split(b"\n", 1)[0]
    return int(json.loads(head)["epoch"])


KILLED_REMOVAL = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from lightning_bestlink import BestLinker, Retention, save_and_link
    from lightning_bestlink._storage import _remove

    folder, phase, kill_at = sys.argv[1], sys.argv[2], sys.argv[3]

    def save(state, path):  # a sharded save: a file at the top, the weights in a sub-folder
        os.makedirs(os.path.join(path, "model"))
        Path(path, "state.json").write_text(json.dumps(state))
        Path(path, "model", "weights.bin").write_bytes(b"w" * 64)

    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)

    best = BestLinker(os.path.join(folder, "best.ckpt"))
    keep = Retention(best, keep_best=0)
    state = {{"best": best, "keep": keep}}
    if phase == "run":
        save_and_link(save, os.path.join(folder, "epoch=0.ckpt"), state, score=0.5, retention=keep)
        if kill_at == "checking":  # the user adds a file below the top, then the deletion is killed as it looks
            model = Path(folder, "epoch=0.ckpt", "model")
            Path(model, "my_eval.json").write_text("hours of evaluation")
            for p in (model / "my_eval.json", model):  # a second later: a clock coarser than this script
                os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
            _remove._changed_inside = die
        else:  # the deletion is killed half-way: the top's file and the sub-folder's are gone, not the folder
            rmdir = os.rmdir
            os.rmdir = lambda *a, **k: die() if "dir_fd" in k else rmdir(*a, **k)
        save_and_link(save, os.path.join(folder, "epoch=1.ckpt"), state, score=0.4, retention=keep)
    else:  # resumed from the newest checkpoint
        saved = json.loads(Path(folder, "epoch=1.ckpt", "state.json").read_text())
        best.load_state_dict(saved["best"])
        keep.load_state_dict(saved["keep"], saved_in=os.path.join(folder, "epoch=1.ckpt"))
        save_and_link(save, os.path.join(folder, "epoch=2.ckpt"), state, score=0.3, retention=keep)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["checking", "removing"])
def test_a_directory_deletion_killed_half_way_is_finished_by_the_next_run_only_if_it_passes_every_check(
    tmp_path: Path, kill_at: str
) -> None:
    script = tmp_path / "killed_removal.py"
    script.write_text(KILLED_REMOVAL.format(repo=REPO))
    run = tmp_path / "run"
    run.mkdir()
    first = run_forked([script, run, "run", kill_at], preload=CHILD_IMPORTS, timeout=120)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert len(leftovers(run)) == 1 and not (run / "epoch=0.ckpt").exists(), "killed under its hidden name"
    second = run_forked([script, run, "resume", kill_at], preload=CHILD_IMPORTS, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    if kill_at == "checking":  # never looked inside: the next run looks, finds the user's file, puts it all back
        model = run / "epoch=0.ckpt" / "model"
        assert (model / "my_eval.json").read_text() == "hours of evaluation", "the user's file, under its name"
        assert (model / "weights.bin").read_bytes() == b"w" * 64, "and the checkpoint around it"
        assert checkpoints(run) == ["epoch=0.ckpt", "epoch=2.ckpt"]
        assert re.search(r"epoch=0\.ckpt' is no longer.*'model[^']*' inside it was modified.*put back", second.stderr)
    else:  # checked, then half removed: the next run finishes it, though its folders' times changed
        assert checkpoints(run) == ["epoch=2.ckpt"]
    assert leftovers(run) == []


#: a plain loop that saves epochs FIRST..LAST of a run in FOLDER, resuming from its latest alias if there is one
COPIED_RUN = textwrap.dedent(
    """
    import json, os, sys
    from lightning_bestlink import BestLinker, LatestLinker, Retention, save_and_link

    folder, kind, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    best = BestLinker(os.path.join(folder, "best.ckpt"), link=kind)
    latest = LatestLinker(os.path.join(folder, "last.ckpt"), link=kind)
    keep = Retention(best, latest, keep_best=0)
    if os.path.lexists(latest.link_path):
        with open(latest.link_path) as fh:
            saved = json.load(fh)
        best.load_state_dict(saved["best"]); latest.load_state_dict(saved["last"])
        keep.load_state_dict(saved["keep"], saved_in=latest.link_path)
    scores = [0.5, 0.2, 0.4, 0.6, 0.7, 0.8]
    for epoch in range(first, last + 1):
        state = {"epoch": epoch, "best": best, "last": latest, "keep": keep}
        save = lambda state, path: open(path, "w").write(json.dumps(state))
        save_and_link(save, os.path.join(folder, f"epoch={epoch}.ckpt"), state, score=scores[epoch], step=epoch,
                      retention=keep)
    """
)


@pytest.mark.parametrize("kind", ["symlink", "copy"])
def test_a_run_folder_copied_with_cp_a_resumes_on_its_own_checkpoints(tmp_path: Path, kind: str) -> None:
    script = tmp_path / "loop.py"
    script.write_text(COPIED_RUN)
    original, copy = tmp_path / "run", tmp_path / "copy"
    original.mkdir()

    def train(folder: Path, first: int, last: int) -> None:
        done = run_forked([str(script), str(folder), kind, str(first), str(last)], preload=CHILD_IMPORTS, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]

    train(original, 0, 2)  # best: epoch 1
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    train(copy, 3, 4)  # a new process resumes the copy
    for folder in (original, copy):
        assert BestLinker.from_record(folder / "best.ckpt").verify().ok, folder
    record = read_record(copy / "best.ckpt")
    assert record is not None and record["target"] == str(copy / "epoch=1.ckpt")  # its own, not the original's
    train(original, 3, 5)  # the original goes on, and deletes what it no longer keeps
    # the copy's Retention deletes only what the copy saved (the original's state names another folder)
    assert checkpoints(copy) == ["epoch=1.ckpt", "epoch=2.ckpt", "epoch=4.ckpt"]
    assert checkpoints(original) == ["epoch=1.ckpt", "epoch=5.ckpt"]
    assert BestLinker.from_record(copy / "best.ckpt").verify().ok and fill_of_json(copy / "best.ckpt") == 1


def fill_of_json(alias: Path) -> int:
    """The epoch of the JSON checkpoint ``alias`` holds (COPIED_RUN's saves)."""
    return int(json.loads(alias.read_text())["epoch"])
