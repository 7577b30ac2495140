"""Section 6: many updates in one process: the cost per update and the memory stay flat."""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from _common import Section, floor_link_and_record, log, rss_bytes
from _tables import Column, MiB, Part, fmt_bytes


@dataclass(frozen=True)
class Settings:
    updates: int
    improve_every: int  # one update in this many carries a better score


FULL = Settings(updates=100_000, improve_every=5)
SMOKE = Settings(updates=2_000, improve_every=5)


def run(cfg: Settings, root: str, rng: random.Random) -> dict[str, Any]:
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
    n, every = cfg.updates, cfg.improve_every
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


def report(res: dict[str, Any]) -> list[Part]:
    def improving_per_control(row: dict[str, Any]) -> str:
        good, ctl = row["improving_median_ns"] or 0, row["control_median_ns"] or 0
        return f"{good / ctl if ctl else float('nan'):.2f}x"

    return [
        Part(
            6,
            f"{res['updates']:,} updates: cost and memory stay flat",
            intro=[
                "The control is the floor plus a JSON record (section 1), run right after each improving update in "
                "a directory of its own: when both drift together, the drift comes from the machine or the "
                "filesystem.",
                f"One BestLinker (symlink), {res['improving']:,} improving updates (alternating two targets) among "
                f"{res['updates']:,}. RSS {fmt_bytes(res['rss_start'])} at start, {fmt_bytes(res['rss_end'])} at "
                f"end; gc-tracked objects {res['gc_objects_start']:,} -> {res['gc_objects_end']:,}; files left in "
                f"the directory: {', '.join(res['dir_entries_end'])}.",
            ],
            columns=[
                Column("decile", "{decile}"),
                Column("mean per update", "{mean_ns_per_update:time}"),
                Column("improving (median)", "{improving_median_ns:time}"),
                Column("non-improving (median)", "{worse_median_ns:time}"),
                Column("control: floor + JSON record (median)", "{control_median_ns:time}"),
                Column("improving / control", improving_per_control),
                Column("RSS at end", lambda row: f"{row['rss_end'] / MiB:.1f} MiB"),
            ],
            rows=res["deciles"],
        )
    ]


SECTION = Section("churn", FULL, SMOKE, run, report)
