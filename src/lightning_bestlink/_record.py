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
      "target_id": null,                   # a copy: identity of the checkpoint when it was copied
      "writer": {"host": "node1", "pid": 4242, "id": "5f0c..."},  # who wrote this record
      "extra": {"monitor": "val_loss", "epoch": 6, "step": 28}
    }

``alias_id`` is how a later run recognises a file or directory at the alias path as
one this library wrote (and so may replace it), and how a check tells the alias the
record names from the one it replaced (an update killed before it published): locally
``[st_dev, st_ino, st_size, st_mtime_ns]``, each copy stamped with random nanoseconds;
size and ETag/generation on object stores. ``target_id`` lets a check of a copy notice a
checkpoint changed after it was copied. ``writer`` tells one writer's records from another's.
"""

from __future__ import annotations

import math
import os
from typing import Any

from lightning_bestlink._errors import RecordError
from lightning_bestlink._score import MODES, is_better
from lightning_bestlink._storage import LINK_CHOICES, Storage, storage_for

FORMAT = "lightning-bestlink/1"
SUFFIX = ".bestlink.json"
#: a record is read only up to this size (ours are under a kilobyte plus ``extra``)
LIMIT = 1 << 20
#: ``extra`` must encode to at most this, so a record always stays readable
EXTRA_LIMIT = 256 << 10
_LINKS = tuple(k for k in LINK_CHOICES if k != "auto")


#: what every name this library keeps next to an alias contains: the record ``<alias>.bestlink.json``,
#: the lock ``.<alias>.bestlink.lock``, temporary names ``.<alias>.bestlink-...``, and the retention
#: list of 0.1 ``<alias>.bestlink.retention.json``
MARK = ".bestlink"


def bookkeeping(name: str) -> str | None:
    """What the file named ``name`` is, if this library keeps it next to an alias; None for anything else.

    Such files are never checkpoints: an alias, a save or a state must not name them.

    >>> bookkeeping("best.ckpt.bestlink.json"), bookkeeping(".best.ckpt.bestlink.lock"), bookkeeping("epoch=3.ckpt")
    ('the record of an alias', 'the lock of an alias', None)
    """
    if f"{MARK}-hold-" in name:  # a checkpoint held for a reader (lightning-bestlink watch --exec, path --hold)
        return "a checkpoint held for a reader"
    base = name.rstrip("/").rsplit("/", 1)[-1]
    if MARK not in base:
        return None
    if base.endswith(SUFFIX) and len(base) > len(SUFFIX):
        return "the record of an alias"
    if base.startswith(".") and base.endswith(f"{MARK}.lock"):
        return "the lock of an alias"
    if base.endswith(f"{MARK}.retention.json"):
        return "a retention list"
    if base.startswith(".") and f"{MARK}-" in base:
        return "a temporary file of an alias update"
    return None


def record_path(link_path: str) -> str:
    """Where the record of ``link_path`` lives.

    >>> record_path("/ckpt/best.ckpt")
    '/ckpt/best.ckpt.bestlink.json'
    """
    return link_path + SUFFIX


_encoder: Any = None  # the JSON encoder of records, made on first use


def encode(record: dict[str, Any]) -> str:
    """JSON text of ``record``; infinities become strings so the file stays strict JSON."""
    return _json(record) + "\n"


def _json(value: Any) -> str:
    """``value`` as one line of strict JSON, as records hold it."""
    global _encoder
    if _encoder is None:
        import json  # on first use: the import of the package stays light

        # one line: an encoder with indent= falls back to the pure-Python encoder, several times
        # slower; made once, as json.dumps makes one at every call given any option
        _encoder = json.JSONEncoder(separators=(", ", ": "), allow_nan=False)
    try:  # the common case (finite numbers only) in one pass of the C encoder
        return _encoder.encode(value)  # type: ignore[no-any-return]
    except ValueError:  # also a cycle, which plain() then reports as one
        return _encoder.encode(plain(value))  # type: ignore[no-any-return]


def plain(value: Any, max_depth: int | None = None, depth: int = 0) -> Any:
    """``value`` as strict JSON can hold it, as this library stores it: non-finite floats become the
    strings ``"inf"``, ``"-inf"``, ``"nan"``; with ``max_depth``, deeper containers become a note.

    >>> plain({"score": float("inf"), "extra": [float("nan"), 1]})
    {'score': 'inf', 'extra': ['nan', 1]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (dict, list, tuple)) and max_depth is not None and depth >= max_depth:
        return f"(nested deeper than {max_depth} levels)"
    if isinstance(value, dict):
        return {str(k): plain(v, max_depth, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, max_depth, depth + 1) for v in value]
    return value


