"""A tiny LightningModule on synthetic data, for either Lightning package, and a way to run
a Trainer in a process of its own (``tests/scripts/trainer_run.py``), as a user's separate runs are.

The validation metric follows a script (``losses[epoch]``) so tests know in advance
which checkpoint is the best.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from tests._fork import lightning, run_forked
from torch.utils.data import DataLoader, TensorDataset

SCRIPT = Path(__file__).parent / "scripts" / "trainer_run.py"

#: each Lightning package and the module of this library that adapts it
PACKAGES = {
    "lightning.pytorch": "lightning_bestlink.callbacks",
    "pytorch_lightning": "lightning_bestlink.pytorch_lightning",
}


def _available(name: str) -> bool:
    try:
        with warnings.catch_warnings():
            # Lightning 2.0's first import warns through lightning_utilities (ModuleAvailableCache)
            warnings.simplefilter("ignore", DeprecationWarning)
            importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.fixture(params=list(PACKAGES), ids=["lightning", "pytorch_lightning"])
def pkg(request: pytest.FixtureRequest) -> Any:
    """Each installed Lightning package (a test importing this fixture runs once per package)."""
    if not _available(request.param):
        pytest.skip(f"{request.param} is not installed")
    return importlib.import_module(request.param)


@pytest.fixture
def cls(pkg: Any) -> Any:
    """``ModelCheckpointWithLinkBest`` for ``pkg``."""
    return importlib.import_module(PACKAGES[pkg.__name__]).ModelCheckpointWithLinkBest


def make_module(pl: Any, losses: Sequence[float], *, monitor: str = "val_loss", batches: int = 2) -> Any:
    class Scripted(pl.LightningModule):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            value = losses[min(self.current_epoch, len(losses) - 1)]
            self.log(monitor, torch.tensor(float(value)))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self.log("test_loss", self.layer(batch[0]).pow(2).mean())

        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return self.layer(batch[0])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.randn(4 * batches, 2)), batch_size=4)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=4)

        test_dataloader = val_dataloader
        predict_dataloader = val_dataloader

    return Scripted()


def trainer(pl: Any, root: Any, callbacks: list[Any], **kwargs: Any) -> Any:
    options: dict[str, Any] = dict(
        max_epochs=len(kwargs.pop("losses", [])) or 3,
        default_root_dir=str(root),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


def run_trainer(tmp_path: Path, name: str, **config: Any) -> dict[str, Any]:
    """Run ``tests/scripts/trainer_run.py`` with ``config`` in a new process (forked from one that
    has imported torch and the Lightning package, see tests/_fork.py); return its report.

    The report holds what the script saw (``callbacks``, ``at_train_start``, ``ckpt_path``,
    ``warnings``, ``error``) and the run's ``stderr``. ``config`` keys: ``package``
    ("lightning.pytorch" or "pytorch_lightning"), ``callbacks`` (a list of
    ``{"cls": "ours"|"stock"|"seed", "kwargs": {...}}``), ``losses``, ``action``
    ("fit", "validate", "test", "predict"), ``ckpt_path``, ``logger`` ("csv" or None),
    ``root``. Lightning before 2.4 needs ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` to read its
    own checkpoints on torch >= 2.6 (``old_torch_load=True``).
    """
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if config.pop("old_torch_load", False):
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    config = {"root": str(tmp_path), "out": str(out), **config}
    preload = lightning(config.get("package", "lightning.pytorch"))
    proc = run_forked([SCRIPT, json.dumps(config)], preload=preload, cwd=tmp_path, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    report["stderr"] = proc.stderr
    return report
