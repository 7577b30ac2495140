"""The latest alias (LatestLinker), the retention policy and save_and_link for plain loops (no torch).

Retention keeps the ``keep_best`` best by score, the current best and the latest, and deletes
the rest, after the aliases moved; it never deletes what an alias points at, nor anything it
did not see saved, nor anything outside the best alias's folder. Its list of saved checkpoints
is input: a damaged or planted one is a clear error and nothing is deleted.
"""

from __future__ import annotations

import doctest
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests._helpers import KINDS, fill_of, leftovers, write_ckpt

from lightning_bestlink import (
    BestLinker,
    BestLinkWarning,
    LatestLinker,
    Retention,
    _keep,
    latest,
    loop,
    retention,
    save_and_link,
)
from lightning_bestlink._errors import RecordError
from lightning_bestlink._score import is_better

SCORES = [3.0, 1.0, 2.0, 0.5, 4.0, 0.7, 5.0]  # mode="min": the best is epoch 3


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
        keep.saved(path, score, step=epoch)
        assert best.verify().ok and last.verify().ok, "every alias resolves after every deletion"
    return best, last, keep


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("epoch="))


@pytest.mark.parametrize("target", ["file", "dir"])
@pytest.mark.parametrize("kind", KINDS)
def test_retention_keeps_the_best_the_k_best_and_the_latest(tmp_path: Path, kind: str, target: str) -> None:
    if (kind, target) == ("hardlink", "dir"):
        pytest.skip("directories have no hard links (tested in test_linker.py)")
    best, last, keep = run_epochs(tmp_path, SCORES, kind=kind, target=target, keep_best=2)
    # the two best (epochs 3 and 5) and the latest (6)
    assert checkpoints(tmp_path) == ["epoch=3.ckpt", "epoch=5.ckpt", "epoch=6.ckpt"]
    assert fill_of(best.link_path) == 3 and fill_of(last.link_path) == 6
    assert leftovers(tmp_path) == []
    listed = json.loads(Path(keep.record_path).read_text())["saved"]
    assert [e["path"] for e in listed] == ["epoch=3.ckpt", "epoch=5.ckpt", "epoch=6.ckpt"]


def test_keep_best_zero_keeps_the_best_and_the_latest(tmp_path: Path) -> None:
    run_epochs(tmp_path, SCORES, keep_best=0)
    assert checkpoints(tmp_path) == ["epoch=3.ckpt", "epoch=6.ckpt"]


