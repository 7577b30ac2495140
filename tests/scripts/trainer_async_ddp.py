"""Run by tests/test_async_checkpoint.py: a 2-process DDP (gloo, CPU) fit with AsyncCheckpointIO.

Rank zero writes every checkpoint on the plugin's background worker (slowly, in two halves)
and moves the alias behind each write; rank 1 takes no part in either. At the start of each
epoch, every rank records Lightning's best_model_path, and rank zero, once its worker has
finished what was queued, what the alias names. A hang (a collective on one rank only) fails
the test by its timeout.
"""

import json
import os
import sys
import time

import lightning.pytorch as pl
import torch
from _ddp_exit import finish
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
from torch.utils.data import DataLoader, TensorDataset

from lightning_bestlink import ModelCheckpointWithLinkBest

out = sys.argv[1]
LOSSES = [5.0, 4.0, 3.0, 6.0, 2.0]


class Slow(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        time.sleep(0.05)  # the alias must wait for the write, not for this pause to be over
        super().save_checkpoint(checkpoint, path, storage_options)


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.tensor(LOSSES[self.current_epoch]), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)


plugin = AsyncCheckpointIO(Slow())
SEEN = []


class Probe(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.look(trainer)

    def on_train_end(self, trainer, pl_module):
        self.look(trainer)

    def look(self, trainer):
        named = None
        if trainer.is_global_zero:
            executor = getattr(plugin, "_executor", None)
            if executor is not None:
                executor.submit(lambda: None).result(timeout=60)  # the writes asked for so far are done
            alias = ckpt.best_link_path
            named = os.path.realpath(alias) if os.path.lexists(alias) else None
        SEEN.append({"epoch": trainer.current_epoch, "best_model_path": ckpt.best_model_path, "alias": named})


# Lightning 2.1's save_last=True symlinks last.ckpt right after submitting the save, before the
# background write has made the folder, and fails when it loses that race (stock ModelCheckpoint
# too): the folder exists from the start, as it does for a resumed run
os.makedirs(os.path.join(out, "ckpt"), exist_ok=True)
ckpt = ModelCheckpointWithLinkBest(
    save_best=True, dirpath=os.path.join(out, "ckpt"), monitor="val_loss", save_top_k=1, save_last=True
)
trainer = pl.Trainer(
    accelerator="cpu",
    devices=2,
    strategy="ddp",
    max_epochs=len(LOSSES),
    callbacks=[Probe(), ckpt],
    plugins=[plugin],
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)
trainer.fit(Module())
with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as fh:
    json.dump({"seen": SEEN, "best_model_path": ckpt.best_model_path}, fh)
finish()
