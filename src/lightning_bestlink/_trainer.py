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
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from lightning_bestlink._errors import BestLinkWarning, warn
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
    lightning_class,
    with_signature,
)
from lightning_bestlink._trainer_async import Alone, Background, is_link, on_every_rank, worker
from lightning_bestlink._trainer_log import BestLog, metric_name, said
from lightning_bestlink._trainer_resume import describe, restore_alias, restored_best, taken_over_key
from lightning_bestlink.linker import BestLinker

if TYPE_CHECKING:
    _Base = ModelCheckpointLike
else:
    _Base = object

_DEFAULT_NAME = "best"
_C = TypeVar("_C", bound=type)
OnMove = Callable[[dict[str, Any]], object]


def with_model_checkpoint_signature(cls: _C) -> _C:
    """Give ``cls`` an ``__init__`` whose signature lists ``save_best``, every parameter of the
    installed ``ModelCheckpoint``, then the mixin's keyword-only ones (see ``_trainer_api``)."""
    return with_signature(cls, BestLinkMixin)


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
        warn(message, category)

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
        best_name: the alias's name: ``"best"`` (default) and ``"best.ckpt"`` give ``dirpath/best.ckpt``.
        sweep_best: an alias shared by every run of a sweep (``"sweep/best.ckpt"``), offered each new
            best of this run; it ends at the best checkpoint of all runs. Needs ``monitor``.
        log_best: log the score as ``<best_name>/<monitor>`` to the Trainer's loggers at each move,
            and the path as text where a logger keeps text (W&B summary, MLflow tag, TensorBoard).
        on_move: ``on_move(record)`` on global rank zero after each move, alias and record agreeing
            (with ``AsyncCheckpointIO``: on its writer thread); its exceptions become a ``BestLinkWarning``.
        """
        self._best_link_kind = check_arguments(save_best, best_name, sweep_best, log_best, on_move)
        self.sweep_best = None if sweep_best is None else str(sweep_best)
        self.log_best = log_best
        self._on_move = on_move
        self._best_model_path = ""
        self._fit_started = False  # from the first fit on, best_model_path is Lightning's alone
        self._warned: set[str] = set()
        # the stock class's state key (see _generate_state_key), its class name found once
        self._stock_name = lightning_class(type(self), BestLinkMixin).__qualname__
        self._state_key: tuple[dict[str, Any], str] | None = None
        super().__init__(*args, **kwargs)
        self.save_best = save_best
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

    # --- naming and setup ----------------------------------------------------

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
        # the stock ModelCheckpoint's key, so switching between the two classes keeps the state;
        # Lightning asks ~20 times an epoch: the text is made again only when a setting changed
        made = self._state_key
        if made is None or made[0] != kwargs:
            made = self._state_key = (kwargs, f"{self._stock_name}{kwargs!r}")
        return made[1]

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
        if trainer.is_global_zero and saves is not None and is_link(saves, filepath):
            saves.remove_file(filepath)
        super()._save_checkpoint(trainer, filepath)
        if filepath == self._best_model_path and saves is not None:  # what the record will say of it
            self._best_saved = (saves.normalize(filepath), int(trainer.current_epoch), int(trainer.global_step))
        # the new file exists now (or is queued to be written), and Lightning evicts the old best
        # only after this returns: the alias never points at a deleted checkpoint
        self._link_best(trainer, saved=filepath)
        self._report(trainer)

    def _link_best(self, trainer: Any, saved: str, background: bool = True) -> None:
        linker = self._best_linker
        best = self.best_model_path
        if self._background.retry and trainer.is_global_zero:
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
        where = f"Epoch {int(trainer.current_epoch)}, global step {int(trainer.global_step)}: " if self.verbose else ""
        move = partial(self._move, linker, score, best, saved, self._best_saved)
        if background and self._background.queues(trainer.strategy.checkpoint_io, self.ASYNC_CHECKPOINT_IO):
            # only rank zero writes, so only rank zero moves the alias, behind the write
            if trainer.is_global_zero:
                executor = worker(trainer.strategy.checkpoint_io)
                job = partial(self._after_move, move, linker, best, score, where, retry=True)
                if executor is not None:
                    self._background.submit(executor, job)
                else:
                    job()
            return
        moved = on_every_rank(trainer, linker, move, "update")
        self._after_move(lambda: moved, linker, best, score, where, retry=False)

    def _move(
        self, linker: BestLinker, score: float | None, best: str, saved: str, seen: tuple[str, int, int]
    ) -> bool | None:
        """Point the alias at ``best`` (rank zero); None when the file is not there (yet)."""
        try:
            extra = describe(linker.storage.normalize(best), self.monitor, [], seen, alias=linker)
            if score is None:  # the alias follows the latest save: there is no score to record
                return linker.follow(None, best, extra=extra)
            if saved == best == self._aliased:  # the file the alias names was rewritten: what it holds now
                return linker.follow(score, best, extra=extra)
            moved = linker.update(score, best, extra=extra)  # never worse than the best the alias holds
            sweep = self._sweep_linker
            if moved and sweep is not None:  # this run's new best, offered to the sweep
                sweep.update(score, best, extra={**extra, "run": self._run_name(linker, sweep)})
            return moved
        except FileNotFoundError:  # written in the background by a checkpoint IO we cannot queue behind
            return None

    def _run_name(self, linker: BestLinker, sweep: BestLinker) -> str:
        """The run's folder as the sweep's record names it: relative to the sweep alias's folder
        when inside it (a trial's folder in a bucket too, where records keep whole URLs)."""
        folder = linker.storage.normalize(str(self.dirpath))
        run = sweep.storage.relative(folder, sweep.link_path)
        parent = sweep.link_path.rsplit("/", 1)[0] + "/"
        return run[len(parent) :] if run == folder and run.startswith(parent) else run

    def _after_move(
        self, move: Callable[[], Any], linker: BestLinker, best: str, score: Any, where: str, *, retry: bool
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
            self._info(said(where, linker, best, self.monitor, score, moved))

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
                self._link_best(Alone(trainer), saved="", background=False)
            self._report(trainer)
        super().teardown(trainer, pl_module, stage)

    def __getstate__(self) -> dict[str, Any]:
        # the linker holds a lock and is made again by setup; the alias and its record stay on disk
        state = dict(self.__dict__)
        state.update(_best_linker=None, _linked_best_path="", _sweep_linker=None)
        return state

    # --- resume -------------------------------------------------------------------

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        states = checkpoint.get("callbacks")
        if not isinstance(states, dict):
            return
        # saved by this class before it used the stock key, by the seed's class of the same
        # name, or by a subclass: take it over, unless another callback here owns that key
        taken = {cb.state_key for cb in trainer.callbacks if cb is not self}
        base = lightning_class(type(self), BestLinkMixin)
        key = taken_over_key(states, self.state_key, type(self).__mro__, base, taken)
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

        restore = partial(restore_alias, linker, state, self.monitor, self._best_saved)
        repaired = on_every_rank(trainer, linker, restore, "restore")
        self._linked_best_path = best
        self._aliased = best if linker.best_path is not None and state["best_path"] == best else ""
        self._report(trainer)
        if self.verbose and repaired:
            self._info(
                said("Resumed: ", linker, str(linker.best_path), self.monitor, linker.best_score, True, repaired)
            )
