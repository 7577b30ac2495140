"""Retention policy: which saved checkpoints to keep, and the list of saves it decides from. Pure: no I/O.

Kept: the ``keep_best`` best by score (ranked as the best alias ranks them: ``mode``,
``ties``; a NaN is never among the best), every checkpoint named in ``protected`` (what
the aliases point at: the current best, the latest), the newest save, and every save
without a score (it cannot be ranked, so it is not ours to judge). The rest may go.
Deleting them, safely, is :mod:`lightning_bestlink.retention`'s business.

The list of saves travels in the run's state (:func:`encode`); read back it is input, not
authority (:func:`decode` checks every entry before anything is deleted on its word).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from lightning_bestlink._record import bookkeeping, is_ident, read_score
from lightning_bestlink._score import Mode, Ties
from lightning_bestlink._storage import Ident, TargetType

VERSION = 1


class Saved(NamedTuple):
    """One checkpoint as the policy sees it."""

    path: str
    score: float | None  # None: saved without a score
    seq: int  # save order: larger is newer


def check_keep_best(keep_best: object) -> int:
    """Return ``keep_best`` if it is a whole number >= 0, else raise.

    >>> check_keep_best(2)
    2
    >>> check_keep_best(-1)
    Traceback (most recent call last):
    ...
    ValueError: keep_best must be a whole number >= 0 (how many of the best-scoring checkpoints ...), got -1
    """
    if isinstance(keep_best, bool) or not isinstance(keep_best, int) or keep_best < 0:
        raise ValueError(
            f"keep_best must be a whole number >= 0 (how many of the best-scoring checkpoints to keep besides "
            f"the current best and the latest), got {keep_best!r}"
        )
    return keep_best


def ranked(saved: Sequence[Saved], mode: Mode, ties: Ties) -> list[Saved]:
    """The saves with a real score, best first; of equal scores the earlier first (``ties="first"``).

    >>> [s.path for s in ranked([Saved("a", 0.3, 1), Saved("b", 0.1, 2), Saved("c", 0.3, 3)], "min", "first")]
    ['b', 'a', 'c']
    >>> [s.path for s in ranked([Saved("a", 0.3, 1), Saved("n", float("nan"), 2), Saved("c", 0.3, 3)], "max", "last")]
    ['c', 'a', 'n']
    """
    sign = 1.0 if mode == "min" else -1.0
    order = 1 if ties == "first" else -1
    scored = [s for s in saved if s.score is not None]

    def key(s: Saved) -> tuple[bool, float, int]:
        score = float(s.score)  # type: ignore[arg-type]  # None was filtered out above
        nan = math.isnan(score)  # after every number: never among the best, first to go
        return (nan, 0.0 if nan else sign * score, order * s.seq)

    return sorted(scored, key=key)


def to_delete(
    saved: Sequence[Saved], *, keep_best: int, mode: Mode, ties: Ties, protected: Collection[str] = ()
) -> list[Saved]:
    """The saves the policy lets go, oldest first.

    >>> saved = [Saved("e1", 0.9, 1), Saved("e2", 0.5, 2), Saved("e3", 0.7, 3), Saved("e4", 0.8, 4)]
    >>> [s.path for s in to_delete(saved, keep_best=1, mode="min", ties="first")]  # e4 is the newest
    ['e1', 'e3']
    >>> [s.path for s in to_delete(saved, keep_best=2, mode="min", ties="first", protected={"e1"})]
    []
    >>> [s.path for s in to_delete(saved, keep_best=0, mode="max", ties="first", protected={"e3"})]
    ['e1', 'e2']
    """
    keep_best = check_keep_best(keep_best)
    keep = {s.path for s in ranked(saved, mode, ties)[:keep_best]}
    keep.update(protected)
    keep.update(s.path for s in saved if s.score is None)
    if saved:
        keep.add(max(saved, key=lambda s: s.seq).path)
    return sorted((s for s in saved if s.path not in keep), key=lambda s: s.seq)


# --- the list of saves, as it travels in the run's state -----------------------------------------


class Entry(NamedTuple):
    """One checkpoint the run saved."""

    path: str  # normalised, absolute (or a full URL), inside the best alias's folder
    score: float | None
    seq: int
    kind: TargetType | None  # None, with ident None: saved, not looked at yet (the checkpoint a state was saved in)
    ident: Ident


def next_seq(entries: Sequence[Entry]) -> int:
    return max((e.seq for e in entries), default=0) + 1


def encode(entries: Sequence[Entry], folder: str, mode: Mode, ties: Ties) -> dict[str, Any]:
    """The state of a list of saves; paths are kept relative to ``folder`` (which ends with its separator)."""
    saved = [
        {"path": e.path[len(folder) :], "score": e.score, "seq": e.seq, "kind": e.kind, "identity": e.ident}
        for e in entries
    ]
    return {"version": VERSION, "mode": mode, "ties": ties, "folder": folder, "saved": saved}


def decode(state: Any, folder: str, mode: Mode, ties: Ties) -> tuple[list[Entry], list[str]]:
    """The list of saves in ``state``, checked, and the paths it lists but cannot vouch for.

    ``ValueError`` names what is wrong. An entry without an identity is identified as it is
    when first looked at: only the checkpoint the state was saved in may be one (the newest
    entry of a state naming this folder); any other is left out, and so never deleted. A state
    of another folder (a run moved, or resumed into a new folder), or naming none, vouches for none
    of its entries.

    >>> decode(encode([Entry("/r/a.ckpt", 0.5, 1, "file", [1, 2, 3, 4])], "/r/", "min", "first"), "/r/", "min", "first")
    ([Entry(path='/r/a.ckpt', score=0.5, seq=1, kind='file', ident=[1, 2, 3, 4])], [])
    >>> decode({"version": 1, "mode": "min", "ties": "first", "saved": [{"path": "../x"}]}, "/r/", "min", "first")
    Traceback (most recent call last):
    ...
    ValueError: state['saved'][0] 'path' must be a relative path of plain names ..., got '../x'; ...
    """
    if not isinstance(state, dict) or not isinstance(state.get("saved"), list):
        raise ValueError(f"state must be a dict from Retention.state_dict(), got {type(state).__name__} {state!r:.200}")
    if state.get("version") != VERSION:
        raise ValueError(
            f"state['version'] must be {VERSION}, got {state.get('version')!r}: this state was "
            f"written by another version of lightning-bestlink; upgrade it or start without the state"
        )
    for name, mine in (("mode", mode), ("ties", ties)):
        if state.get(name) != mine:
            raise ValueError(
                f"state was saved with {name}={state.get(name)!r} but the best alias has {name}={mine!r}; "
                f"construct the best alias with {name}={state.get(name)!r}"
            )
    theirs = state.get("folder")  # None: saved by a development build before states named their folder
    if theirs is not None and not isinstance(theirs, str):
        raise ValueError(f"state['folder'] must be a str, got {type(theirs).__name__} {theirs!r:.200}")
    entries = {}
    for i, raw in enumerate(state["saved"]):
        entry = _entry(raw, folder, f"state['saved'][{i}]")
        entries[entry.path] = entry
    if theirs != folder:  # what was saved elsewhere (or who knows where) is not deleted here on its word
        return [], sorted(entries)
    seqs = [e.seq for e in entries.values()]
    newest = max(seqs, default=0) if seqs.count(max(seqs, default=0)) == 1 else None
    dropped = sorted(e.path for e in entries.values() if e.kind is None and e.seq != newest)
    return sorted((e for e in entries.values() if e.path not in dropped), key=lambda e: e.seq), dropped


def _entry(raw: Any, folder: str, where: str) -> Entry:
    """One entry of a saved state, checked (it decides what may be deleted)."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"{where} {problem}; this state is damaged (load it as it was saved, or start without it)")

    if not isinstance(raw, dict):
        raise bad(f"must be a dict, got {raw!r:.80}")
    rel, score, seq, kind, ident = (raw.get(k) for k in ("path", "score", "seq", "kind", "identity"))
    parts = rel.replace(os.sep, "/").split("/") if isinstance(rel, str) else [""]
    if any(p in ("", ".", "..") or "\0" in p or ":" in p for p in parts):
        raise bad(f"'path' must be a relative path of plain names inside the alias's folder, got {rel!r:.80}")
    assert isinstance(rel, str)
    if bookkeeping(rel) is not None:
        raise bad(f"'path' names {bookkeeping(rel)}, not a checkpoint: {rel!r:.80}")
    try:  # a checkpoint may have scored NaN (never among the best: first to go)
        score = read_score(score, "'score'", nan=True)
    except ValueError as err:
        raise bad(str(err)) from None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise bad(f"'seq' must be a whole number >= 0, got {seq!r:.80}")
    if kind not in ("file", "dir", None):
        raise bad(f"'kind' must be 'file', 'dir' or None, got {kind!r:.80}")
    ident = list(ident) if isinstance(ident, tuple) else ident
    if not is_ident(ident):
        raise bad(f"'identity' must be a string, a list of integers or None, got {ident!r:.80}")
    if (kind is None) != (ident is None):
        raise bad(f"'kind' and 'identity' must both be set or both be None, got {kind!r} and {ident!r:.80}")
    return Entry(folder + rel, score, seq, kind, ident)


