"""What a best alias costs, next to the alternatives, measured in one run (issue 8).

Usage::

    python benchmarks/run.py                      # full run (1 MiB, 100 MiB, 1 GiB), ~5-10 minutes
    python benchmarks/run.py --smoke --out /tmp/b  # tiny sizes, a few seconds of work (CI)
    python benchmarks/run.py --publish            # full run, then rewrite the tables of docs/benchmarks.md
    python benchmarks/run.py --report-from benchmarks/results/results.json [--publish]   # no measuring

It writes ``results.md`` (Markdown tables), ``results.json`` (raw figures) and
``benchmarks.png`` (cost against checkpoint size, log-log) into ``--out``
(default ``benchmarks/results/``), and prints whether each target is met.

Method: contenders are interleaved (shuffled order in every repetition) so that a noisy,
shared machine slows them alike; medians are reported, and ratios are taken against
baselines measured in the same run. Scratch files live in one temporary directory (under
``--tmp``, default the system temp dir), deleted at the end.

Layout: ``sections/`` measures (one module per section, run in the order of
``sections.SECTIONS``); ``targets.py`` holds every target, once; ``_tables.py`` is the one table
renderer; ``_report.py`` writes results.md, the published blocks and the plot from the results
alone; ``_common.py`` holds the counters, formatting and the floor that sections share.

Adding a section (say, the lock cost of ``shared=True`` writers):

1. ``sections/<name>.py``: a frozen ``Settings`` dataclass with ``FULL`` and ``SMOKE`` values, a
   ``run(settings, scratch_dir, rng)`` that interleaves its contenders (shuffle with ``rng``, one
   process, baselines in the same run) and returns JSON-able figures, a ``report(figures)`` that
   returns ``Part``s (a number, a title, paragraphs, ``Column``s and rows: no hand-built table), and
   ``SECTION = Section("<key>", FULL, SMOKE, run, report)``.
2. Add ``SECTION`` to ``sections.SECTIONS`` (the order runs are made in).
3. Add its ``Target`` to ``targets.TARGETS``: the promise, the limit, how the deciding figure is
   read from ``results["<key>"]``, and the figures behind it in words. results.md, the console and
   ``--publish`` pick it up; tests/test_benchmarks_smoke.py checks every target is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import fs_type, load_average, log, versions
from _report import console_summary, plot, publish, results_markdown
from sections import SECTIONS
from targets import evaluate


def measure(smoke: bool, tmp: str | None, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="bestlink-bench-", dir=tmp)
    started = time.perf_counter()
    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": smoke,
        "cpus": os.cpu_count(),
        "load_start": load_average(),
        "tmp_fs": fs_type(os.path.realpath(root)),
        "config": {s.key: asdict(s.smoke if smoke else s.full) for s in SECTIONS},
        "load_per_section": {},
    }
    log(f"scratch dir {root} ({env['tmp_fs']}), load average {env['load_start']}")
    results: dict[str, Any] = {"env": env}
    try:
        for section in SECTIONS:
            env["load_per_section"][section.key] = load_average()  # other users of the machine show up here
            results[section.key] = section.run(section.smoke if smoke else section.full, root, rng)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    env["versions"] = versions()
    env["load_end"] = load_average()
    env["wall_s"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few repetitions (CI)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="output directory")
    parser.add_argument("--tmp", default=None, help="where scratch checkpoints go (default: the system temp dir)")
    parser.add_argument("--seed", type=int, default=8, help="seed of the interleaving order")
    parser.add_argument(
        "--report-from", metavar="RESULTS_JSON", help="measure nothing: render the outputs from an earlier run"
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="rewrite the generated tables in docs/benchmarks.md, and its plot (full runs only)",
    )
    args = parser.parse_args(argv)
    if args.publish and args.smoke:
        parser.error("--publish needs a full run: a --smoke run's figures are not for the docs")
    if args.report_from and args.smoke:
        parser.error("--smoke chooses how to measure; --report-from measures nothing: give one of them")

    os.makedirs(args.out, exist_ok=True)  # before minutes of measuring, not after
    if args.report_from:
        with open(args.report_from, encoding="utf-8") as fh:
            results = json.load(fh)
        if args.publish and results["env"]["smoke"]:
            parser.error(f"--publish: {args.report_from} holds the figures of a --smoke run, not for the docs")
    else:
        results = measure(args.smoke, args.tmp, args.seed)
    results["targets"] = evaluate(results)

    md_path = os.path.join(args.out, "results.md")
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(results_markdown(results, SECTIONS))
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    png_path = os.path.join(args.out, "benchmarks.png")
    plot(results, png_path)
    log(f"wrote {md_path} and {png_path}" + ("" if args.report_from else f" in {results['env']['wall_s']:.0f} s"))
    for line in console_summary(results["targets"]):
        log(line)
    if args.publish:
        try:
            written = publish(results, SECTIONS, Path(png_path))
        except ValueError as exc:
            parser.error(str(exc))
        log("published: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
