"""What the Trainer adapter knows of ``ModelCheckpoint`` and of its own arguments, as plain functions.

``ModelCheckpointLike`` is the part of Lightning's class the mixin uses (its type
checker's view, checked against every installed version by the tests); the
functions check the callback's arguments (refusing settings that can never make an
alias, at construction) and its names (at setup), and read the alias's record for
``ckpt_path="best"``. Nothing here imports Lightning.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from lightning_bestlink._storage import LINK_CHOICES, LinkChoice
from lightning_bestlink._trainer_log import metric_name
from lightning_bestlink.linker import BestLinker, read_record

SaveBest = bool | LinkChoice | None
_C = TypeVar("_C", bound=type)


@runtime_checkable
class ModelCheckpointLike(Protocol):
    """What the mixin uses of ``ModelCheckpoint`` (the same in Lightning 2.0 to 2.6, in both packages).

    The type checker's view of the mixin's base; ``tests/test_callbacks.py`` checks every
    installed ``ModelCheckpoint`` against it. The values are placeholders for the type
    checker only: Lightning's class sets them.
    """

    CHECKPOINT_NAME_LAST: str = "last"
    FILE_EXTENSION: str = ".ckpt"
    dirpath: Any = None
    filename: str | None = None
    monitor: str | None = None
    mode: str = "min"
    verbose: bool = False
    save_top_k: int = 1
    best_model_score: Any = None  # a 0-d tensor, or None

    @property
    def state_key(self) -> str:
        raise TypeError("never called: the protocol is not a base class at run time")

    def format_checkpoint_name(self, metrics: Any, filename: str | None = None, *args: Any, **kwargs: Any) -> str:
        # a body, so the type checker does not count it abstract in ModelCheckpointWithLinkBest
        raise TypeError("never called: the protocol is not a base class at run time")

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None: ...
    def on_train_start(self, trainer: Any, pl_module: Any) -> None: ...
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None: ...
    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None: ...
    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...
    def _save_checkpoint(self, trainer: Any, filepath: str) -> None: ...
    def _remove_checkpoint(self, trainer: Any, filepath: str) -> None: ...


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


def alias_stem(name: str, extension: str) -> str:
    """The alias's name without the checkpoint extension: ``best.ckpt`` means what ``best`` means
    (the file is ``best.ckpt`` either way, never ``best.ckpt.ckpt``).

    >>> alias_stem("best.ckpt", ".ckpt"), alias_stem("best", ".ckpt"), alias_stem("best.pt", ".ckpt")
    ('best', 'best', 'best.pt')
    """
    return name[: -len(extension)] if extension and name.endswith(extension) and name != extension else name


def check_arguments(save_best: object, best_name: object, sweep_best: object, log_best: object, on_move: object) -> Any:
    """The link kind ``save_best`` asks for, once the mixin's own arguments are checked together
    (those that need ``ModelCheckpoint``'s settings: :func:`check_options`)."""
    kind = check_save_best(save_best)
    check_best_name(best_name)
    if sweep_best is not None and (not isinstance(sweep_best, (str, os.PathLike)) or not os.fspath(sweep_best)):
        raise ValueError(f"sweep_best must be the path of a shared alias (or None), got {sweep_best!r}")
    if not isinstance(log_best, bool):
        raise TypeError(f"log_best must be True or False, got {log_best!r}")
    if on_move is not None and not callable(on_move):
        raise TypeError(f"on_move must be a function taking the record (or None), got {on_move!r}")
    if kind is None:
        alias_only = (("best_name", best_name, "best"), ("sweep_best", sweep_best, None), ("on_move", on_move, None))
        given = [f"{name}={value!r}" for name, value, default in alias_only if value != default]
        if given:
            raise ValueError(
                f"{' and '.join(given)} configure the best alias, which save_best={save_best!r} turns off: "
                f"they would never take effect. Pass save_best=True (or a link kind), or drop them"
            )
    return kind


def check_options(callback: ModelCheckpointLike, best_name: str, save_best: object) -> str:
    """The alias's name (without extension), after ``ModelCheckpoint.__init__``: refuses the settings
    of ``callback`` with which the alias could never be made, or never be told from a 'last' checkpoint."""
    name = alias_stem(best_name, callback.FILE_EXTENSION)
    if save_best is None or save_best is False:
        return name
    last = str(callback.CHECKPOINT_NAME_LAST)
    given = name if name != "best" else str(getattr(callback, "CHECKPOINT_NAME_BEST", name))
    stem = alias_stem(given, callback.FILE_EXTENSION)
    if is_last_name(stem, last):
        raise ValueError(last_name_message(stem, last, "best_name"))
    if callback.save_top_k == 0:
        raise ValueError(
            f"save_best={save_best!r} with save_top_k=0 can never make a best alias: Lightning then keeps no "
            f"best checkpoint to point at. Use save_top_k=1 (or more), or drop save_best"
        )
    sweep = getattr(callback, "sweep_best", None)
    if sweep is not None and callback.monitor is None:
        raise ValueError(
            f"sweep_best={sweep!r} offers each new best of this run to the sweep: it needs monitor= (got None: "
            f"without one there is no score to compare)"
        )
    return name


def is_last_name(name: str, last: str) -> bool:
    r"""Whether Lightning's ``ckpt_path="last"`` would take a checkpoint named ``name``:
    ``ModelCheckpoint._find_last_checkpoints`` matches ``^{CHECKPOINT_NAME_LAST}(-(\d+))?`` against the
    stem, which every stem starting with ``CHECKPOINT_NAME_LAST`` passes (``lastly`` too).

    >>> is_last_name("last-v1", "last"), is_last_name("best", "last"), is_last_name("best", "best")
    (True, False, True)
    """
    return name.startswith(last)


def last_name_message(name: str, last: str, what: str) -> str:
    """Why a best alias must not be named like a 'last' checkpoint."""
    return (
        f"{what}={name!r} looks like a 'last' checkpoint name (CHECKPOINT_NAME_LAST={last!r}): Lightning would "
        f"resume from the best alias as if it were the latest state. Choose a name that does not start with it"
    )


def check_names(callback: Any, trainer: Any, kind: type[Any]) -> None:
    """At setup, with every checkpoint callback known: the alias's name is still a plain name that
    is not a 'last' one, no other callback writes the same alias, saves files under its name, or
    logs its best under the same metric name."""
    name = check_best_name(callback.CHECKPOINT_NAME_BEST, "CHECKPOINT_NAME_BEST")
    alias = callback.best_link_path
    if is_last_name(callback.best_name, str(callback.CHECKPOINT_NAME_LAST)):
        raise ValueError(last_name_message(name, str(callback.CHECKPOINT_NAME_LAST), "CHECKPOINT_NAME_BEST"))
    others = [cb for cb in getattr(trainer, "checkpoint_callbacks", []) if cb is not callback]
    for other in [callback, *others]:
        if other is not callback and isinstance(other, kind):
            suggestion = f"{name}-{callback.monitor or 'latest'}".replace(os.sep, "_").replace("/", "_")
            if other.best_link_path == alias:
                raise ValueError(
                    f"two ModelCheckpointWithLinkBest callbacks (monitor={callback.monitor!r} and "
                    f"monitor={other.monitor!r}) would both write the best alias {alias!r}. Give each its "
                    f"own best_name, e.g. best_name={suggestion!r} on the one with monitor={callback.monitor!r}"
                )
            metric = metric_name(callback.best_name, callback.monitor)
            if callback.log_best and other.log_best and metric == metric_name(other.best_name, other.monitor):
                raise ValueError(
                    f"two ModelCheckpointWithLinkBest callbacks with log_best=True would log their best as one "
                    f"metric, {metric}. Give one of them another best_name, e.g. best_name={suggestion!r}, "
                    f"or log_best=False"
                )
        if not hasattr(other, "format_checkpoint_name"):
            continue
        fixed = {other.format_checkpoint_name({}, other.filename)}
        fixed.add(other.format_checkpoint_name({}, getattr(other, "CHECKPOINT_NAME_LAST", None) or "last"))
        if alias in fixed:
            raise ValueError(
                f"filename={other.filename!r} makes checkpoints named like the best alias {alias!r}: "
                f"every save would land on the alias. Use another filename template, or another best_name"
            )


def lightning_class(cls: type, mixin: type) -> type:
    """The ``ModelCheckpoint`` that ``cls`` combines with ``mixin`` (next in the MRO)."""
    mro = cls.__mro__
    return mro[mro.index(mixin) + 1]


def with_signature(cls: _C, mixin: type) -> _C:
    """Give ``cls`` an ``__init__`` whose signature lists ``save_best``, every parameter of the
    installed ``ModelCheckpoint``, then the mixin's keyword-only ones: for IDEs, ``inspect`` and
    jsonargparse. The parameters are read from the installed Lightning, so nothing is listed by hand.
    """
    base: Any = lightning_class(cls, mixin)
    mixin_init = vars(mixin)["__init__"]
    ours = signature(mixin_init).parameters
    this, *theirs = signature(base.__init__).parameters.values()
    keywords = [p for p in ours.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    params = [this, ours["save_best"], *theirs, *keywords]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        mixin_init(self, *args, **kwargs)

    __init__.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    __init__.__doc__ = mixin_init.__doc__
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def signature(function: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature`` with annotations as objects where they can be evaluated."""
    try:  # objects, so tools need not resolve names from another module
        return inspect.signature(function, eval_str=True)
    except Exception:  # a name only a type checker knows: keep the text
        return inspect.signature(function)


def best_from_record(alias: str, monitor: str | None, mode: str) -> str:
    """The checkpoint the record of ``alias`` names ("" when there is no record).

    Raises ``ValueError`` (or ``OSError``) when the record cannot say, with what to do: it names
    another monitor or mode, or none (it is not the best by this callback's measure), or the alias
    does not point where the record says.
    """
    record = read_record(alias)
    if record is None:
        return ""
    extra = record.get("extra") or {}
    if "monitor" not in extra or extra["monitor"] != monitor or record["mode"] != mode:
        written = (
            f"was written for monitor={extra['monitor']!r}, mode={record['mode']!r}"
            if "monitor" in extra
            else f"names no monitor (mode={record['mode']!r})"
        )
        raise ValueError(
            f"it {written}, and this callback has monitor={monitor!r}, mode={mode!r}: its checkpoint is not "
            f"the best by this callback's measure. Pass that checkpoint's path as ckpt_path, or give this "
            f"callback the monitor and mode of the run that wrote the alias (one best_name per monitor)"
        )
    linker = BestLinker(alias, mode=record["mode"])
    # after a resume into a new folder the target sits in the old one; it is taken only
    # when the alias, written by the same run as the record, points at it too
    linker.load_state_dict(
        {"best_score": record["score"], "best_path": record["target"]}, mirror=True, allow_outside=True
    )
    report = linker.verify()
    if not report.ok:
        raise ValueError(
            f"{report.detail}. Run `lightning-bestlink repair {alias}` to point the alias at the record's "
            f"checkpoint again, or pass a checkpoint's path as ckpt_path"
        )
    return str(record["target"])
