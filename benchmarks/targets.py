"""What the benchmarks aim for: every target, once, as data.

Each target is one promise (``text``, where ``{limit}`` stands for the limit), the figure that
decides it (``value``, read from the run's results, in the unit of the limit: the target is met
when ``value <= limit``) and the figures behind it in words (``measured``). results.md, the console
summary, and the tables in docs/benchmarks.md (``run.py --publish``) are all rendered from
``evaluate(results)``: change a target here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _tables import MiB, fmt_bytes, fmt_size, fmt_time
from sections.alias import DURABLE, FLOOR_JSON, HARDLINK, SYMLINK
from sections.clone import CLONE, PLAIN
from sections.imports import CORE, STDLIB
from sections.noop import FLOAT, TENSOR
from sections.trainer import FLOOR as TRAINER_FLOOR
from sections.trainer import LINK_BEST
from sections.trainer import SYSCALLS as TRAINER_SYSCALLS

Results = dict[str, Any]
Measured = tuple[float | None, str]  # the figure compared with the limit (None: not measurable), and the words


@dataclass(frozen=True)
class Target:
    key: str  # stable name in results.json
    text: str  # the promise, with "{limit}" where the limit goes
    limit: float  # met when the measured figure is at most this
    measure: Callable[[Results], Measured]

    def __post_init__(self) -> None:
        if "{limit}" not in self.text:
            raise ValueError(f"target {self.key!r}: text must show the limit as '{{limit}}', got {self.text!r}")

    def evaluate(self, res: Results) -> dict[str, Any]:
        value, measured = self.measure(res)
        return {
            "key": self.key,
            "target": self.text.format(limit=f"{self.limit:g}"),
            "limit": self.limit,
            "value": value,
            "met": value is not None and value <= self.limit,
            "measured": measured,
        }


def evaluate(res: Results) -> list[dict[str, Any]]:
    return [t.evaluate(res) for t in TARGETS]


# --- how each target reads the results ---------------------------------------------------------


def symlink_update(res: Results) -> Measured:
    sizes = res["alias"].values()
    worst = max(sizes, key=lambda s: s["rows"][SYMLINK]["x_floor"])
    x = worst["rows"][SYMLINK]["x_floor"]
    return x, (
        f"worst {x:.1f}x (at {fmt_size(worst['size'])}); "
        + ", ".join(f"{fmt_size(s['size'])}: {s['rows'][SYMLINK]['x_floor']:.1f}x" for s in sizes)
    )


def symlink_update_with_record(res: Results) -> Measured:
    sizes = res["alias"].values()
    worst = max(sizes, key=lambda s: s["rows"][SYMLINK]["x_xchg"])
    x = worst["rows"][SYMLINK]["x_xchg"]
    hot = next(iter(sizes)).get("hot") or {}
    hot_words = (
        f"; in a hot loop: {hot[SYMLINK]['x_xchg']:.2f}x (and {hot[SYMLINK]['x_json']:.2f}x the floor whose record "
        f"is os.replace'd; durable=True {hot[DURABLE]['x_json']:.2f}x of that)"
        if SYMLINK in hot and DURABLE in hot
        else ""
    )
    return x, (
        f"worst {x:.2f}x (at {fmt_size(worst['size'])}); "
        + ", ".join(f"{fmt_size(s['size'])}: {s['rows'][SYMLINK]['x_xchg']:.2f}x" for s in sizes)
        + "; against a record os.replace'd: "
        + ", ".join(f"{s['rows'][SYMLINK]['median_ns'] / s['rows'][FLOOR_JSON]['median_ns']:.2f}x" for s in sizes)
        + hot_words
    )


def noop_update(res: Results) -> Measured:
    ns, tensor_ns = (res["noop"]["rows"][name]["median_ns"] for name in (FLOAT, TENSOR))
    return ns / 1e3, f"{ns:.0f} ns (float score), {tensor_ns:.0f} ns (0-d tensor score)"


def trainer_overhead(res: Results) -> Measured:
    rows = res["trainer"]["rows"]
    tr = rows[LINK_BEST]
    # the fit's ratio is noise at this size (its range spans tens of percent); the time inside the alias
    # step is work the stock class does not do: the overhead is at least that, whatever the ratio says
    fit, step = (tr["ratio_median_of_pairs"] - 1.0) * 100, tr["link_share"] * 100
    overhead = max(fit, step)
    same_fit = "".join(
        f"; {what} in the same fit: {(row['ratio_median_of_pairs'] - 1) * 100:+.2f}%, "
        f"its step {row['link_share'] * 100:.2f}% of the fit"
        for what, row in (
            ("the floor plus a JSON record", rows.get(TRAINER_FLOOR)),
            ("BestLinker's system calls alone", rows.get(TRAINER_SYSCALLS)),
        )
        if row is not None
    )
    return overhead, (
        f"{overhead:+.2f}% (the larger of the fit's median of paired ratios, {fit:+.2f}% with a range of "
        f"{(tr['ratio_min'] - 1) * 100:+.1f}% .. {(tr['ratio_max'] - 1) * 100:+.1f}%, and the time inside the alias "
        f"update, {step:.2f}% of the fit)" + same_fit
    )


def core_import(res: Results) -> Measured:
    core, stdlib = (res["imports"]["rows"][name]["median_ns"] / 1e6 for name in (CORE, STDLIB))
    return core, f"{core:.1f} ms (its stdlib imports alone: {stdlib:.1f} ms)"


def link_extra_bytes(res: Results) -> Measured:
    tr = res["trainer"]["rows"][LINK_BEST]
    extra = [s["rows"][n]["alias_extra_disk_bytes"] for s in res["alias"].values() for n in (SYMLINK, HARDLINK)]
    extra.append(tr["alias_data_bytes"] if tr["alias_kind"] != "none" else None)
    return None if None in extra else max(extra), (
        "data bytes held by the alias: "
        + ", ".join("n/a" if x is None else str(x) for x in extra)
        + " (symlink and hardlink at each size, then the Trainer run's best.ckpt); separately: the JSON "
        f"record ({tr['metadata_bytes']} B) and the callback state inside each checkpoint "
        f"({tr['state_bytes_per_checkpoint']:+.0f} B per file)"
    )


def churn_cost(res: Results) -> Measured:
    """The improving update's cost in the last decile over the first, each against the control next to it."""
    ch = res["churn"]
    first, last = ch["deciles"][0], ch["deciles"][-1]
    ratios = [d["improving_median_ns"] / d["control_median_ns"] for d in (first, last) if d["control_median_ns"]]
    drift = ratios[1] / ratios[0] if len(ratios) == 2 else None
    return drift, (
        f"{'n/a' if drift is None else f'{drift:.2f}x'} over {ch['updates']:,} updates ({ch['improving']:,} "
        "improving; improving / control " + " -> ".join(f"{r:.2f}x" for r in ratios) + "); non-improving median "
        f"{fmt_time(first['worse_median_ns'] or 0)} -> {fmt_time(last['worse_median_ns'] or 0)}"
    )


