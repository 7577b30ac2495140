"""Section 5: import time, each import in a fresh interpreter."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from _common import Section, log, spread
from _tables import Column, Part, fmt_time, named_rows

CORE = "import lightning_bestlink (core)"
STDLIB = "baseline: the stdlib modules the core imports"


@dataclass(frozen=True)
class Settings:
    reps: int


FULL = Settings(reps=9)
SMOKE = Settings(reps=1)


def _python(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter that may write bytecode: pip compiles an installed package's, so a run in an
    environment with PYTHONDONTWRITEBYTECODE set would time compiling the package from source instead."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=check)


def _core_stdlib_deps() -> list[str]:
    code = (
        "import sys; b = set(sys.modules); import lightning_bestlink; "
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - b} - {'lightning_bestlink'})))"
    )
    return _python("-c", code).stdout.split()


def _time_import(stmt: str) -> tuple[float, bool]:
    code = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        f"{stmt}\n"
        "t1 = time.perf_counter()\n"
        "heavy = any(m in sys.modules for m in ('torch', 'lightning', 'pytorch_lightning', 'numpy', 'fsspec'))\n"
        "print(t1 - t0, heavy)\n"
    )
    out = _python("-c", code).stdout.split()
    return float(out[0]) * 1e9, out[1] == "True"


def _importtime_top(module: str, top: int = 6) -> list[tuple[str, int]]:
    proc = _python("-X", "importtime", "-c", f"import {module}", check=False)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
            rows.append((parts[2].strip(), int(parts[0].split(":")[1])))
    return sorted(rows, key=lambda r: -r[1])[:top]


def run(cfg: Settings, root: str, rng: random.Random) -> dict[str, Any]:
    deps = _core_stdlib_deps()
    contenders = {
        CORE: "import lightning_bestlink",
        STDLIB: "import " + ", ".join(deps) if deps else "pass",
        "import lightning": "import lightning",
    }
    log(f"imports: {cfg.reps} interleaved repetitions, each in a fresh interpreter")
    if cfg.reps > 1:  # the smoke run skips the warm-up (a second `import lightning`)
        for stmt in contenders.values():
            _time_import(stmt)  # warm-up: bytecode caches, page cache
    times: dict[str, list[float]] = {n: [] for n in contenders}
    heavy: dict[str, bool] = {}
    order = list(contenders)
    for _ in range(cfg.reps):
        rng.shuffle(order)
        for name in order:
            ns, h = _time_import(contenders[name])
            times[name].append(ns)
            heavy[name] = h
    rows = {}
    core = statistics.median(times[CORE])
    for name, values in times.items():
        row = spread(values)
        rows[name] = {**row, "pulls_heavy": heavy[name], "x_core": row["median_ns"] / core}
    log("  " + ", ".join(f"{n}: {fmt_time(r['median_ns'])}" for n, r in rows.items()))
    return {
        "rows": rows,
        "reps": cfg.reps,
        "stdlib_deps": deps,
        "importtime_top": _importtime_top("lightning_bestlink"),
    }


def report(res: dict[str, Any]) -> list[Part]:
    return [
        Part(
            5,
            "Import time (fresh interpreter each time)",
            intro=[
                "`time.perf_counter()` around the import statement in a new `python -c`, "
                f"{res['reps']} interleaved repetitions."
            ],
            columns=[
                Column("import", "{name}"),
                Column("median", "{median_ns:time}"),
                Column("IQR", "{q1_ns:time}-{q3_ns:time}"),
                Column("vs core", "{x_core:.2f}x"),
                Column("pulls in torch/lightning/numpy/fsspec", "{pulls_heavy:yes/no}"),
            ],
            rows=named_rows(res["rows"]),
            notes=[
                "Largest self times under `python -X importtime -c 'import lightning_bestlink'` (one run, µs): "
                + ", ".join(f"{m} {us}" for m, us in res["importtime_top"])
                + "."
            ],
        )
    ]


SECTION = Section("imports", FULL, SMOKE, run, report)
