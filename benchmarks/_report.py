"""Everything the run writes, rendered from the results alone: results.md, the console summary,
the generated blocks of docs/benchmarks.md (``--publish``), and the plot."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import Section
from _tables import Column, MiB, Part, markdown_table
from sections.alias import CONTENDERS
from sections.clone import CLONE, PLAIN

Results = dict[str, Any]
CLONE_CONTENDERS = (CLONE, PLAIN)
REPO = Path(__file__).resolve().parent.parent


def header(env: dict[str, Any]) -> list[str]:
    """Where and when the run happened, and how to read its figures (one paragraph)."""
    v = env["versions"]
    return [
        f"Run {env['date']} ({'smoke' if env['smoke'] else 'full'} mode, {env['wall_s']:.0f} s) on "
        f"{env['cpus']} CPUs, load average {env['load_start']} at start, {env['load_end']} at end; scratch "
        f"files on {env['tmp_fs']}. Python {v['python']}, torch {v['torch']}, "
        f"lightning {v['lightning']}, lightning-bestlink {v['lightning_bestlink']}.",
        "Load average (1, 5, 15 min) as each section started: "
        + "; ".join(f"{k} {load}" for k, load in env["load_per_section"].items())
        + ".",
        "Contenders are interleaved in a shuffled order in every repetition; figures are medians, "
        "ratios are against baselines measured in the same run.",
    ]


def targets_table(targets: Sequence[dict[str, Any]]) -> list[str]:
    columns = [
        Column("target", "{target}"),
        Column("measured", "{measured}"),
        Column("met", lambda t: "yes" if t["met"] else "**no**"),
    ]
    return markdown_table(columns, targets)


def parts(res: Results, sections: Sequence[Section]) -> list[Part]:
    """Every section's tables: a section's own stay together, sections go by their first table's number."""
    reported = [s.report(res[s.key]) for s in sections if s.key in res]
    return [p for own in sorted(reported, key=lambda own: own[0].number) for p in own]


def results_markdown(res: Results, sections: Sequence[Section]) -> str:
    lines = ["# lightning-bestlink benchmark results", "", *header(res["env"]), ""]
    lines += ["## Targets", "", *targets_table(res["targets"]), ""]
    for part in parts(res, sections):
        lines += part.markdown()
    return "\n".join(lines)


def console_summary(targets: Sequence[dict[str, Any]]) -> list[str]:
    return [f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']}" for t in targets]


# --- the generated blocks of docs/benchmarks.md ----------------------------------------------


def _targets_block(res: Results, sections: Sequence[Section]) -> list[str]:
    env, v = res["env"], res["env"]["versions"]
    return [
        f"Full run of {env['date']} on {env['cpus']} CPUs (scratch files on {env['tmp_fs']}, load average "
        f"{env['load_start']} at start); lightning-bestlink {v['lightning_bestlink']}, torch {v['torch']}, "
        f"lightning {v['lightning']}.",
        "",
        *targets_table(res["targets"]),
    ]


def _results_block(res: Results, sections: Sequence[Section]) -> list[str]:
    lines = [*header(res["env"]), ""]
    for part in parts(res, sections):
        lines += part.markdown(level=3)
    return lines


BLOCK_BODIES: dict[str, Callable[[Results, Sequence[Section]], list[str]]] = {
    "benchmark-targets": _targets_block,
    "benchmark-results": _results_block,
}
BLOCKS = {"docs/benchmarks.md": ("benchmark-targets", "benchmark-results")}  # the README only points there


def replace_block(text: str, name: str, body: Sequence[str], where: Path) -> str:
    """``text`` with the lines between ``<!-- BEGIN name ...-->`` and ``<!-- END name -->`` replaced by ``body``."""
    begin, end = rf"^<!-- BEGIN {re.escape(name)}(?=[\s:])[^\n]*-->\n", rf"^<!-- END {re.escape(name)} -->$"
    pattern = re.compile(f"({begin}).*?({end})", re.S | re.M)
    found = len(pattern.findall(text))
    if found != 1:
        raise ValueError(
            f"{where}: expected one block from '<!-- BEGIN {name}: ... -->' to '<!-- END {name} -->', each on a "
            f"line of its own, found {found}; put the two markers back around the generated text"
        )
    new = "\n".join(body).rstrip("\n")
    return pattern.sub(lambda m: f"{m.group(1)}{new}\n\n{m.group(2)}", text)


def publish(res: Results, sections: Sequence[Section], png: Path, repo: Path = REPO) -> list[Path]:
    """Rewrite the generated blocks and docs/benchmarks.png from a full run; returns the files written."""
    if res["env"]["smoke"]:
        raise ValueError(
            f"--publish got the results of a --smoke run ({res['env']['date']}): tiny sizes, no figures to "
            "publish; run the full benchmark (python benchmarks/run.py --publish)"
        )
    texts = {}
    for rel, names in BLOCKS.items():  # every file is checked before any is written
        path = repo / rel
        text = path.read_text(encoding="utf-8")
        for name in names:
            text = replace_block(text, name, BLOCK_BODIES[name](res, sections), path)
        texts[path] = text
    for path, text in texts.items():
        path.write_text(text, encoding="utf-8")
    shutil.copyfile(png, repo / "docs" / "benchmarks.png")
    return [*texts, repo / "docs" / "benchmarks.png"]


# --- the plot: sections 1 (and 7) and 6 ---------------------------------------------------------------


def plot(res: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(res["alias"].values())
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    markers = ["o", "P", "p", "s", "h", "*", "^", "v", "D", "x"]
    xs = [s["size"] / MiB for s in sizes]
    for name, marker in zip(CONTENDERS, markers, strict=True):
        med = [s["rows"][name]["median_ns"] / 1e3 for s in sizes]
        lo = [m - s["rows"][name]["q1_ns"] / 1e3 for m, s in zip(med, sizes, strict=True)]
        hi = [s["rows"][name]["q3_ns"] / 1e3 - m for m, s in zip(med, sizes, strict=True)]
        ax.errorbar(xs, med, yerr=[lo, hi], marker=marker, capsize=3, label=name)
    clone = res.get("clone") or {}
    for name, style in zip(CLONE_CONTENDERS, ("k:", "g--"), strict=True):  # section 7, where it was measured
        points = [(s["size"] / MiB, s["rows"][name]["median_ns"] / 1e3) for s in clone.get("sizes", {}).values()]
        if points:
            ax.plot(*zip(*points, strict=True), style, marker=".", label=name)
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
