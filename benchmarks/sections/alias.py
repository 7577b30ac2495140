"""Sections 1 and 4: one improving alias update against checkpoint size, and the bytes it writes."""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from _common import Section, floor_link, floor_link_and_record, log, spread, wchar
from _tables import Column, GiB, KiB, MiB, Part, fmt_size, fmt_time

Op = Callable[[int, str], None]


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]
    reps: tuple[int, ...]  # timed rounds per size, in the order of ``sizes``
    cheap_per_round: tuple[int, ...]  # samples per round of the contenders that write no data


FULL = Settings(sizes=(MiB, 100 * MiB, GiB), reps=(101, 21, 9), cheap_per_round=(1, 3, 6))
SMOKE = Settings(sizes=(4 * KiB, 64 * KiB, MiB), reps=(9, 7, 5), cheap_per_round=(1, 1, 2))

CONTENDERS = (
    "floor: os.symlink + os.replace",
    "floor + a JSON record (write + os.replace)",
    "BestLinker symlink",
    "BestLinker symlink, shared=True",
    "BestLinker hardlink",
    "BestLinker copy",
    "Lightning _link_checkpoint",
    "second torch.save",
)
FLOOR, FLOOR_JSON, SYMLINK, SHARED, HARDLINK, COPY, LIGHTNING, SAVE = CONTENDERS


def alias_extra_disk(alias: str, targets: Sequence[str]) -> int:
    """Bytes of data the alias holds that no checkpoint already holds (0 for a link)."""
    st = os.lstat(alias)
    if os.path.islink(alias):
        return 0  # a short symlink keeps its target name inside the inode: no data blocks
    if any(os.path.samestat(st, os.stat(t)) for t in targets):
        return 0  # a hard link: the same inode as a checkpoint
    return st.st_blocks * 512


def _alias_ops(d: str, aliases: dict[str, str], state: Any) -> tuple[dict[str, Op], dict[str, Any]]:
    """One callable per contender: ``op(i, target)`` moves that contender's alias to ``target``."""
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_bestlink import BestLinker

    fake_trainer = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(barrier=lambda: None))
    linkers = {
        SYMLINK: BestLinker(aliases[SYMLINK], mode="min", link="symlink"),
        # many writers: also re-reads the record under the lock and cleans leftovers every time
        SHARED: BestLinker(aliases[SHARED], mode="min", link="symlink", shared=True),
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
        SHARED: via_linker(SHARED),
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
        meta = {n: os.path.getsize(lk.record_path) for n, lk in linkers.items()}
        rows: dict[str, Any] = {}
        for name in CONTENDERS:
            rows[name] = {
                **spread(times[name]),
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


def run(cfg: Settings, root: str, rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, reps, cheap in zip(cfg.sizes, cfg.reps, cfg.cheap_per_round, strict=True):
        out[str(size)] = _bench_one_size(size, reps, cheap, root, rng)
        gc.collect()
    return out


def report(res: dict[str, Any]) -> list[Part]:
    sizes = list(res.values())
    # a row per contender: its name, then its figures at each size (the key of a column each)
    rows = [{"contender": name, **{s["size"]: s["rows"][name] for s in sizes}} for name in CONTENDERS]

    def per_size(header: Callable[[dict[str, Any]], str], show: str) -> list[Column]:
        return [Column(header(s), show, of=s["size"]) for s in sizes]

    timing = Part(
        1,
        "One improving alias update against checkpoint size",
        intro=[
            "Median wall time of one update that moves the alias (each with a new, better score, alternating "
            "between two checkpoint files); `os.sync()` runs between updates, outside the timed region. "
            "IQR = interquartile range."
        ],
        columns=[
            Column("contender", "{contender}"),
            *per_size(
                lambda s: f"{fmt_size(s['size'])} (n={s['reps']}; {s['cheap_reps']} for links)",
                "{median_ns:time} ({x_floor:.1f}x floor, {x_save:.3g}x save; IQR {q1_ns:time}-{q3_ns:time})",
            ),
        ],
        rows=rows,
    )
    meta = sorted({s["rows"][SYMLINK]["metadata_bytes"] for s in sizes})
    written = Part(
        4,
        "Bytes written per new best",
        intro=[
            "`write()` bytes counted by the kernel for this process during one update (`wchar` in "
            "`/proc/self/io`, median), and the data the alias holds that no checkpoint already holds."
        ],
        columns=[
            Column("contender", "{contender}"),
            *per_size(
                lambda s: f"{fmt_size(s['size'])}: written / alias data",
                "{wchar_median:bytes} / {alias_extra_disk_bytes:bytes}",
            ),
        ],
        rows=rows,
        notes=[
            f"The BestLinker figures include its metadata JSON (`best.ckpt.bestlink.json`, "
            f"{', '.join(map(str, meta))} B), rewritten on every new best. Checkpoint files: "
            + ", ".join(f"{fmt_size(s['size'])} = {s['checkpoint_bytes']:,} B" for s in sizes)
            + "."
        ],
    )
    return [timing, written]


SECTION = Section("alias", FULL, SMOKE, run, report)
