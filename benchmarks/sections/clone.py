"""Section 7: a copy alias on a filesystem that clones (XFS with reflink), next to a plain copy and the floor.

A loop-mounted XFS made with ``mkfs.xfs -m reflink=1`` (a sparse image in the scratch directory;
needs root, a loop device and xfsprogs) holds one set of checkpoints; the scratch directory itself
(ext4 on a typical Linux machine) holds another. Interleaved in every round: the floor (a bare
symlink renamed over the alias) and BestLinker's symlink on the XFS, BestLinker's copy on the XFS
(a clone) and on the scratch filesystem (a real copy). Besides the time, what each copy alias takes on
disk is read from ``statvfs``: the free space that deleting it (and its record) at the end gives back.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Section, floor_link, fs_type, log, spread
from _tables import Column, GiB, KiB, MiB, Part, fmt_size

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests/_xfs.py mounts the XFS
from tests._xfs import cannot_mount, free_bytes, xfs_mount


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]  # 0 stands for the largest size that fits (see _largest)
    reps: tuple[int, ...]  # timed rounds per size
    largest_cap: int  # the largest size tried for the 0 entry


FULL = Settings(sizes=(MiB, 100 * MiB, 0), reps=(51, 21, 7), largest_cap=4 * GiB)
SMOKE = Settings(sizes=(64 * KiB, MiB), reps=(5, 3), largest_cap=0)

CONTENDERS = (
    "floor: os.symlink + os.replace (XFS)",
    "BestLinker symlink (XFS)",
    "BestLinker copy (XFS with reflink: a clone)",
    "BestLinker copy (scratch filesystem: a real copy)",
)
FLOOR, SYMLINK, CLONE, PLAIN = CONTENDERS
COPIES = (CLONE, PLAIN)


def _largest(root: str, cap: int) -> int:
    """The largest power-of-two size up to ``cap`` whose files fit in half the free space of ``root``.

    Per size the run holds two checkpoints on the XFS (inside its sparse image, on ``root``), two
    on ``root``, the copy alias and its staged successor there: six checkpoints' worth, plus 2 GiB
    of room; half the free space is left to whoever else uses the machine.
    """
    free = shutil.disk_usage(root).free // 2
    size = cap
    while size >= 128 * MiB and 6 * size + 2 * GiB > free:
        size //= 2
    return size if size >= 128 * MiB else 0


def _write(path: str, size: int, block: bytes) -> None:
    with open(path, "wb") as fh:
        for _ in range(size // len(block)):
            fh.write(block)
        fh.write(block[: size % len(block)])


def _bench_one_size(size: int, reps: int, xfs: str, plain: str, rng: random.Random) -> dict[str, Any]:
    from lightning_bestlink import BestLinker

    log(f"copy aliases at {fmt_size(size)}: {reps} interleaved rounds of {len(CONTENDERS)} contenders")
    xd, pd = tempfile.mkdtemp(prefix="clone-", dir=xfs), tempfile.mkdtemp(prefix="clone-", dir=plain)
    try:
        block = os.urandom(min(size, MiB))
        targets = {d: [os.path.join(d, f"epoch={i}.ckpt") for i in range(2)] for d in (xd, pd)}
        for path in targets[xd] + targets[pd]:
            _write(path, size, block)
        linkers = {
            SYMLINK: BestLinker(os.path.join(xd, "best-symlink.ckpt"), link="symlink"),
            CLONE: BestLinker(os.path.join(xd, "best-copy.ckpt"), link="copy"),
            PLAIN: BestLinker(os.path.join(pd, "best-copy.ckpt"), link="copy"),
        }
        home = {FLOOR: xd, SYMLINK: xd, CLONE: xd, PLAIN: pd}

        def op(name: str) -> Callable[[int, str], None]:
            if name == FLOOR:
                return lambda i, target: floor_link(xd, os.path.join(xd, "best-floor.ckpt"), i, target)
            linker = linkers[name]

            def update(i: int, target: str) -> None:
                if not linker.update(-float(i), target):  # a new, better score: each call really moves it
                    raise AssertionError(f"{name}: an improving update returned False")

            return update

        ops = {name: op(name) for name in CONTENDERS}
        times: dict[str, list[int]] = {n: [] for n in CONTENDERS}
        tasks, count, serial = list(CONTENDERS), dict.fromkeys(CONTENDERS, 0), 0
        for rnd in range(reps + 1):  # round 0 is a warm-up (first-use cleanup, caches), not timed
            rng.shuffle(tasks)
            for name in tasks:
                serial += 1
                target = targets[home[name]][count[name] % 2]
                count[name] += 1
                os.sync()  # flush the previous contender's dirty pages outside the timed region
                t0 = time.perf_counter_ns()
                ops[name](serial, target)
                t1 = time.perf_counter_ns()
                if rnd:
                    times[name].append(t1 - t0)
        # what each alias takes on disk (its data and record): the free space its removal gives back
        footprint: dict[str, int] = {}
        for name in COPIES:
            alias = linkers[name].link_path
            before = free_bytes(home[name])
            os.unlink(alias)
            os.unlink(linkers[name].record_path)
            footprint[name] = free_bytes(home[name]) - before
    finally:
        shutil.rmtree(xd, ignore_errors=True)
        shutil.rmtree(pd, ignore_errors=True)
    rows: dict[str, Any] = {}
    for name in CONTENDERS:
        rows[name] = {
            **spread(times[name]),
            "n": len(times[name]),
            "alias_disk_bytes": footprint.get(name),
        }
    for row in rows.values():
        row["x_floor"] = row["median_ns"] / rows[FLOOR]["median_ns"]
    log("  " + ", ".join(f"{n}: {row['median_ns'] / 1e6:.2f} ms" for n, row in rows.items()))
    return {"size": size, "reps": reps, "rows": rows}


def run(cfg: Settings, root: str, rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {"skipped": cannot_mount(), "plain_fs": fs_type(os.path.realpath(root)), "sizes": {}}
    if out["skipped"]:
        log(f"copy aliases on XFS: not measured ({out['skipped']})")
        return out
    sizes = [s or _largest(root, cfg.largest_cap) for s in cfg.sizes]
    plan = [(s, r) for s, r in zip(sizes, cfg.reps, strict=True) if s]
    image = max(2 * max(s for s, _ in plan) + 768 * MiB, 512 * MiB)  # two checkpoints, metadata, the log
    work = tempfile.mkdtemp(prefix="clone-", dir=root)
    try:
        with xfs_mount(work, image) as mnt:
            for size, reps in plan:
                out["sizes"][str(size)] = _bench_one_size(size, reps, str(mnt), work, rng)
                gc.collect()
    except RuntimeError as err:  # mkfs or mount refused: a machine that cannot, said so in the results
        out["skipped"] = str(err)
        log(f"copy aliases on XFS: not measured ({err})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def report(res: dict[str, Any]) -> list[Part]:
    intro = [
        "A copy alias (`link='copy'`, also what `auto` falls back to and what directory checkpoints get in "
        "copy mode) on a loop-mounted XFS made with `mkfs.xfs -m reflink=1`, where the copy is a clone "
        f"(`FICLONE`), next to the same update on the scratch filesystem ({res['plain_fs']}), which copies "
        "every byte, and next to the floor and BestLinker's symlink on the XFS. Median wall time of one "
        "improving update (interleaved, `os.sync()` between updates outside the timed region). On disk: "
        "what a copy alias and its JSON record take, read as the free space (`statvfs`) that deleting them "
        "at the end gives back (n/a for the links, which hold no data)."
    ]
    title = "Copy aliases on a filesystem that clones"
    if res.get("skipped"):
        return [Part(7, title, [Column("not measured", "{why}")], [{"why": res["skipped"]}], intro=intro)]
    sizes = list(res["sizes"].values())
    rows = [{"contender": name, **{s["size"]: s["rows"][name] for s in sizes}} for name in CONTENDERS]
    columns = [Column("contender", "{contender}")] + [
        Column(
            f"{fmt_size(s['size'])} (n={s['reps']})",
            "{median_ns:time} ({x_floor:.1f}x floor; on disk {alias_disk_bytes:bytes})",
            of=s["size"],
        )
        for s in sizes
    ]
    return [Part(7, title, columns, rows, intro=intro)]


SECTION = Section("clone", FULL, SMOKE, run, report)
