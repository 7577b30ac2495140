"""Other processes: a reader polling the alias during swaps, and a writer killed mid-update.

Both print their counts (visible with ``pytest -s`` or ``-rA``) and, when
``BESTLINK_COUNTS_DIR`` is set, write them there as JSON.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests._helpers import fill_of, leftovers, write_ckpt

from lightning_bestlink import BestLinker, read_record

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rename semantics"),
]

Counts = Callable[[dict[str, object]], None]

# The reader checks each read whole: header (magic, length, fill byte) then the fill byte.
READER = textwrap.dedent(
    """
    import json, os, struct, sys
    alias, stop, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    names = set(json.loads(sys.argv[4]))
    header = struct.Struct("<4sQB")

    def fill(data):
        if len(data) < header.size:
            return None
        magic, size, value = header.unpack_from(data)
        if magic != b"BLCK" or len(data) != header.size + size or data[header.size:] != bytes([value]) * size:
            return None
        return value

    polls = misses = partial = 0
    seen = set()
    print("ready", flush=True)
    while not os.path.exists(stop):
        polls += 1
        try:
            if not os.path.exists(alias):  # missing, or a dangling symlink
                misses += 1
                continue
            if kind == "symlink" and os.readlink(alias) not in names:
                misses += 1
                continue
            with open(alias, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            misses += 1
            continue
        value = fill(data)
        if value is None:
            partial += 1
        else:
            seen.add(value)
    print(json.dumps({"polls": polls, "misses": misses, "partial": partial, "distinct": len(seen)}), flush=True)
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["symlink", "copy", "hardlink"])
def test_reader_never_sees_a_missing_or_partial_alias(tmp_path: Path, kind: str, record_counts: Counts) -> None:
    n, swaps_wanted, budget = 6, 1500, 60.0  # the budget only guards against a hung reader
    folder = tmp_path / "run"
    paths = [write_ckpt(folder / f"epoch={i}.ckpt", i, size=64 * 1024 + i) for i in range(n)]
    linker = BestLinker(folder / "best.ckpt", mode="max", link=kind)  # type: ignore[arg-type]
    assert linker.update(0, paths[0])  # the alias exists before the reader starts
    script = tmp_path / "reader.py"
    script.write_text(READER)
    stop = tmp_path / "stop"
    names = json.dumps([p.name for p in paths])
    reader = subprocess.Popen(
        [sys.executable, str(script), linker.link_path, str(stop), kind, names],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        swaps, start = 0, time.monotonic()
        while swaps < swaps_wanted and time.monotonic() - start < budget:
            swaps += 1
            assert linker.update(swaps, paths[swaps % n])
        elapsed = time.monotonic() - start
        stop.touch()
        out, _ = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    counts: dict[str, Any] = {"kind": kind, "swaps": swaps, "seconds": round(elapsed, 2), **json.loads(out)}
    record_counts(counts)
    assert swaps >= 1000
    assert counts["polls"] >= 1000, counts
    assert counts["misses"] == 0, counts
    assert counts["partial"] == 0, counts
    assert fill_of(linker.link_path) == swaps % n
    assert leftovers(folder) == []


WRITER = textwrap.dedent(
    """
    import os, sys, tempfile
    from lightning_bestlink import BestLinker
    folder, kind, n, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    paths = [os.path.join(folder, f"c{i}") for i in range(n)]
    # warmed up on a scratch alias first: the kills land in the updates, not in first-use imports
    scratch = tempfile.mkdtemp()
    open(os.path.join(scratch, "c"), "w").close()
    BestLinker(os.path.join(scratch, "best"), link=kind).update(1, os.path.join(scratch, "c"))
    linker = BestLinker(os.path.join(folder, "best"), mode="max", link=kind)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        assert linker.update(i, paths[i % n], extra={"step": i})
        os.write(fd, b".")  # one byte per completed update
    """
)


def run_kills(tmp_path: Path, kind: str, target: str, kills: int, max_delay: float) -> dict[str, Any]:
    n = 4
    folder = tmp_path / f"{kind}-{target}"
    paths = [write_ckpt(folder / f"c{i}", i, size=128 * 1024, kind=target) for i in range(n)]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    log = tmp_path / f"{kind}-{target}.log"
    log.touch()
    alias = folder / "best"
    rng = random.Random(f"{kind}-{target}")
    counts: dict[str, Any] = {
        "kind": kind,
        "target": target,
        "kills": 0,
        "bad": 0,
        "killed_before_first_update": 0,
        "temp_files_found_after_kill": 0,
        "writer_updates": 0,
    }
    problems: list[str] = []
    for k in range(kills):
        writer = subprocess.Popen(
            [sys.executable, str(script), str(folder), kind, str(n), str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert writer.stdout is not None
        writer.stdout.readline()
        time.sleep(rng.uniform(0, max_delay))
        crashed = writer.poll() is not None
        writer.send_signal(signal.SIGKILL)
        _, err = writer.communicate()
        if crashed:
            problems.append(f"kill {k}: the writer died by itself: {err.decode()[-2000:]}")
            counts["bad"] += 1
            continue
        counts["kills"] += 1
        completed = log.stat().st_size  # updates that returned, in all runs so far
        if leftovers(folder):
            counts["temp_files_found_after_kill"] += 1
        # 1. the alias is absent only before the first update, else it is a complete checkpoint
        if not os.path.lexists(alias):
            if completed:
                problems.append(f"kill {k}: alias missing after {completed} completed updates")
                counts["bad"] += 1
            else:
                counts["killed_before_first_update"] += 1
        elif not os.path.exists(alias) or fill_of(alias) not in range(n):
            problems.append(f"kill {k}: alias dangling or incomplete")
            counts["bad"] += 1
        # 2. the record, if any, is whole
        try:
            read_record(alias)
        except Exception as exc:
            problems.append(f"kill {k}: unreadable record: {exc!r}")
            counts["bad"] += 1
        # 3. a fresh linker's next update works and leaves no temp files
        try:
            fresh = BestLinker(alias, mode="max", link=kind)  # type: ignore[arg-type]
            assert fresh.update(0, paths[k % n])
            with log.open("ab") as fh:
                fh.write(b".")
            if leftovers(folder):
                raise AssertionError(f"left behind: {leftovers(folder)}")
            if fill_of(alias) != k % n or not fresh.verify().ok:
                raise AssertionError("the alias does not show the new best")
        except Exception as exc:
            problems.append(f"kill {k}: next update: {exc!r}")
            counts["bad"] += 1
    counts["writer_updates"] = log.stat().st_size - counts["kills"]
    counts["problems"] = problems[:5]
    return counts


@pytest.mark.timeout(180)
def test_killed_writer_never_leaves_a_bad_alias(tmp_path: Path, record_counts: Counts) -> None:
    variants = [("symlink", "file", 25, 0.03), ("copy", "file", 25, 0.05), ("copy", "dir", 20, 0.08)]
    results = [run_kills(tmp_path, kind, target, kills, delay) for kind, target, kills, delay in variants]
    total = {
        "kills": sum(r["kills"] for r in results),
        "bad": sum(r["bad"] for r in results),
        "temp_files_found_after_kill": sum(r["temp_files_found_after_kill"] for r in results),
        "variants": results,
    }
    record_counts(total)
    assert total["bad"] == 0, total
    assert total["kills"] >= 50
    # the kills did land inside updates (a temp file was found) at least sometimes
    assert total["temp_files_found_after_kill"] > 0, total
