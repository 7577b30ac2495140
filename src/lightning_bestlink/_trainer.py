"""The Trainer adapter, written once for both ``lightning.pytorch`` and ``pytorch_lightning``.

``BestLinkMixin`` holds no linking logic: it decides *when* (right after a
checkpoint becomes ``best_model_path`` and is written, before Lightning evicts the
previous best) and *with what* (``best_model_path`` and its score, with monitor,
epoch and step as metadata); :class:`~lightning_bestlink.BestLinker` does the file
work. It imports neither Lightning package: ``callbacks.py`` and
``pytorch_lightning.py`` combine it with each package's ``ModelCheckpoint``.

On a resume it restores the best from the checkpoint (Lightning's own
``best_model_path``/``best_model_score`` and the linker's ``best_link`` state,
whichever is better), takes over the state saved by the class it replaces, and
lets ``ckpt_path="best"`` find the alias's record in a fresh process.
"""

# mypy: disable-error-code="safe-super"
# (ModelCheckpointLike stands for the real ModelCheckpoint, whose methods super() reaches)
from __future__ import annotations

import copy
import inspect
import logging
import os
import warnings
from typing import TYPE_CHECKING, Any, TypeVar

from lightning_bestlink._errors import BestLinkWarning
from lightning_bestlink._ranks import on_rank_zero
from lightning_bestlink._score import check_mode
from lightning_bestlink._trainer_api import (
    ModelCheckpointLike,
    SaveBest,
    best_from_record,
    check_best_name,
    check_save_best,
    signature,
)
from lightning_bestlink.linker import BestLinker, read_record

if TYPE_CHECKING:
    _Base = ModelCheckpointLike
else:
    _Base = object

_DEFAULT_NAME = "best"
_C = TypeVar("_C", bound=type)


def with_model_checkpoint_signature(cls: _C) -> _C:
    """Give ``cls`` an ``__init__`` whose signature lists ``save_best``, every parameter of the
    installed ``ModelCheckpoint``, then ``best_name``: for IDEs, ``inspect`` and jsonargparse.

    The parameters are read from the installed Lightning, so nothing is listed by hand.
    """
    base: Any = _lightning_class(cls)
    ours = signature(BestLinkMixin.__init__).parameters
    this, *theirs = signature(base.__init__).parameters.values()
    params = [this, ours["save_best"], *theirs, ours["best_name"], ours["sweep_best"]]

    mixin_init = BestLinkMixin.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        mixin_init(self, *args, **kwargs)

    __init__.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    __init__.__doc__ = BestLinkMixin.__init__.__doc__
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def _lightning_class(cls: type) -> type:
    """The ``ModelCheckpoint`` that ``cls`` combines with the mixin (next in the MRO)."""
    mro = cls.__mro__
    return mro[mro.index(BestLinkMixin) + 1]