def read_score(raw: Any, what: str, *, nan: bool = False) -> float | None:
    """A score as stored (a number, null, or ``"inf"``/``"-inf"``: records keep infinities as strings),
    checked: ``ValueError`` naming ``what`` otherwise. A NaN is refused unless ``nan`` (a saved
    checkpoint may have scored NaN; a best never has).

    >>> read_score("-inf", "score"), read_score(3, "score"), read_score(None, "score")
    (-inf, 3.0, None)
    >>> read_score(True, "state['best_score']")
    Traceback (most recent call last):
    ...
    ValueError: state['best_score'] must be a number or null, got True
    """
    if raw is None:
        return None
    if raw in ("inf", "-inf"):
        return float(raw)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ValueError(f"{what} must be a number or null, got {raw!r:.80}")
    try:
        score = float(raw)
    except OverflowError:
        raise ValueError(f"{what} is out of range for a float, got {str(raw)[:40]}...") from None
    if score != score and not nan:  # a hand-made record may say 1e999 - 1e999
        raise ValueError(f"{what} must not be NaN")
    return score


def is_ident(value: Any) -> bool:
    """Whether ``value`` can be an identity as stored (null, a string, or a list of integers)."""
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def read(storage: Storage, path: str) -> dict[str, Any] | None:
    """The record at ``path`` (None when there is none), checked by :func:`decode`.

    Raises :class:`RecordError` naming ``path`` for anything that is not a readable record.
    """
    text = storage.read_text(path, LIMIT)
    return None if text is None else decode(text, path)


