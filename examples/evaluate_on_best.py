"""Evaluate every new best checkpoint in a separate process while training goes on.

``ModelCheckpointWithLinkBest(on_move=...)`` calls the hook on rank zero each time
``best.ckpt`` has moved, with the alias's record (``target``, ``score``, ``extra``). Here the
hook starts an evaluation process for that checkpoint and training continues at once.

With ``save_top_k=1`` Lightning deletes the previous best as soon as the next one is
saved, which can be before the evaluation process has opened it. So the hook opens the
checkpoint itself and hands the open file to the process (``pass_fds``): a deleted file
stays readable through a descriptor that is still open. (On an object store, copy the
checkpoint or keep more with ``save_top_k`` instead.) Run it:

    python examples/evaluate_on_best.py runs/evaluate   # results in runs/evaluate/evaluations.jsonl

Synthetic data, a few seconds on a CPU, nothing downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import torch

LOSSES = [3.0, 1.0, 2.0, 0.5, 0.7, 0.25]  # the scripted validation loss: new bests at epochs 0, 1, 3 and 5


def model() -> torch.nn.Module:
    return torch.nn.Linear(8, 1)


def evaluate(fd: int, name: str, out: str) -> None:
    """The evaluation process: read the checkpoint from the open file it was handed, evaluate, report."""
    with os.fdopen(fd, "rb") as fh:
        checkpoint = torch.load(fh, map_location="cpu", weights_only=False)  # our own file, written by this run
    net = model()
    net.load_state_dict({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=g)
    with torch.no_grad():
        test_loss = float(net(x).pow(2).mean())
    result = {"checkpoint": name, "epoch": checkpoint["epoch"], "test_loss": test_loss}
    with open(out, "a") as fh:  # one short line per process: appends do not interleave
        fh.write(json.dumps(result) + "\n")


def train(root: str) -> None:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_bestlink import ModelCheckpointWithLinkBest

    out = os.path.join(root, "evaluations.jsonl")
    running: list[subprocess.Popen[bytes]] = []

    def on_move(record: dict[str, Any]) -> None:
        fd = os.open(record["target"], os.O_RDONLY)  # held open: Lightning may delete the file any moment now
        try:
            name = os.path.basename(record["target"])
            command = [sys.executable, __file__, "--evaluate", str(fd), name, out]
            running.append(subprocess.Popen(command, pass_fds=(fd,)))
        finally:
            os.close(fd)  # the evaluation process has its own copy of the descriptor
        print(f"best.ckpt -> {name} (val_loss={record['score']}): evaluating in process {running[-1].pid}")

    class Scripted(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model()

        def training_step(self, batch: Any, i: int) -> torch.Tensor:
            return self.net(batch[0]).pow(2).mean()

        def validation_step(self, batch: Any, i: int) -> None:
            self.log("val_loss", LOSSES[self.current_epoch])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(torch.randn(32, 8)), batch_size=8)
    checkpoint = ModelCheckpointWithLinkBest(
        save_best=True, monitor="val_loss", save_top_k=1, dirpath=os.path.join(root, "ckpt"), on_move=on_move
    )
    trainer = pl.Trainer(
        max_epochs=len(LOSSES),
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    trainer.fit(Scripted(), data, data)
    failed = [p.args for p in running if p.wait() != 0]
    if failed:
        raise SystemExit(f"{len(failed)} evaluation(s) failed: {failed}")
    print(f"{len(running)} evaluations, one per new best: {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--evaluate"]:
        evaluate(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        os.makedirs(sys.argv[1] if len(sys.argv) > 1 else "runs/evaluate", exist_ok=True)
        train(sys.argv[1] if len(sys.argv) > 1 else "runs/evaluate")
