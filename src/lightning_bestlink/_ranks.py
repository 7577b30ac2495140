"""One rank writes, every rank agrees: shared by the Trainer and Fabric adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning_bestlink.linker import BestLinker


def on_rank_zero(
    is_global_zero: bool,
    broadcast: Callable[[Any], Any],
    linker: BestLinker,
    action: Callable[[], Any],
    what: str,
) -> Any:
    """Run ``action`` on global rank zero; every rank gets its result and the linker's state.

    ``broadcast(obj)`` sends rank zero's ``obj`` to every rank. It is also the
    barrier: no rank returns before rank zero has written, and an error on rank zero
    is raised on every rank instead of leaving the others waiting. Other ranks mirror
    the linker's state without file I/O.
    """
    outcome: dict[str, Any] = {"error": None, "state": None, "result": None}
    error: Exception | None = None
    if is_global_zero:
        try:
            outcome["result"] = action()
        except Exception as err:
            error = err
            outcome["error"] = f"{type(err).__name__}: {err}"
        outcome["state"] = linker.state_dict()
    outcome = broadcast(outcome)
    if error is not None:
        raise error
    if outcome["error"] is not None:
        raise RuntimeError(f"rank zero could not {what} the best alias: {outcome['error']}")
    if not is_global_zero:
        linker.load_state_dict(outcome["state"], mirror=True)
    return outcome["result"]
