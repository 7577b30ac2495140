"""One save, its aliases and the retention policy, in any loop (plain PyTorch here; Fabric in ``fabric.py``).

A checkpoint is saved once, then aliased. The steps, in order:

1. :func:`decide`: an alias that :meth:`~BestLinker.load_state_dict` left unchecked is checked
   and rebuilt (once, as ``update()`` would); then, does this save become the best? the latest?
   And is ``path`` safe to save to: never an alias itself, never the checkpoint an alias points
   at (saving over it would put a worse model, or a half-written file, under the alias).
   Decided before anything is written; refused with ``ValueError``.
2. :func:`states_to_save`: the linkers and the retention in ``state`` are saved as they will
   be once this save is linked, so resuming from this very checkpoint restores them right.
3. The caller saves (``torch.save``, ``fabric.save``).
4. :func:`link`: the checkpoint goes on the retention's list, the aliases move, then the
   retention policy deletes what it no longer keeps.

:func:`save_and_link` runs them for a single process; the Fabric helper runs 1 and 4 on rank
zero, and every rank mirrors rank zero's aliases and retention after each.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from lightning_bestlink._errors import warn
from lightning_bestlink._score import to_score
from lightning_bestlink.latest import LatestLinker, check_step
from lightning_bestlink.linker import BestLinker
from lightning_bestlink.retention import Retention


class Aliases(NamedTuple):
    """What one save moves and prunes: the best alias, the latest one, the retention policy."""

    best: BestLinker
    latest: LatestLinker | None
    retention: Retention | None

    def linkers(self) -> list[BestLinker]:
        """The aliases: best, latest, then those the retention protects (each once)."""
        linkers = [self.best, *([self.latest] if self.latest is not None else [])]
        if self.retention is None:
            return linkers
        return [*linkers, *(a for a in self.retention.protect if a not in linkers)]

    def stateful(self) -> list[BestLinker | Retention]:
        """Everything whose state rank zero changes, and every other rank mirrors."""
        return [*self.linkers(), *([self.retention] if self.retention is not None else [])]


class Decision(NamedTuple):
    """What one save will do, decided before it is written (picklable: it is broadcast)."""

    score: float
    becomes_best: bool
    step: int | None
    becomes_latest: bool
    refusal: str | None  # why ``path`` must not be saved to; None when it may


def aliases_of(linker: Any, latest: Any, retention: Any) -> Aliases:
    """The aliases of a save, from one source: ``retention`` (which holds them), or ``linker`` and ``latest``.

    Passing ``linker=``/``latest=`` with the very objects ``retention`` holds is deprecated (0.2);
    passing others is an error.
    """
    if retention is not None:
        if not isinstance(retention, Retention):
            raise TypeError(f"retention must be a Retention, got {type(retention).__name__} {retention!r}")
        for name, given, held in (("linker", linker, retention.best), ("latest", latest, retention.latest)):
            if given is None:
                continue
            if given is not held:
                raise ValueError(
                    f"{name}={given!r} is not the alias the retention holds ({held!r}); pass retention= alone, "
                    f"built as Retention(best, latest): it names both aliases"
                )
            warn(
                f"passing {name}= together with retention= is deprecated: the retention names its aliases; "
                f"drop {name}= (it will be an error in 0.3)",
                DeprecationWarning,
            )
        linker, latest = retention.best, retention.latest
    elif linker is None:
        raise TypeError("save_and_link needs the best alias: pass linker=best, or retention=keep (which holds it)")
    if not isinstance(linker, BestLinker):
        raise TypeError(f"linker must be a BestLinker, got {type(linker).__name__} {linker!r}")
    if latest is not None and not isinstance(latest, LatestLinker):
        raise TypeError(f"latest must be a LatestLinker, got {type(latest).__name__} {latest!r}")
    return Aliases(linker, latest, retention)


def check_save_step(aliases: Aliases, step: Any) -> int | None:
    """The step of a save, checked; required when there is a latest alias."""
    if aliases.latest is not None and step is None:
        raise TypeError("a latest alias needs the step of each save: pass step= (the global step or the epoch)")
    return None if step is None else check_step(step)


def refusal(path: str | os.PathLike[str], aliases: Aliases) -> str | None:
    """Why ``path`` must not be saved to, or None. Looks at what is there (a few ``stat`` calls)."""
    text = os.fspath(path)
    if "\0" in text:
        return f"path must not contain a NUL byte, got {text!r}"
    for alias in aliases.linkers():
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
    return None if aliases.retention is None else aliases.retention.refusal(text)


def decide(path: str | os.PathLike[str], score: float, step: int | None, aliases: Aliases) -> Decision:
    """The decision for one save (no file written; see :func:`refusal` for what is looked at).

    A restored retention first identifies the checkpoint its state was saved in, and settles a
    deletion a killed run left half-way (a best it was deleting is whole again); then an alias
    restored by ``load_state_dict`` is checked and rebuilt, once, as the next ``update()`` would
    (its best may turn out to be gone: then this save can become the best).
    """
    if aliases.retention is not None:  # the checkpoint resumed from, before anything new is written
        aliases.retention.identify()
    for alias in (aliases.best, aliases.latest):
        if alias is not None and alias.needs_check:
            alias.repair()
    latest = aliases.latest
    becomes_latest = latest is not None and latest.is_better(step)
    becomes_best = aliases.best.is_better(score)
    return Decision(score, becomes_best, step, becomes_latest, refusal(path, aliases))


def states_to_save(state: dict[str, Any], decision: Decision, path: str, aliases: Aliases) -> dict[str, Any]:
    """``state`` with the linkers and the retention replaced by their states once this save is linked."""
    best, latest, retention = aliases
    out: dict[str, Any] = {}
    for key, obj in state.items():
        if obj is best:
            obj = best.state_dict(after=(decision.score, path)) if decision.becomes_best else best.state_dict()
        elif latest is not None and obj is latest:
            obj = latest.state_dict(after=(decision.step, path)) if decision.becomes_latest else latest.state_dict()
        elif isinstance(obj, BestLinker):
            obj = obj.state_dict()
        elif retention is not None and obj is retention:
            obj = retention.state_dict(after=(decision.score, path))
        elif isinstance(obj, Retention):
            raise ValueError(
                f"state[{key!r}] is a Retention this save does not go through; pass it as retention=, or leave it "
                f"out of state"
            )
        out[key] = obj
    if retention is not None and not any(obj is retention for obj in state.values()):
        warn(
            "retention= is not in state: a run resumed from these checkpoints will not know what this run "
            "saved, and never deletes it; put it in the state, e.g. state['keep'] = keep"
        )
    return out


def link(decision: Decision, path: str, aliases: Aliases, extra: dict[str, Any] | None) -> None:
    """List the saved ``path`` as the retention's, move the aliases as decided, then delete what falls out.

    Listed first: the retention knows its own checkpoint even if moving an alias fails.
    """
    best, latest, retention = aliases
    if retention is not None:
        retention.record(path, decision.score)
    if decision.becomes_best:
        best.follow(decision.score, path, extra=extra)
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
    step: Any = None,
    retention: Retention | None = None,
    linker: BestLinker | None = None,
    latest: LatestLinker | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Save ``state`` once with ``save(state, path)`` (``torch.save``'s order) and move the aliases to it.

    Args:
        save: what writes the checkpoint, e.g. ``torch.save``; called once, as ``save(state, path)``.
        path: where it goes: a new name for each checkpoint (the alias itself, or the checkpoint an
            alias points at, is refused before anything is written).
        state: what is saved. The linkers and the retention in it are saved as their
            ``state_dict()`` *including this save*, so resuming from this checkpoint restores them.
        score: this checkpoint's score; the best alias points at it if it is the best so far.
        step: this checkpoint's step (the global step or the epoch); needed with a latest alias.
        retention: a :class:`~lightning_bestlink.Retention`: its aliases move (its ``best``, and its
            ``latest`` if it has one), then it deletes the checkpoints it no longer keeps.
        linker: the best alias, without a retention.
        latest: the latest alias (:class:`~lightning_bestlink.LatestLinker`), without a retention.
        extra: JSON values for the aliases' records (epoch, ...).

    Returns:
        Whether ``path`` became the best.

    Example::

        best, last = BestLinker("ckpt/best.pt", mode="max"), LatestLinker("ckpt/last.pt")
        keep = Retention(best, last, keep_best=2)
        state = {"model": model.state_dict(), "epoch": epoch, "best": best, "last": last, "keep": keep}
        save_and_link(torch.save, f"ckpt/epoch={epoch}.pt", state, score=val_acc, step=epoch, retention=keep)
        # without deleting anything: save_and_link(..., score=val_acc, linker=best, latest=last, step=epoch)
    """
    aliases = aliases_of(linker, latest, retention)
    checked_step = check_save_step(aliases, step)
    value = to_score(score)
    target = os.fspath(path)
    decision = decide(target, value, checked_step, aliases)
    if decision.refusal:
        raise ValueError(decision.refusal)
    save(states_to_save(state, decision, target, aliases), target)
    link(decision, target, aliases, extra)
    return decision.becomes_best


__all__ = ["save_and_link"]
