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
from typing import Any

from lightning_bestlink import _record
from lightning_bestlink._deprecated import DeprecatedNames, deprecated
from lightning_bestlink._errors import AliasConflictError, AliasWriteError, BestLinkWarning, warn
from lightning_bestlink._health import AliasReport, diagnose
from lightning_bestlink._record import beaten_by, holds_better, read_record
from lightning_bestlink._score import Mode, Ties, check_mode, check_ties, is_better, to_score
from lightning_bestlink._state import check_state, make_state
from lightning_bestlink._storage import LINK_CHOICES, AliasState, LinkChoice, Storage, storage_for
from lightning_bestlink._targets import Checked, check_inside, check_target, located
from lightning_bestlink._writer import AliasWriter, Look

_log = logging.getLogger("lightning_bestlink")


class BestLinker(DeprecatedNames):
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
            filesystem with file locks (local or network), not an object store.
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
        if shared and not self._storage.can_lock:
            raise ValueError(
                f"shared=True needs a filesystem with file locks (a local disk, NFS, a cluster filesystem): "
                f"{os.fspath(link_path)!r} is on an object store, where writers cannot exclude each other. Give "
                f"each writer its own alias there, or keep the shared alias on a shared filesystem"
            )
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
            AliasWriteError: writing the alias failed; the old alias and state are intact.
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
            record = self._write(value, self._checked_target(path), extra, against_disk=self._shared)
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
        self, value: float | None, target: Checked, extra: dict[str, Any], *, against_disk: bool = False
    ) -> dict[str, Any] | None:
        """Point the alias at ``target`` under its lock; returns the new record. ``against_disk``
        (a shared alias): only if ``value`` beats the best on disk, else that best is adopted
        and None returned."""
        with self._writer.exclusive():
            seen = self._writer.look()
            if (
                against_disk
                and seen.record
                and not beaten_by(value, seen.record, self._mode, self._ties, self._record_path)
            ):
                self._adopt(seen.record)
                return None
            return self._publish(seen, value, target, extra)

    def _publish(
        self,
        seen: Look,
        value: float | None,
        target: Checked,
        extra: dict[str, Any],
        repair: bool = False,
    ) -> dict[str, Any]:
        """Publish over what ``seen`` found (inside the lock), and take the result as this linker's best."""
        record = self._writer.publish(seen, value, target, self._mode, extra, repair=repair)
        self._best_score, self._best_path, self._link_kind = value, target.path, str(record["link"])
        _log.debug("%s -> %s (score %s)", self._link_path, target.path, value)
        return record

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

    # --- health ---------------------------------------------------------------

    def verify(self, *, deep: bool = False) -> AliasReport:
        """Check that the alias holds exactly the best checkpoint. Changes nothing.

        A symlink must name :attr:`best_path`; a hard link must be another name of it; a
        copy must be the copy its record names (its identity: an update killed before it
        published leaves the previous copy, which is reported as a mismatch), of the
        checkpoint as it was copied (size and modification time unchanged since). An
        identity cannot see a checkpoint rewritten in place with the same size and its
        modification time put back: ``deep=True`` also compares a copy's bytes with the
        checkpoint's (local files; reads both).

        With ``shared=True`` the best is first brought up to date with the record, under the
        alias's lock. A linker made by :meth:`from_record` checks against that record (a
        reader: it never waits for a writer's lock, nor creates one).
        """
        with self._lock:
            if not self._shared:
                return self._verify(deep=deep)
            with self._writer.exclusive():
                return self._verify(deep=deep)

    def _verify(self, *, deep: bool = False) -> AliasReport:
        state = self._storage.inspect(self._link_path)
        record = None
        # the record is read when another writer may have moved the best (shared), or to prove a
        # copy; a linker from from_record checks against the record it was made from (a reader)
        if self._shared or (state.kind in ("file", "dir") and self._best_path is not None):
            try:
                record = self._writer.read_record()
            except AliasConflictError as err:
                return AliasReport("foreign", self._link_path, self._best_path, None, str(err))
            self._catch_up(record)
        return self._diagnose(state, record, deep=deep)

    def _diagnose(self, state: AliasState, record: dict[str, Any] | None, *, deep: bool = False) -> AliasReport:
        return diagnose(
            self._storage,
            self._link_path,
            self._best_path,
            state,
            record,
            self._writer.owned_ident,
            self._record_path,
            deep=deep,
        )

    def repair(self) -> AliasReport:
        """Check the alias and rebuild it if it is missing, dangling, or does not hold :attr:`best_path`.

        Decided and done under the alias's lock, from the record as it is then. Returns the
        report after the repair. Refuses (with :class:`AliasConflictError`) to replace a file
        this library did not write. When the best checkpoint itself is gone there is nothing
        to point at: the report says so and nothing changes; if that best came from a saved
        state (:meth:`load_state_dict`), it is also forgotten with a :class:`BestLinkWarning`,
        so the next checkpoint offered becomes the best.
        """
        with self._lock:
            self._needs_check = False
            with self._writer.exclusive():
                seen = self._writer.look()
                self._catch_up(seen.record)
                before = self._diagnose(seen.state, seen.record)
                if before.status == "foreign":
                    raise AliasConflictError(before.detail)
                if before.ok:
                    return before
                assert self._best_path is not None
                try:
                    target = self._checked_target(self._best_path, confined=self._confined)
                except FileNotFoundError:
                    return self._lost(before)
                record = seen.record
                same = record is not None and self._storage.absolute(str(record["target"]), self._link_path)
                # the record's extra describes its own target only: kept when the target is the same
                extra = dict(record.get("extra") or {}) if record is not None and same == target.path else {}
                self._publish(seen, self._best_score, target, extra, repair=True)
            return self._verify()

    def _lost(self, before: AliasReport) -> AliasReport:
        """The best checkpoint is gone: nothing to point at (and a restored best is forgotten)."""
        report = AliasReport(
            before.status,
            self._link_path,
            self._best_path,
            before.actual,
            f"the best checkpoint {self._best_path!r} no longer exists; nothing to point at",
        )
        if self._restored:
            warn(
                f"the best checkpoint restored from state, {self._best_path!r} (score {self._best_score!r}), "
                f"cannot be linked: {report.detail}. The next checkpoint offered will become the best"
            )
            self._best_score = None
            self._best_path = None
        return report

    def _check_restored(self) -> None:
        """The first update after :meth:`load_state_dict` checks (and rebuilds) the alias once."""
        self.repair()

    # --- state ----------------------------------------------------------------

    def state_dict(self, *, after: tuple[Any, str | os.PathLike[str]] | None = None) -> dict[str, Any]:
        """Plain, picklable, JSON-serialisable state (keep it in your checkpoint).

        ``after=(score, path)``: the state this linker will have once ``path`` is the best
        with ``score``, for saving the linker inside the very checkpoint that becomes the
        best (the ``save_and_link`` helpers do this). No I/O; ``path`` need not exist yet.
        """
        with self._lock:
            if after is None:
                return self._state(self._best_score, self._best_path)
            score, path = after
            return self._state(to_score(score), self._storage.normalize(path))

    def _state(self, best_score: float | None, best_path: str | None) -> dict[str, Any]:
        rel = None if best_path is None else self._storage.relative(best_path, self._link_path)
        return make_state(self._link_path, self._mode, self._ties, best_score, best_path, rel, self._link_kind)

    def load_state_dict(
        self,
        state: dict[str, Any],
        *,
        allow_outside: bool = False,
        mirror: bool = False,
        verify: bool | None = None,
    ) -> None:
        """Restore the best from :meth:`state_dict`.

        The alias is checked and, if needed, rebuilt on the next :meth:`update` (call
        :meth:`repair` to do it now). If the checkpoint is gone but the run folder was moved
        with the alias, the best is found next to the alias again. A best checkpoint outside
        the alias's folder is refused unless ``allow_outside=True`` (the state is input, not
        authority: pass it when you trust where the state came from).

        ``mirror=True`` takes the state as the copy of another process's linker (ranks that
        only mirror the rank that writes): nothing on disk is looked at, now or later.
        ``verify=False`` is the deprecated spelling of ``mirror=True``.

        Raises:
            ValueError: ``state`` is not a state of this library's format, or was saved
                with another ``mode``, ``ties`` or state version; nothing changed.
        """
        if verify is not None:
            deprecated("load_state_dict(verify=...)", "load_state_dict(mirror=not verify)")
            mirror = not verify
        best_score, best_path = check_state(state, mode=self._mode, ties=self._ties)
        with self._lock:
            if best_path is None:
                self._best_score, self._best_path = None, None
                self._needs_check = False
                return
            target = self._storage.normalize(best_path)
            if not mirror:  # the state is input: look before acting on it (ranks that only mirror never act)
                target = located(self._storage, self._link_path, target, state)
                if not allow_outside:
                    check_inside(self._storage, self._link_path, target, f"state['best_path'] {best_path!r}")
            self._best_score, self._best_path = best_score, target
            self._link_kind = state.get("link_kind") if state.get("link_kind") in LINK_CHOICES else None
            self._confined = not allow_outside
            self._needs_check = self._restored = not mirror

    @classmethod
    def from_record(
        cls,
        link_path: str | os.PathLike[str],
        *,
        record: dict[str, Any] | None = None,
        storage_options: dict[str, Any] | None = None,
        allow_outside: bool = False,
    ) -> BestLinker:
        """A linker for an existing alias, rebuilt from its record (the CLI's ``repair`` uses this).

        The linker makes the alias the way the record says it was made. The record is
        input, not authority: its target must lie inside the alias's folder unless
        ``allow_outside=True``. ``record``: the record as :func:`read_record` returned it,
        when the caller has read it already (it is not read again). Raises
        ``FileNotFoundError`` when there is no record,
        :class:`~lightning_bestlink.RecordError` when it is not a usable one.
        """
        if record is None:
            record = read_record(link_path, storage_options=storage_options)
            if record is None:
                raise FileNotFoundError(f"no lightning-bestlink record next to {os.fspath(link_path)!r}")
        probe = storage_for(link_path, storage_options)
        recorded_link = record.get("link")
        link: LinkChoice = recorded_link if recorded_link in probe.link_kinds else "auto"
        linker = cls(link_path, link=link, storage_options=storage_options, **cls._record_kwargs(record))
        state = {"best_score": record["score"], "best_path": record["target"], "link_kind": record.get("link")}
        linker.load_state_dict(state, allow_outside=allow_outside)
        linker._follows_record = True  # the record, not this process, says what the best is
        linker._restored = False  # a repair of a gone best reports it; there is no run to forget it for
        return linker

    @classmethod
    def _record_kwargs(cls, record: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments a record fixes (a subclass with fixed ones overrides this)."""
        return {"mode": record["mode"]}


__all__ = ["AliasConflictError", "AliasReport", "AliasWriteError", "BestLinkWarning", "BestLinker", "read_record"]
