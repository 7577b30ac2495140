"""The record describes its target after resumes: monitor, epoch, step and file name are always
those of the checkpoint the alias points at (issue 22 item 3). Each run is a separate process
(tests/scripts/trainer_run.py), as a user's runs are; ``lightning-bestlink show`` is a subprocess.

Two batches an epoch, so a checkpoint of epoch ``e`` is ``epoch=e-step=<2(e+1)>.ckpt``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from tests._cli import cli
from tests._compat import flag
from tests._lit import run_trainer

pytestmark = [pytest.mark.lightning, pytest.mark.slow]

PACKAGE = "lightning.pytorch" if importlib.util.find_spec("lightning") else "pytorch_lightning"
if not importlib.util.find_spec(PACKAGE.split(".")[0]):
    pytest.skip("neither Lightning package is installed", allow_module_level=True)

#: epoch 1 is the best of the first three; epoch 4 (0.2) the best of all; later epochs are worse
LOSSES = [3.0, 1.0, 2.0, 5.0, 0.2, 6.0, 7.0, 8.0, 9.0]


def run(tmp_path: Path, name: str, callbacks: list[dict[str, Any]], epochs: int, **config: Any) -> dict[str, Any]:
    if config.get("ckpt_path") and not flag(PACKAGE, 4):
        config["old_torch_load"] = True  # Lightning < 2.4 on torch >= 2.6 (see tests/_compat.py)
    return run_trainer(tmp_path, name, package=PACKAGE, callbacks=callbacks, losses=LOSSES[:epochs], **config)


def spec(cls: str = "ours", **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"monitor": "val_loss", "save_last": True}
    if cls == "ours":
        options["save_best"] = True
    return {"cls": cls, "kwargs": {**options, **kwargs}}


def extra_of(alias: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(Path(f"{alias}.bestlink.json").read_text())
    assert os.path.realpath(alias) == os.path.normpath(alias.parent / record["target"]), "alias and record agree"
    return dict(record["extra"])


def described(epoch: int) -> dict[str, Any]:
    step = 2 * (epoch + 1)
    return {"monitor": "val_loss", "epoch": epoch, "step": step, "filename": f"epoch={epoch}-step={step}.ckpt"}


def show(folder: Path) -> str:
    out = cli("show", folder)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_ours_then_stock_then_ours_describes_the_best_the_stock_run_found(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    run(tmp_path, "a", [spec(dirpath=str(ckpt))], epochs=3)
    assert extra_of(ckpt / "best.ckpt") == described(1)
    run(tmp_path, "b", [spec("stock", dirpath=str(ckpt))], epochs=6, ckpt_path=str(ckpt / "last.ckpt"))
    c = run(tmp_path, "c", [spec(dirpath=str(ckpt))], epochs=9, ckpt_path=str(ckpt / "last.ckpt"))
    assert os.path.basename(c["callbacks"][0]["best_model_path"]) == "epoch=4-step=10.ckpt"
    # the stock run wrote no record: epoch and step come from the checkpoint itself
    assert extra_of(ckpt / "best.ckpt") == described(4)
    printed = show(ckpt)
    print(printed)  # the closing note of issue 22 lists it
    assert "epoch=4-step=10.ckpt" in printed and "epoch 4" in printed and "step 10" in printed


def test_stock_then_ours_without_a_new_best_describes_the_restored_best(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    run(tmp_path, "a", [spec("stock", dirpath=str(ckpt))], epochs=3)
    run(tmp_path, "b", [spec(dirpath=str(ckpt))], epochs=4, ckpt_path=str(ckpt / "last.ckpt"))
    assert extra_of(ckpt / "best.ckpt") == described(1)
    printed = show(ckpt)
    print(printed)
    assert "epoch 1" in printed and "step 4" in printed and "val_loss" in printed


def test_a_new_folder_without_a_new_best_describes_the_restored_best(tmp_path: Path) -> None:
    a = run(tmp_path, "a", [spec()], epochs=3, logger="csv")
    first = Path(a["log_dir"]) / "checkpoints"
    b = run(tmp_path, "b", [spec()], epochs=4, logger="csv", ckpt_path=str(first / "last.ckpt"))
    second = Path(b["log_dir"]) / "checkpoints"
    assert second != first
    assert extra_of(second / "best.ckpt") == described(1), "the description comes along with the best"
    printed = show(second)
    print(printed)
    assert "epoch 1" in printed and "step 4" in printed


def test_a_record_written_without_a_description_is_completed_on_resume(tmp_path: Path) -> None:
    from lightning_bestlink import BestLinker

    ckpt = tmp_path / "ckpt"
    run(tmp_path, "a", [spec(dirpath=str(ckpt))], epochs=3)
    # as the bug left it: the right target and score, extra={}
    BestLinker(ckpt / "best.ckpt").follow(1.0, ckpt / "epoch=1-step=4.ckpt", extra={})
    run(tmp_path, "b", [spec(dirpath=str(ckpt))], epochs=4, ckpt_path=str(ckpt / "last.ckpt"))
    assert extra_of(ckpt / "best.ckpt") == described(1)


@pytest.mark.parametrize("written", ["no-monitor", "another-monitor"])
def test_ckpt_path_best_refuses_a_record_of_another_measure_and_says_what_to_do(tmp_path: Path, written: str) -> None:
    from lightning_bestlink import BestLinker

    ckpt = tmp_path / "ckpt"
    run(tmp_path, "a", [spec(dirpath=str(ckpt))], epochs=3)
    if written == "no-monitor":  # as the bug of 0.1 left it: the right target and score, extra={}
        BestLinker(ckpt / "best.ckpt").follow(1.0, ckpt / "epoch=1-step=4.ckpt", extra={})
    monitor = {"monitor": "val_acc", "mode": "max"} if written == "another-monitor" else {}
    b = run(tmp_path, "b", [spec(dirpath=str(ckpt), **monitor)], epochs=3, action="test", ckpt_path="best")
    assert b["error"] is not None and "not configured to save the best model" in b["error"]
    (warning,) = [w for w in b["warnings"] if "BestLinkWarning" in w]
    said = "names no monitor" if written == "no-monitor" else "was written for monitor='val_loss', mode='min'"
    assert said in warning and "Pass that checkpoint's path as ckpt_path" in warning
    assert "repair" not in warning, "repair cannot change what a record was measured with"


def test_ckpt_path_best_without_dirpath_says_to_give_one(tmp_path: Path) -> None:
    run(tmp_path, "a", [spec()], epochs=3)  # dirpath=None: <root>/checkpoints, known at setup only
    b = run(tmp_path, "b", [spec()], epochs=3, action="test", ckpt_path="best")
    assert b["error"] is not None and "not configured to save the best model" in b["error"]
    (warning,) = [w for w in b["warnings"] if "BestLinkWarning" in w]
    assert "dirpath=None" in warning and "ModelCheckpointWithLinkBest(dirpath=...)" in warning
