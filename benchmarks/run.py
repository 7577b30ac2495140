"""What a best alias costs, next to the alternatives, measured in one run (issue 8).

Usage::

    python benchmarks/run.py                      # full run (1 MiB, 100 MiB, 1 GiB), ~5-10 minutes
    python benchmarks/run.py --smoke --out /tmp/b  # tiny sizes, a few seconds of work (CI)

It writes ``results.md`` (Markdown tables), ``results.json`` (raw figures) and
``benchmarks.png`` (cost against checkpoint size, log-log) into ``--out``
(default ``benchmarks/results/``).

Method: contenders are interleaved (shuffled order in every repetition) so that a noisy,
shared machine slows them alike; medians are reported, and ratios are taken against
baselines measured in the same run. Scratch files live in one temporary directory (under
``--tmp``, default the system temp dir), deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

Op = Callable[[int, str], None]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    reps: tuple[int, ...]  # timed rounds per size, in the order of ``sizes``
    cheap_per_round: tuple[int, ...]  # samples per round of the contenders that write no data
    noop_loops: int
    noop_repeats: int
    fit_epochs: int
    fit_reps: int
    import_reps: int
    churn_updates: int
    churn_improve_every: int


FULL = Config(
    sizes=(MiB, 100 * MiB, GiB),
    reps=(101, 21, 9),
    cheap_per_round=(1, 3, 6),
    noop_loops=200_000,
    noop_repeats=9,
    fit_epochs=100,
    fit_reps=21,
    import_reps=9,
    churn_updates=100_000,
    churn_improve_every=5,
)
SMOKE = Config(
    sizes=(4 * KiB, 64 * KiB, MiB),
    reps=(9, 7, 5),
    cheap_per_round=(1, 1, 2),
    noop_loops=10_000,
    noop_repeats=3,
    fit_epochs=3,
    fit_reps=1,
    import_reps=1,
    churn_updates=2_000,
    churn_improve_every=5,
)

# --- measuring helpers ------------------------------------------------------------


def proc_io() -> dict[str, int] | None:
    """This process's I/O counters (Linux); ``wchar`` counts bytes passed to write-like calls."""
    try:
        with open("/proc/self/io") as fh:
            return {k: int(v) for k, v in (line.split(":") for line in fh if ":" in line)}
    except (OSError, ValueError):
        return None