def churn_memory(res: Results) -> Measured:
    ch = res["churn"]
    growth = (ch["deciles"][-1]["rss_end"] - ch["deciles"][0]["rss_end"]) / MiB
    return growth, (
        f"{growth:+.2f} MiB after the first decile ({(ch['deciles'][0]['rss_end'] - ch['rss_start']) / MiB:+.2f} "
        f"MiB in it); gc-tracked objects {ch['gc_objects_start']:,} -> {ch['gc_objects_end']:,}; files left: "
        + ", ".join(ch["dir_entries_end"])
    )


def clone_update(res: Results) -> Measured:
    cl = res.get("clone") or {}
    if cl.get("skipped") or not cl.get("sizes"):
        return None, f"not measured: {cl.get('skipped') or 'this run has no clone section'}"
    sizes = list(cl["sizes"].values())
    worst = max(sizes, key=lambda s: s["rows"][CLONE]["x_floor"])
    x = worst["rows"][CLONE]["x_floor"]
    return x, (
        f"worst {x:.1f}x (at {fmt_size(worst['size'])}); "
        + ", ".join(
            f"{fmt_size(s['size'])}: {fmt_time(s['rows'][CLONE]['median_ns'])} = {s['rows'][CLONE]['x_floor']:.1f}x, "
            f"on disk {fmt_bytes(s['rows'][CLONE]['alias_disk_bytes'])}"
            for s in sizes
        )
        + f"; the same copy on {cl['plain_fs']}: "
        + ", ".join(f"{s['rows'][PLAIN]['x_floor']:.0f}x" for s in sizes)
    )


# --- the targets, in the order every table shows them -----------------------------------------

TARGETS: tuple[Target, ...] = (
    Target(
        "symlink_update",
        "improving symlink update within {limit}x of the bare floor, at every size",
        10,
        symlink_update,
    ),
    Target(
        "symlink_update_with_record",
        "improving symlink update within {limit}x of the floor plus a JSON record written the same way (an "
        "exchange), at every size",
        1.25,
        symlink_update_with_record,
    ),
    Target("noop_update", "non-improving update ≤ {limit} µs", 2, noop_update),
    Target("trainer_overhead", "Trainer overhead within {limit}% of stock ModelCheckpoint", 2, trainer_overhead),
    Target("core_import", "core import ≤ {limit} ms", 30, core_import),
    Target("link_extra_bytes", "{limit} extra checkpoint bytes in link modes", 0, link_extra_bytes),
    Target(
        "churn_cost",
        "improving update flat over a long run: last decile within {limit}x of the first, against the control",
        1.25,
        churn_cost,
    ),
    Target(
        "churn_memory", "memory flat over a long run: RSS grows ≤ {limit} MiB after the first decile", 1, churn_memory
    ),
    Target(
        "clone_update",
        "copy alias on a filesystem that clones (XFS with reflink) within {limit}x of the symlink floor, at every size",
        10,
        clone_update,
    ),
)
