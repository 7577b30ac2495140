"""The Trainer adapter, written once for both ``lightning.pytorch`` and ``pytorch_lightning``.

``BestLinkMixin`` holds no linking logic: it decides *when* (right after a checkpoint
becomes ``best_model_path`` and is written, before Lightning evicts the previous best)
and *with what* (``best_model_path`` and its score, described by monitor, epoch, step and
file name); :class:`~lightning_bestlink.BestLinker` does the file work. It imports neither
Lightning package: ``callbacks.py`` and ``pytorch_lightning.py`` combine it with each
package's ``ModelCheckpoint``. Its neighbours: ``_trainer_api`` (arguments, the record for
``ckpt_path="best"``), ``_trainer_resume`` (resume decisions, pure), ``_trainer_async``
(moves behind ``AsyncCheckpointIO``'s writes) and ``_trainer_log`` (``log_best``).
"""

# mypy: disable-error-code="safe-super"
# (ModelCheckpointLike stands for the real ModelCheckpoint, whose methods super() reaches)
from __future__ import annotations

import copy
import inspect
import logging
import warnings
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from lightning_bestlink._errors import BestLinkWarning
from lightning_bestlink._ranks import on_rank_zero
from lightning_bestlink._score import check_mode, to_score
from lightning_bestlink._storage import Storage, storage_for
from lightning_bestlink._trainer_api import (
    ModelCheckpointLike,
    SaveBest,
    alias_stem,
    best_from_record,
    check_arguments,
    check_names,
    check_options,
    signature,
)
from lightning_bestlink._trainer_async import Background, is_async, worker
from lightning_bestlink._trainer_log import BestLog, metric_name
from lightning_bestlink._trainer_resume import (
    checkpoint_position,
    described,
    has_position,
    restored_best,
    taken_over_key,
)
from lightning_bestlink.linker import BestLinker, read_record

if TYPE_CHECKING:
    _Base = ModelCheckpointLike
else:
    _Base = object

_DEFAULT_NAME = "best"
_C = TypeVar("_C", bound=type)
OnMove = Callable[[dict[str, Any]], object]


