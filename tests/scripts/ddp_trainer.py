"""Run by tests/test_ddp.py: a 2-process DDP (gloo, CPU) fit with ModelCheckpointWithLinkBest.

Each rank logs a different validation loss (rank 1's is scrambled), so a wrong
decision on any rank would show. After every call of the checkpoint callback,
each rank checks the alias itself and records what it saw in a JSON file.
"""

import json
import os
import sys

import lightning.pytorch as pl
import torch
from _ddp_exit import finish
from torch.utils.data import DataLoader, TensorDataset

from lightning_bestlink import ModelCheckpointWithLinkBest

out = sys.argv[1]
LOSSES = [3.0, 1.0, 2.0, 0.5, 4.0]


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        value = LOSSES[self.current_epoch]
        if self.global_rank == 1:
            value += 0.25  # differs from rank zero (same order, so Lightning agrees to save)
        self.log("val_loss", torch.tensor(value), sync_dist=False, rank_zero_only=False)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)


SEEN = []


class Check(ModelCheckpointWithLinkBest):
    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        self.record(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        self.record(trainer)

    def record(self, trainer):
        alias = self.best_link_path
        SEEN.append(
            {
                "epoch": trainer.current_epoch,
                "best_model_path": self.best_model_path,
                "alias_exists": os.path.exists(alias),
                "alias_resolves_to": os.path.realpath(alias) if os.path.exists(alias) else None,
                "linker_best": self.best_linker.best_path,
                "linker_score": self.best_linker.best_score,
            }
        )


ckpt = Check(save_best=True, dirpath=os.path.join(out, "ckpt"), monitor="val_loss", save_top_k=1, save_last=True)
trainer = pl.Trainer(
    accelerator="cpu",
    devices=2,
    strategy="ddp",
    max_epochs=len(LOSSES),
    callbacks=[ckpt],
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)
trainer.fit(Module())
with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as fh:
    json.dump({"seen": SEEN, "best_model_path": ckpt.best_model_path}, fh)
finish()
