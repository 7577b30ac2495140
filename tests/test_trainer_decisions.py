"""The Trainer adapter's resume decisions, as the pure functions they are (``_trainer_resume``),
and the one reader of a checkpoint: epoch and step, or nothing, never a wrong number."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests._helpers import write_ckpt

from lightning_bestlink import BestLinker, read_record
from lightning_bestlink._trainer_resume import (
    checkpoint_position,
    describe,
    described,
    restore_alias,
    restored_best,
    taken_over_key,
    written_after_change,
)

SAVED = {"best_score": 1.0, "best_path": "/run/a.ckpt"}


class Stock:  # stands for ModelCheckpoint
    pass


class Seed(Stock):  # a class that saved its state under its own name
    pass


class Custom:  # an object weights_only=True will not load: its code is never run
    pass


@pytest.mark.parametrize(
    ("score", "path", "loaded", "monitor", "expected"),
    [
        (0.5, "/run/b.ckpt", SAVED, "loss", "/run/b.ckpt"),  # Lightning's is better
        (1.0, "/run/b.ckpt", SAVED, "loss", "/run/a.ckpt"),  # a tie keeps the alias's own
        (2.0, "/run/b.ckpt", SAVED, "loss", "/run/a.ckpt"),  # the saved state is better (a new folder)
        (None, "/run/b.ckpt", SAVED, "loss", "/run/a.ckpt"),  # Lightning kept no score
        (0.5, "", SAVED, "loss", "/run/a.ckpt"),
        (0.5, "/run/b.ckpt", {}, "loss", "/run/b.ckpt"),  # the stock class saved no best_link
        (0.5, "", {}, "loss", None),
        (None, "/run/b.ckpt", SAVED, None, "/run/b.ckpt"),  # monitor=None: the latest save, no score
    ],
)
def test_the_restored_best_is_the_better_of_lightnings_and_the_saved_state(
    score: Any, path: str, loaded: dict[str, Any], monitor: str | None, expected: str | None
) -> None:
    state = restored_best(loaded, score, path, monitor=monitor, mode="min")
    assert (state and state["best_path"]) == expected
    if monitor is None:
        assert state is not None and state["best_score"] is None


def test_a_saved_state_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        restored_best({**SAVED, "mode": "max"}, 0.5, "/run/b.ckpt", monitor="loss", mode="min")


def test_state_saved_under_a_subclass_key_is_taken_unless_another_callback_owns_it() -> None:
    stock, seed = "Stock{'monitor': 'loss'}", "Seed{'monitor': 'loss'}"
    assert taken_over_key({seed: {}}, stock, Seed.__mro__, Stock, set()) == seed
    assert taken_over_key({seed: {}}, stock, Seed.__mro__, Stock, {seed}) is None  # another callback's
    assert taken_over_key({seed: {}, stock: {}}, stock, Seed.__mro__, Stock, set()) is None  # its own is there


def test_a_record_lends_its_epoch_and_step_only_to_its_own_target() -> None:
    mine = {"target": "/run/e4.ckpt", "extra": {"epoch": 4, "step": 10, "monitor": "acc", "custom": 1}}
    other = {"target": "/run/e1.ckpt", "extra": {"epoch": 1, "step": 4}}
    assert described("/run/e4.ckpt", "loss", [other, mine]) == {
        "epoch": 4,
        "step": 10,
        "custom": 1,
        "monitor": "loss",  # the callback's: the score is measured by it
        "filename": "e4.ckpt",
    }
    assert described("/run/e4.ckpt", None, [other]) == {"monitor": None, "filename": "e4.ckpt", "follows": "latest"}


def test_epoch_and_step_are_read_from_a_checkpoint_or_left_out(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.ckpt"
    torch.save({"epoch": 4, "global_step": 10, "state_dict": {"w": torch.ones(3)}}, good)
    assert checkpoint_position(str(good)) == (4, 10)

    torch.save({"epoch": 4, "global_step": 10, "hyper_parameters": Custom()}, tmp_path / "custom.ckpt")
    torch.save({"epoch": True, "global_step": 10}, tmp_path / "bool.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "no-numbers.ckpt")
    (tmp_path / "torn.ckpt").write_bytes(good.read_bytes()[:100])
    (tmp_path / "sharded.ckpt").mkdir()  # a directory: left out, whatever is inside
    for name in ("custom.ckpt", "bool.ckpt", "no-numbers.ckpt", "torn.ckpt", "sharded.ckpt", "missing.ckpt"):
        assert checkpoint_position(str(tmp_path / name)) is None, name
    assert checkpoint_position("s3://bucket/run/good.ckpt") is None  # never downloaded to describe it


def test_on_resume_a_rewritten_checkpoint_is_described_by_its_own_numbers_not_an_older_record(tmp_path: Path) -> None:
    # a fixed file name (filename="model") is rewritten every epoch; the run was killed after the save
    # of epoch 2 and before the record caught up, so the record still says epoch 1
    torch = pytest.importorskip("torch")
    model = tmp_path / "model.ckpt"
    torch.save({"epoch": 2, "global_step": 6}, model)
    first = BestLinker(tmp_path / "best.ckpt")
    first.follow(None, model, extra={"epoch": 1, "step": 4, "monitor": None, "filename": "model.ckpt"})
    extra = resumed_extra(tmp_path, first)
    assert (extra["epoch"], extra["step"]) == (2, 6)


SECOND = 1_000_000_000  # ns


def unreadable_checkpoint(path: Path, kind: str, epoch: int) -> Path:
    """A checkpoint that cannot tell its own epoch and step: a file ``torch.load(weights_only=True)``
    refuses (``save_hyperparameters`` with a ``pathlib.Path``, a common pattern), or a directory
    (a sharded checkpoint)."""
    if kind == "dir":
        return write_ckpt(path, epoch, kind="dir")
    torch = pytest.importorskip("torch")
    torch.save({"epoch": epoch, "global_step": 3 * epoch, "hyper_parameters": {"data_dir": Path("/data")}}, path)
    assert checkpoint_position(str(path)) is None  # the premise: the file cannot say
    return path


def newest_file(checkpoint: Path) -> Path:
    """The file that changes when ``checkpoint`` is rewritten (a shard, for a directory)."""
    return checkpoint / "shard-0.bin" if checkpoint.is_dir() else checkpoint


def resumed_extra(tmp_path: Path, first: BestLinker) -> dict[str, Any]:
    """The record's ``extra`` once another process resumed from ``first``'s state (``restore_alias``)."""
    restore_alias(BestLinker(tmp_path / "best.ckpt"), first.state_dict(), None, ("", 0, 0))
    extra: dict[str, Any] = read_record(tmp_path / "best.ckpt")["extra"]  # type: ignore[index]
    return extra


def set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def followed(tmp_path: Path, checkpoint: Path, link: str = "symlink") -> BestLinker:
    """A linker whose record says epoch 1, step 4 of ``checkpoint``, written 10 s after its last change."""
    for inside in (checkpoint, *(checkpoint.iterdir() if checkpoint.is_dir() else ())):
        set_mtime(inside, os.stat(checkpoint).st_mtime_ns - 10 * SECOND)
    linker = BestLinker(tmp_path / "best.ckpt", link=link)
    linker.follow(None, checkpoint, extra={"epoch": 1, "step": 4, "monitor": None, "filename": checkpoint.name})
    return linker


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_on_resume_a_checkpoint_that_cannot_tell_its_position_is_not_described_by_an_older_record(
    tmp_path: Path, kind: str
) -> None:
    # the fixed-name checkpoint was rewritten at epoch 2 after the record of epoch 1 was written,
    # and the run killed before the record caught up: the numbers are left out, never stale
    model = unreadable_checkpoint(tmp_path / "model.ckpt", kind, 1)
    first = followed(tmp_path, model)
    unreadable_checkpoint(model, kind, 2)
    set_mtime(newest_file(model), os.stat(first.record_path).st_mtime_ns + SECOND)

    extra = resumed_extra(tmp_path, first)
    assert extra == {"monitor": None, "filename": "model.ckpt", "follows": "latest"}


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_on_resume_a_record_written_after_its_checkpoint_last_changed_keeps_its_epoch_and_step(
    tmp_path: Path, kind: str
) -> None:
    model = unreadable_checkpoint(tmp_path / "model.ckpt", kind, 1)
    first = followed(tmp_path, model)
    os.remove(first.link_path)  # repaired on resume: the record is judged as it was before

    extra = resumed_extra(tmp_path, first)
    assert (extra["epoch"], extra["step"]) == (1, 4)


def rewrite_record(linker: BestLinker, **fields: Any) -> None:
    """Change fields of ``linker``'s record, keeping the record file's modification time."""
    path = Path(linker.record_path)
    mtime = path.stat().st_mtime_ns
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    set_mtime(path, mtime)


def writer_clock_ahead(linker: BestLinker, checkpoint: Path) -> None:
    # the writer's clock a minute ahead of the filesystem's: the rewrite a second after the record
    # is still before the record's unix_time; the record file's own time, stamped by the filesystem, says
    rewrite_record(linker, unix_time=json.loads(Path(linker.record_path).read_text())["unix_time"] + 60)
    set_mtime(checkpoint, os.stat(linker.record_path).st_mtime_ns + SECOND)


def record_copied_later(linker: BestLinker, checkpoint: Path) -> None:
    # a record file copied (or touched) after the checkpoint was rewritten: newer than what it reports
    written = json.loads(Path(linker.record_path).read_text())["unix_time"]
    set_mtime(checkpoint, int(written * 1e9) + SECOND)
    set_mtime(Path(linker.record_path), int(written * 1e9) + 2 * SECOND)


def written_by_a_repair(linker: BestLinker, checkpoint: Path) -> None:
    # a repair keeps an older record's extra under a new time: it vouches for nothing
    rewrite_record(linker, writer={"host": "h", "pid": 1, "id": "x", "repair": True})


def copy_rewritten_in_the_past(linker: BestLinker, checkpoint: Path) -> None:
    # a copy's checkpoint rewritten with a time older than the record (copied over with its times
    # kept): its identity is no longer the one the record gives
    before = os.stat(checkpoint).st_mtime_ns
    write_ckpt(checkpoint, 2, size=8192)
    set_mtime(checkpoint, before)


@pytest.mark.parametrize(
    ("link", "change"),
    [
        ("symlink", writer_clock_ahead),
        ("symlink", record_copied_later),
        ("symlink", written_by_a_repair),
        ("copy", copy_rewritten_in_the_past),
    ],
)
def test_a_record_is_not_shown_written_after_its_checkpoint_changed(tmp_path: Path, link: str, change: Any) -> None:
    model = write_ckpt(tmp_path / "model.ckpt", 1)
    linker = followed(tmp_path, model, link)
    record = read_record(linker.link_path)
    assert record is not None and written_after_change(record, linker.record_path, linker.storage)  # as written

    change(linker, model)
    record = read_record(linker.link_path)
    assert record is not None and not written_after_change(record, linker.record_path, linker.storage)


def test_a_checkpoint_and_its_record_of_one_clock_tick_are_taken_as_saved_then_recorded(tmp_path: Path) -> None:
    # the usual case: the record is written a moment after the save; a rewrite after the record
    # would need a whole epoch and its save within the tick
    model = write_ckpt(tmp_path / "model.ckpt", 1)
    linker = followed(tmp_path, model, "symlink")
    set_mtime(model, os.stat(linker.record_path).st_mtime_ns)
    record = read_record(linker.link_path)
    assert record is not None and written_after_change(record, linker.record_path, linker.storage)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_an_update_to_a_checkpoint_the_run_did_not_see_saved_keeps_the_numbers_its_record_proves(
    tmp_path: Path, kind: str
) -> None:
    # a fit re-run from last.ckpt with nothing left to train: the alias is updated at teardown with
    # the best of the earlier run, a file torch cannot read with weights_only (or a sharded directory)
    model = write_ckpt(tmp_path / "model.ckpt", 1, kind=kind)
    linker = followed(tmp_path, model)
    extra = describe(str(model), None, [], ("", 0, 0), alias=linker)
    assert (extra.get("epoch"), extra.get("step")) == (1, 4)
    set_mtime(model, os.stat(linker.record_path).st_mtime_ns + SECOND)  # rewritten after its record
    extra = describe(str(model), None, [], ("", 0, 0), alias=linker)
    assert "epoch" not in extra and "step" not in extra


def test_lightnings_score_is_restored_as_a_plain_number() -> None:
    torch = pytest.importorskip("torch")
    state = restored_best({}, torch.tensor(0.5), "/run/b.ckpt", monitor="loss", mode="min")
    assert state == {"best_score": 0.5, "best_path": "/run/b.ckpt"} and type(state["best_score"]) is float
