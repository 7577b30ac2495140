"""A hyperparameter sweep with one alias for the best checkpoint of all trials.

Each trial is its own process, trained with the Lightning Trainer into
``SWEEP/lr=<lr>/``; every trial's callback also offers its new bests to the shared
alias ``SWEEP/best.ckpt`` (``sweep_best=``), which ends at the best checkpoint of the
whole sweep, with its score and its run in the record. Run it:

    python examples/sweep.py runs/sweep      # then: lightning-bestlink show runs/sweep

Synthetic data, a few seconds on a CPU, nothing downloaded.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

LRS = (0.3, 0.03, 0.003)


def trial(sweep: str, lr: float) -> None:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_bestlink import ModelCheckpointWithLinkBest

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g)

    class Regression(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 1)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=lr)

    data = DataLoader(TensorDataset(x, y), batch_size=16)
    checkpoint = ModelCheckpointWithLinkBest(
        save_best=True,
        monitor="val_loss",
        dirpath=os.path.join(sweep, f"lr={lr}"),
        sweep_best=os.path.join(sweep, "best.ckpt"),  # shared by every trial
    )
    trainer = pl.Trainer(
        max_epochs=4,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(Regression(), data, data)


def main(sweep: str) -> None:
    from lightning_bestlink import read_record

    context = multiprocessing.get_context("spawn")  # each trial a fresh process, as a sweep runs them
    with context.Pool(2) as pool:
        pool.starmap(trial, [(sweep, lr) for lr in LRS])
    record = read_record(os.path.join(sweep, "best.ckpt"))
    assert record is not None
    score, run = record["score"], record["extra"]["run"]
    print(f"best of {len(LRS)} trials: {record['target']} (val_loss={score:.4f}, run {run})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/sweep")
