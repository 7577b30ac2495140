"""Fabric: ``save_and_link`` around ``fabric.save``, correct on every rank.

In a single process, ``fabric.save(path, state)`` then ``linker.update(score, path)``
is all it takes. With more than one process, use :func:`save_and_link`: every rank
must call ``fabric.save`` (sharded strategies write from all ranks), the decision
must be the same everywhere although each rank may compute a slightly different
score, only one rank may touch the alias, and no rank may go on before the alias
exists. Example::

    from lightning_bestlink import BestLinker
    from lightning_bestlink import fabric as bestlink

    linker = BestLinker("checkpoints/best.ckpt", mode="min")
    state = {"model": model, "optimizer": optimizer, "best": linker}
    if resume:
        bestlink.load(fabric, "checkpoints/last.ckpt", state)  # restores the linker too
    ...
    became_best = bestlink.save_and_link(fabric, f"checkpoints/epoch={epoch}.ckpt", state,
                                         score=val_loss, linker=linker)
"""

from __future__ import annotations

import os
from typing import Any

from lightning_bestlink._ranks import on_rank_zero
from lightning_bestlink._score import to_score
from lightning_bestlink.linker import BestLinker

__all__ = ["load", "save_and_link"]


def save_and_link(
    fabric: Any,
    path: str | os.PathLike[str],
    state: dict[str, Any],
    *,
    score: Any,
    linker: BestLinker,
    extra: dict[str, Any] | None = None,
    **save_kwargs: Any,
) -> bool:
    """Save ``state`` with ``fabric.save`` and point ``linker``'s alias at it if it is the best.

    Args:
        fabric: a launched ``lightning.fabric.Fabric``.
        path: where ``fabric.save`` writes (a file, or a directory for sharded strategies).
        state: what ``fabric.save`` saves. A :class:`BestLinker` in it is saved as its
            state *including this save's outcome*, so resuming from this very checkpoint
            restores the right best.
        score: this save's score. Rank zero's value decides, on every rank.
        linker: the linker to update (on rank zero only; the others mirror its state).
        extra: JSON values for the alias's metadata (epoch, step, ...).
        **save_kwargs: passed to ``fabric.save`` (e.g. ``filter``).

    Returns:
        The same bool on every rank: whether ``path`` became the best. When it returns,
        the alias exists for every rank that shares the filesystem.
    """
    local = to_score(score)  # every rank checks its own argument
    # one broadcast carries rank zero's score and its decision to every rank
    decision = fabric.broadcast((local, linker.is_better(local)) if fabric.global_rank == 0 else None, src=0)
    value, becomes_best = float(decision[0]), bool(decision[1])
    target = os.fspath(path)
    prospective = linker._state_after(value, target) if becomes_best else linker.state_dict()
    to_save = {key: (prospective if obj is linker else obj) for key, obj in state.items()}
    fabric.save(target, to_save, **save_kwargs)

    def write() -> None:
        if becomes_best:
            linker.follow(value, target, extra=extra)

    on_rank_zero(fabric.global_rank == 0, _broadcaster(fabric), linker, write, "update")
    return becomes_best


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
            linker.restore_alias()

        on_rank_zero(fabric.global_rank == 0, _broadcaster(fabric), linker, restore, "restore")
    return remainder


def _broadcaster(fabric: Any) -> Any:
    return lambda obj: fabric.broadcast(obj, src=0)
