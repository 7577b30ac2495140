"""``lightning-bestlink demo``: a tiny model trained with the Trainer and with Fabric.

Synthetic data, nothing downloaded, a few seconds on a laptop CPU. torch and
Lightning are imported inside the functions that train, with their warnings and logs
held back (see :func:`quiet`): importing this module costs no more than the rest of
the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from lightning_bestlink._cli.commands import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from lightning_bestlink._cli.render import render
from lightning_bestlink._cli.survey import scan
from lightning_bestlink._errors import BestLinkWarning
from lightning_bestlink.latest import LatestLinker
from lightning_bestlink.linker import BestLinker

SEED = 4  # with this seed the validation loss bottoms out mid-run, then rises (overfitting)
FEATURES = 20
TRAIN, VAL = 20, 64
BATCH = 4
LR = 0.1
# Lightning's own chatter on a run this small ("GPU available", tips, "few workers", ...)
_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.epochs < 1:
        print(f"error: --epochs must be at least 1, got {args.epochs}", file=err)
        return EXIT_USAGE
    keep = args.dir is not None
    if keep:
        if os.path.exists(args.dir) and not os.path.isdir(args.dir):
            print(f"error: --dir {args.dir!r} is not a directory", file=err)
            return EXIT_USAGE
        for sub in ("trainer", "fabric"):
            path = os.path.join(args.dir, sub)
            if os.path.isdir(path) and os.listdir(path):
                print(f"error: {path} is not empty; choose another --dir or remove it", file=err)
                return EXIT_USAGE
    if importlib.util.find_spec("lightning") is None or importlib.util.find_spec("torch") is None:
        print("error: the demo needs torch and lightning: pip install torch lightning", file=err)
        return EXIT_PROBLEM
    root = os.path.abspath(args.dir) if keep else tempfile.mkdtemp(prefix="lightning-bestlink-demo-")
    shown = args.dir if keep else root
    print(
        f"lightning-bestlink demo: a tiny regression model on synthetic data (nothing downloaded), "
        f"{args.epochs} epochs, trained twice",
        file=out,
    )
    print(f"output: {shown}{'' if keep else '  (temporary; pass --dir DIR to keep it)'}", file=out)
    print(file=out)
    try:
        done = run(root, epochs=args.epochs, verbose=args.verbose, out=out)
        print(file=out)
        print("Result (the same table as `lightning-bestlink show DIR`):", file=out)
        for i, path in enumerate(done):
            if i:
                print(file=out)
            render(scan(path), out, title=os.path.join(shown, os.path.basename(path)))
        print(file=out)
        if keep:
            print(f"Kept in {shown}. Try:  lightning-bestlink verify -r {shown}", file=out)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if not keep:
        print(f"Removed {root} (pass --dir DIR to keep the checkpoints).", file=out)
    return EXIT_OK


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Hide Lightning's informational logs and warnings; our own :class:`BestLinkWarning` still shows."""
    if verbose:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("default", BestLinkWarning)
        # Lightning sets its loggers' levels when imported: import first, then lower them
        import lightning.fabric
        import lightning.pytorch  # noqa: F401

        saved = {name: logging.getLogger(name).level for name in _LOGGERS}
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)


def _data() -> tuple[Any, Any, Any, Any]:
    """A noisy linear problem with as many features as training samples: it overfits after a few epochs."""
    import torch

    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(TRAIN + VAL, FEATURES, generator=g)
    w = torch.zeros(FEATURES, 1)
    w[:3] = torch.randn(3, 1, generator=g)
    y = x @ w + 0.8 * torch.randn(TRAIN + VAL, 1, generator=g)
    return x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:]


def _model() -> Any:
    import torch

    torch.manual_seed(SEED)
    return torch.nn.Linear(FEATURES, 1)