class _Repeated(Exception):
    """A JSON object of a record names a key twice (not a ValueError: decode() tells it from bad JSON)."""

    def __init__(self, keys: str) -> None:
        super().__init__(keys)
        self.keys = keys


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key named twice: json keeps the last value silently, and
    a record whose readers could take either must not be acted on."""
    obj = dict(pairs)
    if len(obj) != len(pairs):  # the common case costs one comparison
        seen: set[str] = set()
        repeated: set[str] = set()
        for key, _ in pairs:
            (repeated if key in seen else seen).add(key)
        named = sorted(repeated)
        more = f" and {len(named) - 5} more" if len(named) > 5 else ""  # a hostile record may repeat thousands
        raise _Repeated(", ".join(f"{key!r:.80}" for key in named[:5]) + more)
    return obj


_decoder_made: Any = None  # the JSON decoder of records, made on first use


def _decoder() -> Any:
    """The JSON decoder of records (made once: json.loads given any option makes one at every call)."""
    global _decoder_made
    if _decoder_made is None:
        import json  # on first use: the import of the package stays light

        _decoder_made = json.JSONDecoder(object_pairs_hook=_object)
    return _decoder_made


def decode(text: str, path: str) -> dict[str, Any]:
    """Parse and check a record; anything that is not one of ours raises :class:`RecordError`.

    >>> decode('{"format": "lightning-bestlink/1", "target": "a.ckpt", "mode": "min", "score": 1}', "r")["score"]
    1.0
    >>> decode("[[[", "best.ckpt.bestlink.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lightning_bestlink._errors.RecordError: 'best.ckpt.bestlink.json' exists but is not a lightning-bestlink record...
    """
    try:
        record = _decoder().decode(text)
    except RecursionError:
        raise RecordError(f"{path!r} is nested too deeply to be a lightning-bestlink record; move it away") from None
    except _Repeated as err:
        raise RecordError(
            f"{path!r} is not a readable lightning-bestlink record: it repeats the key(s) {err.keys} in one "
            f"object, so which value counts is ambiguous (JSON readers disagree: the first, the last); nothing "
            f"was changed. If it was edited by hand, keep one value of each key; otherwise delete the record "
            f"and the alias next to it to start over"
        ) from None
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RecordError(
            f"{path!r} exists but is not a lightning-bestlink record (no 'format': {FORMAT!r}); nothing "
            f"was changed. Move it away or choose another link_path."
        )
    problems = _problems(record)
    if problems:
        raise RecordError(
            f"{path!r} is a lightning-bestlink record but is damaged: {'; '.join(problems)}. Nothing was "
            f"changed; delete the record and the alias next to it to start over"
        )
    return record


def _problems(record: dict[str, Any]) -> list[str]:
    """What is wrong with a parsed record; fixes up the score (a float, or None) in place."""
    problems = []
    target = record.get("target")
    if not isinstance(target, str) or not target or "\0" in target:
        problems.append(f"'target' must be a non-empty path, got {target!r:.80}")
    elif bookkeeping(target) is not None:
        problems.append(f"'target' names {bookkeeping(target)}, not a checkpoint: {target!r:.80}")
    if record.get("mode") not in MODES:
        problems.append(f"'mode' must be 'min' or 'max', got {record.get('mode')!r:.80}")
    if record.get("link", "symlink") not in _LINKS:
        problems.append(f"'link' must be one of {', '.join(_LINKS)}, got {record.get('link')!r:.80}")
    try:  # null: the alias follows a decision without a score (the latest save)
        record["score"] = read_score(record.get("score"), "'score'")
    except ValueError as err:
        record["score"] = None
        problems.append(str(err))
    writer = record.get("writer")
    if writer is not None and not (
        isinstance(writer, dict) and isinstance(writer.get("id"), str) and isinstance(writer.get("pid"), int)
    ):
        problems.append(f"'writer' must be null or an object with 'id' and 'pid', got {writer!r:.80}")
    for key in ("alias_id", "previous_alias_id", "target_id"):
        if not is_ident(record.get(key)):
            problems.append(f"'{key}' must be null, a string or a list of integers, got {record.get(key)!r:.80}")
    if not isinstance(record.get("extra", {}), dict):
        problems.append("'extra' must be an object")
    return problems


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
    target_id: Any = None,
    writer: dict[str, Any] | None = None,
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
        "target_id": target_id,
        "writer": writer,
        "extra": dict(extra or {}),
    }


def _iso(unix_time: float) -> str:
    """ISO 8601 in UTC, as ``datetime.isoformat`` writes it (without importing datetime).

    >>> _iso(1_700_000_000.5)
    '2023-11-14T22:13:20.500000+00:00'
    """
    global _second
    seconds, micros = divmod(round(unix_time * 1e6), 1_000_000)
    last = _second  # read once: another thread may replace it meanwhile
    if last is None or last[0] != seconds:  # updates in the same second share the formatting of its date
        import time

        last = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{last[1]}.{micros:06d}+00:00"


_second: tuple[int, str] | None = None  # the last second _iso formatted, and how


def check_extra(extra: Any) -> dict[str, Any]:
    """``extra`` must be a mapping of str keys to JSON values, small enough for a record."""
    if extra is None:
        return {}
    if type(extra) is dict and _flat_size_bound(extra) <= EXTRA_LIMIT:  # the usual extra: no need to encode it
        return dict(extra)
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise TypeError(f"extra must be a dict with str keys, got {_shown(extra)}")
    try:
        size = len(_json(extra))  # as encode() writes it
    except RecursionError:
        raise TypeError("extra must hold plain JSON values, got a structure nested too deeply (or a cycle)") from None
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"extra must hold JSON values (str, int, float, bool, None, lists, dicts), got "
            f"{_shown(extra)}: {err}; convert tensors with .item() first"
        ) from err
    if size > EXTRA_LIMIT:
        raise ValueError(f"extra must encode to at most {EXTRA_LIMIT} bytes of JSON, got {size}; keep it small")
    found = _key_not_str(extra)  # after encoding: a cycle or a structure nested too deeply was refused there
    if found is not None:
        where, key = found
        raise TypeError(
            f"extra must have str keys at every depth, got the key {_shown(key)} in {where}: "
            f"JSON writes every key as a string, so it could become the same key as another (1 and '1', True and "
            f"'true') and the record could not be read back; nothing was written. Convert the keys with str() first"
        )
    return dict(extra)


def _key_not_str(extra: dict[str, Any]) -> tuple[str, Any] | None:
    """Where in ``extra`` (as ``extra['a'][0]``) a dict has a key that is not a str, and that key;
    None when every key is a str. Walks containers only: lists of plain scalars are passed over in C."""
    todo: list[tuple[Any, tuple[Any, ...]]] = [(extra, ())]
    while todo:
        value, at = todo.pop()
        if isinstance(value, dict):
            if not _STR.issuperset(map(type, value)):  # a str subclass is a str to JSON too
                for key in value:
                    if not isinstance(key, str):
                        return "extra" + "".join(f"[{step!r:.80}]" for step in at), key
            items: Any = value.items()
            values = value.values()
        else:  # a list or a tuple
            items, values = enumerate(value), value
        if not _SCALARS.issuperset(map(type, values)):  # a container, or a subclass of a scalar (numpy's float64)
            todo.extend((inner, (*at, step)) for step, inner in items if isinstance(inner, (dict, list, tuple)))
    return None


def _shown(value: Any) -> str:
    """``value``'s type and the start of its repr, for an error message; its type alone when the repr
    fails (an int too long to print)."""
    try:
        return f"{type(value).__name__} {value!r:.200}"
    except Exception:
        return f"a {type(value).__name__} that cannot be shown"


_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


def _flat_size_bound(extra: dict[Any, Any]) -> float:
    """At least the size of ``extra``'s JSON when its keys are str and its values plain scalars, else
    infinite: 12 bytes for each character of its ``repr`` (JSON spells one character in at most 12,
    an escaped surrogate pair; numbers, separators and escapes are no longer in JSON than in repr)."""
    if not (_SCALARS.issuperset(map(type, extra.values())) and _STR.issuperset(map(type, extra))):
        return math.inf
    try:
        return 12 * len(repr(extra))
    except ValueError:  # an int too long to print: left to the encoder, which says so
        return math.inf


def beaten_by(value: float | None, record: dict[str, Any], mode: str, ties: str, path: str) -> bool:
    """Whether ``value`` beats the best that ``record`` (at ``path``, of a shared alias) holds. Pure.

    >>> beaten_by(0.1, {"score": 0.3, "mode": "min"}, "min", "first", "r")
    True
    """
    if record["score"] is None:
        return True
    if record["mode"] != mode:
        raise ValueError(
            f"the record {path!r} of the shared alias says mode={record['mode']!r} (written by another writer, or "
            f"edited by hand), but this linker has mode={mode!r}: every writer of a shared alias must use the same "
            f"mode. If the record was edited, put its mode back; to start over, delete the record and the alias"
        )
    return value is not None and is_better(value, record["score"], mode, ties)  # type: ignore[arg-type]


def holds_better(record: dict[str, Any] | None, best: float | None, mode: str) -> bool:
    """Whether ``record`` holds a better best than ``best`` (another writer of a shared alias moved it on). Pure."""
    if record is None or record["mode"] != mode or record["score"] is None:
        return False
    return best is None or is_better(record["score"], best, mode, "first")  # type: ignore[arg-type]


def read_record(
    link_path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The record next to an alias, with ``target`` made absolute; None if there is none.

    Handy for evaluation jobs: ``read_record("ckpt/best.ckpt")["score"]``.
    """
    storage = storage_for(link_path, storage_options)
    alias = storage.normalize(link_path)
    record = read(storage, record_path(alias))
    if record is not None:
        record["target"] = storage.absolute(str(record["target"]), alias)
    return record