def test_never_deletes_what_it_did_not_see_saved_or_what_changed_since(tmp_path: Path) -> None:
    foreign = write_ckpt(tmp_path / "epoch=99-mine.ckpt", 99)
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=1)
    for epoch, score in enumerate([1.0, 2.0]):
        path = write_ckpt(tmp_path / f"epoch={epoch}.ckpt", epoch)
        best.update(score, path)
        keep.saved(path, score, step=epoch)
    # someone writes another file over epoch=1.ckpt (same name, other bytes): no longer ours
    write_ckpt(tmp_path / "epoch=1.ckpt", 77, size=100)
    path = write_ckpt(tmp_path / "epoch=2.ckpt", 2)
    best.update(3.0, path)
    with pytest.warns(BestLinkWarning, match=r"epoch=1\.ckpt.*changed since it was saved"):
        assert keep.saved(path, 3.0) == []
    assert fill_of(tmp_path / "epoch=1.ckpt") == 77 and fill_of(foreign) == 99
    listed = [e["path"] for e in json.loads(Path(keep.record_path).read_text())["saved"]]
    assert listed == ["epoch=0.ckpt", "epoch=2.ckpt"], "forgotten, never retried"


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
    # a new process whose linker has no state yet: the alias on disk still resolves to epoch 1
    fresh = Retention(BestLinker(tmp_path / "best.ckpt"), keep_best=0)
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
        path = write_ckpt(tmp_path / f"epoch={epoch}.ckpt", epoch)
        best.update(score, path)
        keep.saved(path, score)
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

    def save(epoch: int, score: float) -> list[str]:
        path = write_ckpt(tmp_path / f"epoch={epoch}.ckpt", epoch)
        best.update(score, path)
        return keep.saved(path, score)

    assert save(0, 1.0) == [] and save(1, 2.0) == []
    with monkeypatch.context() as m:
        m.setattr(os, "unlink", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
        with pytest.warns(BestLinkWarning, match=r"could not delete .*epoch=1\.ckpt.*Permission denied.*tried again"):
            assert save(2, 3.0) == []
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    assert save(3, 4.0) == [str(tmp_path / "epoch=1.ckpt"), str(tmp_path / "epoch=2.ckpt")]
    assert checkpoints(tmp_path) == ["epoch=0.ckpt", "epoch=3.ckpt"]


def test_saved_refuses_what_it_cannot_manage(tmp_path: Path) -> None:
    best = BestLinker(tmp_path / "run" / "best.ckpt")
    keep = Retention(best)
    outside = write_ckpt(tmp_path / "elsewhere.ckpt", 1)
    with pytest.raises(ValueError, match=r"only inside the best alias's folder .*elsewhere\.ckpt"):
        keep.saved(outside, 1.0)
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        keep.saved(tmp_path / "run" / "missing.ckpt", 1.0)
    write_ckpt(tmp_path / "run" / "a.ckpt", 1)
    best.update(1.0, tmp_path / "run" / "a.ckpt")
    with pytest.raises(ValueError, match="is an alias, not a checkpoint"):
        keep.saved(best.link_path, 1.0)
    with pytest.raises(TypeError, match="score must be a real number"):
        keep.saved(tmp_path / "run" / "a.ckpt", "0.5")
    assert not os.path.exists(keep.record_path) and fill_of(outside) == 1


# --- the list next to the alias is input ------------------------------------------------------------


def plant(keep: Retention, entries: list[Any], **top: Any) -> None:
    record = {"format": retention.FORMAT, "alias": "best.ckpt", "mode": "min", "ties": "first", "saved": entries}
    record.update(top)
    Path(keep.record_path).write_text(json.dumps(record))


def entry(path: str, score: Any = 9.0, **over: Any) -> dict[str, Any]:
    return {"path": path, "score": score, "step": 1, "seq": 1, "kind": "file", "fingerprint": [0, 0], **over}


@pytest.mark.parametrize(
    ("planted", "message"),
    [
        ({"saved": [entry("../secret.ckpt")]}, r"entry 0 names '\.\./secret\.ckpt', which lies outside"),
        ({"saved": [entry("/etc/passwd")]}, "lies outside the alias's folder"),
        ({"saved": [entry("a.ckpt", score="x")]}, "'score' must be a number"),
        ({"saved": [entry("a.ckpt", seq=-1)]}, "'seq' must be a whole number"),
        ({"saved": [entry("a.ckpt", kind="fifo")]}, "'kind' must be 'file' or 'dir'"),
        ({"saved": [entry("a.ckpt", fingerprint={"a": 1})]}, "'fingerprint' must be"),
        ({"saved": [entry("a.ckpt", score=10**400)]}, "out of range"),
        ({"mode": "max"}, r"ranks checkpoints with mode='max'.*move the list away"),
        ({"format": "other"}, "not a lightning-bestlink retention list"),
    ],
)
def test_a_planted_or_damaged_list_is_a_clear_error_and_nothing_is_deleted(
    tmp_path: Path, planted: dict[str, Any], message: str
) -> None:
    secret = write_ckpt(tmp_path / "secret.ckpt", 5)
    run = tmp_path / "run"
    best = BestLinker(run / "best.ckpt")
    keep = Retention(best, keep_best=0)
    a = write_ckpt(run / "a.ckpt", 1)
    plant(keep, planted.pop("saved", [entry("a.ckpt")]), **planted)
    b = write_ckpt(run / "b.ckpt", 2)
    best.update(1.0, b)
    with pytest.raises(RecordError, match=message) as info:
        keep.saved(b, 1.0)
    assert keep.record_path in str(info.value)
    assert fill_of(a) == 1 and fill_of(b) == 2 and fill_of(secret) == 5


@pytest.mark.parametrize("content", [b"[" * 100_000, b"\xff\xfe", b"x" * (retention.LIMIT + 1)])
def test_an_unreadable_list_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best)
    Path(keep.record_path).write_bytes(content)
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    with pytest.raises(RecordError, match=r"bestlink\.retention\.json"):
        keep.saved(a, 1.0)
    assert fill_of(a) == 1


def test_a_planted_list_cannot_make_it_delete_a_file_of_the_right_size_and_time(tmp_path: Path) -> None:
    # even inside the folder: a listed file is deleted only if it is still what was fingerprinted
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    victim = write_ckpt(tmp_path / "notes.ckpt", 3)
    st_ = os.stat(victim)
    plant(keep, [entry("notes.ckpt", fingerprint=[st_.st_size, st_.st_mtime_ns + 1])])
    b = write_ckpt(tmp_path / "b.ckpt", 2)
    best.update(1.0, b)
    with pytest.warns(BestLinkWarning, match="changed since it was saved"):
        keep.saved(b, 1.0)
    assert fill_of(victim) == 3


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
        state = {"epoch": epoch, "best": best, "last": last}
        path = tmp_path / f"epoch={epoch}.ckpt"
        became = save_and_link(save, path, state, score=score, linker=best, latest=last, step=epoch)
        assert became == (epoch in (0, 1, 3))
    assert len(calls) == 4
    saved = json.loads((tmp_path / "epoch=3.ckpt").read_text())
    assert saved["best"]["best_path"] == str(tmp_path / "epoch=3.ckpt") and saved["best"]["best_score"] == 0.5
    assert saved["last"]["best_path"] == str(tmp_path / "epoch=3.ckpt") and saved["last"]["best_score"] == 3
    assert not os.path.exists(keep.record_path)  # no retention was passed: nothing deleted
    assert checkpoints(tmp_path) == [f"epoch={i}.ckpt" for i in range(4)]


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


