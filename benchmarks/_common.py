"""What every section shares: the ``Section`` type, counters of this process, and the floor that
alias updates are compared with. Units and formatting live in ``_tables``."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from _tables import Part


@dataclass(frozen=True)
class Section:
    """One measured section of the run (see run.py's docstring for how to add one).

    ``full`` and ``smoke`` are the section's settings (a frozen dataclass each, same fields);
    ``run(settings, scratch_dir, rng)`` measures and returns JSON-able figures, stored under
    ``results[key]``; ``report(figures)`` turns them into numbered tables for results.md and
    docs/benchmarks.md, and must read nothing but ``figures`` (``--report-from`` re-renders old runs).
    """

    key: str
    full: Any
    smoke: Any
    run: Callable[[Any, str, random.Random], dict[str, Any]]
    report: Callable[[dict[str, Any]], list[Part]]


# --- counters of this process ------------------------------------------------------


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


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "lightning", "lightning_bestlink", "numpy", "matplotlib"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # a missing version is only cosmetic here
            out[mod] = "n/a"
    return out


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = float(values[0])
        return v, v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def spread(values: Sequence[float]) -> dict[str, float]:
    """The figures every timing row carries: median and quartiles, in the samples' unit (ns)."""
    q1, med, q3 = quartiles(values)
    return {"median_ns": med, "q1_ns": q1, "q3_ns": q3}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the floor: the least any atomic alias update costs -------------------------------


def floor_link(d: str, alias: str, i: int, target: str) -> None:
    """The floor: a bare relative symlink under a temporary name, renamed over the alias."""
    tmp = os.path.join(d, f".floor-{i}.tmp")
    os.symlink(os.path.basename(target), tmp)
    os.replace(tmp, alias)


def floor_link_and_record(d: str, alias: str, i: int, target: str, *, exchange: bool = False) -> None:
    """The floor plus what any alias with a record next to it costs at least: one small JSON
    file written under a temporary name and renamed over the previous record (``exchange``:
    swapped with it by ``renameat2(RENAME_EXCHANGE)``, then the old one unlinked: no ext4
    replace-on-rename flush, as BestLinker does without ``durable=True``)."""
    floor_link(d, alias, i, target)
    record = {"format": "bench/1", "alias": os.path.basename(alias), "target": os.path.basename(target)}
    record.update(link="symlink", mode="min", score=-float(i), time=time.time(), extra={"epoch": i})
    tmp = os.path.join(d, f".floor-json-{i}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record, indent=2) + "\n")
    if exchange and os.path.exists(alias + ".json"):
        from lightning_bestlink._storage import _syscalls

        _syscalls.exchange(tmp, alias + ".json")
        os.unlink(tmp)
    else:
        os.replace(tmp, alias + ".json")


_lock_fds: dict[str, int] = {}
_record_encoder = json.JSONEncoder(separators=(", ", ": "), allow_nan=False)


def syscalls_of_an_update(d: str, alias: str, target: str, score: float, epoch: int, step: int) -> None:
    """The system calls of BestLinker's improving symlink update (the list in tests/test_linker.py,
    in its order), in straight-line code: no checks, no layers, a record of the same fields and size.
    What is left between this and BestLinker is the library's Python, not its system calls."""
    import fcntl

    from lightning_bestlink._storage import _syscalls

    fd = _lock_fds.get(alias)
    if fd is None:  # BestLinker opens its lock file once too
        fd = _lock_fds[alias] = os.open(os.path.join(d, ".best.bench.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    name = os.path.basename(target)
    record = alias + ".json"
    os.lstat(target)  # the checkpoint
    pid = os.getpid()  # the lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        try:
            os.stat(record)  # the record: still the one written last
        except FileNotFoundError:
            pass
        try:
            old: os.stat_result | None = os.lstat(alias)  # what is at the alias
        except FileNotFoundError:
            old = None
        tmp = os.path.join(d, f".best.bench-out-{pid}")
        os.symlink(name, tmp)
        text = _record_encoder.encode(
            {
                "format": 1,
                "alias": os.path.basename(alias),
                "target": name,
                "link": "symlink",
                "mode": "min",
                "score": score,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime()),
                "unix_time": time.time(),
                "alias_id": None,
                "previous_alias_id": None,
                "target_id": None,
                "writer": {"host": platform.node(), "pid": os.getpid(), "id": "0123456789abcdef"},
                "extra": {"monitor": "val_loss", "epoch": epoch, "step": step, "filename": name},
            }
        )
        rtmp = os.path.join(d, f".best.bench.json-tmp-{pid}")
        rfd = os.open(rtmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        os.write(rfd, (text + "\n").encode())
        os.fstat(rfd)
        os.close(rfd)
        if old is None:
            os.replace(rtmp, record)
            os.replace(tmp, alias)
        else:
            _syscalls.exchange(rtmp, record)
            os.unlink(rtmp)
            _syscalls.exchange(tmp, alias)
            os.lstat(tmp)
            os.unlink(tmp)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def close_update_locks() -> None:
    """Close the lock files :func:`syscalls_of_an_update` opened (one per alias, kept as BestLinker keeps its own)."""
    while _lock_fds:
        os.close(_lock_fds.popitem()[1])
