"""What the Trainer adapter knows of ``ModelCheckpoint`` and of its own arguments, as plain functions.

``ModelCheckpointLike`` is the part of Lightning's class the mixin uses (its type
checker's view, checked against every installed version by the tests); the
functions check ``save_best`` and ``best_name`` and read the alias's record for
``ckpt_path="best"``. Nothing here imports Lightning.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from lightning_bestlink._storage import LINK_CHOICES, LinkChoice
from lightning_bestlink.linker import BestLinker, read_record

SaveBest = bool | LinkChoice | None


@runtime_checkable
class ModelCheckpointLike(Protocol):
    """What the mixin uses of ``ModelCheckpoint`` (the same in Lightning 2.0 to 2.6, in both packages).

    The type checker's view of the mixin's base; ``tests/test_callbacks.py`` checks every
    installed ``ModelCheckpoint`` against it. The values are placeholders for the type
    checker only: Lightning's class sets them.
    """

    CHECKPOINT_NAME_LAST: str = "last"
    dirpath: Any = None
    filename: str | None = None
    monitor: str | None = None
    mode: str = "min"
    verbose: bool = False
    best_model_score: Any = None  # a 0-d tensor, or None

    @property
    def state_key(self) -> str: ...
    def format_checkpoint_name(self, metrics: Any, filename: str | None = None, *args: Any, **kwargs: Any) -> str:
        # a body, so the type checker does not count it abstract in ModelCheckpointWithLinkBest
        raise TypeError("never called: the protocol is not a base class at run time")

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None: ...
    def on_train_start(self, trainer: Any, pl_module: Any) -> None: ...
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None: ...
    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...
    def _save_checkpoint(self, trainer: Any, filepath: str) -> None: ...


def check_save_best(save_best: object) -> LinkChoice | None:
    """The link kind ``save_best`` asks for (None when off); raises ``ValueError`` otherwise.

    >>> check_save_best(True), check_save_best(None), check_save_best("copy")
    ('auto', None, 'copy')
    """
    if save_best is None or save_best is False:
        return None
    if save_best is True:
        return "auto"
    for choice in LINK_CHOICES:
        if save_best == choice and isinstance(save_best, str):
            return choice
    choices = ", ".join(repr(c) for c in LINK_CHOICES)
    raise ValueError(f"save_best must be None, False, True or one of {choices}, got {save_best!r}")


def check_best_name(name: object, what: str = "best_name") -> str:
    """``name`` if it can name the alias (a plain file name); raises ``ValueError`` otherwise.

    >>> check_best_name("best-val_loss")
    'best-val_loss'
    """
    if not isinstance(name, str) or not name or "{" in name or "/" in name or os.sep in name:
        raise ValueError(
            f"{what} must be a plain file name without '{{...}}' fields or '/', got {name!r}: the best "
            f"alias needs one stable name. Use e.g. 'best' or 'best-val_loss'"
        )
    return name


def signature(function: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature`` with annotations as objects where they can be evaluated."""
    try:  # objects, so tools need not resolve names from another module
        return inspect.signature(function, eval_str=True)
    except Exception:  # a name only a type checker knows: keep the text
        return inspect.signature(function)


def best_from_record(alias: str, monitor: str | None, mode: str) -> str:
    """The checkpoint the record of ``alias`` names ("" when there is no record).

    Raises ``ValueError`` (or ``OSError``) when the record cannot say: written for another
    monitor or mode, or the alias does not point where the record says.
    """
    record = read_record(alias)
    if record is None:
        return ""
    extra = record.get("extra") or {}
    if record["mode"] != mode or extra.get("monitor", monitor) != monitor:
        raise ValueError(
            f"it was written for monitor={extra.get('monitor')!r}, mode={record['mode']!r}, and this "
            f"callback has monitor={monitor!r}, mode={mode!r}"
        )
    linker = BestLinker(alias, mode=record["mode"])
    # after a resume into a new folder the target sits in the old one; it is taken only
    # when the alias, written by the same run as the record, points at it too
    linker.load_state_dict(
        {"best_score": record["score"], "best_path": record["target"]}, mirror=True, allow_outside=True
    )
    report = linker.verify()
    if not report.ok:
        raise ValueError(report.detail)
    return str(record["target"])
