"""Retention policy: which saved checkpoints to keep. Pure: no I/O, no state.

Kept: the ``keep_best`` best by score (ranked as the best alias ranks them: ``mode``,
``ties``; a NaN is never among the best), every checkpoint named in ``protected`` (what
the aliases point at: the current best, the latest), the newest save, and every save
without a score (it cannot be ranked, so it is not ours to judge). The rest may go.
Deleting them, safely, is :mod:`lightning_bestlink.retention`'s business.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import NamedTuple

from lightning_bestlink._score import Mode, Ties


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
