"""Section 2: a non-improving update (the call made at every validation that finds no new best)."""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import timeit
from dataclasses import dataclass
from typing import Any

from _common import Section, log, proc_io, spread
from _tables import Column, Part, named_rows

BASELINE = "baseline: empty Python method call"
FLOAT = "BestLinker.update(float) (worse score)"
TENSOR = "BestLinker.update(0-d tensor) (worse score)"


@dataclass(frozen=True)
class Settings:
    loops: int  # calls per timed repeat
    repeats: int


FULL = Settings(loops=200_000, repeats=9)
SMOKE = Settings(loops=10_000, repeats=3)


class _NoOp:
    def update(self, score: float, path: str) -> bool:
        return False


def run(cfg: Settings, root: str, rng: random.Random) -> dict[str, Any]:
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
        BASELINE: "noop.update(1.0, target)",
        FLOAT: "linker.update(1.0, target)",
        TENSOR: "linker.update(t, target)",
        "baseline: 0-d tensor .item() alone": "t.item()",
    }
    if ns["np"] is not None:
        contenders["BestLinker.update(numpy.float32) (worse score)"] = "linker.update(np, target)"
    timers = {name: timeit.Timer(stmt, globals=ns) for name, stmt in contenders.items()}
    for timer in timers.values():
        timer.timeit(max(cfg.loops // 10, 1))  # warm-up
    log(f"non-improving update: {cfg.repeats} interleaved repeats x {cfg.loops:,} calls")
    per_call: dict[str, list[float]] = {n: [] for n in timers}
    order = list(timers)
    io0 = proc_io()
    for _ in range(cfg.repeats):
        rng.shuffle(order)
        for name in order:
            per_call[name].append(timers[name].timeit(cfg.loops) / cfg.loops * 1e9)
    io1 = proc_io()
    if linker.best_score != 0.0:
        raise AssertionError("a worse score moved the alias")
    base = statistics.median(per_call[BASELINE])
    rows = {}
    for name, values in per_call.items():
        row = spread(values)
        rows[name] = {**row, "x_baseline": row["median_ns"] / base}
    calls = cfg.repeats * cfg.loops * sum(1 for n in timers if n.startswith("BestLinker"))
    io = None
    if io0 is not None and io1 is not None:
        # the reads of /proc/self/io themselves are the only I/O expected here
        io = {k: io1[k] - io0[k] for k in ("syscr", "syscw", "wchar")}
    shutil.rmtree(d)
    log("  " + ", ".join(f"{n}: {r['median_ns']:.0f} ns" for n, r in rows.items()))
    return {"rows": rows, "loops": cfg.loops, "repeats": cfg.repeats, "linker_calls": calls, "io": io}


def report(res: dict[str, Any]) -> list[Part]:
    io = res["io"]
    notes = []
    if io is not None:
        notes.append(
            f"I/O during the {res['linker_calls']:,} linker calls (from `/proc/self/io`, which reading "
            f"itself costs one or two `read` calls): {io['syscr']} read and {io['syscw']} "
            f"write syscalls, {io['wchar']} bytes written."
        )
    return [
        Part(
            2,
            "A non-improving update",
            intro=[f"`timeit`, {res['repeats']} interleaved repeats of {res['loops']:,} calls each; per call."],
            columns=[
                Column("call", "{name}"),
                Column("median", "{median_ns:.0f} ns"),
                Column("IQR", "{q1_ns:.0f}-{q3_ns:.0f} ns"),
                Column("vs empty method call", "{x_baseline:.1f}x"),
            ],
            rows=named_rows(res["rows"]),
            notes=notes,
        )
    ]


SECTION = Section("noop", FULL, SMOKE, run, report)
