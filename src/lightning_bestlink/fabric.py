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
    state = {"model": model, "optimizer": optimizer, "best": best, "last": last, "epoch": 0}
    if os.path.exists("checkpoints/last.ckpt"):
        bestlink.load(fabric, "checkpoints/last.ckpt", state)  # restores both aliases' state
    ...
    bestlink.save_and_link(fabric, f"checkpoints/epoch={epoch}.ckpt", state, score=val_loss,
                           linker=best, step=epoch, retention=keep)
"""

from __future__ import annotations

import os
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
    linker: BestLinker,
    latest: LatestLinker | None = None,
    step: Any = None,
    retention: Retention | None = None,
    extra: dict[str, Any] | None = None,
    **save_kwargs: Any,
) -> bool:
    """Save ``state`` once with ``fabric.save`` and move the aliases to it: the best if it is the best, the latest.

    Args:
        fabric: a launched ``lightning.fabric.Fabric``.
        path: where ``fabric.save`` writes (a file, or a directory for sharded strategies): a
            new name for each checkpoint. The alias itself, or the checkpoint an alias points
            at, is refused with ``ValueError`` on every rank, before anything is saved.
        state: what ``fabric.save`` saves. The linkers in it are saved as their state
            *including this save's outcome*, so resuming from this very checkpoint restores
            the right best and latest.
        score: this save's score. Rank zero's value decides, on every rank.
        linker: the best alias (updated on rank zero only; the other ranks mirror its state).
        latest: the latest alias (:class:`~lightning_bestlink.LatestLinker`); needs ``step``.
            Defaults to ``retention``'s.
        step: this save's step (the global step or the epoch); rank zero's value counts.
        retention: a :class:`~lightning_bestlink.Retention` built on ``linker``: rank zero
            deletes what it no longer keeps, after the aliases moved.
        extra: JSON values for the aliases' records (epoch, ...).
        **save_kwargs: passed to ``fabric.save`` (e.g. ``filter``).

    Returns:
        The same bool on every rank: whether ``path`` became the best. When it returns,
        the aliases exist for every rank that shares the filesystem.
    """
    latest, step, retention = loop.check_arguments(linker, latest, step, retention)
    local = to_score(score)  # every rank checks its own arguments
    rank_zero = fabric.global_rank == 0
    target = os.fspath(path)
    # one broadcast carries rank zero's decision, and whether the path is safe, to every rank
    mine = loop.decide(target, local, step, linker, latest, retention) if rank_zero else None
    decision = loop.Decision(*fabric.broadcast(mine, src=0))
    if decision.refusal:
        raise ValueError(decision.refusal)
    fabric.save(target, loop.states_to_save(state, decision, target, linker, latest), **save_kwargs)
    failure: list[Exception] = []

    def write() -> dict[str, Any]:
        # errors are carried back, not raised here: every rank then mirrors the aliases as they are
        try:
            loop.link(decision, target, linker, latest, retention, extra)
        except Exception as err:
            failure.append(err)
        return {
            "latest": None if latest is None else latest.state_dict(),
            "error": f"{type(failure[0]).__name__}: {failure[0]}" if failure else None,
        }

    outcome = on_rank_zero(rank_zero, _broadcaster(fabric), linker, write, "update")
    if latest is not None and not rank_zero:
        latest.load_state_dict(outcome["latest"], mirror=True)
    if failure:
        raise failure[0]
    if outcome["error"] is not None:
        raise RuntimeError(f"rank zero could not update the aliases: {outcome['error']}")
    return decision.becomes_best


def load(fabric: Any, path: str | os.PathLike[str], state: dict[str, Any], **load_kwargs: Any) -> dict[str, Any]:
    """``fabric.load`` that also restores any :class:`BestLinker` in ``state``, on every version.

    The linkers are taken out of ``state`` before ``fabric.load`` and restored from
    what it returns, so it does not depend on how a Fabric version treats objects
    with a ``state_dict``. Returns what ``fabric.load`` returns, minus the linkers.
    """
    linkers = {key: obj for key, obj in state.items() if isinstance(obj, BestLinker)}
    rest = {key: obj for key, obj in state.items() if key not in linkers}
    remainder: dict[str, Any] = fabric.load(os.fspath(path), rest, **load_kwargs) or {}
    state.update(rest)  # fabric.load replaces plain values in the dict it was given
    for key, linker in linkers.items():
        if key not in remainder:
            continue
        restored = remainder.pop(key)

        def restore(linker: BestLinker = linker, restored: Any = restored) -> None:
            # verify now, not at the next improving update: the alias may have been deleted
            linker.load_state_dict(restored)
            linker.repair()

        on_rank_zero(fabric.global_rank == 0, _broadcaster(fabric), linker, restore, "restore")
    return remainder


def _broadcaster(fabric: Any) -> Any:
    return lambda obj: fabric.broadcast(obj, src=0)
