"""Section 3: Trainer.fit with ModelCheckpointWithLinkBest against the stock ModelCheckpoint."""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from _common import Section, close_update_locks, floor_link_and_record, log, spread, syscalls_of_an_update, wchar
from _tables import Column, Part, fmt_time, named_rows

STOCK = "stock ModelCheckpoint"
LINK_BEST = "ModelCheckpointWithLinkBest(save_best=True)"
FLOOR = "stock + the floor and a JSON record (exchange)"
SYSCALLS = "stock + BestLinker's system calls, straight-line"


@dataclass(frozen=True)
class Settings:
    epochs: int
    reps: int


FULL = Settings(epochs=100, reps=21)
SMOKE = Settings(epochs=3, reps=1)


def _val_losses(epochs: int) -> list[float]:
    """A validation loss that trends down with noise: it improves on some epochs only."""
    rng = random.Random(1234)
    return [round(1.0 / (1.0 + 0.1 * e) * (1.0 + 0.4 * rng.random()), 6) for e in range(epochs)]


def _make_module(losses: Sequence[float]) -> Any:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(16, 4)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", torch.tensor(losses[min(self.current_epoch, len(losses) - 1)]))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self) -> Any:
            g = torch.Generator().manual_seed(0)
            return DataLoader(TensorDataset(torch.randn(8, 16, generator=g)), batch_size=4)

        def val_dataloader(self) -> Any:
            g = torch.Generator().manual_seed(1)
            return DataLoader(TensorDataset(torch.randn(4, 16, generator=g)), batch_size=4)

    return Tiny()


def _scan_ckpt_dir(d: str, alias_name: str = "best.ckpt") -> dict[str, int]:
    """Bytes in a checkpoint directory: Lightning's checkpoints, the alias's own data, the JSON record."""
    entries = {e.name: e.stat(follow_symlinks=False) for e in os.scandir(d)}
    alias = entries.pop(alias_name, None)
    records = {name for name in entries if name.endswith(".bestlink.json") or name == f"{alias_name}.json"}
    locks = {name for name in entries if name.startswith(".") and name.endswith(".lock")}  # empty, not checkpoints
    meta = sum(st.st_size for name, st in entries.items() if name in records)
    ckpts = {name: st for name, st in entries.items() if name not in records | locks}
    alias_data = 0
    if alias is not None and not os.path.islink(os.path.join(d, alias_name)):
        shared = any(os.path.samestat(alias, st) for st in ckpts.values())  # a hard link
        alias_data = 0 if shared else alias.st_size
    return {
        "checkpoint_bytes": sum(st.st_size for st in ckpts.values()),
        "checkpoint_files": len(ckpts),
        "alias_kind": "none"
        if alias is None
        else ("symlink" if os.path.islink(os.path.join(d, alias_name)) else "file"),
        "alias_data_bytes": alias_data,
        "metadata_bytes": meta,
    }


class _TimedStep:
    """Adds up the time a callback spends in its alias step, and with ``count_bytes`` the bytes that
    step writes: reading them (/proc/self/io, about 25 µs a read, twice per step) would add more than
    half a percent to a timed fit, so only the warm-up fit counts them."""

    spent_ns = 0
    link_wchar = 0
    count_bytes = False

    def timed(self, step: Callable[[], object]) -> None:
        w0 = wchar() if self.count_bytes else None
        t0 = time.perf_counter_ns()
        step()
        self.spent_ns += time.perf_counter_ns() - t0
        w1 = wchar() if self.count_bytes else None
        if w0 is not None and w1 is not None:
            self.link_wchar += w1 - w0


