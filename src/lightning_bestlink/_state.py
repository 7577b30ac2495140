"""The linker's saved state (``BestLinker.state_dict()``): build it, and check one read back.

A state travels inside checkpoints and comes back from disk: it is input, checked here
before the linker acts on it (the alias's folder confinement is the linker's part).
"""

from __future__ import annotations

from typing import Any

from lightning_bestlink._record import bookkeeping, read_score

VERSION = 1


def make_state(
    link_path: str,
    mode: str,
    ties: str,
    best_score: float | None,
    best_path: str | None,
    best_path_relative: str | None,
    link_kind: str | None,
) -> dict[str, Any]:
    """Plain, picklable, JSON-serialisable state."""
    return {
        "version": VERSION,
        "link_path": link_path,
        "mode": mode,
        "ties": ties,
        "best_score": best_score,
        "best_path": best_path,
        "best_path_relative": best_path_relative,
        "link_kind": link_kind,
    }


def check_state(state: Any, *, mode: str, ties: str) -> tuple[float | None, str | None]:
    """The best score and path of a state saved by a linker with this ``mode`` and ``ties``.

    Raises ``ValueError`` naming what is wrong: not a state, another version, another mode
    or ties, a best path that is not a path, a NaN score.

    >>> check_state({"best_score": 0.5, "best_path": "/ckpt/a.ckpt"}, mode="min", ties="first")
    (0.5, '/ckpt/a.ckpt')
    """
    if not isinstance(state, dict) or "best_score" not in state or "best_path" not in state:
        raise ValueError(
            f"state must be a dict from BestLinker.state_dict(), got {type(state).__name__} {state!r:.200}"
        )
    if state.get("version", VERSION) != VERSION:
        raise ValueError(
            f"state['version'] must be {VERSION}, got {state.get('version')!r}: this state was "
            f"written by another version of lightning-bestlink; upgrade it or start without the state"
        )
    for name, mine in (("mode", mode), ("ties", ties)):
        if state.get(name, mine) != mine:
            raise ValueError(
                f"state was saved with {name}={state.get(name)!r} but this linker has {name}={mine!r}; "
                f"construct the linker with {name}={state.get(name)!r}"
            )
    best_score, best_path = state["best_score"], state["best_path"]
    if best_path is None:
        return None, None
    if not isinstance(best_path, str) or not best_path or "\0" in best_path:
        raise ValueError(f"state['best_path'] must be a path or None, got {best_path!r:.200}")
    what = bookkeeping(best_path)
    if what is not None:
        raise ValueError(
            f"state['best_path'] names {what}, not a checkpoint: {best_path!r:.200}; this state is damaged"
        )
    try:
        return read_score(best_score, "state['best_score']"), best_path
    except ValueError as err:
        raise ValueError(f"{err}; this state is damaged") from None
