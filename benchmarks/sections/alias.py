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
    hot_reps: int  # rounds of the hot loop (no os.sync between updates), at the first size


FULL = Settings(sizes=(MiB, 100 * MiB, GiB), reps=(101, 21, 9), cheap_per_round=(1, 3, 6), hot_reps=201)
SMOKE = Settings(sizes=(4 * KiB, 64 * KiB, MiB), reps=(9, 7, 5), cheap_per_round=(1, 1, 2), hot_reps=9)

CONTENDERS = (
    "floor: os.symlink + os.replace",
    "floor + a JSON record (write + os.replace)",
    "floor + a JSON record (write + exchange)",
    "BestLinker symlink",
    "BestLinker symlink, durable=True",
    "BestLinker symlink, shared=True",
    "BestLinker hardlink",
    "BestLinker copy",
    "Lightning _link_checkpoint",
    "second torch.save",
)
FLOOR, FLOOR_JSON, FLOOR_XCHG, SYMLINK, DURABLE, SHARED, HARDLINK, COPY, LIGHTNING, SAVE = CONTENDERS
#: timed a second time in a hot loop (no os.sync between updates) at the first size: what an update
#: costs back to back, where ext4's flush on a rename that replaces a file shows in full
HOT = (FLOOR, FLOOR_JSON, FLOOR_XCHG, SYMLINK, DURABLE, LIGHTNING)
#: every row's time is also given as a ratio to these (the key of the ratio in each row)
RATIOS = {"x_floor": FLOOR, "x_json": FLOOR_JSON, "x_xchg": FLOOR_XCHG, "x_lightning": LIGHTNING, "x_save": SAVE}


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
        # power-loss safe: the record's data flushed, then os.replace (and a folder fsync)
        DURABLE: BestLinker(aliases[DURABLE], mode="min", link="symlink", durable=True),
        # many writers: also re-reads the record under the lock and cleans leftovers every time
        SHARED: BestLinker(aliases[SHARED], mode="min", link="symlink", shared=True),
        HARDLINK: BestLinker(aliases[HARDLINK], mode="min", link="hardlink"),
        COPY: BestLinker(aliases[COPY], mode="min", link="copy"),
    }

    def floor(i: int, target: str) -> None:
        floor_link(d, aliases[FLOOR], i, target)

    def floor_json(i: int, target: str) -> None:
        floor_link_and_record(d, aliases[FLOOR_JSON], i, target)

    def floor_xchg(i: int, target: str) -> None:
        floor_link_and_record(d, aliases[FLOOR_XCHG], i, target, exchange=True)

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
        FLOOR_XCHG: floor_xchg,
        SYMLINK: via_linker(SYMLINK),
        DURABLE: via_linker(DURABLE),
        SHARED: via_linker(SHARED),
        HARDLINK: via_linker(HARDLINK),
        COPY: via_linker(COPY),
        LIGHTNING: lightning_link,
        SAVE: second_save,
    }
    return ops, linkers


def _bench_one_size(
    size: int, reps: int, cheap: int, root: str, rng: random.Random, hot_reps: int
) -> dict[str, Any]:
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
        serial = _timed(ops, tasks, targets, reps, rng, times, written, sync=True, serial=0)
        hot: dict[str, list[int]] = {n: [] for n in HOT}
        if hot_reps:  # back to back: no os.sync between updates
            _timed(ops, list(HOT) * cheap, targets, hot_reps, rng, hot, None, sync=False, serial=serial)
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
        hot_rows = {name: {**spread(hot[name]), "n": len(hot[name])} for name in HOT if hot[name]}
    finally:
        shutil.rmtree(d, ignore_errors=True)  # frees the 1 GiB files right away
    for table in (rows, hot_rows):
        for row in table.values():
            row.update({key: row["median_ns"] / table[of]["median_ns"] for key, of in RATIOS.items() if of in table})
    log("  " + ", ".join(f"{n}: {fmt_time(rows[n]['median_ns'])}" for n in CONTENDERS))
    return {
        "size": size,
        "checkpoint_bytes": ckpt_bytes,
        "reps": reps,
        "cheap_reps": reps * cheap,
        "rows": rows,
        "hot": hot_rows,
    }


def _timed(
    ops: dict[str, Op],
    tasks: list[str],
    targets: list[str],
    reps: int,
    rng: random.Random,
    times: dict[str, list[int]],
    written: dict[str, list[int]] | None,
    *,
    sync: bool,
    serial: int,
) -> int:
    """Run ``tasks`` (shuffled) ``reps`` times after a warm-up round; returns the last score serial."""
    count = dict.fromkeys(times, 0)
    for rnd in range(reps + 1):  # round 0 is a warm-up (first-use cleanup, caches), not timed
        rng.shuffle(tasks)
        for name in tasks:
            serial += 1  # a new, better score for every update
            target = targets[count[name] % 2]  # each contender alternates between two checkpoints
            count[name] += 1
            if sync:
                os.sync()  # flush the previous contender's dirty pages outside the timed region
            w0 = wchar()
            t0 = time.perf_counter_ns()
            ops[name](serial, target)
            t1 = time.perf_counter_ns()
            w1 = wchar()
            if rnd:
                times[name].append(t1 - t0)
                if written is not None and w0 is not None and w1 is not None:
                    written[name].append(w1 - w0)
    return serial


def run(cfg: Settings, root: str, rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, (size, reps, cheap) in enumerate(zip(cfg.sizes, cfg.reps, cfg.cheap_per_round, strict=True)):
        # the hot loop once, at the first size: a link's cost does not depend on the checkpoint's size
        out[str(size)] = _bench_one_size(size, reps, cheap, root, rng, cfg.hot_reps if k == 0 else 0)
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
                "{median_ns:time} ({x_floor:.1f}x floor, {x_xchg:.2f}x floor+record, {x_lightning:.2f}x Lightning's "
                "link; IQR {q1_ns:time}-{q3_ns:time})",
            ),
        ],
        rows=rows,
        notes=[
            "floor+record: the floor plus a JSON record swapped in by an exchange, as BestLinker writes its record "
            "(without durable=True); Lightning's link: `ModelCheckpoint._link_checkpoint` (no record, and not "
            "atomic: it removes the old link, then makes the new one)."
        ],
    )
    first = sizes[0]
    hot_rows = [{"contender": name, **row} for name, row in (first.get("hot") or {}).items()]
    hot = Part(
        8,
        "The same updates back to back (a hot loop, no os.sync between them)",
        intro=[
            "What a burst of new bests costs: the dirty pages of one update are still in memory at the next. "
            "On ext4, a rename that replaces a file first flushes the new file's data (its replace-on-rename "
            "heuristic): a record swapped in with os.replace pays that here, one swapped in by an exchange does "
            "not. BestLinker flushes its record on purpose with durable=True (a power loss then never leaves it "
            "empty); without it, the promise is a killed process, which the exchange keeps."
        ],
        columns=[
            Column("contender", "{contender}"),
            Column(
                f"{fmt_size(first['size'])} (n={hot_rows[0]['n'] if hot_rows else 0})",
                "{median_ns:time} ({x_floor:.1f}x floor, {x_json:.2f}x floor+record (os.replace), "
                "{x_xchg:.2f}x floor+record (exchange), {x_lightning:.2f}x Lightning's link)",
            ),
        ],
        rows=hot_rows,
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
    return [timing, *([hot] if hot_rows else []), written]


SECTION = Section("alias", FULL, SMOKE, run, report)