def run(cfg: Settings, root: str, rng: random.Random) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_bestlink import ModelCheckpointWithLinkBest

    class TimedLinkBest(_TimedStep, ModelCheckpointWithLinkBest):
        """The callback, its alias step (its only extra work) timed."""

        def _link_best(self, *args: Any, **kwargs: Any) -> None:
            self.timed(partial(super()._link_best, *args, **kwargs))

    class TimedAtNewBest(_TimedStep, ModelCheckpoint):
        """The stock class, plus ``step`` at each new best, timed as the alias step is."""

        _linked = ""

        def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
            super()._save_checkpoint(trainer, filepath)
            if filepath != self.best_model_path or filepath == self._linked:
                return
            self._linked = filepath
            folder = os.path.dirname(filepath)
            self.timed(partial(self.step, trainer, folder, os.path.join(folder, "best.ckpt"), filepath))

        def step(self, trainer: Any, folder: str, alias: str, filepath: str) -> None:
            raise NotImplementedError

    class TimedFloor(TimedAtNewBest):
        """The least an alias with a record costs (the baseline of the alias section's 1.25x target)."""

        def step(self, trainer: Any, folder: str, alias: str, filepath: str) -> None:
            floor_link_and_record(folder, alias, trainer.global_step, filepath, exchange=True)

    class TimedSyscalls(TimedAtNewBest):
        """The system calls of BestLinker's update, without the library's Python around them: how much
        of the alias step the guarantees' system calls take."""

        def step(self, trainer: Any, folder: str, alias: str, filepath: str) -> None:
            score, epoch, step = float(self.best_model_score), trainer.current_epoch, trainer.global_step
            syscalls_of_an_update(folder, alias, filepath, score, epoch, step)

    torch.set_num_threads(1)  # the same for both contenders; less scheduling noise on 2 shared cores
    losses = _val_losses(cfg.epochs)
    new_bests = sum(1 for i, v in enumerate(losses) if v < min(losses[:i], default=float("inf")))
    settings = dict(monitor="val_loss", mode="min", save_top_k=1, save_last=True)
    kinds = {
        STOCK: lambda d: ModelCheckpoint(dirpath=d, **settings),
        LINK_BEST: lambda d: TimedLinkBest(save_best=True, dirpath=d, **settings),
        FLOOR: lambda d: TimedFloor(dirpath=d, **settings),
        SYSCALLS: lambda d: TimedSyscalls(dirpath=d, **settings),
        "ModelCheckpointWithLinkBest(save_best='copy')": lambda d: TimedLinkBest(
            save_best="copy", dirpath=d, **settings
        ),
    }

    def fit(name: str, run: int, count_bytes: bool = False) -> dict[str, Any]:
        d = tempfile.mkdtemp(prefix=f"fit-{run}-", dir=root)
        ckpt = kinds[name](os.path.join(d, "checkpoints"))
        ckpt.count_bytes = count_bytes
        trainer = pl.Trainer(
            max_epochs=cfg.epochs,
            default_root_dir=d,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
            num_sanity_val_steps=0,
            callbacks=[ckpt],
        )
        model = _make_module(losses)
        gc.collect()
        w0 = wchar()
        t0 = time.perf_counter_ns()
        trainer.fit(model)
        t1 = time.perf_counter_ns()
        w1 = wchar()
        result = {
            "wall_ns": t1 - t0,
            "wchar": None if w0 is None or w1 is None else w1 - w0,
            "link_ns": getattr(ckpt, "spent_ns", 0),
            "link_wchar": getattr(ckpt, "link_wchar", 0),
            **_scan_ckpt_dir(os.path.join(d, "checkpoints")),
        }
        close_update_locks()
        shutil.rmtree(d)
        return result

    log(f"Trainer.fit, {cfg.epochs} epochs ({new_bests} new bests): {cfg.reps} interleaved repetitions")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import logging

        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        # warm-up (imports, first-call costs), and the bytes the alias step writes
        warm = {name: fit(name, -1, count_bytes=True) for name in kinds}
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in kinds}
        order = list(kinds)
        for r in range(cfg.reps):
            rng.shuffle(order)
            for name in order:
                runs[name].append(fit(name, r))
    rows: dict[str, Any] = {}
    for name, rs in runs.items():
        walls = [x["wall_ns"] for x in rs]
        rows[name] = {
            **spread(walls),
            "link_ns_median": statistics.median(x["link_ns"] for x in rs),
            "wchar_median": None if rs[0]["wchar"] is None else statistics.median(x["wchar"] for x in rs),
            "link_wchar_median": warm[name]["link_wchar"],
            **{
                k: rs[-1][k]
                for k in ("checkpoint_bytes", "checkpoint_files", "alias_kind", "alias_data_bytes", "metadata_bytes")
            },
        }
    base = rows[STOCK]
    for name, row in rows.items():
        # paired ratios: repetition r of each contender ran back to back with the stock one
        pairs = [a["wall_ns"] / b["wall_ns"] for a, b in zip(runs[name], runs[STOCK], strict=True)]
        row["ratio_median_of_pairs"] = statistics.median(pairs)
        row["ratio_min"], row["ratio_max"] = min(pairs), max(pairs)
        row["ratio_of_medians"] = row["median_ns"] / base["median_ns"]
        row["link_share"] = row["link_ns_median"] / row["median_ns"]
        # the callback's own state (the linker's best score and path) rides inside every checkpoint
        row["state_bytes_per_checkpoint"] = (row["checkpoint_bytes"] - base["checkpoint_bytes"]) / max(
            row["checkpoint_files"], 1
        )
        row["extra_wchar"] = None if row["wchar_median"] is None else row["wchar_median"] - (base["wchar_median"] or 0)
    log(
        "  "
        + ", ".join(f"{n}: {fmt_time(r['median_ns'])} ({r['ratio_median_of_pairs']:.3f}x)" for n, r in rows.items())
    )
    return {"epochs": cfg.epochs, "reps": cfg.reps, "new_bests": new_bests, "rows": rows}