def with_model_checkpoint_signature(cls: _C) -> _C:
    """Give ``cls`` an ``__init__`` whose signature lists ``save_best``, every parameter of the
    installed ``ModelCheckpoint``, then the mixin's keyword-only ones: for IDEs, ``inspect`` and
    jsonargparse. The parameters are read from the installed Lightning, so nothing is listed by hand.
    """
    base: Any = _lightning_class(cls)
    ours = signature(BestLinkMixin.__init__).parameters
    this, *theirs = signature(base.__init__).parameters.values()
    keywords = [p for p in ours.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    params = [this, ours["save_best"], *theirs, *keywords]

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
    #: the package's checkpoint IO classes that write in the background (``AsyncCheckpointIO``)
    ASYNC_CHECKPOINT_IO: tuple[type, ...] = ()

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
        log_best: bool = True,
        on_move: OnMove | None = None,
        **kwargs: Any,
    ) -> None:
        """Args:
        save_best: ``None``/``False`` (off), ``True`` (``"auto"``: symlink, else hardlink, else
            copy), or a link kind: ``"symlink"``, ``"hardlink"``, ``"copy"``.
        best_name: the alias's name (``best`` gives ``dirpath/best.ckpt``; ``best.ckpt`` too).
            The default keeps the class's ``CHECKPOINT_NAME_BEST``.
        sweep_best: an alias shared by every run of a sweep, e.g. ``"sweep/best.ckpt"``, with
            each run's ``dirpath`` below its folder: every new best of this run is offered to it
            (before Lightning deletes the previous one) and it ends at the best checkpoint of all
            runs, ``BestLinker(shared=True)``. Needs ``monitor``.
        log_best: on each move of the alias, log its score to the Trainer's loggers as
            ``<best_name>/<monitor>`` (``best/val_loss``), and its path as text where a logger
            keeps text (W&B summary, MLflow tag, TensorBoard text) as ``<metric>_path``.
        on_move: called as ``on_move(record)`` on global rank zero each time the alias has
            moved, once alias and record agree (``BestLinker(on_move=)``); with
            ``AsyncCheckpointIO`` on the checkpoint writer's thread. Its exceptions become a
            ``BestLinkWarning``.
        """
        self._best_link_kind = check_arguments(save_best, best_name, sweep_best, log_best, on_move)
        self.sweep_best = None if sweep_best is None else str(sweep_best)
        self.log_best = log_best
        self._on_move = on_move
        self._best_model_path = ""
        self._fit_started = False  # from the first fit on, best_model_path is Lightning's alone
        self._warned: set[str] = set()
        super().__init__(*args, **kwargs)
        self.save_best = save_best
        # the stock class's state key (see _generate_state_key), its class name found once
        self._stock_name = _lightning_class(type(self)).__qualname__
        name = check_options(self, best_name, save_best)
        if name != _DEFAULT_NAME:
            self.CHECKPOINT_NAME_BEST = name
        self._best_linker: BestLinker | None = None
        self._sweep_linker: BestLinker | None = None
        self._saves: Storage | None = None  # where Lightning saves (asked whether a save path is a link)
        self._linked_best_path = ""  # the best_model_path last handled (all ranks)
        self._aliased = ""  # the best_model_path the alias points at, as Lightning spells it
        self._best_saved: tuple[str, int, int] = ("", 0, 0)  # the last save of best_model_path: epoch, step
        self._loaded: dict[str, Any] | None = None  # the best_link state of a restored checkpoint
        self._background = Background()
        self._log: BestLog | None = None

    # --- naming and setup -----------------------------------------------------

    @property
    def best_name(self) -> str:
        """The alias's name without extension (``CHECKPOINT_NAME_BEST``)."""
        return alias_stem(self.CHECKPOINT_NAME_BEST, self.FILE_EXTENSION)

    @property
    def best_link_path(self) -> str | None:
        """Where the best alias goes (``dirpath/best.ckpt``), once ``dirpath`` is known."""
        if self._best_link_kind is None or getattr(self, "dirpath", None) is None:
            return None
        return str(self.format_checkpoint_name({}, self.best_name))

    @property
    def best_linker(self) -> BestLinker | None:
        """The :class:`BestLinker` behind the alias (after ``setup``)."""
        return self._best_linker

    def _generate_state_key(self, **kwargs: Any) -> str:
        # the stock ModelCheckpoint's key (Lightning builds it ~20 times an epoch): switching between
        # the two classes keeps the state
        return f"{self._stock_name}{kwargs!r}"

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._loaded = None  # a state restored by an earlier run of this callback is not this run's
        if stage == "fit":
            self._fit_started = True
        if self.dirpath is not None and self._saves is None:
            self._saves = storage_for(str(self.dirpath))
        if self._best_link_kind is None:
            return
        check_names(self, trainer, BestLinkMixin)
        link_path = self.best_link_path
        assert link_path is not None
        linker = self._best_linker
        if linker is None or linker.link_path != linker.storage.normalize(link_path):  # first setup, or moved
            on_move = self._moved if self.log_best or self._on_move is not None else None
            self._best_linker = linker = BestLinker(
                link_path, mode=check_mode(self.mode), link=self._best_link_kind, on_move=on_move
            )
            self._saves = linker.storage
        self._log = BestLog(metric_name(self.best_name, self.monitor)) if self.log_best else None
        if self.sweep_best is not None and self._sweep_linker is None:
            self._sweep_linker = BestLinker(self.sweep_best, mode=check_mode(self.mode), shared=True)

    def _moved(self, record: dict[str, Any]) -> None:
        """The linker's ``on_move``: note the move for the loggers, then the user's hook."""
        if self._log is not None:
            self._log.moved(record)
        if self._on_move is not None:
            self._on_move(record)  # its exceptions become the linker's BestLinkWarning

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
            self._warn_once(
                "ckpt_path='best' before this callback's first fit reads the best alias's record, but "
                "dirpath=None: the alias's folder is known only once the Trainer sets the callback up (with "
                "a logger, a new version_N), after Lightning has resolved 'best'. Give "
                "ModelCheckpointWithLinkBest(dirpath=...) the folder of the run whose best you want, or pass "
                "that checkpoint's path as ckpt_path"
            )
            return ""
        try:
            return best_from_record(alias, self.monitor, self.mode)
        except (OSError, ValueError, TypeError, KeyError) as err:
            self._warn_once(f"ckpt_path='best': the record of {alias!r} cannot name the best checkpoint: {err}")
            return ""

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._warn(message, category=BestLinkWarning)

    # --- when the alias moves --------------------------------------------------

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        saves = self._saves
        # a save to a path that is a link would overwrite the file it points to (e.g. last.ckpt
        # left as a link by save_last="link"): drop the link, keep its target. Only where links exist
        if trainer.is_global_zero and saves is not None and _is_link(saves, filepath):
            saves.remove_file(filepath)
        super()._save_checkpoint(trainer, filepath)
        if filepath == self._best_model_path:
            self._best_saved = (filepath, int(trainer.current_epoch), int(trainer.global_step))
        # the new file exists now (or is queued to be written), and Lightning evicts the old best
        # only after this returns: the alias never points at a deleted checkpoint
        self._link_best(trainer, saved=filepath)
        self._report(trainer)

    def _link_best(self, trainer: Any, saved: str, background: bool = True) -> None:
        linker = self._best_linker
        best = self.best_model_path
        if trainer.is_global_zero and self._background.retry:
            self._background.retry, self._linked_best_path = False, ""  # a queued move found no file
        # also when the best file itself was just rewritten (a fixed filename with
        # enable_version_counter=False): a copy or hard link would otherwise keep the old bytes
        if linker is None or not best or (best == self._linked_best_path and saved != best):
            return
        score = None
        if self.monitor is not None:
            if self.best_model_score is None:
                return  # never record a score that was not measured
            score = to_score(self.best_model_score)
        self._linked_best_path = best
        where = f"Epoch {int(trainer.current_epoch)}, global step {int(trainer.global_step)}: "
        move = partial(self._move, linker, score, best, saved, self._best_saved)
        if background and is_async(trainer.strategy.checkpoint_io, self.ASYNC_CHECKPOINT_IO):
            # only rank zero writes, so only rank zero moves the alias, behind the write
            if trainer.is_global_zero:
                executor = worker(trainer.strategy.checkpoint_io)
                job = partial(self._after_move, move, linker, best, score, where, retry=True)
                if executor is not None:
                    self._background.submit(executor, job)
                else:
                    job()
            return
        if trainer.world_size == 1:
            moved = move()
        else:
            moved = on_rank_zero(trainer.is_global_zero, trainer.strategy.broadcast, linker, move, "update")
        self._after_move(lambda: moved, linker, best, score, where, retry=False)

    def _move(
        self, linker: BestLinker, score: float | None, best: str, saved: str, seen: tuple[str, int, int]
    ) -> bool | None:
        """Point the alias at ``best`` (rank zero); None when the file is not there (yet)."""
        try:
            extra = self._describe(linker.storage.normalize(best), [], seen)
            if score is None:  # the alias follows the latest save: there is no score to record
                return linker.follow(None, best, extra=extra)
            if saved == best == self._aliased:  # the file the alias names was rewritten: what it holds now
                return linker.follow(score, best, extra=extra)
            moved = linker.update(score, best, extra=extra)  # never worse than the best the alias holds
            if moved and self._sweep_linker is not None:  # this run's new best, offered to the sweep
                run = linker.storage.relative(linker.storage.normalize(str(self.dirpath)), self._sweep_linker.link_path)
                self._sweep_linker.update(score, best, extra={**extra, "run": run})
            return moved
        except FileNotFoundError:  # written in the background by a checkpoint IO we cannot queue behind
            return None

    def _after_move(
        self,
        move: Callable[[], bool | None],
        linker: BestLinker,
        best: str,
        score: float | None,
        where: str,
        *,
        retry: bool,
    ) -> None:
        moved = move()
        if moved is None:  # the next save, or teardown, tries again
            if retry:
                self._background.retry = True
            else:
                self._linked_best_path = ""
            return
        if moved:
            self._aliased = best
            self._background.release(linker.best_path)
        if self.verbose:
            self._say_moved(where, linker, best, score, moved)

    def _describe(self, target: str, known: list[dict[str, Any] | None], seen: tuple[str, int, int]) -> dict[str, Any]:
        """The record's extra for ``target``: monitor, file name, and the epoch and step of its save
        (seen by this run, from a record that names it, or read from the file; else left out)."""
        extra = described(target, self.monitor, known)
        if not has_position(extra):
            saved, epoch, step = seen
            linker = self._best_linker
            if saved and linker is not None and linker.storage.normalize(saved) == target:
                position: tuple[int, int] | None = (epoch, step)
            else:
                position = checkpoint_position(target)
            if position is not None:
                extra.update(epoch=position[0], step=position[1])
        return extra

    def _remove_checkpoint(self, trainer: Any, filepath: str) -> None:
        linker = self._best_linker
        if linker is None or not trainer.is_global_zero:
            super()._remove_checkpoint(trainer, filepath)
            return
        # Lightning removes the previous best right after asking for the next save: a file the
        # alias names waits until the alias has moved (behind the write, with AsyncCheckpointIO)
        path = linker.storage.normalize(filepath)
        executor = worker(trainer.strategy.checkpoint_io) if self._background.pending else None
        remove = partial(super()._remove_checkpoint, trainer, filepath)
        self._background.remove(path, remove, lambda: linker.best_path == path, executor)

    def _report(self, trainer: Any) -> None:
        """On rank zero: what failed in the background, and the moves for the loggers."""
        if not trainer.is_global_zero:
            return
        for failure in self._background.failures():
            self._warn(f"the best alias was left where it was: {failure}", category=BestLinkWarning)
        if self._log:
            loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
            step = getattr(loop, "_batches_that_stepped", trainer.global_step)  # Lightning's own logging step
            for failure in self._log.flush(list(trainer.loggers), int(step)):
                self._warn(f"log_best could not log the best to a logger: {failure}", category=BestLinkWarning)

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, *args, **kwargs)
        if self._log or self._background.pending:
            self._report(trainer)  # a move behind a background write, now on the main thread

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # the checkpoint IO has been torn down before this hook (its writes and the moves queued
        # behind them are done); the ranks may be gone, so rank zero alone
        if stage == "fit" and trainer.is_global_zero and self._best_linker is not None:
            if self._background.retry or (self.best_model_path and not self._linked_best_path):
                self._background.retry, self._linked_best_path = False, ""
                self._link_best(_Alone(trainer), saved="", background=False)
            self._report(trainer)
        super().teardown(trainer, pl_module, stage)

    def __getstate__(self) -> dict[str, Any]:
        # the linker holds a lock and is made again by setup; the alias and its record stay on disk
        state = dict(self.__dict__)
        state.update(_best_linker=None, _linked_best_path="", _sweep_linker=None)
        return state

    def _say_moved(self, where: str, linker: BestLinker, best: str, score: float | None, moved: bool) -> None:
        alias = linker.link_path.rsplit("/", 1)[-1]
        if moved:
            what = "the latest save" if score is None else f"{self.monitor}={score:0.5f}"
            self._info(f"{where}{alias} -> {best!r} ({what})")
        else:
            kept = "?" if linker.best_score is None else f"{linker.best_score:0.5f}"
            self._info(
                f"{where}{alias} stays at {linker.best_path!r} ({self.monitor}={kept}): "
                f"best_model_path {best!r} ({self.monitor}={score:0.5f}) is not better"
            )

    # --- resume -------------------------------------------------------------------

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        states = checkpoint.get("callbacks")
        if not isinstance(states, dict):
            return
        # saved by this class before it used the stock key, by the seed's class of the same
        # name, or by a subclass: take it over, unless another callback here owns that key
        taken = {cb.state_key for cb in trainer.callbacks if cb is not self}
        key = taken_over_key(states, self.state_key, type(self).__mro__, _lightning_class(type(self)), taken)
        if key is not None:
            self.load_state_dict(copy.deepcopy(states[key]))
            if self.verbose:
                self._info(f"{type(self).__name__}: took over the state saved as {key!r}")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = super().state_dict()
        if self._best_linker is not None:
            # read back on resume; it may lag behind best_model_path in the very checkpoint that
            # became the best (the alias moves after the save): see on_train_start
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
        try:
            state = restored_best(loaded, self.best_model_score, best, monitor=self.monitor, mode=self.mode)
        except ValueError as err:
            raise ValueError(
                f"the 'best_link' state of {self.state_key!r} in {trainer.ckpt_path!r} cannot be restored: {err}"
            ) from err
        if state is None:
            return

        def restore() -> str:
            linker.load_state_dict(state, allow_outside=True)  # the user chose to resume from this checkpoint
            before = linker.verify()
            after = linker.restore_alias()
            repaired = "" if before.ok or not after.ok else before.detail
            if linker.best_path is None:
                return repaired
            saved = read_record(linker.link_path)
            # the record of the alias where the state was saved (a resume into a new folder)
            origin = state.get("link_path")
            try:
                before_move = read_record(origin) if isinstance(origin, str) and origin != linker.link_path else None
            except (OSError, ValueError):
                before_move = None  # only a description: the checkpoint itself is read instead
            wanted = self._describe(linker.best_path, [saved, before_move], self._best_saved)
            if saved is None or (saved["target"], saved["score"], saved["extra"]) != (
                linker.best_path,
                linker.best_score,
                wanted,
            ):
                # no record (the seed wrote none; a new folder has none yet), or one that does not
                # describe this target (it was another checkpoint's, or written without its epoch)
                linker.follow(linker.best_score, linker.best_path, extra=wanted)
                repaired = repaired or (
                    "its record was missing" if saved is None else "its record did not describe its checkpoint"
                )
            return repaired

        if trainer.world_size == 1:
            repaired = restore()
        else:
            repaired = on_rank_zero(trainer.is_global_zero, trainer.strategy.broadcast, linker, restore, "restore")
        self._linked_best_path = best
        self._aliased = best if linker.best_path is not None and state["best_path"] == best else ""
        self._report(trainer)
        if self.verbose and repaired:
            alias, score = linker.link_path.rsplit("/", 1)[-1], linker.best_score
            what = "the latest save" if score is None else f"{self.monitor}={score:0.5f}"
            self._info(f"Resumed: {alias} -> {linker.best_path!r} ({what}), rebuilt because {repaired}")


def _is_link(storage: Storage, path: str) -> bool:
    """Whether ``path`` is a symbolic link (asked only of a storage that has links: no request on a remote one)."""
    return "symlink" in storage.link_kinds and storage.inspect(path).kind == "symlink"


class _Alone:
    """A trainer seen by rank zero alone (after teardown): broadcast returns what it is given."""

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer
        self.is_global_zero = True
        self.world_size = 1
        self.strategy = self

    def broadcast(self, obj: Any) -> Any:
        return obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)