def unvouched(theirs: Any, folder: str, dropped: list[str], unsure: list[str], loaded: str | None) -> list[str]:
    """What a loaded state lists that Retention will never delete, said as warnings: the entries of a
    state of another folder (``theirs``) or of none, or without an identity (``dropped``), and the one
    named as the checkpoint the state was saved in without being the one it was ``loaded`` from."""
    said = []
    if unsure:
        where = "" if loaded is None else f", not {loaded!r} it was loaded from"
        said.append(
            f"the state lists {unsure[0][len(folder) :]!r} as the checkpoint it was saved in{where}: Retention never "
            f"deletes it. Pass load_state_dict(..., saved_in=PATH), PATH being the checkpoint the state was loaded "
            f"from, so it may go once the policy lets it"
        )
    if theirs != folder and dropped:
        whose = (
            "a state that names no folder (written before states named it)"
            if theirs is None
            else f"a Retention of {theirs!r}, not of this best alias's folder {folder!r} (a run moved, or resumed "
            f"into a new folder)"
        )
        said.append(
            f"the state lists {len(dropped)} checkpoint(s) saved by {whose}: Retention never deletes them here; "
            f"delete what is no longer needed yourself"
        )
    elif dropped:
        names = ", ".join(repr(p[len(folder) :]) for p in dropped[:5]) + (" ..." if len(dropped) > 5 else "")
        said.append(
            f"the state lists {names} without an identity, and not as the checkpoint it was saved in: nothing "
            f"vouches that what is there now is what the run saved, so Retention never deletes "
            f"{'it' if len(dropped) == 1 else 'them'}; delete what is no longer needed yourself"
        )
    return said
