"""A tiny LightningModule on synthetic data, for either Lightning package.

The validation metric follows a script (``losses[epoch]``) so tests know in advance
which checkpoint is the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset


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

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.randn(4 * batches, 2)), batch_size=4)

        def val_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=4)

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
