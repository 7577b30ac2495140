"""One save, its aliases and the retention policy, in any loop (plain PyTorch here; Fabric in ``fabric.py``).

A checkpoint is saved once, then aliased. The steps, in order:

1. :func:`decide`: does this save become the best? the latest? And is ``path`` safe to save
   to: never an alias itself, never the checkpoint an alias points at (saving over it would
   put a worse model, or a half-written file, under the alias). Decided before anything is
   written; refused with ``ValueError``.
2. :func:`states_to_save`: the linkers in ``state`` are saved as they will be once this save
   is linked, so resuming from this very checkpoint restores the right best and latest.
3. The caller saves (``torch.save``, ``fabric.save``).
4. :func:`link`: the checkpoint goes on the retention's list, the aliases move, then the
   retention policy deletes what it no longer keeps.

:func:`save_and_link` runs them for a single process; the Fabric helper runs 1 on rank
zero, broadcasts the decision, and 4 on rank zero only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from lightning_bestlink._score import to_score
from lightning_bestlink.latest import LatestLinker, check_step
from lightning_bestlink.linker import BestLinker
from lightning_bestlink.retention import Retention


class Decision(NamedTuple):
    """What one save will do, decided before it is written (picklable: it is broadcast)."""

    score: float
    becomes_best: bool
    step: int | None
    becomes_latest: bool
    refusal: str | None  # why ``path`` must not be saved to; None when it may


def check_arguments(
    linker: Any, latest: Any, step: Any, retention: Any
) -> tuple[LatestLinker | None, int | None, Retention | None]:
    """The latest linker (``retention``'s if none is given), the step, and the retention, checked."""
    if not isinstance(linker, BestLinker):
        raise TypeError(f"linker must be a BestLinker, got {type(linker).__name__} {linker!r}")
    if retention is not None:
        if not isinstance(retention, Retention):
            raise TypeError(f"retention must be a Retention, got {type(retention).__name__} {retention!r}")
        if retention.best is not linker:
            raise ValueError(
                f"retention ranks checkpoints by {retention.best!r}, not by linker={linker!r}; "
                f"build it with Retention(linker, ...)"
            )
        if latest is None:
            latest = retention.latest
        elif retention.latest not in (None, latest):
            raise ValueError(f"retention protects the latest alias {retention.latest!r}, not latest={latest!r}")
    if latest is not None and not isinstance(latest, LatestLinker):
        raise TypeError(f"latest must be a LatestLinker, got {type(latest).__name__} {latest!r}")
    if latest is not None and step is None:
        raise TypeError("a latest alias needs the step of each save: pass step= (the global step or the epoch)")
    return latest, None if step is None else check_step(step), retention


def refusal(path: str | os.PathLike[str], aliases: list[BestLinker], retention: Retention | None = None) -> str | None:
    """Why ``path`` must not be saved to, or None. Looks at what is there (a few ``stat`` calls)."""
    text = os.fspath(path)
    for alias in aliases:
        storage = alias.storage
        if not storage.handles(text):
            return (
                f"path {text!r} and the alias {alias.link_path!r} must be on the same filesystem; save the "
                f"checkpoints next to the alias"
            )
        target = storage.normalize(text)
        resolved = target if target == alias.link_path else storage.resolve_target(target)
        if alias.link_path in (target, resolved):
            return (
                f"path {text!r} is the alias {alias.link_path!r} itself: saving there would write through it "
                f"into the checkpoint it points at, or replace it with a file it does not own. Save each "
                f"checkpoint under its own name, e.g. f'epoch={{epoch}}.ckpt'"
            )
        current = alias.best_path
        if current is not None and (resolved == current or storage.same_file(target, current)):
            return (
                f"path {text!r} is the checkpoint {os.path.basename(alias.link_path)!r} points at: saving over "
                f"it would change what the alias holds (a worse model, or a half-written file while it is "
                f"saved). Save each checkpoint under its own name, e.g. f'epoch={{epoch}}.ckpt'"
            )
    return None if retention is None else retention.refusal(text)


def decide(
    path: str | os.PathLike[str],
    score: float,
    step: int | None,
    linker: BestLinker,
    latest: LatestLinker | None,
    retention: Retention | None,
) -> Decision:
    """The decision for one save (no file written; see :func:`refusal` for what is looked at)."""
    aliases = [linker, *([latest] if latest is not None else [])]
    if retention is not None:
        aliases += [a for a in retention.protect if a not in aliases]
    becomes_latest = latest is not None and latest.is_better(step)
    return Decision(score, linker.is_better(score), step, becomes_latest, refusal(path, aliases, retention))


def states_to_save(
    state: dict[str, Any], decision: Decision, path: str, linker: BestLinker, latest: LatestLinker | None
) -> dict[str, Any]:
    """``state`` with every linker replaced by its state as it will be once this save is linked."""
    out: dict[str, Any] = {}
    for key, obj in state.items():
        if obj is linker:
            obj = linker.state_dict(after=(decision.score, path)) if decision.becomes_best else linker.state_dict()
        elif latest is not None and obj is latest:
            obj = latest.state_dict(after=(decision.step, path)) if decision.becomes_latest else latest.state_dict()
        elif isinstance(obj, BestLinker):
            obj = obj.state_dict()
        elif isinstance(obj, Retention):
            raise TypeError(
                f"state[{key!r}] is a Retention: it keeps its list next to the best alias, not in checkpoints; "
                f"leave it out of state"
            )
        out[key] = obj
    return out


def link(
    decision: Decision,
    path: str,
    linker: BestLinker,
    latest: LatestLinker | None,
    retention: Retention | None,
    extra: dict[str, Any] | None,
) -> None:
    """List the saved ``path`` as the retention's, move the aliases as decided, then delete what falls out.

    Listed first: a run killed before the aliases move still knows the checkpoint is its own.
    """
    if retention is not None:
        retention.record(path, decision.score, step=decision.step)
    if decision.becomes_best:
        linker.follow(decision.score, path, extra=extra)
    if latest is not None and decision.becomes_latest:
        latest.follow(decision.step, path, extra=extra)
    if retention is not None:
        retention.prune()


def save_and_link(
    save: Callable[[dict[str, Any], str], Any],
    path: str | os.PathLike[str],
    state: dict[str, Any],
    *,
    score: Any,
    linker: BestLinker,
    latest: LatestLinker | None = None,
    step: Any = None,
    retention: Retention | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Save ``state`` once with ``save(state, path)`` (``torch.save``'s order) and move the aliases to it.

    Args:
        save: what writes the checkpoint, e.g. ``torch.save``; called once, as ``save(state, path)``.
        path: where it goes: a new name for each checkpoint (the alias itself, or the checkpoint an
            alias points at, is refused before anything is written).
        state: what is saved. The linkers in it are saved as their :meth:`~BestLinker.state_dict`
            *including this save's outcome*, so resuming from this checkpoint restores them right.
        score: this checkpoint's score; ``linker`` points at it if it is the best so far.
        linker: the best alias.
        latest: the latest alias (:class:`~lightning_bestlink.LatestLinker`); needs ``step``.
        step: this checkpoint's step (the global step or the epoch).
        retention: a :class:`~lightning_bestlink.Retention` built on ``linker``: once the aliases
            moved, it deletes the checkpoints it no longer keeps.
        extra: JSON values for the aliases' records (epoch, ...).

    Returns:
        Whether ``path`` became the best.

    Example::

        best, last = BestLinker("ckpt/best.pt", mode="max"), LatestLinker("ckpt/last.pt")
        keep = Retention(best, last, keep_best=2)
        state = {"model": model.state_dict(), "epoch": epoch, "best": best, "last": last}
        save_and_link(torch.save, f"ckpt/epoch={epoch}.pt", state, score=val_acc, linker=best,
                      step=epoch, retention=keep)
    """
    latest, step, retention = check_arguments(linker, latest, step, retention)
    value = to_score(score)
    target = os.fspath(path)
    decision = decide(target, value, step, linker, latest, retention)
    if decision.refusal:
        raise ValueError(decision.refusal)
    save(states_to_save(state, decision, target, linker, latest), target)
    link(decision, target, linker, latest, retention, extra)
    return decision.becomes_best


__all__ = ["save_and_link"]
