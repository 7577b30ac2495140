"""One rank writes, every rank agrees: shared by the Trainer and Fabric adapters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lightning_bestlink.linker import BestLinker


class Stateful(Protocol):
    """What rank zero changes and the other ranks mirror: a linker, or a ``Retention``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], *, mirror: bool = ...) -> None: ...


def on_rank_zero(
    is_global_zero: bool,
    broadcast: Callable[[Any], Any],
    mirrored: BestLinker | Sequence[BestLinker | Stateful],
    action: Callable[[], Any],
    what: str,
) -> Any:
    """Run ``action`` on global rank zero; every rank gets its result and the state of ``mirrored``.

    ``broadcast(obj)`` sends rank zero's ``obj`` to every rank. It is also the barrier: no
    rank returns before rank zero has written. ``mirrored`` (one linker, or several linkers
    and a ``Retention``) is copied from rank zero to every other rank without file I/O, also
    when ``action`` failed half-way (the best alias moved, the latest not): then rank zero
    raises the error and every other rank a ``RuntimeError`` naming it, none left waiting.
    """
    objects = [mirrored] if isinstance(mirrored, BestLinker) else list(mirrored)
    outcome: dict[str, Any] = {"error": None, "states": None, "result": None}
    error: Exception | None = None
    if is_global_zero:
        try:
            outcome["result"] = action()
        except Exception as err:
            error = err
            outcome["error"] = f"{type(err).__name__}: {err}"
        outcome["states"] = [obj.state_dict() for obj in objects]
    outcome = broadcast(outcome)
    if not is_global_zero:
        for obj, state in zip(objects, outcome["states"], strict=True):
            obj.load_state_dict(state, mirror=True)  # rank zero looked at the files
    if error is not None:
        raise error
    if outcome["error"] is not None:
        whose = "the best alias" if isinstance(mirrored, BestLinker) else "the aliases"
        raise RuntimeError(f"rank zero could not {what} {whose}: {outcome['error']}")
    return outcome["result"]
