"""``BestLinker``: keeps an alias pointing at the best checkpoint seen so far.

It composes independent parts: the score policy (:mod:`._score`), the storage that
writes the alias (:mod:`._storage`), the JSON record next to it (:mod:`._record`)
and the transaction that puts them together safely (:mod:`._writer`). It asks the
storage what it can do, never what it is, and imports neither torch nor Lightning.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from lightning_bestlink import _record
from lightning_bestlink._checking import AliasChecks
from lightning_bestlink._deprecated import DeprecatedNames
from lightning_bestlink._errors import AliasConflictError, AliasWriteError, BestLinkWarning, warn
from lightning_bestlink._health import AliasReport
from lightning_bestlink._record import beaten_by, holds_better, read_record
from lightning_bestlink._restoring import StateIO
from lightning_bestlink._score import Mode, Ties, check_mode, check_ties, is_better, to_score
from lightning_bestlink._storage import LINK_CHOICES, LinkChoice, Storage, storage_for
from lightning_bestlink._storage.base import LostRace
from lightning_bestlink._targets import Checked, check_target
from lightning_bestlink._writer import AliasWriter

if TYPE_CHECKING:
    from lightning_bestlink._swap import SwapWriter

_log = logging.getLogger("lightning_bestlink")


class BestLinker(AliasChecks, StateIO, DeprecatedNames):
    """Keep ``link_path`` pointing at the best checkpoint passed to :meth:`update`.

    Args:
        link_path: where the alias goes, e.g. ``"checkpoints/best.ckpt"`` or an fsspec
            URL such as ``"s3://bucket/run/best.ckpt"``.
        mode: ``"min"`` (lower is better, e.g. a loss) or ``"max"`` (e.g. an accuracy).
        link: ``"auto"`` (symlink, else hardlink, else copy: falls back only when the
            filesystem does not support a kind), ``"symlink"``, ``"hardlink"`` or
            ``"copy"``. On fsspec URLs the alias is always a copy made by the filesystem.
        ties: ``"first"`` keeps the earlier checkpoint on an equal score (as Lightning
            does); ``"last"`` moves the alias to the newer one.
        durable: also ``fsync`` the copied data and the directory, so the alias survives
            a power loss, not only a killed process. Costs one or two disk flushes.
        storage_options: passed to fsspec for URLs (credentials, endpoint).
        lock_timeout: seconds to wait for another process that is updating the same alias
            (updates of one alias are serialised by a lock file next to it) before giving
            up with :class:`~lightning_bestlink.AliasBusyError`.
        shared: several processes (the trials of a sweep) update this alias: an improving
            update re-reads the record under the lock and moves the alias only if its score
            beats the best on disk, so the alias ends at the best of all writers. Needs a
            filesystem with file locks (local or network), or an object store with conditional
            writes (S3, GCS, Azure Blob), where the record is written only if no other writer
            has written it since it was read (docs/remote.md).
        on_move: called as ``on_move(record)`` each time :meth:`update` or :meth:`follow` has
            moved the alias, once the alias and its record agree; ``record`` is what
            :func:`read_record` would return (absolute ``target``, ``score``, ``extra``). It
            runs in the process that wrote the alias (rank zero), outside the linker's lock;
            an exception in it is reported as a :class:`BestLinkWarning` and changes nothing.

    A relative symlink is used, so moving the whole folder keeps the alias valid.
    Each update is staged under a hidden temporary name next to the alias and
    published with one rename: a reader sees the old alias or the new one, never
    a missing or half-written one.

    Example:
        >>> import os, shutil, tempfile
        >>> d = tempfile.mkdtemp()
        >>> for name in ("a.ckpt", "b.ckpt"):
        ...     with open(os.path.join(d, name), "w") as fh:
        ...         _ = fh.write(name)
        >>> linker = BestLinker(os.path.join(d, "best.ckpt"), mode="min")
        >>> linker.update(0.5, os.path.join(d, "a.ckpt"))
        True
        >>> linker.update(0.7, os.path.join(d, "b.ckpt"))  # worse: no file I/O at all
        False
        >>> os.readlink(linker.link_path) if os.path.islink(linker.link_path) else "a copy"
        'a.ckpt'
        >>> linker.best_score
        0.5
        >>> shutil.rmtree(d)
    """

    def __init__(
        self,
        link_path: str | os.PathLike[str],
        *,
        mode: Mode = "min",
        link: LinkChoice = "auto",
        ties: Ties = "first",
        durable: bool = False,
        storage_options: dict[str, Any] | None = None,
        lock_timeout: float = 60.0,
        shared: bool = False,
        on_move: Callable[[dict[str, Any]], object] | None = None,
    ) -> None:
        if on_move is not None and not callable(on_move):
            raise TypeError(f"on_move must be a function taking the record (or None), got {on_move!r}")
        self._on_move = on_move
        self._mode: Mode = check_mode(mode)
        self._ties: Ties = check_ties(ties)
        if link not in LINK_CHOICES:
            raise ValueError(f"link must be one of {', '.join(map(repr, LINK_CHOICES))}, got {link!r}")
        if not isinstance(link_path, (str, os.PathLike)) or not os.fspath(link_path):
            raise TypeError(f"link_path must be a non-empty str or os.PathLike, got {link_path!r}")
        self._storage: Storage = storage_for(link_path, storage_options)
        if link != "auto" and link not in self._storage.link_kinds:
            raise ValueError(
                f"link={link!r} is not possible on {os.fspath(link_path)!r}, which can only have "
                f"{' or '.join(self._storage.link_kinds)} aliases. Use link='auto' or one of those"
            )
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or not lock_timeout > 0:
            raise ValueError(f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}")
        refusal = self._storage.shared_refusal(os.fspath(link_path)) if shared else None
        if refusal is not None:
            raise ValueError(refusal)
        self._shared = bool(shared)
        self._link: LinkChoice = link
        raw = os.fspath(link_path)
        if "\0" in raw:
            raise ValueError(f"link_path must not contain a NUL byte, got {raw!r}")
        # "ckpt/", "ckpt/.", "." and ".." name a folder: the alias would take the folder's place
        if raw.endswith(("/", os.sep)) or os.path.basename(raw) in (".", ".."):
            raise ValueError(
                f"link_path must name the alias file, got the folder {raw!r}; e.g. {os.path.join(raw, 'best.ckpt')!r}"
            )
        self._link_path = self._storage.normalize(link_path)
        self._writer = AliasWriter(
            self._storage,
            self._link_path,
            link=link,
            durable=bool(durable),
            lock_timeout=float(lock_timeout),
            shared=self._shared,
        )
        self._record_path = self._writer.record_path
        # --- a shared alias without locks (an object store): conditional writes, see _swap.py
        self._swapper: SwapWriter | None = None
        if self._shared and not self._storage.can_lock:
            from lightning_bestlink._swap import SwapWriter  # only for a shared alias in a bucket

            self._writer = self._swapper = SwapWriter.like(self._writer)
        self._best_score: float | None = None
        self._best_path: str | None = None
        self._link_kind: str | None = None
        self._confined = False  # the best came from a state or record: it must stay inside the folder
        self._needs_check = False  # after load_state_dict: the next update checks the alias first
        self._restored = False  # the best came from load_state_dict (forgotten if its checkpoint is gone)
        self._follows_record = False  # made by from_record: the record on disk is the authority
        self._lock = threading.RLock()

    # --- read-only properties -------------------------------------------------

    @property
    def link_path(self) -> str:
        """The alias path (absolute for local paths, a URL for fsspec ones)."""
        return self._link_path

    @property
    def record_path(self) -> str:
        """The JSON record next to the alias (``<link_path>.bestlink.json``)."""
        return self._record_path

    @property
    def storage(self) -> Storage:
        """Where the alias lives (local or fsspec): what the helpers and the command line ask it."""
        return self._storage

    @property
    def best_score(self) -> float | None:
        """The best score so far; None before the first update, or when :meth:`follow` was given none."""
        return self._best_score

    @property
    def best_path(self) -> str | None:
        """The checkpoint the alias points at, or None before the first update."""
        return self._best_path

    @property
    def mode(self) -> Mode:
        """``"min"`` or ``"max"``."""
        return self._mode

    @property
    def ties(self) -> Ties:
        """``"first"`` or ``"last"``: which of two equal scores is the best."""
        return self._ties

    @property
    def link(self) -> LinkChoice:
        """The link kind asked for (may be ``"auto"``)."""
        return self._link

    @property
    def link_kind(self) -> str | None:
        """The link kind the current alias was made with, once known."""
        return self._link_kind

    @property
    def shared(self) -> bool:
        """Whether several processes update this alias (see the ``shared`` argument)."""
        return self._shared

    @property
    def needs_check(self) -> bool:
        """True after :meth:`load_state_dict` until the alias has been checked (by :meth:`repair`,
        or the next :meth:`update`); helpers that decide with :meth:`is_better` check it first."""
        return self._needs_check

    def __getstate__(self) -> dict[str, Any]:
        # picklable (Lightning deep-copies and pickles callbacks that hold a linker): the thread
        # lock is per process, so a copy gets its own
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._link_path!r}, mode={self._mode!r}, link={self._link!r}, "
            f"best_score={self._best_score!r}, best_path={self._best_path!r})"
        )

    # --- the decision ---------------------------------------------------------

    def is_better(self, score: Any) -> bool:
        """Whether ``score`` would become the best. Pure: no I/O, no state change."""
        return is_better(to_score(score), self._best_score, self._mode, self._ties)

    def update(self, score: Any, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> bool:
        """Offer a checkpoint; point the alias at it if its score is the best so far.

        The best score never gets worse: a score that is not better than :attr:`best_score`
        leaves everything as it is.

        Args:
            score: one real number (int, float, numpy scalar, 0-d tensor).
            path: the checkpoint file, or directory for sharded checkpoints. It must
                already be completely written; it is only checked when it becomes best.
            extra: JSON values recorded in the record (e.g. monitor, epoch, step).

        Returns:
            True when ``path`` became the best and the alias now points at it. False
            otherwise, after no file I/O at all (except the one-time check of the alias
            after :meth:`load_state_dict`).

        Raises:
            TypeError, ValueError: bad ``score``, ``path`` or ``extra``; nothing changed.
            FileNotFoundError: ``path`` does not exist.
            IsADirectoryError: ``path`` is a directory and ``link="hardlink"`` (directories
                have no hard links) or the alias is on an object store; nothing changed.
            AliasConflictError: a file this library did not write sits at ``link_path``.
            AliasWriteError: writing the alias failed; the old alias and state are intact (on a
                shared object-store alias whose record was already won, the record names the new
                checkpoint and the next update or :meth:`repair` completes the copy).
        """
        value = to_score(score)
        extra = _record.check_extra(extra)
        with self._lock:
            if self._needs_check:
                self._check_restored()
            # shared: the best on disk only improves, so a score that does not beat this
            # process's view of it cannot beat the disk either: no I/O either way
            if not is_better(value, self._best_score, self._mode, self._ties):
                return False
            # a conditional writer decides on the record before it looks at the checkpoint: a score
            # that does not beat the sweep's best costs one small read; the others check it first
            check = partial(self._checked_target, path)
            record = self._write(value, check() if self._writer.tries == 1 else check, extra, against_disk=self._shared)
        return self._moved(record)

    def follow(self, score: Any, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> bool:
        """Point the alias at ``path`` because a decision made elsewhere says it is the best.

        For callers that own the decision: the Trainer adapter follows
        ``ModelCheckpoint.best_model_path``, the Fabric helper follows rank zero. The
        score is recorded as given, even when it is not better than :attr:`best_score`
        (use :meth:`update` for a linker that decides itself); ``score=None`` records
        that there is no score (an alias that follows the latest save). A NaN score is
        refused (returns False, nothing changes). Raises as :meth:`update` does.
        """
        if self._shared:
            raise ValueError(
                "follow() would override the comparison with the other writers that shared=True is for; "
                "offer checkpoints to a shared linker with update()"
            )
        value = None if score is None else to_score(score)
        extra = _record.check_extra(extra)
        with self._lock:
            if value is not None and value != value:  # NaN: never the best, whoever decided
                return False
            self._needs_check = False  # the alias is rewritten now anyway
            record = self._write(value, self._checked_target(path), extra)
        return self._moved(record)

    # --- writing the alias ----------------------------------------------------

    def _checked_target(self, path: str | os.PathLike[str], *, confined: bool = False) -> Checked:
        return check_target(self._storage, self._link_path, self._link, path, confined=confined)

    def _write(
        self,
        value: float | None,
        target: Checked | Callable[[], Checked],
        extra: dict[str, Any],
        *,
        against_disk: bool = False,
        repair: bool = False,
    ) -> dict[str, Any] | None:
        """Point the alias at ``target`` (a checked checkpoint, or how to check it once needed);
        returns the new record. ``against_disk`` (a shared alias): only if ``value`` beats the best
        on disk, else that best is adopted and None returned. A writer that lost a conditional
        write to another looks and decides again."""
        writer, checked = self._writer, target if isinstance(target, Checked) else None
        for _ in range(writer.tries):
            with writer.exclusive():
                seen = writer.look_record()
                record = seen.record
                if against_disk and record and not beaten_by(value, record, self._mode, self._ties, self._record_path):
                    self._adopt(record)
                    return None
                if checked is None:
                    assert callable(target)
                    checked = target()
                try:
                    record = writer.publish(seen, value, checked, self._mode, extra, repair=repair)
                except LostRace:
                    _log.debug("%s: another writer wrote the record first; reading it again", self._record_path)
                    continue
                except AliasWriteError:
                    if writer.pending is not None:  # the record names it: the next update completes the alias
                        self._best_score, self._best_path, self._link_kind = value, checked.path, "copy"
                        self._needs_check = True
                    raise
            self._best_score, self._best_path, self._link_kind = value, checked.path, str(record["link"])
            _log.debug("%s -> %s (score %s)", self._link_path, checked.path, value)
            self._catch_up(writer.latest)  # a better best another writer recorded meanwhile
            return record
        raise AliasWriteError(
            f"pointing {self._link_path!r} at {checked and checked.path!r} failed: the record {self._record_path!r} "
            f"changed before each of {writer.tries} conditional writes; nothing was changed"
        )

    def _moved(self, record: dict[str, Any] | None) -> bool:
        """After a move: tell ``on_move`` (outside the lock); whether the alias moved."""
        if record is None:
            return False
        if self._on_move is not None:
            told = {**record, "target": self._storage.absolute(str(record["target"]), self._link_path)}
            try:
                self._on_move(told)
            except Exception as err:  # the user's hook must not break training, nor the alias
                _log.debug("on_move failed", exc_info=True)
                warn(
                    f"on_move for {self._link_path!r} raised {type(err).__name__}: {err}; the alias and its record "
                    f"are unaffected (they point at {told['target']!r})"
                )
        return True

    # --- many writers (shared=True), and records as the authority (from_record) ----

    def _adopt(self, record: dict[str, Any]) -> None:
        """Take the best another writer recorded as this process's view of the best."""
        target = self._storage.absolute(str(record["target"]), self._link_path)
        self._best_score, self._best_path, self._link_kind = record["score"], target, record.get("link")
        if not self._follows_record:  # another writer's record: input, kept inside the folder
            self._confined = True

    def _catch_up(self, record: dict[str, Any] | None) -> None:
        """Before a check or a repair, under the lock: a shared alias adopts a better best that
        another writer recorded; a linker rebuilt from its record follows the record as it is now
        (a writer may have moved the alias since it was read), so a repair never puts back an older best."""
        if record is not None and record["mode"] == self._mode and self._follows_record:
            self._adopt(record)
        elif self._shared and holds_better(record, self._best_score, self._mode):
            self._adopt(record)  # type: ignore[arg-type]


__all__ = ["AliasConflictError", "AliasReport", "AliasWriteError", "BestLinkWarning", "BestLinker", "read_record"]