def _progress(epoch: int, val: float, epochs: int, linker: BestLinker | None, moved: bool) -> str:
    line = f"  epoch {epoch}/{epochs - 1}  val_loss={val:.4f}"
    if linker is None or linker.best_path is None or not moved:
        return line + "  (best unchanged)"
    return f"{line}  new best: {os.path.basename(linker.link_path)} -> {os.path.basename(linker.best_path)}"


def run_trainer(folder: str, epochs: int, say: Callable[[str], None]) -> None:
    """Train with ``lightning.pytorch.Trainer`` and ``ModelCheckpointWithLinkBest``."""
    import torch
    from lightning.pytorch import Callback, LightningModule, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest

    x, y, vx, vy = _data()

    class Regression(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _model()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            xb, yb = batch
            loss = torch.nn.functional.mse_loss(self.net(xb), yb)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            xb, yb = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(xb), yb))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=LR)

    ckpt = ModelCheckpointWithLinkBest(
        save_best=True,
        save_last=True,
        monitor="val_loss",
        mode="min",
        save_top_k=-1,
        dirpath=folder,
        filename="{epoch}-{val_loss:.4f}",
    )

    class Progress(Callback):
        """One line per epoch, once its checkpoint is written (ModelCheckpoint runs last in a hook)."""

        def __init__(self) -> None:
            self.pending: tuple[int, float] | None = None
            self.best = ""

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            self.pending = (trainer.current_epoch, float(trainer.callback_metrics["val_loss"]))

        def report(self) -> None:
            if self.pending is None:
                return
            moved = ckpt.best_model_path != self.best
            self.best = ckpt.best_model_path
            say(_progress(*self.pending, epochs, ckpt.best_linker, moved))
            self.pending = None

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.report()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.report()

    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=folder,
        callbacks=[ckpt, Progress()],
    )
    train = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    val = DataLoader(TensorDataset(vx, vy), batch_size=len(vx))
    trainer.fit(Regression(), train, val)


def run_fabric(folder: str, epochs: int, say: Callable[[str], None]) -> None:
    """A manual loop with ``lightning.fabric.Fabric`` and :func:`lightning_bestlink.fabric.save_and_link`."""
    import torch
    from lightning.fabric import Fabric
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_bestlink import fabric as bestlink

    x, y, vx, vy = _data()
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric.launch()
    train = fabric.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=BATCH))
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = fabric.setup(model, optimizer)

    linker = BestLinker(os.path.join(folder, "best.ckpt"), mode="min")
    last = LatestLinker(os.path.join(folder, "last.ckpt"))  # an alias too: each checkpoint is saved once
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "best": linker, "last": last, "epoch": 0}
    for epoch in range(epochs):
        model.train()
        for xb, yb in train:
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            fabric.backward(loss)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.mse_loss(model(vx.to(fabric.device)), vy.to(fabric.device)))
        state["epoch"] = epoch
        path = os.path.join(folder, f"epoch={epoch}-val_loss={val:.4f}.ckpt")
        extra = {"monitor": "val_loss", "epoch": epoch}
        became_best = bestlink.save_and_link(
            fabric, path, state, score=val, linker=linker, latest=last, step=epoch, extra=extra
        )
        say(_progress(epoch, val, epochs, linker, became_best))


def run(root: str, *, epochs: int = 8, verbose: bool = False, out: TextIO) -> list[str]:
    """Run both demos under ``root`` (``root/trainer`` and ``root/fabric``); returns the two folders."""

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    trainer_dir = os.path.join(root, "trainer")
    fabric_dir = os.path.join(root, "fabric")
    with quiet(verbose):
        say('[1/2] Lightning Trainer + ModelCheckpointWithLinkBest(save_best=True, save_last=True, monitor="val_loss")')
        run_trainer(trainer_dir, epochs, say)
        say("")
        say("[2/2] Lightning Fabric loop + lightning_bestlink.fabric.save_and_link(...)")
        run_fabric(fabric_dir, epochs, say)
    return [trainer_dir, fabric_dir]
