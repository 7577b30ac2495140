"""The Trainer adapter's resume decisions, as the pure functions they are (``_trainer_resume``),
and the one reader of a checkpoint: epoch and step, or nothing, never a wrong number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lightning_bestlink import BestLinker, read_record
from lightning_bestlink._trainer_resume import (
    checkpoint_position,
    described,
    restore_alias,
    restored_best,
    taken_over_key,
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
    resumed = BestLinker(tmp_path / "best.ckpt")
    restore_alias(resumed, first.state_dict(), None, ("", 0, 0))
    extra = read_record(tmp_path / "best.ckpt")["extra"]  # type: ignore[index]
    assert (extra["epoch"], extra["step"]) == (2, 6)


def test_lightnings_score_is_restored_as_a_plain_number() -> None:
    torch = pytest.importorskip("torch")
    state = restored_best({}, torch.tensor(0.5), "/run/b.ckpt", monitor="loss", mode="min")
    assert state == {"best_score": 0.5, "best_path": "/run/b.ckpt"} and type(state["best_score"]) is float
