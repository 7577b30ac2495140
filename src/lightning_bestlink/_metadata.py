"""The JSON record next to the alias: what it points at, with which score, and proof of ownership.

The record for ``best.ckpt`` is ``best.ckpt.bestlink.json`` in the same directory.
It is plain JSON, readable without torch::

    {
      "format": "lightning-bestlink/1",
      "alias": "best.ckpt",
      "target": "epoch=6-step=28.ckpt",   # relative to the alias's directory (a URL off local disk)
      "link": "symlink",                   # symlink | hardlink | copy
      "mode": "min",
      "score": 0.0312,                     # null when the alias follows a decision without a score
      "time": "2026-11-29T04:01:02.345678+00:00",
      "unix_time": 1795665662.345678,
      "alias_id": null,                    # identity of a copied/hard-linked alias, null for a symlink
      "previous_alias_id": null,           # identity of the alias it replaced
      "extra": {"monitor": "val_loss", "epoch": 6, "step": 28}
    }

``alias_id`` is how a later run recognises a file or directory at the alias path as
one this library wrote (and so may replace it): a ``[st_dev, st_ino]`` pair locally,
size and ETag/mtime on fsspec filesystems.
"""

from __future__ import annotations

import json
import math
from typing import Any

from lightning_bestlink._errors import AliasConflictError

FORMAT = "lightning-bestlink/1"
SUFFIX = ".bestlink.json"


def metadata_path(link_path: str) -> str:
    """Where the record of ``link_path`` lives.

    >>> metadata_path("/ckpt/best.ckpt")
    '/ckpt/best.ckpt.bestlink.json'
    """
    return link_path + SUFFIX


def encode(record: dict[str, Any]) -> str:
    """JSON text of ``record``; infinities become strings so the file stays strict JSON."""
    # one line: json.dumps with indent= falls back to the pure-Python encoder, several times slower
    return json.dumps(_finite(record), separators=(", ", ": "), allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'inf' / '-inf'
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def decode(text: str, path: str) -> dict[str, Any]:
    """Parse a record; anything that is not ours raises :class:`AliasConflictError`."""
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise AliasConflictError(
            f"{path!r} exists but is not a lightning-bestlink record (no "
            f"'format': {FORMAT!r}); nothing was changed. Move it away or choose another link_path."
        )
    problems = []
    if not isinstance(record.get("target"), str) or not record["target"]:
        problems.append("'target' must be a non-empty string")
    if record.get("mode") not in ("min", "max"):
        problems.append("'mode' must be 'min' or 'max'")
    score = record.get("score")  # null: the alias follows a decision without a score (the latest save)
    if score in ("inf", "-inf"):  # infinities are stored as strings to keep the file strict JSON
        record["score"] = float(score)
    elif isinstance(score, bool) or not isinstance(score, (int, float, type(None))):
        problems.append(f"'score' must be a number or null, got {score!r}")
    elif score is not None:
        record["score"] = float(score)
    if not isinstance(record.get("extra", {}), dict):
        problems.append("'extra' must be an object")
    if problems:
        raise AliasConflictError(
            f"{path!r} is a lightning-bestlink record but is damaged: {'; '.join(problems)}. Nothing was "
            f"changed; delete the record and the alias next to it to start over"
        )
    return record


def make(
    *,
    alias: str,
    target: str,
    link: str,
    mode: str,
    score: float | None,
    unix_time: float,
    alias_id: Any,
    previous_alias_id: Any,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """Build a record (see the module docstring for the schema)."""
    return {
        "format": FORMAT,
        "alias": alias,
        "target": target,
        "link": link,
        "mode": mode,
        "score": score,
        "time": _iso(unix_time),
        "unix_time": unix_time,
        "alias_id": alias_id,
        "previous_alias_id": previous_alias_id,
        "extra": dict(extra or {}),
    }


def _iso(unix_time: float) -> str:
    from datetime import datetime, timezone  # only when a record is written

    return datetime.fromtimestamp(unix_time, tz=timezone.utc).isoformat()


def check_extra(extra: Any) -> dict[str, Any]:
    """``extra`` must be a mapping of str keys to JSON values."""
    if extra is None:
        return {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise TypeError(f"extra must be a dict with str keys, got {type(extra).__name__} {extra!r}")
    try:
        json.dumps(_finite(extra), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"extra must hold JSON values (str, int, float, bool, None, lists, dicts), got "
            f"{extra!r}: {err}; convert tensors with .item() first"
        ) from err
    return dict(extra)
