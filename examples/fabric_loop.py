"""A manual Fabric loop with a best alias, resumable.

    python examples/fabric_loop.py --dir runs/fabric            # trains 5 epochs
    python examples/fabric_loop.py --dir runs/fabric --epochs 8  # resumes from last.ckpt

Tiny linear model on synthetic data: nothing is downloaded. Works with more than one
process too (``--devices 2`` on CPU uses DDP with gloo).
"""

from __future__ import annotations

import argparse
import os

import torch
from lightning.fabric import Fabric
from torch.utils.data import DataLoader, TensorDataset

from lightning_bestlink import BestLinker
from lightning_bestlink import fabric as bestlink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="runs/fabric", help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="train until this many epochs in total")
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

    linker = BestLinker(os.path.join(args.dir, "best.ckpt"), mode="min")
    state = {"model": model, "optimizer": optimizer, "best": linker, "epoch": 0}
    last = os.path.join(args.dir, "last.ckpt")
    if os.path.exists(last):
        bestlink.load(fabric, last, state)  # restores the linker's best too
        fabric.print(f"resumed at epoch {state['epoch']}, best so far {linker.best_score:.4f}")

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
        path = os.path.join(args.dir, f"epoch={epoch}.ckpt")
        best = bestlink.save_and_link(
            fabric, path, state, score=val_loss, linker=linker, extra={"epoch": epoch, "monitor": "val_loss"}
        )
        fabric.save(last, {**state, "best": linker.state_dict()})
        fabric.print(f"epoch {epoch}: val_loss={val_loss.item():.4f}{'  <- best' if best else ''}")
    fabric.print(f"best: {linker.best_path} ({linker.best_score:.4f}); alias {linker.link_path}")


if __name__ == "__main__":
    main()
