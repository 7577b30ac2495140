"""A manual Fabric loop with best.ckpt, last.ckpt and a retention policy, resumable.

    python examples/fabric_loop.py --dir runs/fabric            # trains 5 epochs
    python examples/fabric_loop.py --dir runs/fabric --epochs 8  # resumes from last.ckpt

Each epoch is saved once, as epoch=N.ckpt: best.ckpt and last.ckpt are aliases of it (no
second save), and the checkpoints that are neither among the --keep-best best, the best, nor
the latest are deleted. Tiny linear model on synthetic data: nothing is downloaded. Works with
more than one process too (``--devices 2`` on CPU uses DDP with gloo).
"""

from __future__ import annotations

import argparse
import os

import torch
from lightning.fabric import Fabric
from torch.utils.data import DataLoader, TensorDataset

from lightning_bestlink import BestLinker, LatestLinker, Retention
from lightning_bestlink import fabric as bestlink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="runs/fabric", help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="train until this many epochs in total")
    parser.add_argument("--keep-best", type=int, default=2, help="best checkpoints kept (default: %(default)s)")
    parser.add_argument("--devices", type=int, default=1, help="CPU processes (default: %(default)s)")
    args = parser.parse_args()

    fabric = Fabric(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto")
    fabric.launch()
    fabric.seed_everything(0)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(256, 1, generator=g)
    train = fabric.setup_dataloaders(DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32, shuffle=True))
    val_x, val_y = x[192:], y[192:]

    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer = fabric.setup(model, optimizer)

    best = BestLinker(os.path.join(args.dir, "best.ckpt"), mode="min")
    last = LatestLinker(os.path.join(args.dir, "last.ckpt"))  # the latest checkpoint, by epoch
    keep = Retention(best, last, keep_best=args.keep_best)  # deletes the others, on rank zero
    # the aliases and the retention travel in each checkpoint: a resume knows the best, the latest and
    # which checkpoints this run saved (the only ones it may delete)
    state = {"model": model, "optimizer": optimizer, "best": best, "last": last, "keep": keep, "epoch": 0}
    if os.path.exists(last.link_path):
        bestlink.load(fabric, last.link_path, state)  # restores the aliases and the retention too
        fabric.print(f"resumed at epoch {state['epoch']}, best so far {best.best_score:.4f}")

    while state["epoch"] < args.epochs:
        model.train()
        for xb, yb in train:
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            fabric.backward(loss)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = torch.nn.functional.mse_loss(model(val_x.to(fabric.device)), val_y.to(fabric.device))
        state["epoch"] += 1
        epoch = state["epoch"]
        became_best = bestlink.save_and_link(
            fabric,
            os.path.join(args.dir, f"epoch={epoch}.ckpt"),
            state,
            score=val_loss,
            step=epoch,
            retention=keep,  # moves best.ckpt and last.ckpt, then deletes what it no longer keeps
            extra={"epoch": epoch, "monitor": "val_loss"},
        )
        fabric.print(f"epoch {epoch}: val_loss={val_loss.item():.4f}{'  <- best' if became_best else ''}")
    kept = sorted(name for name in os.listdir(args.dir) if name.startswith("epoch="))
    fabric.print(f"best: {best.best_path} ({best.best_score:.4f}); latest: {last.best_path}; kept: {', '.join(kept)}")


if __name__ == "__main__":
    main()
