"""How ``show``, ``verify``, ``repair`` and ``watch`` word what the survey found: tables and sentences.

Pure text from :mod:`.survey` data; nothing here reads the disk except
:func:`advice`, which checks whether the best checkpoint itself still exists. Every
name and field that came from the disk is passed through :func:`printable` before it
is printed: a file name with a newline must not forge a row of the table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TextIO

from lightning_bestlink._cli.survey import Alias, Folder
from lightning_bestlink._record import SUFFIX
from lightning_bestlink._storage import is_url

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    r"""``text`` with every character that is not printable escaped, as Python writes it.

    A byte that was not UTF-8 in a file name (decoded with ``surrogateescape``) comes
    back as ``\xNN``; control characters, and invisible ones such as a right-to-left
    override, as ``\n``, ``\x1b``, ``\u202e``.

    >>> printable("a\nb.ckpt"), printable("epoch=\x1b[31m.ckpt"), printable("caf\udce9.ckpt")
    ('a\\nb.ckpt', 'epoch=\\x1b[31m.ckpt', 'caf\\xe9.ckpt')
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch.isprintable():
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def say(out: TextIO, text: str = "") -> None:
    """Print one line of text, escaped (the line's own end is the only line break)."""
    print(printable(text), file=out)


def size_text(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def number(score: Any) -> str:
    """A score as the tables write it: ``0.0312``, ``inf``."""
    return format(score, ".6g") if isinstance(score, (int, float)) and not isinstance(score, bool) else str(score)


#: extra keys shown in their own words (or not at all: the filename is the target's)
_KNOWN_EXTRA = ("monitor", "epoch", "step", "filename", "follows")


def score_parts(record: dict[str, Any]) -> tuple[str, list[str]]:
    """``("val_loss=0.0312", ["min", "epoch 6", "step 28"])`` from a record.

    Other plain values of ``extra`` follow as ``key value`` (a sweep's ``trial 3``).
    """
    extra = record.get("extra") or {}
    score, monitor = record.get("score"), extra.get("monitor")
    latest = extra.get("follows") == "latest"  # last.ckpt: ranked by step, a mode means nothing there
    details = [] if latest else [str(record.get("mode"))]
    for key in ("epoch", "step"):
        if extra.get(key) is not None:
            details.append(f"{key} {extra[key]}")
    for key, value in extra.items():
        if key not in _KNOWN_EXTRA and isinstance(value, (str, int, float, bool)):
            details.append(f"{key} {number(value) if isinstance(value, float) else value}")
    if latest:  # last.ckpt (its score is the step), or the Trainer's monitor=None
        return "latest save", details
    if score is None:  # an alias that follows a decision without a score
        return "no score", details
    return (f"{monitor}={number(score)}" if monitor else number(score)), details


def score_text(record: dict[str, Any]) -> str:
    text, details = score_parts(record)
    return f"{text} ({', '.join(details)})" if details else text


def count(n: int, total: int, verb: str) -> str:
    """``"1 of 2 aliases not repaired"`` with the right plural."""
    return f"{n} of {total} alias{'es' if total > 1 else ''} {verb}"


def attention(bad: int, total: int, unreadable: int = 0) -> str:
    """``"1 of 2 aliases needs attention"``, and the folders that could not be read."""
    parts = [count(bad, total, "need attention" if bad > 1 else "needs attention")] if bad or not unreadable else []
    if unreadable:
        parts.append(f"{unreadable} folder{'s' if unreadable > 1 else ''} could not be read")
    return "; ".join(parts)


def rel(path: str | None, folder: str) -> str:
    """``path`` relative to ``folder`` when it is inside it (a URL too), else as it is."""
    if path is None:
        return "?"
    if is_url(path) or is_url(folder):
        base = folder.rstrip("/") + "/"
        return path[len(base) :] if path.startswith(base) else path
    try:
        rel = os.path.relpath(path, folder)
    except ValueError:  # an empty path: nothing to make relative
        return path
    return path if rel.startswith(os.pardir + os.sep + os.pardir) else rel


def problem(alias: Alias, folder: str) -> str:
    """One sentence on what is wrong with ``alias`` (empty when nothing is)."""
    if alias.error is not None:
        return f"unreadable {alias.unreadable}: {alias.error}"
    if alias.refused:
        named = rel(alias.target, folder)  # by its name inside (a link leading out), or the whole path
        named = str(alias.target) if named.startswith(os.pardir) else named
        leads = "" if alias.outside == alias.target else f", which leads to {alias.outside}"
        return f"outside: its record names {named}{leads}, outside the alias's folder"
    report = alias.report
    assert report is not None
    expected, actual = rel(report.expected, folder), rel(report.actual, folder)
    if report.status == "missing":
        return f"missing: {alias.name} does not exist (its record names {expected})"
    if report.status == "dangling":
        return f"dangling: {alias.name} points at {actual}, which does not exist"
    if report.status == "mismatch" and report.actual in (None, report.expected):
        # a copy or hard link names nothing else: what is wrong with it (not a hard link of the checkpoint,
        # the checkpoint gone or changed, an update stopped halfway) only the check knows; --json says the same
        return f"mismatch: {in_words(alias, folder)}"
    if report.status == "mismatch":
        return f"mismatch: {alias.name} points at {actual}, but its record names {expected}"
    if report.status == "foreign":
        # no proof either way: a copy of ours changed in place is as foreign as a file someone put there
        return (
            f"foreign: {alias.name} was not written by lightning-bestlink, or was changed since (it does not "
            f"match its record); it is left as it is"
        )
    return ""


def in_words(alias: Alias, folder: str) -> str:
    """The detail of the alias's report with the alias and its checkpoint named as the rest of the text
    names them (the detail quotes their full paths); a path it spells otherwise stays as it is, still true."""
    report = alias.report
    assert report is not None
    detail = report.detail.replace(repr(report.link_path), alias.name)
    if report.expected is not None:
        detail = detail.replace(repr(report.expected), rel(report.expected, folder))
    return detail


def advice(alias: Alias, shown_dir: str, command: str = "repair") -> str:
    """What the user can do about a bad alias (``command`` is the one they ran)."""
    if alias.error is not None and alias.unreadable == "checkpoint":
        return "the record is fine: check the permissions of the folders on the way to the checkpoint it names"
    if alias.error is not None:
        return f"restore {alias.name}{SUFFIX} or move it away; repair needs a readable record"
    if alias.refused:
        return (
            f"a record is input, not authority; a Trainer resumed into a new folder writes such records. "
            f"If you trust it: lightning-bestlink {command} --allow-outside {shown_dir}"
        )
    report = alias.report
    assert report is not None
    if report.status == "foreign":
        return f"move or delete {alias.name}, then run: lightning-bestlink repair {shown_dir}"
    if report.expected is not None and not is_url(report.expected) and not os.path.lexists(report.expected):
        return "the best checkpoint itself is gone; repair cannot bring it back"
    return f"run: lightning-bestlink repair {shown_dir}"


def table(rows: Sequence[Sequence[str]], out: TextIO, indent: str = "  ") -> None:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print((indent + "  ".join(cells)).rstrip(), file=out)


def health(alias: Alias, folder: str) -> str:
    return "ok" if alias.ok else problem(alias, folder)


def summary(folder: Folder) -> str:
    """What the title line of a folder says in brackets."""
    if folder.error is not None:
        return folder.error
    bad = sum(not a.ok for a in folder.aliases)
    if not folder.aliases:
        return "no best alias"
    if bad:
        return attention(bad, len(folder.aliases))
    return "alias healthy" if len(folder.aliases) == 1 else f"{len(folder.aliases)} aliases healthy"


def render(folder: Folder, out: TextIO, *, title: str | None = None) -> None:
    """The table ``show`` prints (and the demo ends with)."""
    say(out, f"{title or folder.path}  ({summary(folder)})")
    if folder.error is not None:
        return
    if folder.entries:
        rows = [["CHECKPOINT", "SIZE", "MARK", "SCORE"]]
        for e in folder.entries:
            name = e.name + ("/" if e.is_dir and e.link_to is None else "")
            if e.link_to is not None:
                name += f" -> {e.link_to}" + (" (dangling)" if e.dangling else "")
            rows.append([name, size_text(e.size), ",".join(e.marks), "; ".join(score_text(r) for r in e.records)])
        table(rows, out)
    else:
        say(out, "  no checkpoints")
    if folder.aliases:
        # a target outside this folder's listing (a sweep's alias into trial-3/) has no checkpoint
        # row to carry its score: then the alias rows do
        listed = {e.path for e in folder.entries}
        scores = any(a.record is not None and a.target not in listed for a in folder.aliases)
        rows = [["ALIAS", "KIND", "TARGET", *(["SCORE"] if scores else []), "HEALTH"]]
        for a in folder.aliases:
            kind = str(a.record.get("link", "?")) if a.record else "?"
            target = rel(a.target, folder.path) if a.target else "?"
            score = [score_text(a.record) if a.record else ""] if scores else []
            rows.append([a.name, kind, target, *score, health(a, folder.path)])
        print(file=out)
        table(rows, out)
    for name in folder.unrecorded:
        say(out, f"  note: {name} has no {SUFFIX} record; lightning-bestlink cannot vouch for it")
