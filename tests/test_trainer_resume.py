"""Resume and reuse, each run a separate process as a user's runs are (tests/scripts/trainer_run.py).

The scripted validation losses make epoch 1 (``epoch=1-step=4.ckpt``, val_loss 1.0) the
best of a first run of 3 epochs; the resumed runs continue with worse epochs unless a
test says otherwise. Every scenario runs on ``lightning.pytorch`` where it is installed,
else on ``pytorch_lightning`` (the adapter is one mixin on both).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from tests._compat import flag
from tests._lit import run_trainer

pytestmark = [pytest.mark.lightning, pytest.mark.slow]

PACKAGE = "lightning.pytorch" if importlib.util.find_spec("lightning") else "pytorch_lightning"
if not importlib.util.find_spec(PACKAGE.split(".")[0]):
    pytest.skip("neither Lightning package is installed", allow_module_level=True)

FIRST = [3.0, 1.0, 2.0]  # best: epoch 1, val_loss 1.0
WORSE = [*FIRST, 5.0, 6.0]  # two more epochs, both worse
BETTER = [*FIRST, 5.0, 0.5]  # epoch 4 is a new best
BEST_FILE = "epoch=1-step=4.ckpt"
MISSING_CALLBACK = "callbacks used to create the checkpoint need to be provided"


def run(tmp_path: Path, name: str, callbacks: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    if config.get("ckpt_path") and not flag(PACKAGE, 4):
        config["old_torch_load"] = True  # Lightning < 2.4 on torch >= 2.6 (see tests/_compat.py)
    return run_trainer(tmp_path, name, package=PACKAGE, callbacks=callbacks, **config)


def spec(cls: str = "ours", **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"monitor": "val_loss", "save_last": True}
    if cls != "stock":
        options["save_best"] = True
    return {"cls": cls, "kwargs": {**options, **kwargs}}


def record(alias: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(f"{alias}.bestlink.json").read_text())
    return data


def resolves(alias: Path) -> str:
    return os.path.realpath(alias)


def missing_callback_warnings(report: dict[str, Any]) -> list[str]:
    return [w for w in report["warnings"] if MISSING_CALLBACK in w]


# --- 1. adopting from the stock class and from the seed's class, and going back -----------


@pytest.mark.parametrize("first", ["stock", "seed"])
def test_adopting_keeps_the_best_of_the_replaced_class(tmp_path: Path, first: str) -> None:
    ckpt = tmp_path / "ckpt"
    one = run(tmp_path, "one", [spec(first, dirpath=str(ckpt))], losses=FIRST)
    best = one["callbacks"][0]["best_model_path"]
    assert os.path.basename(best) == BEST_FILE
    two = run(tmp_path, "two", [spec(dirpath=str(ckpt))], losses=WORSE, ckpt_path=str(ckpt / "last.ckpt"))
    (start,) = two["at_train_start"]
    assert (start["best_model_path"], start["best_model_score"]) == (best, 1.0), "the replaced class's state"
    (end,) = two["callbacks"]
    assert end["best_model_path"] == best and end["best_model_score"] == 1.0
    assert resolves(ckpt / "best.ckpt") == best, "the alias stays at the best of the first run"
    assert record(ckpt / "best.ckpt")["score"] == 1.0
    if first == "stock":
        assert not missing_callback_warnings(two), "same state key as the stock class: nothing to warn about"
    else:
        # the seed's key names its own class: Lightning warns before any callback can answer, then
        # the state is taken over all the same (checked above)
        (warning,) = missing_callback_warnings(two)
        assert "ModelCheckpointWithLinkBest{" in warning


def test_going_back_to_the_stock_class_keeps_lightnings_state(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    one = run(tmp_path, "one", [spec(dirpath=str(ckpt))], losses=FIRST)
    best = one["callbacks"][0]["best_model_path"]
    two = run(tmp_path, "two", [spec("stock", dirpath=str(ckpt))], losses=WORSE, ckpt_path=str(ckpt / "last.ckpt"))
    (start,) = two["at_train_start"]
    assert (start["best_model_path"], start["best_model_score"]) == (best, 1.0)
    assert two["callbacks"][0]["best_model_path"] == best
    assert not missing_callback_warnings(two)


def test_state_saved_under_the_seeds_key_is_not_taken_from_a_callback_that_owns_it(tmp_path: Path) -> None:
    # a stock callback with the same settings is refused by Lightning (one key); a seed-class
    # callback next to ours keeps its own state, and ours does not take it
    ckpt = tmp_path / "ckpt"
    run(tmp_path, "one", [spec("seed", dirpath=str(ckpt))], losses=FIRST)
    two = run(
        tmp_path,
        "two",
        [spec(dirpath=str(tmp_path / "new")), spec("seed", dirpath=str(ckpt), save_best=False)],
        losses=WORSE,
        ckpt_path=str(ckpt / "last.ckpt"),
    )
    ours, seed = two["at_train_start"]
    assert seed["best_model_score"] == 1.0
    assert ours["best_model_path"] == "" and ours["best_model_score"] is None


# --- 2. resuming into a new folder (a new logger version) ----------------------------------


def _two_versions(tmp_path: Path, first: str, losses: list[float], **kwargs: Any) -> tuple[dict[str, Any], ...]:
    one = run(tmp_path, "one", [spec(first, **kwargs)], losses=FIRST, logger="csv")
    folder = Path(one["log_dir"]) / "checkpoints"
    two = run(tmp_path, "two", [spec(**kwargs)], losses=losses, logger="csv", ckpt_path=str(folder / "last.ckpt"))
    return one, two


@pytest.mark.parametrize("first", ["ours", "stock"])
def test_a_new_folder_keeps_the_restored_best_and_its_score(tmp_path: Path, first: str) -> None:
    one, two = _two_versions(tmp_path, first, WORSE)
    best = one["callbacks"][0]["best_model_path"]
    new_folder = Path(two["log_dir"]) / "checkpoints"
    assert Path(best).parent != new_folder
    (start,) = two["at_train_start"]
    assert (start["best_model_path"], start["best_model_score"]) == (best, 1.0), "the score comes back too"
    alias = new_folder / "best.ckpt"
    (epoch_start,) = two["at_first_epoch"]
    assert epoch_start["alias_resolves_to"] == best, "rebuilt in the new folder when training starts"
    assert resolves(alias) == best, "never moved to the worse epochs of the second run"
    saved = record(alias)
    assert saved["score"] == 1.0, "the measured score, never the global step"
    assert os.path.normpath(new_folder / saved["target"]) == best
    # best_model_path is Lightning's: the best of this folder's own top-k, worse than the alias's
    (end,) = two["callbacks"]
    assert Path(end["best_model_path"]).parent == new_folder and end["best_model_score"] > 1.0
    assert "best.ckpt" not in one["stderr"] + two["stderr"], "verbose=False says nothing"


def test_a_new_folder_moves_the_alias_to_a_better_checkpoint_and_verbose_says_so(tmp_path: Path) -> None:
    one, two = _two_versions(tmp_path, "ours", BETTER, verbose=True)
    alias = Path(two["log_dir"]) / "checkpoints" / "best.ckpt"
    (end,) = two["callbacks"]
    assert os.path.basename(end["best_model_path"]) == "epoch=4-step=10.ckpt"
    assert resolves(alias) == end["best_model_path"]
    assert record(alias)["score"] == 0.5
    assert record(alias)["target"] == "epoch=4-step=10.ckpt"
    # verbose=True: one rank-zero line per move, per rebuild on resume, per refusal to follow
    moves = [line for line in one["stderr"].splitlines() if "best.ckpt ->" in line]
    assert len(moves) == 2, one["stderr"]  # epoch 0 (3.0), epoch 1 (1.0); epoch 2 is worse
    assert "epoch=1-step=4.ckpt" in moves[1] and "val_loss=1.00000" in moves[1]
    lines = two["stderr"].splitlines()
    (resumed,) = [line for line in lines if line.startswith("Resumed:")]
    assert "best.ckpt" in resumed and BEST_FILE in resumed and "val_loss=1.00000" in resumed
    # Lightning's first best in the new folder is worse than 1.0: said once, and the alias stays
    stays = [line for line in lines if "stays at" in line]
    assert len(stays) == 1 and BEST_FILE in stays[0] and "is not better" in stays[0]
    (moved,) = [line for line in lines if "global step" in line and "best.ckpt ->" in line]
    assert "epoch=4-step=10.ckpt" in moved and "val_loss=0.50000" in moved


def test_a_second_resume_keeps_the_best_of_the_first_run_and_ckpt_path_best_finds_it(tmp_path: Path) -> None:
    one, two = _two_versions(tmp_path, "ours", WORSE)
    best = one["callbacks"][0]["best_model_path"]
    second = Path(two["log_dir"]) / "checkpoints"
    three = run(tmp_path, "three", [spec()], losses=[*WORSE, 7.0], logger="csv", ckpt_path=str(second / "last.ckpt"))
    alias = Path(three["log_dir"]) / "checkpoints" / "best.ckpt"
    assert resolves(alias) == best
    assert record(alias)["score"] == 1.0
    # a new process on the second folder: its alias's record names the first run's best
    four = run(tmp_path, "four", [spec(dirpath=str(second))], action="test", ckpt_path="best")
    assert four["ckpt_path"] == best


# --- 3. ckpt_path="best" in a new process ---------------------------------------------------


@pytest.mark.parametrize("actions", [["test", "validate", "predict"], ["fit"]], ids=["test-validate-predict", "fit"])
def test_ckpt_path_best_in_a_new_process_is_the_alias(tmp_path: Path, actions: list[str]) -> None:
    ckpt = tmp_path / "ckpt"
    one = run(tmp_path, "one", [spec(dirpath=str(ckpt))], losses=FIRST)
    best = one["callbacks"][0]["best_model_path"]
    losses = WORSE if actions == ["fit"] else FIRST
    two = run(tmp_path, "two", [spec(dirpath=str(ckpt))], losses=losses, action=actions, ckpt_path="best")
    assert two["errors"] == [None] * len(actions)
    assert two["ckpt_paths"] == [best] * len(actions)
    assert resolves(ckpt / "best.ckpt") == best
    if actions == ["fit"]:
        (start,) = two["at_train_start"]
        assert (start["best_model_path"], start["best_model_score"]) == (best, 1.0)


def test_ckpt_path_best_without_a_record_is_lightnings_error(tmp_path: Path) -> None:
    two = run(tmp_path, "two", [spec(dirpath=str(tmp_path / "ckpt"))], action="test", ckpt_path="best")
    assert two["error"] is not None and "not configured to save the best model" in two["error"]


def test_ckpt_path_best_refuses_a_record_of_another_monitor(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    run(tmp_path, "one", [spec(dirpath=str(ckpt))], losses=FIRST)
    two = run(
        tmp_path, "two", [spec(dirpath=str(ckpt), monitor="val_acc", mode="max")], action="test", ckpt_path="best"
    )
    assert two["error"] is not None and "not configured to save the best model" in two["error"]
    (warning,) = [w for w in two["warnings"] if "BestLinkWarning" in w]
    assert "monitor='val_loss'" in warning and "monitor='val_acc'" in warning and str(ckpt / "best.ckpt") in warning


# --- 4. monitor=None: the alias follows the latest save, and the record says so --------------


def test_monitor_none_records_no_score(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    one = run(tmp_path, "one", [spec(dirpath=str(ckpt), monitor=None)], losses=FIRST)
    latest = one["callbacks"][0]["best_model_path"]
    assert os.path.basename(latest) == "epoch=2-step=6.ckpt"
    saved = record(ckpt / "best.ckpt")
    assert saved["score"] is None
    assert saved["extra"]["monitor"] is None and saved["extra"]["follows"] == "latest"
    assert resolves(ckpt / "best.ckpt") == latest
    two = run(tmp_path, "two", [spec(dirpath=str(ckpt), monitor=None)], losses=WORSE, ckpt_path=str(ckpt / "last.ckpt"))
    assert resolves(ckpt / "best.ckpt") == two["callbacks"][0]["best_model_path"]
    assert os.path.basename(two["callbacks"][0]["best_model_path"]) == "epoch=4-step=10.ckpt"
    assert record(ckpt / "best.ckpt")["score"] is None