def report(res: dict[str, Any]) -> list[Part]:
    return [
        Part(
            3,
            "Trainer.fit: ModelCheckpointWithLinkBest against the stock ModelCheckpoint",
            intro=[
                f"A tiny model, {res['epochs']} epochs, `monitor='val_loss'` (scripted; {res['new_bests']} new "
                f"bests), `save_top_k=1`, `save_last=True`, `torch.set_num_threads(1)`; {res['reps']} interleaved "
                "repetitions. Ratio = median over repetitions of (contender / the stock run next to it). "
                '"In alias update" is the time spent in the callback\'s alias step, timed from inside; "written '
                'by alias step" is counted in the warm-up fit, untimed. The third row is the stock class plus, at '
                "each new best, the least an alias with a record costs (a symlink renamed over the alias, a JSON "
                "record swapped in by an exchange: the baseline of the 1.25x target above), in the same fit: what "
                "any such alias would add to it. The fourth row is the stock class plus, at each new best, the system "
                "calls of BestLinker's update (the list in tests/test_linker.py, in its order, with a record of the "
                "same fields) in straight-line code: what the alias step costs without the library's Python."
            ],
            columns=[
                Column("callback", "{name}"),
                Column("fit wall time (IQR)", "{median_ns:time} ({q1_ns:time}-{q3_ns:time})"),
                Column("ratio to stock (range)", "{ratio_median_of_pairs:.3f} ({ratio_min:.3f}-{ratio_max:.3f})"),
                Column("in alias update", "{link_ns_median:time} ({link_share:.2%})"),
                Column("alias data bytes", "{alias_data_bytes:,} B ({alias_kind})"),
                Column("metadata JSON", "{metadata_bytes} B"),
                Column(
                    "Lightning's checkpoints on disk (callback state per file)",
                    "{checkpoint_files} files, {checkpoint_bytes:,} B ({state_bytes_per_checkpoint:+.0f} B)",
                ),
                Column("bytes written in fit (extra)", "{wchar_median:bytes} ({extra_wchar:+,.0f})"),
                Column("written by alias step", "{link_wchar_median:,} B"),
            ],
            rows=named_rows(res["rows"]),
        )
    ]


SECTION = Section("trainer", FULL, SMOKE, run, report)
