"""How ``show``, ``verify``, ``repair`` and the demo word what the survey found: tables and sentences.

Pure text from :mod:`._survey` data; nothing here reads the disk except
:func:`advice`, which checks whether the best checkpoint itself still exists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TextIO

from lightning_bestlink._metadata import SUFFIX
from lightning_bestlink._storage import is_url
from lightning_bestlink._survey import Alias, Folder


def size_text(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def score_parts(record: dict[str, Any]) -> tuple[str, list[str]]:
    """``("val_loss=0.0312", ["min", "epoch 6", "step 28"])`` from a record."""
    extra = record.get("extra") or {}
    score = record.get("score")
    value = format(score, ".6g") if isinstance(score, (int, float)) else str(score)
    monitor = extra.get("monitor")
    details = [str(record.get("mode"))]
    for key in ("epoch", "step"):
        if extra.get(key) is not None:
            details.append(f"{key} {extra[key]}")
    return (f"{monitor}={value}" if monitor else value), details


def score_text(record: dict[str, Any]) -> str:
    text, details = score_parts(record)
    return f"{text} ({', '.join(details)})"


def count(n: int, total: int, verb: str) -> str:
    """``"1 of 2 aliases needs attention"`` with the right plural."""
    return f"{n} of {total} alias{'es' if total > 1 else ''} {verb}"


def attention(bad: int, total: int) -> str:
    """``"1 of 2 aliases needs attention"``."""
    return count(bad, total, "need attention" if bad > 1 else "needs attention")


def rel(path: str | None, folder: str) -> str:
    if path is None:
        return "?"
    if is_url(path):
        return path
    rel = os.path.relpath(path, folder)
    return path if rel.startswith(os.pardir + os.sep + os.pardir) else rel


def problem(alias: Alias, folder: str) -> str:
    """One sentence on what is wrong with ``alias`` (empty when nothing is)."""
    if alias.error is not None:
        return f"unreadable record: {alias.error}"
    report = alias.report
    assert report is not None
    expected, actual = rel(report.expected, folder), rel(report.actual, folder)
    if report.status == "missing":
        return f"missing: {alias.name} does not exist (its record names {expected})"
    if report.status == "dangling":
        return f"dangling: {alias.name} points at {actual}, which does not exist"
    if report.status == "mismatch":
        return f"mismatch: {alias.name} points at {actual}, but its record names {expected}"
    if report.status == "foreign":
        return f"foreign: {alias.name} was not written by lightning-bestlink; it is left as it is"
    return ""


def advice(alias: Alias, shown_dir: str) -> str:
    """What the user can do about a bad alias."""
    if alias.error is not None:
        return f"restore {alias.name}{SUFFIX} or move it away; repair needs a readable record"
    report = alias.report
    assert report is not None
    if report.status == "foreign":
        return f"move or delete {alias.name}, then run: lightning-bestlink repair {shown_dir}"
    if report.expected is not None and not os.path.lexists(report.expected) and not is_url(report.expected):
        return "the best checkpoint itself is gone; repair cannot bring it back"
    return f"run: lightning-bestlink repair {shown_dir}"


def table(rows: Sequence[Sequence[str]], out: TextIO, indent: str = "  ") -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print((indent + "  ".join(cells)).rstrip(), file=out)


def health(alias: Alias, folder: str) -> str:
    return "ok" if alias.ok else problem(alias, folder)


def render(folder: Folder, out: TextIO, *, title: str | None = None) -> None:
    """The table ``show`` prints (and the demo ends with)."""
    bad = sum(not a.ok for a in folder.aliases)
    if not folder.aliases:
        summary = "no best alias"
    elif bad:
        summary = attention(bad, len(folder.aliases))
    else:
        summary = "alias healthy" if len(folder.aliases) == 1 else f"{len(folder.aliases)} aliases healthy"
    print(f"{title or folder.path}  ({summary})", file=out)
    if folder.entries:
        rows = [["CHECKPOINT", "SIZE", "MARK", "SCORE"]]
        for e in folder.entries:
            name = e.name + ("/" if e.is_dir and e.link_to is None else "")
            if e.link_to is not None:
                name += f" -> {e.link_to}"
            rows.append([name, size_text(e.size), ",".join(e.marks), "; ".join(score_text(r) for r in e.records)])
        table(rows, out)
    else:
        print("  no checkpoints", file=out)
    if folder.aliases:
        rows = [["ALIAS", "KIND", "TARGET", "HEALTH"]]
        for a in folder.aliases:
            kind = str(a.record.get("link", "?")) if a.record else "?"
            rows.append([a.name, kind, rel(a.target, folder.path) if a.target else "?", health(a, folder.path)])
        print(file=out)
        table(rows, out)
    for name in folder.unrecorded:
        print(f"  note: {name} has no {SUFFIX} record; lightning-bestlink cannot vouch for it", file=out)
