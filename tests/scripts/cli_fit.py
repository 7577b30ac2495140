"""LightningCLI in a process of its own, for tests/test_lightning_cli.py: ``cli_fit.py PACKAGE ARGS...``.

The model is tests/_lit.py's scripted module (val_loss 3.0, 1.0, 2.0; val_acc 0.1, 0.2, 0.9).
"""

import importlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import torch
from tests._lit import make_module

pl = importlib.import_module(sys.argv[1])
cli = importlib.import_module(f"{sys.argv[1]}.cli")
Base = type(make_module(pl, [3.0, 1.0, 2.0]))


class Model(Base):
    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        self.log("val_acc", torch.tensor([0.1, 0.2, 0.9][self.current_epoch]))


cli.LightningCLI(Model, args=sys.argv[2:], save_config_kwargs={"overwrite": True})
