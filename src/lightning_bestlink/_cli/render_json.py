"""The JSON that ``show --json``, ``verify --json`` and ``watch --json`` print: stable keys.

The keys are documented in ``docs/cli.md`` and only ever added to; ``"version"``
changes if one is removed or changes meaning. Values from a record are passed
through as they are, except numbers JSON cannot hold (infinities and NaN become the
strings ``"inf"``, ``"-inf"`` and ``"nan"``, as the records themselves store them) and
nesting deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
from typing import Any

from lightning_bestlink._cli.survey import Alias, Entry, Folder
from lightning_bestlink._record import plain

#: the version of the documents' layout
VERSION = 1
#: nesting of record values kept in the output (a hostile record can nest much deeper)
MAX_DEPTH = 32


def dumps(document: dict[str, Any]) -> str:
    """One line of strict JSON."""
    return json.dumps(plain(document, MAX_DEPTH), allow_nan=False)


def record_fields(record: dict[str, Any] | None) -> dict[str, Any]:
    """What a document says about an alias's record (every key present, null when unknown)."""
    record = record or {}
    return {
        "target": record.get("target"),
        "kind": record.get("link"),
        "score": record.get("score"),
        "mode": record.get("mode"),
        "extra": record.get("extra"),
        "time": record.get("time"),
    }


def _detail(alias: Alias) -> str | None:
    """A sentence on the alias's status."""
    if alias.error is not None:
        return alias.error
    if alias.refused:
        leads = "" if alias.outside == alias.target else f", which leads to {alias.outside}"
        return f"the record names {alias.target}{leads}, outside the alias's folder: trusted only with --allow-outside"
    return None if alias.report is None else alias.report.detail


def alias_json(alias: Alias) -> dict[str, Any]:
    report = alias.report
    return {
        "name": alias.name,
        "path": alias.path,
        "record": alias.record_path,
        "status": alias.status,
        "ok": alias.ok,
        "detail": _detail(alias),
        **record_fields(alias.record),
        "points_at": None if report is None else report.actual,
    }


def entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "path": entry.path,
        "type": "dir" if entry.is_dir else "file",
        "size": entry.size,
        "marks": list(entry.marks),
        "link": entry.link_to,
        "dangling": entry.dangling,
    }


def folder_json(folder: Folder) -> dict[str, Any]:
    return {
        "path": folder.path,
        "error": folder.error,
        "checkpoints": [entry_json(e) for e in folder.entries],
        "aliases": [alias_json(a) for a in folder.aliases],
        "unrecorded": list(folder.unrecorded),
    }


def survey_json(command: str, root: str, found: list[Folder]) -> dict[str, Any]:
    """The document of ``show --json`` and ``verify --json``."""
    aliases = [a for f in found for a in f.aliases]
    healthy = sum(a.ok for a in aliases)
    unreadable = sum(f.error is not None for f in found)
    return {
        "version": VERSION,
        "command": command,
        "root": root,
        "ok": healthy == len(aliases) and not unreadable,
        "summary": {
            "folders": len(found),
            "unreadable_folders": unreadable,
            "aliases": len(aliases),
            "healthy": healthy,
            "need_attention": len(aliases) - healthy,
        },
        "folders": [folder_json(f) for f in found],
    }
