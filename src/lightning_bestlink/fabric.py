"""Fabric: ``save_and_link`` around ``fabric.save``, correct on every rank.

With more than one process, use :func:`save_and_link`: every rank must call
``fabric.save`` (sharded strategies write from all ranks), the decision must be the same
everywhere although each rank may compute a slightly different score, only one rank may
touch the aliases and delete checkpoints, and no rank may go on before the aliases exist.
Example::

    from lightning_bestlink import BestLinker, LatestLinker, Retention
    from lightning_bestlink import fabric as bestlink

    best = BestLinker("checkpoints/best.ckpt", mode="min")
    last = LatestLinker("checkpoints/last.ckpt")            # the latest checkpoint, by step
    keep = Retention(best, last, keep_best=2)              # optional: delete the rest
    state = {"model": model, "optimizer": optimizer, "best": best, "last": last, "keep": keep, "epoch": 0}
    if os.path.exists("checkpoints/last.ckpt"):
        bestlink.load(fabric, "checkpoints/last.ckpt", state)  # restores the aliases and the retention
    ...
    bestlink.save_and_link(fabric, f"checkpoints/epoch={epoch}.ckpt", state, score=val_loss,
                           step=epoch, retention=keep)          # or linker=best, latest=last: no deleting
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from lightning_bestlink import loop
from lightning_bestlink._ranks import on_rank_zero
from lightning_bestlink._score import to_score
from lightning_bestlink.latest import LatestLinker
from lightning_bestlink.linker import BestLinker
from lightning_bestlink.retention import Retention

__all__ = ["load", "save_and_link"]


def save_and_link(
    fabric: Any,
    path: str | os.PathLike[str],
    state: dict[str, Any],
    *,
    score: Any,
    step: Any = None,
    retention: Retention | None = None,
    linker: BestLinker | None = None,
    latest: LatestLinker | None = None,
    extra: dict[str, Any] | None = None,
    **save_kwargs: Any,
) -> bool:
    """Save ``state`` once with ``fabric.save`` and move the aliases to it: the best if it is the best, the latest.

    Args:
        fabric: a launched ``lightning.fabric.Fabric``.
        path: where ``fabric.save`` writes (a file, or a directory for sharded strategies): a
            new name for each checkpoint. The alias itself, or the checkpoint an alias points
            at, is refused with ``ValueError`` on every rank, before anything is saved.
        state: what ``fabric.save`` saves. The linkers and the retention in it are saved as
            their state *including this save*, so resuming from this very checkpoint restores
            the right best, latest and list of saved checkpoints.
        score: this save's score. Rank zero's value decides, on every rank.
        step: this save's step (the global step or the epoch); rank zero's value counts.
        retention: a :class:`~lightning_bestlink.Retention`: its aliases move (its ``best`` and
            its ``latest``), then rank zero deletes what it no longer keeps.
        linker: the best alias, without a retention (updated on rank zero only; the other
            ranks mirror its state).
        latest: the latest alias (:class:`~lightning_bestlink.LatestLinker`), without a retention.
        extra: JSON values for the aliases' records (epoch, ...).
        **save_kwargs: passed to ``fabric.save`` (e.g. ``filter``).

    Returns:
        The same bool on every rank: whether ``path`` became the best. When it returns,
        the aliases exist for every rank that shares the filesystem.
    """
    aliases = loop.aliases_of(linker, latest, retention)  # every rank checks its own arguments
    checked_step = loop.check_save_step(aliases, step)
    local = to_score(score)
    rank_zero = fabric.global_rank == 0
    target = os.fspath(path)
    mirrored = aliases.stateful()
    # rank zero decides (and rebuilds an alias left unchecked by load_state_dict); every rank
    # gets the decision, whether the path is safe, and rank zero's states
    decide = partial(loop.decide, target, local, checked_step, aliases)
    decision = on_rank_zero(rank_zero, _broadcaster(fabric), mirrored, decide, "check")
    if decision.refusal:
        raise ValueError(decision.refusal)
    fabric.save(target, loop.states_to_save(state, decision, target, aliases), **save_kwargs)
    link = partial(loop.link, decision, target, aliases, extra)
    on_rank_zero(rank_zero, _broadcaster(fabric), mirrored, link, "update")
    return bool(decision.becomes_best)


def load(fabric: Any, path: str | os.PathLike[str], state: dict[str, Any], **load_kwargs: Any) -> dict[str, Any]:
    """``fabric.load`` that also restores any :class:`BestLinker` and ``Retention`` in ``state``, on every version.

    They are taken out of ``state`` before ``fabric.load`` and restored from what it
    returns, so it does not depend on how a Fabric version treats objects with a
    ``state_dict``. A linker's alias is checked (and rebuilt) at once, on rank zero.
    Returns what ``fabric.load`` returns, minus those states.
    """
    held = {key: obj for key, obj in state.items() if isinstance(obj, (BestLinker, Retention))}
    rest = {key: obj for key, obj in state.items() if key not in held}
    remainder: dict[str, Any] = fabric.load(os.fspath(path), rest, **load_kwargs) or {}
    state.update(rest)  # fabric.load replaces plain values in the dict it was given
    # a Retention first: it settles a deletion a killed run left half-way before an alias is checked
    for key, obj in sorted(held.items(), key=lambda item: not isinstance(item[1], Retention)):
        if key not in remainder:
            continue
        restored = remainder.pop(key)
        if isinstance(obj, Retention):
            obj.load_state_dict(restored, saved_in=path)
            on_rank_zero(fabric.global_rank == 0, _broadcaster(fabric), [obj], obj.identify, "settle")
            continue

        def restore(linker: BestLinker = obj, restored: Any = restored) -> None:
            # verify now, not at the next improving update: the alias may have been deleted
            linker.load_state_dict(restored)
            linker.repair()

        on_rank_zero(fabric.global_rank == 0, _broadcaster(fabric), obj, restore, "restore")
    return remainder


def _broadcaster(fabric: Any) -> Any:
    return lambda obj: fabric.broadcast(obj, src=0)