def test_save_and_link_argument_errors(tmp_path: Path) -> None:
    best, last = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    other = BestLinker(tmp_path / "other.ckpt")
    path = tmp_path / "a.ckpt"
    with pytest.raises(TypeError, match="needs the step"):
        save_and_link(json_save, path, {}, score=1.0, linker=best, latest=last)
    with pytest.raises(ValueError, match="build it with Retention"):
        save_and_link(json_save, path, {}, score=1.0, linker=best, retention=Retention(other))
    with pytest.raises(TypeError, match="latest must be a LatestLinker"):
        save_and_link(json_save, path, {}, score=1.0, linker=best, latest=other, step=1)
    with pytest.raises(TypeError, match="leave it out of state"):
        save_and_link(json_save, path, {"keep": Retention(best)}, score=1.0, linker=best)
    assert not path.exists()


def test_retention_on_fsspec_memory_urls() -> None:
    import fsspec

    root = f"memory://bestlink-retention-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    best, last = BestLinker(f"{root}/best.ckpt"), LatestLinker(f"{root}/last.ckpt")
    keep = Retention(best, last, keep_best=1)
    for epoch, score in enumerate(SCORES):
        path = f"{root}/epoch={epoch}.ckpt"

        def save(state: dict[str, Any], p: str) -> None:
            fs.pipe_file(p, json.dumps(state).encode())

        save_and_link(save, path, {"best": best, "last": last}, score=score, linker=best, step=epoch, retention=keep)
        assert best.verify().ok and last.verify().ok
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(root, detail=False))
    assert [n for n in names if n.startswith("epoch=")] == ["epoch=3.ckpt", "epoch=6.ckpt"]
    assert json.loads(fs.cat(f"{root}/best.ckpt"))["best"]["best_score"] == 0.5
    fs.mkdir(f"{root}/sharded")
    fs.pipe_file(f"{root}/sharded/shard-0", b"x")
    with pytest.raises(IsADirectoryError, match="directory checkpoint"):
        keep.saved(f"{root}/sharded", 0.1)
    fs.rm(root, recursive=True)


# --- kill and resume: two processes ----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests._helpers import write_ckpt
    from lightning_bestlink import BestLinker, LatestLinker, Retention, save_and_link
    from lightning_bestlink import _prune, latest

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

    hook(latest.LatestLinker, "follow", "latest")           # the best alias moved, the latest not yet
    hook(Retention, "record", "listed", after=True)         # listed, the aliases not moved yet
    hook(Retention, "prune", "retention")                   # both aliases moved, nothing deleted yet
    hook(_prune, "_rmtree", "rmtree")                       # a directory renamed away, not yet removed
    hook(_prune, "delete", "deleted", after=True)           # one checkpoint deleted, the list not updated

    best = BestLinker(os.path.join(folder, "best.ckpt"), link=kind)
    last = LatestLinker(os.path.join(folder, "last.ckpt"), link=kind)
    keep = Retention(best, last, keep_best=1)
    epoch = 0
    if os.path.lexists(last.link_path):  # resume: the states saved inside the latest checkpoint
        ckpt = os.path.join(last.link_path, "state.json") if os.path.isdir(last.link_path) else last.link_path
        saved = json.loads(Path(ckpt).read_bytes().split(b"\\n", 1)[0])
        best.load_state_dict(saved["best"]); best.repair()
        last.load_state_dict(saved["last"]); last.repair()
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
        state = {{"epoch": epoch, "best": best, "last": last}}
        save_and_link(save, os.path.join(folder, f"epoch={{epoch}}.ckpt"), state, score=scores[epoch],
                      linker=best, step=epoch, retention=keep)
    """
)

KILL_POINTS = ["save:3", "saved:3", "listed:4", "latest:3", "latest:4", "retention:4", "deleted:2", "rmtree:2"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["file", "dir"])
@pytest.mark.parametrize("kind", ["symlink", "copy"])
@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_latest_alias_and_retention_across_a_kill_and_a_resume(
    tmp_path: Path, kill_at: str, kind: str, target: str
) -> None:
    if kill_at.startswith("rmtree") and target == "file":
        pytest.skip("only a directory is renamed away before it is removed")
    repo = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=repo, scores=SCORES))
    run = tmp_path / "run"
    run.mkdir()

    def child(kill: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, str(script), str(run), kind, target, kill, str(len(SCORES))]
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

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


def test_a_killed_directory_deletion_is_finished_by_the_next_run(tmp_path: Path) -> None:
    best = BestLinker(tmp_path / "best.ckpt")
    keep = Retention(best, keep_best=0)
    leftover = tmp_path / f".{Path(keep.record_path).name}.bestlink-trash-4242-0123abcd"
    write_ckpt(leftover, 1, kind="dir")
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    best.update(1.0, a)
    keep.saved(a, 1.0)
    assert not leftover.exists() and leftovers(tmp_path) == []
