"""Writing figures: units, and the one Markdown table renderer (rows and column specs in, lines out).

A column is a header and what each cell shows: a template over the row's fields, in which
``{median_ns:time}``, ``{wchar:bytes}`` and ``{size:size}`` write a figure in units, ``{x[key]}``
reaches inside a field, ``None`` shows as ``n/a`` and any other spec is Python's (``{ratio:.3f}``);
or, for a figure derived from several fields, a function of the row. ``of`` makes a column show one
field of the row (a dict or a tuple) through its template: one column per checkpoint size, say.
A ``Part`` is one numbered table of results.md with the paragraphs around it. Nothing here knows
what is measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def fmt_size(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_time(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    if n < 10 * KiB:
        return f"{n:,.0f} B"
    return f"{fmt_size(n)} ({n:,.0f} B)"


UNITS: dict[str, Callable[[Any], str]] = {
    "time": fmt_time,
    "bytes": fmt_bytes,
    "size": fmt_size,
    "yes/no": lambda v: "yes" if v else "no",
}


class _Figure:
    """A value as a template sees it (see the module docstring)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getitem__(self, key: Any) -> _Figure:
        return _Figure(self.value[key])

    def __format__(self, spec: str) -> str:
        if self.value is None:
            return "n/a"
        unit = UNITS.get(spec)
        return unit(self.value) if unit else format(self.value, spec)


@dataclass(frozen=True)
class Column:
    header: str
    show: str | Callable[[Any], str]  # a template over the row's fields, or a function of the row
    of: str | int | None = None  # show row[of] instead of the row

    def cell(self, row: Any) -> str:
        row = row if self.of is None else row[self.of]
        text = self.show(row) if callable(self.show) else self.show.format_map(_Figure(row))
        return text.replace("|", "\\|")  # a pipe would end the cell


def markdown_table(columns: Sequence[Column], rows: Sequence[Any]) -> list[str]:
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(c.cell(row) for c in columns) + " |" for row in rows]


def named_rows(rows: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``{name: {figures}}`` as rows with the name under ``"name"``, in the same order."""
    return [{"name": name, **row} for name, row in rows.items()]


@dataclass(frozen=True)
class Part:
    """One numbered table: ``## {number}. {title}``, the intro paragraphs, the table, the notes."""

    number: int
    title: str
    columns: Sequence[Column]
    rows: Sequence[Any]
    intro: Sequence[str] = ()
    notes: Sequence[str] = ()

    def markdown(self, level: int = 2) -> list[str]:
        lines = [f"{'#' * level} {self.number}. {self.title}", ""]
        for paragraph in self.intro:
            lines += [paragraph, ""]
        lines += markdown_table(self.columns, self.rows)
        for paragraph in self.notes:
            lines += ["", paragraph]
        return [*lines, ""]