class BestLinkMixin(_Base):
    """Adds ``save_best`` to a ``ModelCheckpoint``: ``best.ckpt`` follows the best checkpoint."""

    CHECKPOINT_NAME_BEST = _DEFAULT_NAME

    # each package's class sets Lightning's rank_zero_info / rank_zero_warn (same output as its own lines)
    @staticmethod
    def _info(message: str) -> None:
        logging.getLogger("lightning_bestlink").info(message)

    @staticmethod
    def _warn(message: str, *, category: type[Warning] = UserWarning) -> None:
        warnings.warn(message, category, stacklevel=3)

    def __init__(
        self,
        save_best: SaveBest = None,
        *args: Any,
        best_name: str = _DEFAULT_NAME,
        sweep_best: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Args:
        save_best: ``None``/``False`` (off), ``True`` (``"auto"``: symlink, else hardlink, else
            copy), or a link kind: ``"symlink"``, ``"hardlink"``, ``"copy"``.
        best_name: the alias's name without extension (``best`` gives ``dirpath/best.ckpt``).
            The default keeps the class's ``CHECKPOINT_NAME_BEST``.
        sweep_best: an alias shared by every run of a sweep, e.g. ``"sweep/best.ckpt"``, with
            each run's ``dirpath`` below its folder: every new best of this run is offered to it
            (before Lightning deletes the previous one) and it ends at the best checkpoint of all
            runs, ``BestLinker(shared=True)``. Needs ``monitor``.
        """
        self._best_link_kind = check_save_best(save_best)
        check_best_name(best_name)
        if sweep_best is not None and (not isinstance(sweep_best, (str, os.PathLike)) or not os.fspath(sweep_best)):
            raise ValueError(f"sweep_best must be the path of a shared alias (or None), got {sweep_best!r}")
        self.sweep_best = None if sweep_best is None else os.fspath(sweep_best)
        self._sweep_linker: BestLinker | None = None
        self._best_model_path = ""
        self._fit_started = False  # from the first fit on, best_model_path is Lightning's alone
        self._warned: set[str] = set()
        super().__init__(*args, **kwargs)
        self.save_best = save_best
        if best_name != _DEFAULT_NAME:
            self.CHECKPOINT_NAME_BEST = best_name
        if self.sweep_best is not None and (self.monitor is None or self._best_link_kind is None):
            raise ValueError(
                f"sweep_best={self.sweep_best!r} offers each new best of this run to the sweep: it needs "
                f"save_best (got {save_best!r}) and monitor= (got {self.monitor!r}: without one there is no "
                f"score to compare)"
            )
        self._best_linker: BestLinker | None = None
        self._best_linker_for = ""  # the alias path the linker was made for
        self._linked_best_path = ""  # the best_model_path last handled (all ranks)
        self._aliased = ""  # the best_model_path the alias points at, as Lightning spells it
        self._loaded: dict[str, Any] | None = None  # the best_link state of a restored checkpoint

    # --- naming and setup -----------------------------------------------------

    @property
    def best_name(self) -> str:
        """The alias's name without extension (``CHECKPOINT_NAME_BEST``)."""
        return self.CHECKPOINT_NAME_BEST

    @property
    def best_link_path(self) -> str | None:
        """Where the best alias goes (``dirpath/best.ckpt``), once ``dirpath`` is known."""
        if self._best_link_kind is None or getattr(self, "dirpath", None) is None:
            return None
        return str(self.format_checkpoint_name({}, self.CHECKPOINT_NAME_BEST))

    @property
    def best_linker(self) -> BestLinker | None:
        """The :class:`BestLinker` behind the alias (after ``setup``)."""
        return self._best_linker

    @property
    def state_key(self) -> str:
        """The stock ``ModelCheckpoint``'s key: switching between the two classes keeps the state."""
        key = super().state_key
        mine, base = type(self).__qualname__, _lightning_class(type(self)).__qualname__
        return base + key[len(mine) :] if key.startswith(mine) else key

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._loaded = None  # a state restored by an earlier run of this callback is not this run's
        if stage == "fit":
            self._fit_started = True
        if self._best_link_kind is None:
            return
        self._check_names(trainer)
        link_path = self.best_link_path
        assert link_path is not None
        if self._best_linker is None or self._best_linker_for != link_path:  # first setup, or dirpath moved
            self._best_linker = BestLinker(link_path, mode=check_mode(self.mode), link=self._best_link_kind)
            self._best_linker_for = link_path
        if self.sweep_best is not None and self._sweep_linker is None:
            self._sweep_linker = BestLinker(self.sweep_best, mode=check_mode(self.mode), shared=True)

    def _check_names(self, trainer: Any) -> None:
        name = check_best_name(self.CHECKPOINT_NAME_BEST, "CHECKPOINT_NAME_BEST")
        alias = self.best_link_path
        # Lightning's _find_last_checkpoints takes every stem that starts with CHECKPOINT_NAME_LAST
        if name.startswith(str(self.CHECKPOINT_NAME_LAST)):
            raise ValueError(
                f"best_name={name!r} looks like a 'last' checkpoint name "
                f"(CHECKPOINT_NAME_LAST={self.CHECKPOINT_NAME_LAST!r}): Lightning would resume from the "
                f"best alias as if it were the latest state. Choose a name that does not start with it"
            )
        others = [cb for cb in getattr(trainer, "checkpoint_callbacks", []) if cb is not self]
        for other in [self, *others]:
            if other is not self and isinstance(other, BestLinkMixin) and other.best_link_path == alias:
                suggestion = f"{name}-{self.monitor or 'latest'}".replace(os.sep, "_").replace("/", "_")
                raise ValueError(
                    f"two ModelCheckpointWithLinkBest callbacks (monitor={self.monitor!r} and "
                    f"monitor={other.monitor!r}) would both write the best alias {alias!r}. Give each its "
                    f"own best_name, e.g. best_name={suggestion!r} on the one with monitor={self.monitor!r}"
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

    # --- ckpt_path="best" in a new process ----------------------------------------

    @property
    def best_model_path(self) -> str:
        """Lightning's ``best_model_path``. Before the first ``fit`` of this callback, while it is
        empty, the checkpoint the alias's record names (so ``ckpt_path="best"`` finds it)."""
        path = self._best_model_path
        if path or self._fit_started or self._best_link_kind is None:
            return path
        return self._best_on_disk()

    @best_model_path.setter
    def best_model_path(self, value: str) -> None:
        self._best_model_path = value

    def _best_on_disk(self) -> str:
        # Lightning resolves ckpt_path="best" before any hook runs: this read is the only moment
        alias = self.best_link_path
        if alias is None:
            return ""
        try:
            return best_from_record(alias, self.monitor, self.mode)
        except (OSError, ValueError, TypeError, KeyError) as err:
            self._warn_once(
                f"ckpt_path='best': the record of {alias!r} cannot name the best checkpoint: {err}. "
                f"Pass the checkpoint's path as ckpt_path, or run `lightning-bestlink repair`"
            )
            return ""

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._warn(message, category=BestLinkWarning)

    # --- when the alias moves --------------------------------------------------

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        if trainer.is_global_zero and os.path.islink(filepath):
            # a save to a path that is a link would overwrite the file it points to
            # (e.g. last.ckpt left as a link by save_last="link"); drop the link, keep its target
            os.unlink(filepath)
        super()._save_checkpoint(trainer, filepath)
        # the new file exists now, and Lightning evicts the old best only after this returns:
        # moving the alias here means it never points at a deleted checkpoint
        self._link_best(trainer, saved=filepath)

    def _link_best(self, trainer: Any, saved: str) -> None:
        linker = self._best_linker
        best = self.best_model_path
        # also when the best file itself was just rewritten (a fixed filename with
        # enable_version_counter=False): a copy or hard link would otherwise keep the old bytes
        if linker is None or not best or (best == self._linked_best_path and saved != best):
            return
        self._linked_best_path = best
        extra = self._best_extra(trainer, best)
        score = self.best_model_score
        if self.monitor is None:
            score = None  # the alias follows the latest save: there is no score to record

            def act() -> bool:
                return linker.follow(None, best, extra=extra)

        elif score is None:
            return  # never record a score that was not measured
        elif saved == best == self._aliased:

            def act() -> bool:  # the file the alias names was rewritten: record what it holds now
                return linker.follow(score, best, extra=extra)

        else:

            def act() -> bool:  # never worse than the best the alias holds (restored ones included)
                moved = linker.update(score, best, extra=extra)
                if moved and self._sweep_linker is not None:  # this run's new best, offered to the sweep
                    run = os.path.relpath(str(self.dirpath), os.path.dirname(self._sweep_linker.link_path))
                    self._sweep_linker.update(score, best, extra={**extra, "run": run})
                return moved

        def act_when_written() -> bool | None:
            try:
                return act()
            except FileNotFoundError:  # written in the background (AsyncCheckpointIO): retried later
                return None

        moved = on_rank_zero(trainer.is_global_zero, trainer.strategy.broadcast, linker, act_when_written, "update")
        if moved is None:
            self._linked_best_path = ""  # the next save, or teardown, tries again
            return
        if moved:
            self._aliased = best
        if self.verbose:
            self._say_moved(trainer, linker, best, score, moved)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # a best written in the background is on disk once the checkpoint IO has been torn down,
        # which Lightning does before this hook; the ranks may be gone, so rank zero alone
        pending = self._best_linker is not None and self.best_model_path and not self._linked_best_path
        if stage == "fit" and pending and trainer.is_global_zero:
            self._link_best(_Alone(trainer), saved="")
        super().teardown(trainer, pl_module, stage)

    def __getstate__(self) -> dict[str, Any]:
        # the linker holds a lock and is made again by setup; the alias and its record stay on disk
        state = dict(self.__dict__)
        state.update(_best_linker=None, _best_linker_for="", _linked_best_path="", _sweep_linker=None)
        return state

    def _best_extra(self, trainer: Any, best: str) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "monitor": self.monitor,
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "filename": os.path.basename(best),
        }
        if self.monitor is None:
            extra["follows"] = "latest"  # score null: the latest save, not a measured best
        return extra

    def _say_moved(self, trainer: Any, linker: BestLinker, best: str, score: Any, moved: bool) -> None:
        where = f"Epoch {int(trainer.current_epoch)}, global step {int(trainer.global_step)}: "
        alias = os.path.basename(linker.link_path)
        if moved:
            what = "the latest save" if score is None else f"{self.monitor}={float(score):0.5f}"
            self._info(f"{where}{alias} -> {best!r} ({what})")
        else:
            kept = "?" if linker.best_score is None else f"{linker.best_score:0.5f}"
            self._info(
                f"{where}{alias} stays at {linker.best_path!r} ({self.monitor}={kept}): "
                f"best_model_path {best!r} ({self.monitor}={float(score):0.5f}) is not better"
            )

    # --- resume -------------------------------------------------------------------

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        states = checkpoint.get("callbacks")
        if not isinstance(states, dict) or self.state_key in states:
            return
        # saved by this class before it used the stock key, by the seed's class of the same
        # name, or by a subclass: take it over, unless another callback here owns that key
        taken = {cb.state_key for cb in trainer.callbacks if cb is not self}
        suffix = self.state_key[len(_lightning_class(type(self)).__qualname__) :]
        base = _lightning_class(type(self))
        for cls in type(self).__mro__:
            key = cls.__qualname__ + suffix
            if cls is not base and issubclass(cls, base) and key in states and key not in taken:
                self.load_state_dict(copy.deepcopy(states[key]))
                if self.verbose:
                    self._info(f"{type(self).__name__}: took over the state saved as {key!r}")
                return

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = super().state_dict()
        if self._best_linker is not None:
            # read back on resume; it may lag one decision behind best_model_path in the very
            # checkpoint that became the best (the alias moves after the save): see _restore
            state["best_link"] = self._best_linker.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        best = state_dict.get("best_model_path")
        measured = self.monitor is not None and state_dict.get("monitor") == self.monitor
        if measured and self.best_model_score is None and best and self.best_model_path == best:
            # Lightning keeps only best_model_path when dirpath changed: its score comes back too
            self.best_model_score = state_dict.get("best_model_score")
        link = state_dict.get("best_link")
        self._loaded = link if isinstance(link, dict) else {}

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        # after every restore (some strategies restore after on_fit_start)
        loaded, self._loaded = self._loaded, None
        linker = self._best_linker
        if linker is None or loaded is None:
            return
        best = self.best_model_path
        state = self._restored_state(trainer, linker, loaded, best)
        if state is None:
            return

        def restore() -> str:
            linker.load_state_dict(state, allow_outside=True)  # the user chose to resume from this checkpoint
            before = linker.verify()
            after = linker.repair()
            repaired = "" if before.ok or not after.ok else before.detail
            if linker.best_path is not None:
                saved = read_record(linker.link_path)
                if saved is None or (saved["target"], saved["score"]) != (linker.best_path, linker.best_score):
                    # no record (the seed wrote none; a new folder has none yet) or another one
                    linker.follow(linker.best_score, linker.best_path, extra=self._restored_extra(state, linker))
                    repaired = repaired or f"{'its record was missing' if saved is None else 'its record differed'}"
            return repaired

        repaired = on_rank_zero(trainer.is_global_zero, trainer.strategy.broadcast, linker, restore, "restore")
        self._linked_best_path = best
        self._aliased = best if linker.best_path is not None and state["best_path"] == best else ""
        if self.verbose and repaired:
            alias, score = os.path.basename(linker.link_path), linker.best_score
            what = "the latest save" if score is None else f"{self.monitor}={score:0.5f}"
            self._info(f"Resumed: {alias} -> {linker.best_path!r} ({what}), rebuilt because {repaired}")

    def _restored_extra(self, state: dict[str, Any], linker: BestLinker) -> dict[str, Any]:
        """The record's extra for a restored best: the record it had where it was made, if any."""
        assert linker.best_path is not None
        extra: dict[str, Any] = {"monitor": self.monitor, "filename": os.path.basename(linker.best_path)}
        origin = state.get("link_path")
        try:
            before = read_record(origin) if isinstance(origin, str) and origin != linker.link_path else None
        except (OSError, ValueError):
            before = None  # only a nicety: the record is rebuilt without epoch and step
        if before is not None and before["target"] == linker.best_path and isinstance(before.get("extra"), dict):
            extra = {**before["extra"], **extra}
        if self.monitor is None:
            extra["follows"] = "latest"
        return extra

    def _restored_state(
        self, trainer: Any, linker: BestLinker, loaded: dict[str, Any], best: str
    ) -> dict[str, Any] | None:
        """The better of Lightning's restored best and the saved ``best_link`` state (None: neither)."""
        score = None if self.monitor is None else self.best_model_score
        lightning = {"best_score": score, "best_path": best} if best else None
        if self.monitor is None or not loaded.get("best_path"):
            return lightning
        probe = BestLinker(linker.link_path, mode=linker.mode, link=linker.link)
        try:
            probe.load_state_dict(loaded, mirror=True, allow_outside=True)
        except ValueError as err:
            raise ValueError(
                f"the 'best_link' state of {self.state_key!r} in {trainer.ckpt_path!r} cannot be restored: {err}"
            ) from err
        if lightning is None or score is None or probe.best_score is None or probe.best_path is None:
            return loaded if lightning is None or score is None else lightning
        return lightning if probe.is_better(score) else loaded


class _Alone:
    """A trainer seen by rank zero alone (after teardown): broadcast returns what it is given."""

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer
        self.is_global_zero = True
        self.strategy = self

    def broadcast(self, obj: Any) -> Any:
        return obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)
