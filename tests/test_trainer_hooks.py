"""What the Trainer callback tells others when the alias moves: ``log_best`` to the Trainer's
loggers (real ones, in this process, offline: nothing is uploaded) and the ``on_move`` hook.

The logger packages are installed in the ``lightning26`` environment only; elsewhere their
cases are skipped with the reason. CSVLogger needs nothing beyond Lightning.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from tests._lit import make_module, trainer  # noqa: E402

from lightning_bestlink import BestLinkWarning, ModelCheckpointWithLinkBest, read_record  # noqa: E402

pytestmark = pytest.mark.lightning

LOSSES = [3.0, 1.0, 2.0, 0.5]  # the alias moves at epochs 0, 1 and 3
MOVES = [3.0, 1.0, 0.5]


def needs(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (the lightning26 environment has the logger packages)",
    )


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B and MLflow kept inside ``tmp_path``, offline."""
    home = tmp_path / "loggers"
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(home / "wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store only on request
    (home / "wandb").mkdir(parents=True)
    return home


def make_logger(kind: str, home: Path) -> Any:
    if kind == "csv":
        return pl.loggers.CSVLogger(home, name="csv")
    if kind == "tensorboard":
        return pl.loggers.TensorBoardLogger(home, name="tb")
    if kind == "mlflow":
        return pl.loggers.MLFlowLogger(experiment_name="bestlink", tracking_uri=(home / "mlruns").as_uri())
    return pl.loggers.WandbLogger(offline=True, save_dir=str(home / "wandb"), project="bestlink")


def logged(kind: str, logger: Any, name: str) -> tuple[list[float], str | None]:
    """The values logged as metric ``name``, in order, and the text kept as ``<name>_path``."""
    if kind == "csv":
        with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as fh:
            return [float(row[name]) for row in csv.DictReader(fh) if row.get(name)], None
    if kind == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(logger.log_dir)
        events.Reload()
        texts = events.Tensors(f"{name}_path/text_summary")
        return [e.value for e in events.Scalars(name)], texts[-1].tensor_proto.string_val[0].decode()
    if kind == "mlflow":
        client, run = logger.experiment, logger.run_id
        history = sorted(client.get_metric_history(run, name), key=lambda m: m.step)
        return [m.value for m in history], client.get_run(run).data.tags.get(f"{name}_path")
    summary = logger.experiment.summary  # W&B keeps the last value; the history stays in the offline files
    return [float(summary[name])], summary.get(f"{name}_path")


KINDS = [
    pytest.param("csv", id="csv"),
    pytest.param("tensorboard", id="tensorboard", marks=needs("tensorboard")),
    pytest.param("mlflow", id="mlflow", marks=needs("mlflow")),
    pytest.param("wandb", id="wandb", marks=needs("wandb")),
]


@pytest.mark.parametrize("kind", KINDS)
def test_log_best_gives_every_logger_the_score_of_each_move_and_the_path(
    tmp_path: Path, offline: Path, kind: str
) -> None:
    logger = make_logger(kind, offline)
    ckpt = ModelCheckpointWithLinkBest(save_best=True, dirpath=tmp_path / "ckpt", monitor="val_loss")
    try:
        trainer(pl, tmp_path, [ckpt], max_epochs=len(LOSSES), logger=logger).fit(make_module(pl, LOSSES))
        values, text = logged(kind, logger, "best/val_loss")
    finally:
        if kind == "wandb":
            logger.experiment.finish()
    assert values == (MOVES[-1:] if kind == "wandb" else MOVES)
    record = read_record(ckpt.best_link_path)
    assert record is not None and record["score"] == 0.5
    assert text == (None if kind == "csv" else record["target"])  # CSV has no place for text


def test_two_callbacks_log_under_their_own_names_and_log_best_false_logs_nothing(tmp_path: Path) -> None:
    logger = pl.loggers.CSVLogger(tmp_path, name="csv")
    loss = ModelCheckpointWithLinkBest(save_best=True, dirpath=tmp_path / "a", monitor="val_loss")
    other = ModelCheckpointWithLinkBest(
        save_best=True, dirpath=tmp_path / "b", monitor="val_loss", mode="max", best_name="worst"
    )
    quiet = ModelCheckpointWithLinkBest(
        save_best=True, dirpath=tmp_path / "c", monitor="val_loss", every_n_epochs=2, log_best=False
    )
    trainer(pl, tmp_path, [loss, other, quiet], max_epochs=len(LOSSES), logger=logger).fit(make_module(pl, LOSSES))
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = {name for row in rows for name, value in row.items() if value}
    assert {"best/val_loss", "worst/val_loss"} <= columns
    assert not {
        c for c in columns if c.endswith("val_loss") and c not in {"val_loss", "best/val_loss", "worst/val_loss"}
    }
    assert [float(r["worst/val_loss"]) for r in rows if r.get("worst/val_loss")] == [3.0]  # mode="max"


def test_two_callbacks_that_would_log_one_metric_are_refused(tmp_path: Path) -> None:
    a = ModelCheckpointWithLinkBest(save_best=True, dirpath=tmp_path / "a", monitor="val_loss")
    b = ModelCheckpointWithLinkBest(save_best=True, dirpath=tmp_path / "b", monitor="val_loss", every_n_epochs=2)
    with pytest.raises(ValueError, match=r"would log their best as one metric, best/val_loss"):
        trainer(pl, tmp_path, [a, b], max_epochs=1).fit(make_module(pl, LOSSES))


def test_a_logger_that_fails_is_reported_and_training_goes_on(tmp_path: Path) -> None:
    class Broken(pl.loggers.CSVLogger):  # type: ignore[misc,name-defined]
        def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
            if any(name.startswith("best/") for name in metrics):
                raise ConnectionError("the tracking server is gone")
            super().log_metrics(metrics, step)

    ckpt = ModelCheckpointWithLinkBest(save_best=True, dirpath=tmp_path / "ckpt", monitor="val_loss")
    fit = trainer(pl, tmp_path, [ckpt], max_epochs=len(LOSSES), logger=Broken(tmp_path, name="csv"))
    with pytest.warns(
        BestLinkWarning, match=r"log_best could not log the best .* ConnectionError: the tracking server"
    ):
        fit.fit(make_module(pl, LOSSES))
    assert os.path.realpath(ckpt.best_link_path) == ckpt.best_model_path


def test_on_move_gets_each_record_once_alias_and_record_agree(tmp_path: Path) -> None:
    seen: list[tuple[float, str, bool]] = []

    def on_move(record: dict[str, Any]) -> None:
        alias = tmp_path / "ckpt" / "best.ckpt"
        agree = os.path.realpath(alias) == record["target"] and read_record(alias) == record
        seen.append((record["score"], os.path.basename(record["target"]), agree))

    ckpt = ModelCheckpointWithLinkBest(save_best=True, dirpath=tmp_path / "ckpt", monitor="val_loss", on_move=on_move)
    trainer(pl, tmp_path, [ckpt], max_epochs=len(LOSSES)).fit(make_module(pl, LOSSES))
    assert seen == [
        (3.0, "epoch=0-step=2.ckpt", True),
        (1.0, "epoch=1-step=4.ckpt", True),
        (0.5, "epoch=3-step=8.ckpt", True),
    ]


def test_an_on_move_that_raises_is_a_warning_and_the_alias_moves_on(tmp_path: Path) -> None:
    def on_move(record: dict[str, Any]) -> None:
        raise RuntimeError("the evaluation queue is full")

    ckpt = ModelCheckpointWithLinkBest(save_best=True, dirpath=tmp_path / "ckpt", monitor="val_loss", on_move=on_move)
    with pytest.warns(BestLinkWarning, match=r"on_move .* raised RuntimeError: the evaluation queue is full"):
        trainer(pl, tmp_path, [ckpt], max_epochs=len(LOSSES)).fit(make_module(pl, LOSSES))
    assert os.path.basename(os.path.realpath(ckpt.best_link_path)) == "epoch=3-step=8.ckpt"
