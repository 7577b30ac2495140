"""What the Trainer adapter says of a move: ``verbose`` lines, and ``log_best`` for the Trainer's loggers.

The score goes in as a metric named ``<best_name>/<monitor>`` (``best/val_loss`` for the
default alias), so two callbacks never write one metric (two aliases in one folder have two
names; the callback refuses two of its kind with one name). The checkpoint's path goes
where a logger keeps text, found by what its experiment can do, not by its class: a W&B
run's summary, an MLflow run's tags, TensorBoard's text plugin, each under
``<metric>_path``. Moves are queued (they may happen on the checkpoint writer's thread)
and written on the main thread, on global rank zero, where Lightning's loggers log.
"""

from __future__ import annotations

import threading
from typing import Any


def said(
    where: str, linker: Any, best: str, monitor: str | None, score: float | None, moved: bool, why: str = ""
) -> str:
    """What ``verbose=True`` says of a move (``why``: of a rebuild on resume), or of a
    ``best_model_path`` that the alias does not follow."""
    alias = linker.link_path.rsplit("/", 1)[-1]
    if moved:
        what = "the latest save" if score is None else f"{monitor}={score:0.5f}"
        return f"{where}{alias} -> {best!r} ({what})" + (f", rebuilt because {why}" if why else "")
    kept = "?" if linker.best_score is None else f"{linker.best_score:0.5f}"
    return (
        f"{where}{alias} stays at {linker.best_path!r} ({monitor}={kept}): "
        f"best_model_path {best!r} ({monitor}={score:0.5f}) is not better"
    )


def metric_name(best_name: str, monitor: str | None) -> str:
    """The metric a callback logs its best under.

    >>> metric_name("best", "val_loss"), metric_name("best-acc", "val/acc"), metric_name("best", None)
    ('best/val_loss', 'best-acc/val/acc', 'best/latest')
    """
    return f"{best_name}/{monitor if monitor is not None else 'latest'}"


class BestLog:
    """The moves not yet reported, and how to report them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._moves: list[dict[str, Any]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"])  # type: ignore[misc]

    def moved(self, record: dict[str, Any]) -> None:
        """Note a move (any thread): the record as ``on_move`` receives it."""
        with self._lock:
            self._moves.append(record)

    def __bool__(self) -> bool:
        return bool(self._moves)

    def flush(self, loggers: list[Any], step: int) -> list[str]:
        """Report the noted moves to ``loggers``; returns what failed (nothing is retried)."""
        with self._lock:
            moves, self._moves = self._moves, []
        failures = []
        for record in moves[-1:]:  # only the latest best is worth a point: earlier ones were beaten meanwhile
            for logger in loggers:
                try:
                    if record["score"] is not None:
                        logger.log_metrics({self.name: float(record["score"])}, step=step)
                    _write_text(logger, f"{self.name}_path", str(record["target"]), step)
                except Exception as err:  # a logger's failure must not stop training, nor the alias
                    failures.append(f"{type(logger).__name__}: {type(err).__name__}: {err}")
        return failures


def _write_text(logger: Any, key: str, text: str, step: int) -> None:
    """Put ``text`` where the logger keeps text, if it has such a place (CSV has none)."""
    experiment = logger.experiment
    summary = getattr(experiment, "summary", None)
    if summary is not None and callable(getattr(summary, "__setitem__", None)):
        summary[key] = text  # a W&B run: its summary shows on the run page
        return
    add_text = getattr(experiment, "add_text", None)
    if callable(add_text):
        add_text(key, text, global_step=step)  # TensorBoard's SummaryWriter
        return
    set_tag = getattr(experiment, "set_tag", None)
    run_id = getattr(logger, "run_id", None)
    if callable(set_tag) and isinstance(run_id, str):
        set_tag(run_id, key, text)  # an MLflow client and its run