def wchar() -> int | None:
    io = proc_io()
    return None if io is None else io["wchar"]


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = float(values[0])
        return v, v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def fmt_size(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_time(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    if n < 10 * KiB:
        return f"{n:,.0f} B"
    return f"{fmt_size(n)} ({n:,.0f} B)"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def alias_extra_disk(alias: str, targets: Sequence[str]) -> int:
    """Bytes of data the alias holds that no checkpoint already holds (0 for a link)."""
    st = os.lstat(alias)
    if os.path.islink(alias):
        return 0  # a short symlink keeps its target name inside the inode: no data blocks
    if any(os.path.samestat(st, os.stat(t)) for t in targets):
        return 0  # a hard link: the same inode as a checkpoint
    return st.st_blocks * 512


# --- 1 and 4: one improving alias update against checkpoint size ------------------


CONTENDERS = (
    "floor: os.symlink + os.replace",
    "floor + a JSON record (write + os.replace)",
    "BestLinker symlink",
    "BestLinker hardlink",
    "BestLinker copy",
    "Lightning _link_checkpoint",
    "second torch.save",
)
FLOOR, FLOOR_JSON, SYMLINK, HARDLINK, COPY, LIGHTNING, SAVE = CONTENDERS


def floor_link(d: str, alias: str, i: int, target: str) -> None:
    """The floor: a bare relative symlink under a temporary name, renamed over the alias."""
    tmp = os.path.join(d, f".floor-{i}.tmp")
    os.symlink(os.path.basename(target), tmp)
    os.replace(tmp, alias)


def floor_link_and_record(d: str, alias: str, i: int, target: str) -> None:
    """The floor plus what any alias with a record next to it costs at least: one small JSON
    file written under a temporary name and renamed over the previous record."""
    floor_link(d, alias, i, target)
    record = {"format": "bench/1", "alias": os.path.basename(alias), "target": os.path.basename(target)}
    record.update(link="symlink", mode="min", score=-float(i), time=time.time(), extra={"epoch": i})
    tmp = os.path.join(d, f".floor-json-{i}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, alias + ".json")


def _alias_ops(d: str, aliases: dict[str, str], state: Any) -> tuple[dict[str, Op], dict[str, Any]]:
    """One callable per contender: ``op(i, target)`` moves that contender's alias to ``target``."""
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_bestlink import BestLinker

    fake_trainer = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(barrier=lambda: None))
    linkers = {
        SYMLINK: BestLinker(aliases[SYMLINK], mode="min", link="symlink"),
        HARDLINK: BestLinker(aliases[HARDLINK], mode="min", link="hardlink"),
        COPY: BestLinker(aliases[COPY], mode="min", link="copy"),
    }

    def floor(i: int, target: str) -> None:
        floor_link(d, aliases[FLOOR], i, target)

    def floor_json(i: int, target: str) -> None:
        floor_link_and_record(d, aliases[FLOOR_JSON], i, target)

    def via_linker(name: str) -> Op:
        linker = linkers[name]

        def run(i: int, target: str) -> None:
            # a new, better score every time: each call really moves the alias
            if not linker.update(-float(i), target):
                raise AssertionError(f"{name}: an improving update returned False")

        return run

    def lightning_link(i: int, target: str) -> None:
        ModelCheckpoint._link_checkpoint(fake_trainer, target, aliases[LIGHTNING])  # type: ignore[arg-type]

    def second_save(i: int, target: str) -> None:
        torch.save(state, aliases[SAVE])

    ops: dict[str, Op] = {
        FLOOR: floor,
        FLOOR_JSON: floor_json,
        SYMLINK: via_linker(SYMLINK),
        HARDLINK: via_linker(HARDLINK),
        COPY: via_linker(COPY),
        LIGHTNING: lightning_link,
        SAVE: second_save,
    }
    return ops, linkers


def _bench_one_size(size: int, reps: int, cheap: int, root: str, rng: random.Random) -> dict[str, Any]:
    import torch

    log(f"alias updates at {fmt_size(size)}: {reps} interleaved repetitions of {len(CONTENDERS)} contenders")
    d = tempfile.mkdtemp(prefix=f"alias-{size}-", dir=root)
    try:
        state = {"weight": torch.ones(max(size // 4, 1), dtype=torch.float32)}
        targets = [os.path.join(d, "epoch=0-step=10.ckpt"), os.path.join(d, "epoch=1-step=20.ckpt")]
        for path in targets:
            torch.save(state, path)
        ckpt_bytes = os.path.getsize(targets[0])
        aliases = {name: os.path.join(d, f"best-{k}.ckpt") for k, name in enumerate(CONTENDERS)}
        ops, linkers = _alias_ops(d, aliases, state)
        times: dict[str, list[int]] = {n: [] for n in CONTENDERS}
        written: dict[str, list[int]] = {n: [] for n in CONTENDERS}
        # the contenders that write no data run ``cheap`` times per round: more samples, same time
        tasks = [n for n in CONTENDERS for _ in range(1 if n in (COPY, SAVE) else cheap)]
        count = dict.fromkeys(CONTENDERS, 0)
        serial = 0
        for rnd in range(reps + 1):  # round 0 is a warm-up (first-use cleanup, caches), not timed
            rng.shuffle(tasks)
            for name in tasks:
                serial += 1  # a new, better score for every update
                target = targets[count[name] % 2]  # each contender alternates between two checkpoints
                count[name] += 1
                os.sync()  # flush the previous contender's dirty pages outside the timed region
                w0 = wchar()
                t0 = time.perf_counter_ns()
                ops[name](serial, target)
                t1 = time.perf_counter_ns()
                w1 = wchar()
                if rnd:
                    times[name].append(t1 - t0)
                    if w0 is not None and w1 is not None:
                        written[name].append(w1 - w0)
        os.sync()
        meta = {n: os.path.getsize(lk.metadata_path) for n, lk in linkers.items()}
        rows: dict[str, Any] = {}
        for name in CONTENDERS:
            q1, med, q3 = quartiles(times[name])
            rows[name] = {
                "median_ns": med,
                "q1_ns": q1,
                "q3_ns": q3,
                "n": len(times[name]),
                "wchar_median": statistics.median(written[name]) if written[name] else None,
                "alias_extra_disk_bytes": alias_extra_disk(aliases[name], targets),
                "metadata_bytes": meta.get(name, 0),
            }
    finally:
        shutil.rmtree(d, ignore_errors=True)  # frees the 1 GiB files right away
    for row in rows.values():
        row["x_floor"] = row["median_ns"] / rows[FLOOR]["median_ns"]
        row["x_save"] = row["median_ns"] / rows[SAVE]["median_ns"]
    log("  " + ", ".join(f"{n}: {fmt_time(rows[n]['median_ns'])}" for n in CONTENDERS))
    return {"size": size, "checkpoint_bytes": ckpt_bytes, "reps": reps, "cheap_reps": reps * cheap, "rows": rows}


def bench_alias_updates(cfg: Config, root: str, rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, reps, cheap in zip(cfg.sizes, cfg.reps, cfg.cheap_per_round, strict=True):
        out[str(size)] = _bench_one_size(size, reps, cheap, root, rng)
        gc.collect()
    return out


# --- 2: a non-improving update ------------------------------------------------------


class _NoOp:
    def update(self, score: float, path: str) -> bool:
        return False


def bench_noop(cfg: Config, root: str, rng: random.Random) -> dict[str, Any]:
    import torch

    from lightning_bestlink import BestLinker

    d = tempfile.mkdtemp(prefix="noop-", dir=root)
    target = os.path.join(d, "epoch=0.ckpt")
    with open(target, "wb") as fh:
        fh.write(b"x" * 1024)
    linker = BestLinker(os.path.join(d, "best.ckpt"), mode="min", link="symlink")
    linker.update(0.0, target)
    ns = {"linker": linker, "noop": _NoOp(), "target": target, "t": torch.tensor(1.0), "np": None}
    try:
        import numpy

        ns["np"] = numpy.float32(1.0)
    except ImportError:
        pass
    contenders = {
        "baseline: empty Python method call": "noop.update(1.0, target)",
        "BestLinker.update(float) (worse score)": "linker.update(1.0, target)",
        "BestLinker.update(0-d tensor) (worse score)": "linker.update(t, target)",
        "baseline: 0-d tensor .item() alone": "t.item()",
    }
    if ns["np"] is not None:
        contenders["BestLinker.update(numpy.float32) (worse score)"] = "linker.update(np, target)"
    timers = {name: timeit.Timer(stmt, globals=ns) for name, stmt in contenders.items()}
    for timer in timers.values():
        timer.timeit(max(cfg.noop_loops // 10, 1))  # warm-up
    log(f"non-improving update: {cfg.noop_repeats} interleaved repeats x {cfg.noop_loops:,} calls")
    per_call: dict[str, list[float]] = {n: [] for n in timers}
    order = list(timers)
    io0 = proc_io()
    for _ in range(cfg.noop_repeats):
        rng.shuffle(order)
        for name in order:
            per_call[name].append(timers[name].timeit(cfg.noop_loops) / cfg.noop_loops * 1e9)
    io1 = proc_io()
    if linker.best_score != 0.0:
        raise AssertionError("a worse score moved the alias")
    base = statistics.median(per_call["baseline: empty Python method call"])
    rows = {}
    for name, values in per_call.items():
        q1, med, q3 = quartiles(values)
        rows[name] = {"median_ns": med, "q1_ns": q1, "q3_ns": q3, "x_baseline": med / base}
    calls = cfg.noop_repeats * cfg.noop_loops * sum(1 for n in timers if n.startswith("BestLinker"))
    io = None
    if io0 is not None and io1 is not None:
        # the reads of /proc/self/io themselves are the only I/O expected here
        io = {k: io1[k] - io0[k] for k in ("syscr", "syscw", "wchar")}
    shutil.rmtree(d)
    log("  " + ", ".join(f"{n}: {r['median_ns']:.0f} ns" for n, r in rows.items()))
    return {"rows": rows, "loops": cfg.noop_loops, "repeats": cfg.noop_repeats, "linker_calls": calls, "io": io}


# --- 3: Trainer.fit with the callback against the stock ModelCheckpoint ------------------


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
    meta = sum(st.st_size for name, st in entries.items() if name.endswith(".bestlink.json"))
    ckpts = {name: st for name, st in entries.items() if not name.endswith(".bestlink.json")}
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


def bench_trainer(cfg: Config, root: str, rng: random.Random) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_bestlink import ModelCheckpointWithLinkBest

    class TimedLinkBest(ModelCheckpointWithLinkBest):
        """Adds up the time and bytes spent moving the alias (the callback's only extra work)."""

        spent_ns = 0
        link_wchar = 0

        def _link_best(self, *args: Any, **kwargs: Any) -> None:
            w0 = wchar()
            t0 = time.perf_counter_ns()
            super()._link_best(*args, **kwargs)
            self.spent_ns += time.perf_counter_ns() - t0
            w1 = wchar()
            if w0 is not None and w1 is not None:
                self.link_wchar += w1 - w0

    torch.set_num_threads(1)  # the same for both contenders; less scheduling noise on 2 shared cores
    losses = _val_losses(cfg.fit_epochs)
    new_bests = sum(1 for i, v in enumerate(losses) if v < min(losses[:i], default=float("inf")))
    settings = dict(monitor="val_loss", mode="min", save_top_k=1, save_last=True)
    kinds = {
        "stock ModelCheckpoint": lambda d: ModelCheckpoint(dirpath=d, **settings),
        "ModelCheckpointWithLinkBest(save_best=True)": lambda d: TimedLinkBest(save_best=True, dirpath=d, **settings),
        "ModelCheckpointWithLinkBest(save_best='copy')": lambda d: TimedLinkBest(
            save_best="copy", dirpath=d, **settings
        ),
    }
    stock = "stock ModelCheckpoint"

    def fit(name: str, run: int) -> dict[str, Any]:
        d = tempfile.mkdtemp(prefix=f"fit-{run}-", dir=root)
        ckpt = kinds[name](os.path.join(d, "checkpoints"))
        trainer = pl.Trainer(
            max_epochs=cfg.fit_epochs,
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
        shutil.rmtree(d)
        return result

    log(f"Trainer.fit, {cfg.fit_epochs} epochs ({new_bests} new bests): {cfg.fit_reps} interleaved repetitions")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import logging

        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        for name in kinds:  # warm-up: imports, first-call costs
            fit(name, -1)
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in kinds}
        order = list(kinds)
        for r in range(cfg.fit_reps):
            rng.shuffle(order)
            for name in order:
                runs[name].append(fit(name, r))
    rows: dict[str, Any] = {}
    for name, rs in runs.items():
        walls = [x["wall_ns"] for x in rs]
        q1, med, q3 = quartiles(walls)
        rows[name] = {
            "median_ns": med,
            "q1_ns": q1,
            "q3_ns": q3,
            "link_ns_median": statistics.median(x["link_ns"] for x in rs),
            "wchar_median": None if rs[0]["wchar"] is None else statistics.median(x["wchar"] for x in rs),
            "link_wchar_median": statistics.median(x["link_wchar"] for x in rs),
            **{
                k: rs[-1][k]
                for k in ("checkpoint_bytes", "checkpoint_files", "alias_kind", "alias_data_bytes", "metadata_bytes")
            },
        }
    base = rows[stock]
    for name, row in rows.items():
        # paired ratios: repetition r of each contender ran back to back with the stock one
        pairs = [a["wall_ns"] / b["wall_ns"] for a, b in zip(runs[name], runs[stock], strict=True)]
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
    return {"epochs": cfg.fit_epochs, "reps": cfg.fit_reps, "new_bests": new_bests, "rows": rows}


# --- 5: import time, each in a fresh interpreter ------------------------------------------


def _core_stdlib_deps() -> list[str]:
    code = (
        "import sys; b = set(sys.modules); import lightning_bestlink; "
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - b} - {'lightning_bestlink'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def _time_import(stmt: str) -> tuple[float, bool]:
    code = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        f"{stmt}\n"
        "t1 = time.perf_counter()\n"
        "heavy = any(m in sys.modules for m in ('torch', 'lightning', 'pytorch_lightning', 'numpy', 'fsspec'))\n"
        "print(t1 - t0, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]) * 1e9, out[1] == "True"


def _importtime_top(module: str, top: int = 6) -> list[tuple[str, int]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True
    )
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
            rows.append((parts[2].strip(), int(parts[0].split(":")[1])))
    return sorted(rows, key=lambda r: -r[1])[:top]


def bench_imports(cfg: Config, rng: random.Random) -> dict[str, Any]:
    deps = _core_stdlib_deps()
    contenders = {
        "import lightning_bestlink (core)": "import lightning_bestlink",
        "baseline: the stdlib modules the core imports": "import " + ", ".join(deps) if deps else "pass",
        "import lightning": "import lightning",
    }
    log(f"imports: {cfg.import_reps} interleaved repetitions, each in a fresh interpreter")
    if cfg.import_reps > 1:  # the smoke run skips the warm-up (a second `import lightning`)
        for stmt in contenders.values():
            _time_import(stmt)  # warm-up: bytecode caches, page cache
    times: dict[str, list[float]] = {n: [] for n in contenders}
    heavy: dict[str, bool] = {}
    order = list(contenders)
    for _ in range(cfg.import_reps):
        rng.shuffle(order)
        for name in order:
            ns, h = _time_import(contenders[name])
            times[name].append(ns)
            heavy[name] = h
    rows = {}
    core = statistics.median(times["import lightning_bestlink (core)"])
    for name, values in times.items():
        q1, med, q3 = quartiles(values)
        rows[name] = {"median_ns": med, "q1_ns": q1, "q3_ns": q3, "pulls_heavy": heavy[name], "x_core": med / core}
    log("  " + ", ".join(f"{n}: {fmt_time(r['median_ns'])}" for n, r in rows.items()))
    return {
        "rows": rows,
        "reps": cfg.import_reps,
        "stdlib_deps": deps,
        "importtime_top": _importtime_top("lightning_bestlink"),
    }


# --- 6: many updates: flat cost, flat memory ------------------------------------------------


def bench_churn(cfg: Config, root: str) -> dict[str, Any]:
    from lightning_bestlink import BestLinker

    d = tempfile.mkdtemp(prefix="churn-", dir=root)
    targets = [os.path.join(d, "a.ckpt"), os.path.join(d, "b.ckpt")]
    for t in targets:
        with open(t, "wb") as fh:
            fh.write(os.urandom(MiB))
    linker = BestLinker(os.path.join(d, "best.ckpt"), mode="min", link="symlink")
    # a control measured alongside: the floor plus a JSON record, in a directory of its own. If
    # the linker's cost drifts and the control's drifts alike, the drift is the machine's
    control_dir = tempfile.mkdtemp(prefix="churn-control-", dir=root)
    control_alias = os.path.join(control_dir, "best.ckpt")
    n, every = cfg.churn_updates, cfg.churn_improve_every
    per = max(n // 10, 1)
    log(f"{n:,} updates (1 in {every} improving, alternating targets), 10 deciles, with a control")
    gc.collect()
    rss_start = rss_bytes()
    objects_start = len(gc.get_objects())
    deciles = []
    clock = time.perf_counter_ns
    improving = 0
    for dec in range(10):
        good: list[int] = []
        worse: list[int] = []
        control: list[int] = []
        for i in range(dec * per, (dec + 1) * per):
            if i % every == 0:
                improving += 1
                target = targets[improving % 2]
                t0 = clock()
                moved = linker.update(-float(i), target)
                t1 = clock()
                floor_link_and_record(control_dir, control_alias, i, target)
                control.append(clock() - t1)
                good.append(t1 - t0)
            else:
                t0 = clock()
                moved = not linker.update(1e9, targets[0])
                worse.append(clock() - t0)
            if not moved:
                raise AssertionError(f"update {i} did not do what it should")
        deciles.append(
            {
                "decile": dec + 1,
                "mean_ns_per_update": (sum(good) + sum(worse)) / per,
                "improving_median_ns": statistics.median(good) if good else None,
                "worse_median_ns": statistics.median(worse) if worse else None,
                "control_median_ns": statistics.median(control) if control else None,
                "rss_end": rss_bytes(),
            }
        )
    gc.collect()
    leftovers = sorted(os.listdir(d))
    result = {
        "updates": per * 10,
        "improving": improving,
        "rss_start": rss_start,
        "rss_end": rss_bytes(),
        "gc_objects_start": objects_start,
        "gc_objects_end": len(gc.get_objects()),
        "dir_entries_end": leftovers,
        "deciles": deciles,
    }
    shutil.rmtree(d)
    shutil.rmtree(control_dir)
    first, last = deciles[0]["mean_ns_per_update"], deciles[-1]["mean_ns_per_update"]
    log(
        f"  first decile {first:.0f} ns/update, last {last:.0f} ns/update; RSS {rss_start:,} -> {result['rss_end']:,} B"
    )
    return result


# --- report -----------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "lightning", "lightning_bestlink", "numpy", "matplotlib"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # a missing version is only cosmetic here
            out[mod] = "n/a"
    return out


def fs_type(path: str) -> str:
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and path.startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def targets_table(res: dict[str, Any]) -> list[dict[str, Any]]:
    alias = res["alias"]
    worst = max(alias.values(), key=lambda s: s["rows"][SYMLINK]["x_floor"])
    worst_x = worst["rows"][SYMLINK]["x_floor"]
    noop = res["noop"]["rows"]["BestLinker.update(float) (worse score)"]["median_ns"]
    noop_t = res["noop"]["rows"]["BestLinker.update(0-d tensor) (worse score)"]["median_ns"]
    tr = res["trainer"]["rows"]["ModelCheckpointWithLinkBest(save_best=True)"]
    core = res["imports"]["rows"]["import lightning_bestlink (core)"]["median_ns"]
    base_stdlib = res["imports"]["rows"]["baseline: the stdlib modules the core imports"]["median_ns"]
    link_extra = [s["rows"][n]["alias_extra_disk_bytes"] for s in alias.values() for n in (SYMLINK, HARDLINK)]
    link_extra.append(tr["alias_data_bytes"] if tr["alias_kind"] != "none" else None)
    extra_ok = all(x == 0 for x in link_extra)
    overhead = tr["ratio_median_of_pairs"] - 1.0
    return [
        {
            "target": "improving symlink update within 10x of the bare floor, at every size",
            "measured": f"worst {worst_x:.1f}x (at {fmt_size(worst['size'])}); "
            + ", ".join(f"{fmt_size(s['size'])}: {s['rows'][SYMLINK]['x_floor']:.1f}x" for s in alias.values())
            + "; against the floor plus a JSON record: "
            + ", ".join(
                f"{s['rows'][SYMLINK]['median_ns'] / s['rows'][FLOOR_JSON]['median_ns']:.2f}x" for s in alias.values()
            ),
            "met": worst_x <= 10.0,
        },
        {
            "target": "non-improving update < 2 µs",
            "measured": f"{noop:.0f} ns (float score), {noop_t:.0f} ns (0-d tensor score)",
            "met": noop < 2000,
        },
        {
            "target": "Trainer overhead within 2% of stock ModelCheckpoint",
            "measured": f"{overhead * 100:+.2f}% (median of paired ratios; range "
            f"{(tr['ratio_min'] - 1) * 100:+.1f}% .. {(tr['ratio_max'] - 1) * 100:+.1f}%); time inside the "
            f"alias update {tr['link_share'] * 100:.2f}% of the fit",
            "met": overhead <= 0.02,
        },
        {
            "target": "core import < 30 ms",
            "measured": f"{core / 1e6:.1f} ms (its stdlib imports alone: {base_stdlib / 1e6:.1f} ms)",
            "met": core < 30e6,
        },
        {
            "target": "zero extra checkpoint bytes in link modes",
            "measured": "data bytes held by the alias: "
            + ", ".join("n/a" if x is None else str(x) for x in link_extra)
            + " (symlink and hardlink at each size, then the Trainer run's best.ckpt); separately: the JSON "
            f"record ({tr['metadata_bytes']} B) and the callback state inside each checkpoint "
            f"({tr['state_bytes_per_checkpoint']:+.0f} B per file)",
            "met": extra_ok,
        },
    ]


def render_markdown(res: dict[str, Any]) -> str:
    env = res["env"]
    lines: list[str] = []
    add = lines.append
    add("# lightning-bestlink benchmark results")
    add("")
    add(
        f"Run {env['date']} ({'smoke' if env['smoke'] else 'full'} mode, {env['wall_s']:.0f} s) on "
        f"{env['cpus']} CPUs, load average {env['load_start']} at start, {env['load_end']} at end; scratch "
        f"files on {env['tmp_fs']}. Python {env['versions']['python']}, torch {env['versions']['torch']}, "
        f"lightning {env['versions']['lightning']}, lightning-bestlink {env['versions']['lightning_bestlink']}."
    )
    add(
        "Load average (1, 5, 15 min) as each section started: "
        + "; ".join(f"{k} {v}" for k, v in env["load_per_section"].items())
        + "."
    )
    add(
        "Contenders are interleaved in a shuffled order in every repetition; figures are medians, "
        "ratios are against baselines measured in the same run."
    )
    add("")
    add("## Targets")
    add("")
    add("| target | measured | met |")
    add("|---|---|---|")
    for t in res["targets"]:
        add(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    add("")
    add("## 1. One improving alias update against checkpoint size")
    add("")
    add(
        "Median wall time of one update that moves the alias (each with a new, better score, alternating "
        "between two checkpoint files); `os.sync()` runs between updates, outside the timed region. "
        "IQR = interquartile range."
    )
    add("")
    sizes = list(res["alias"].values())
    add(
        "| contender | "
        + " | ".join(f"{fmt_size(s['size'])} (n={s['reps']}; {s['cheap_reps']} for links)" for s in sizes)
        + " |"
    )
    add("|---|" + "---|" * len(sizes))
    for name in CONTENDERS:
        cells = []
        for s in sizes:
            r = s["rows"][name]
            cells.append(
                f"{fmt_time(r['median_ns'])} ({r['x_floor']:.1f}x floor, {r['x_save']:.3g}x save; "
                f"IQR {fmt_time(r['q1_ns'])}-{fmt_time(r['q3_ns'])})"
            )
        add(f"| {name} | " + " | ".join(cells) + " |")
    add("")
    add("## 4. Bytes written per new best")
    add("")
    add(
        "`write()` bytes counted by the kernel for this process during one update (`wchar` in "
        "`/proc/self/io`, median), and the data the alias holds that no checkpoint already holds."
    )
    add("")
    add("| contender | " + " | ".join(f"{fmt_size(s['size'])}: written / alias data" for s in sizes) + " |")
    add("|---|" + "---|" * len(sizes))
    for name in CONTENDERS:
        cells = []
        for s in sizes:
            r = s["rows"][name]
            cells.append(f"{fmt_bytes(r['wchar_median'])} / {fmt_bytes(r['alias_extra_disk_bytes'])}")
        add(f"| {name} | " + " | ".join(cells) + " |")
    meta = {s["rows"][SYMLINK]["metadata_bytes"] for s in sizes}
    add("")
    add(
        f"The BestLinker figures include its metadata JSON (`best.ckpt.bestlink.json`, "
        f"{', '.join(map(str, sorted(meta)))} B), rewritten on every new best. Checkpoint files: "
        + ", ".join(f"{fmt_size(s['size'])} = {s['checkpoint_bytes']:,} B" for s in sizes)
        + "."
    )
    add("")
    noop = res["noop"]
    add("## 2. A non-improving update")
    add("")
    add(f"`timeit`, {noop['repeats']} interleaved repeats of {noop['loops']:,} calls each; per call.")
    add("")
    add("| call | median | IQR | vs empty method call |")
    add("|---|---|---|---|")
    for name, r in noop["rows"].items():
        add(f"| {name} | {r['median_ns']:.0f} ns | {r['q1_ns']:.0f}-{r['q3_ns']:.0f} ns | {r['x_baseline']:.1f}x |")
    if noop["io"] is not None:
        add("")
        add(
            f"I/O during the {noop['linker_calls']:,} linker calls (from `/proc/self/io`, which reading "
            f"itself costs one or two `read` calls): {noop['io']['syscr']} read and {noop['io']['syscw']} "
            f"write syscalls, {noop['io']['wchar']} bytes written."
        )
    add("")
    tr = res["trainer"]
    add("## 3. Trainer.fit: ModelCheckpointWithLinkBest against the stock ModelCheckpoint")
    add("")
    add(
        f"A tiny model, {tr['epochs']} epochs, `monitor='val_loss'` (scripted; {tr['new_bests']} new bests), "
        f"`save_top_k=1`, `save_last=True`, `torch.set_num_threads(1)`; {tr['reps']} interleaved repetitions. "
        'Ratio = median over repetitions of (contender / the stock run next to it). "In alias update" is the '
        "time spent in the callback's alias step, timed from inside."
    )
    add("")
    add(
        "| callback | fit wall time (IQR) | ratio to stock (range) | in alias update | alias data bytes "
        "| metadata JSON | Lightning's checkpoints on disk (callback state per file) "
        "| bytes written in fit (extra) | written by alias step |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for name, r in tr["rows"].items():
        extra_w = "n/a" if r["extra_wchar"] is None else f"{r['extra_wchar']:+,.0f}"
        add(
            f"| {name} | {fmt_time(r['median_ns'])} ({fmt_time(r['q1_ns'])}-{fmt_time(r['q3_ns'])}) | "
            f"{r['ratio_median_of_pairs']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) | "
            f"{fmt_time(r['link_ns_median'])} ({r['link_share'] * 100:.2f}%) | "
            f"{r['alias_data_bytes']:,} B ({r['alias_kind']}) | {r['metadata_bytes']} B | "
            f"{r['checkpoint_files']} files, {r['checkpoint_bytes']:,} B ({r['state_bytes_per_checkpoint']:+.0f} B) | "
            f"{fmt_bytes(r['wchar_median'])} ({extra_w}) | "
            f"{r['link_wchar_median']:,} B |"
        )
    add("")
    im = res["imports"]
    add("## 5. Import time (fresh interpreter each time)")
    add("")
    add(
        f"`time.perf_counter()` around the import statement in a new `python -c`, {im['reps']} interleaved repetitions."
    )
    add("")
    add("| import | median | IQR | vs core | pulls in torch/lightning/numpy/fsspec |")
    add("|---|---|---|---|---|")
    for name, r in im["rows"].items():
        add(
            f"| {name} | {fmt_time(r['median_ns'])} | {fmt_time(r['q1_ns'])}-{fmt_time(r['q3_ns'])} | "
            f"{r['x_core']:.2f}x | {'yes' if r['pulls_heavy'] else 'no'} |"
        )
    add("")
    add(
        "Largest self times under `python -X importtime -c 'import lightning_bestlink'` (one run, µs): "
        + ", ".join(f"{m} {us}" for m, us in im["importtime_top"])
        + "."
    )
    add("")
    ch = res["churn"]
    add(f"## 6. {ch['updates']:,} updates: cost and memory stay flat")
    add("")
    add(
        "The control is the floor plus a JSON record (section 1), run right after each improving update in a "
        "directory of its own: when both drift together, the drift comes from the machine or the filesystem."
    )
    add("")
    add(
        f"One BestLinker (symlink), {ch['improving']:,} improving updates (alternating two targets) among "
        f"{ch['updates']:,}. RSS {fmt_bytes(ch['rss_start'])} at start, {fmt_bytes(ch['rss_end'])} at end; "
        f"gc-tracked objects {ch['gc_objects_start']:,} -> {ch['gc_objects_end']:,}; files left in the "
        f"directory: {', '.join(ch['dir_entries_end'])}."
    )
    add("")
    add(
        "| decile | mean per update | improving (median) | non-improving (median) | control: floor + JSON "
        "record (median) | improving / control | RSS at end |"
    )
    add("|---|---|---|---|---|---|---|")
    for row in ch["deciles"]:
        good, ctl = row["improving_median_ns"] or 0, row["control_median_ns"] or 0
        add(
            f"| {row['decile']} | {fmt_time(row['mean_ns_per_update'])} | "
            f"{fmt_time(good)} | {fmt_time(row['worse_median_ns'] or 0)} | {fmt_time(ctl)} | "
            f"{good / ctl if ctl else float('nan'):.2f}x | {row['rss_end'] / MiB:.1f} MiB |"
        )
    add("")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(res["alias"].values())
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    markers = ["o", "P", "s", "^", "v", "D", "x"]
    xs = [s["size"] / MiB for s in sizes]
    for name, marker in zip(CONTENDERS, markers, strict=True):
        med = [s["rows"][name]["median_ns"] / 1e3 for s in sizes]
        lo = [m - s["rows"][name]["q1_ns"] / 1e3 for m, s in zip(med, sizes, strict=True)]
        hi = [s["rows"][name]["q3_ns"] / 1e3 - m for m, s in zip(med, sizes, strict=True)]
        ax.errorbar(xs, med, yerr=[lo, hi], marker=marker, capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("checkpoint size (MiB)")
    ax.set_ylabel("one improving alias update (µs, median, IQR bars)")
    ax.set_title("Alias update cost against checkpoint size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")

    ch = res["churn"]
    dec = [r["decile"] for r in ch["deciles"]]
    ax2.plot(dec, [r["improving_median_ns"] / 1e3 for r in ch["deciles"]], "o-", label="improving (median)")
    ax2.plot(dec, [r["mean_ns_per_update"] / 1e3 for r in ch["deciles"]], "s-", label="mean, all updates")
    ax2.plot(dec, [r["worse_median_ns"] / 1e3 for r in ch["deciles"]], "^-", label="non-improving (median)")
    ax2.plot(dec, [r["control_median_ns"] / 1e3 for r in ch["deciles"]], "P:", label="control: floor + JSON record")
    ax2.set_yscale("log")
    ax2.set_xlabel(f"decile of {ch['updates']:,} updates")
    ax2.set_ylabel("µs per update")
    ax2.set_title("Many updates: cost and RSS stay flat")
    ax2.grid(True, which="both", alpha=0.3)
    rss = ax2.twinx()
    rss.plot(dec, [r["rss_end"] / MiB for r in ch["deciles"]], "k--", label="RSS (MiB)")
    rss.set_ylabel("RSS at end of decile (MiB)")
    lo_rss = min(r["rss_end"] for r in ch["deciles"]) / MiB
    rss.set_ylim(lo_rss * 0.9, lo_rss * 1.1 + 1)
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = rss.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    mode = "smoke" if res["env"]["smoke"] else "full"
    fig.suptitle(f"lightning-bestlink benchmarks ({mode} run, {res['env']['date']}, {res['env']['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few repetitions (CI)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="output directory")
    parser.add_argument("--tmp", default=None, help="where scratch checkpoints go (default: the system temp dir)")
    parser.add_argument("--seed", type=int, default=8, help="seed of the interleaving order")
    args = parser.parse_args(argv)

    cfg = SMOKE if args.smoke else FULL
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="bestlink-bench-", dir=args.tmp)
    started = time.perf_counter()
    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": args.smoke,
        "cpus": os.cpu_count(),
        "load_start": load_average(),
        "tmp_fs": fs_type(os.path.realpath(root)),
        "config": asdict(cfg),
    }
    log(f"scratch dir {root} ({env['tmp_fs']}), output {args.out}, load average {env['load_start']}")
    results: dict[str, Any] = {"env": env}
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("imports", lambda: bench_imports(cfg, rng)),  # first: before this process's page cache fills up
        ("noop", lambda: bench_noop(cfg, root, rng)),
        ("alias", lambda: bench_alias_updates(cfg, root, rng)),
        ("churn", lambda: bench_churn(cfg, root)),
        ("trainer", lambda: bench_trainer(cfg, root, rng)),
    ]
    env["load_per_section"] = {}
    try:
        for key, run in sections:
            env["load_per_section"][key] = load_average()  # other users of the machine show up here
            results[key] = run()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    env["versions"] = versions()
    env["load_end"] = load_average()
    env["wall_s"] = time.perf_counter() - started
    results["targets"] = targets_table(results)

    md_path = os.path.join(args.out, "results.md")
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(render_markdown(results))
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    png_path = os.path.join(args.out, "benchmarks.png")
    plot(results, png_path)
    log(f"wrote {md_path} and {png_path} in {env['wall_s']:.0f} s")
    for t in results["targets"]:
        log(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
