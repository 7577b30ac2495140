"""``BestLinker``: keeps an alias pointing at the best checkpoint seen so far.

It composes three independent parts: the score policy (:mod:`._score`), the
storage that writes the alias (:mod:`._storage`) and the JSON record next to it
(:mod:`._metadata`). It asks the storage what it can do, never what it is, and
imports neither torch nor Lightning.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any

from lightning_bestlink import _metadata
from lightning_bestlink._errors import AliasConflictError, AliasWriteError, BestLinkWarning
from lightning_bestlink._health import AliasReport, diagnose, not_owned_detail, owned
from lightning_bestlink._score import Mode, Ties, check_mode, check_ties, is_better, to_score
from lightning_bestlink._storage import LINK_CHOICES, LinkChoice, Staged, Storage, TargetType, storage_for

_STATE_VERSION = 1


class BestLinker:
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
    ) -> None:
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
        self._link: LinkChoice = link
        self._durable = bool(durable)
        self._link_path = self._storage.normalize(link_path)
        self._meta_path = _metadata.metadata_path(self._link_path)
        self._best_score: float | None = None
        self._best_path: str | None = None
        self._link_kind: str | None = None
        self._owned_ident: Any = None  # identity of the file alias this instance last wrote
        self._cleaned = False
        self._needs_verify = False
        self._lock = threading.RLock()

    # --- read-only properties -------------------------------------------------

    @property
    def link_path(self) -> str:
        """The alias path (absolute for local paths, a URL for fsspec ones)."""
        return self._link_path

    @property
    def metadata_path(self) -> str:
        """The JSON record next to the alias (``<link_path>.bestlink.json``)."""
        return self._meta_path

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
            extra: JSON values recorded in the metadata (e.g. monitor, epoch, step).

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
        extra = _metadata.check_extra(extra)
        with self._lock:
            if self._needs_verify:
                self.restore_alias()
            if not is_better(value, self._best_score, self._mode, self._ties):
                return False
            self._publish(value, *self._checked_target(path), extra)
            return True

    def follow(self, score: Any, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> bool:
        """Point the alias at ``path`` because a decision made elsewhere says it is the best.

        For callers that own the decision: the Trainer adapter follows
        ``ModelCheckpoint.best_model_path``, the Fabric helper follows rank zero. The
        score is recorded as given, even when it is not better than :attr:`best_score`
        (use :meth:`update` for a linker that decides itself); ``score=None`` records
        that there is no score (an alias that follows the latest save). A NaN score is
        refused (returns False, nothing changes). Raises as :meth:`update` does.
        """
        value = None if score is None else to_score(score)
        extra = _metadata.check_extra(extra)
        with self._lock:
            if value is not None and value != value:  # NaN: never the best, whoever decided
                return False
            self._needs_verify = False  # the alias is rewritten now anyway
            self._publish(value, *self._checked_target(path), extra)
            return True

    # --- writing the alias ----------------------------------------------------

    def _checked_target(self, path: str | os.PathLike[str]) -> tuple[str, TargetType]:
        """The normalised target and what it is; raises when it cannot be the best."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
        text = os.fspath(path)
        if not self._storage.handles(text):
            raise ValueError(
                f"path {text!r} and link_path {self._link_path!r} must be on the same filesystem; "
                f"put the alias next to the checkpoints"
            )
        target = self._storage.normalize(text)
        # compared before and after resolving: the alias itself is often a symlink
        if target != self._link_path:
            target = self._storage.resolve_target(target)
        if target == self._link_path:
            raise ValueError(
                f"path must not be the alias itself, got {text!r} (link_path is {self._link_path!r}); "
                f"pass the checkpoint file the alias should point at"
            )
        kind = self._storage.target_type(target)
        if kind is None:
            raise FileNotFoundError(f"path {text!r} does not exist; call update() after the checkpoint is fully saved")
        return target, kind

    def _read_record(self) -> dict[str, Any] | None:
        text = self._storage.read_text(self._meta_path)
        return None if text is None else _metadata.decode(text, self._meta_path)

    def _publish(self, value: float | None, target: str, kind: TargetType, extra: dict[str, Any]) -> None:
        storage = self._storage
        action = f"pointing {self._link_path!r} at {target!r}"
        try:  # nothing is written yet: any storage error here leaves everything as it was
            if not self._cleaned:
                storage.cleanup(self._link_path, self._meta_path)
                self._cleaned = True
            old_text = storage.read_text(self._meta_path)
            state = storage.inspect(self._link_path)
        except OSError as err:
            raise AliasWriteError.from_os_error(err, action) from err
        record = None if old_text is None else _metadata.decode(old_text, self._meta_path)
        if not owned(storage, self._link_path, state, record, self._owned_ident):
            raise AliasConflictError(not_owned_detail(self._link_path, state.kind, self._meta_path))
        try:
            staged = storage.stage(target, self._link_path, self._link, is_dir=kind == "dir", durable=self._durable)
        except IsADirectoryError:
            raise  # a directory this link kind cannot alias: a usage error, not a failed write
        except OSError as err:
            raise AliasWriteError.from_os_error(err, action) from err
        new = _metadata.make(
            alias=os.path.basename(self._link_path.rstrip("/")),
            target=storage.relative(target, self._link_path),
            link=staged.kind,
            mode=self._mode,
            score=value,
            unix_time=time.time(),
            alias_id=staged.ident,
            previous_alias_id=state.ident,
            extra=extra,
        )
        try:
            # the record goes first: it names the staged alias, so a run killed between the
            # two renames still recognises whichever alias it finds as its own
            storage.write_text(self._meta_path, _metadata.encode(new), durable=self._durable)
            try:
                storage.commit(staged, durable=self._durable)
            except BaseException:
                self._restore_record(old_text)
                raise
        except OSError as err:
            storage.abort(staged)
            raise AliasWriteError.from_os_error(err, action) from err
        except BaseException:
            storage.abort(staged)
            raise
        self._finish(value, target, staged, new)

    def _finish(self, value: float | None, target: str, staged: Staged, record: dict[str, Any]) -> None:
        if staged.ident is None and staged.kind != "symlink":
            # a copy the filesystem made itself has an identity only once it exists: record it
            try:
                record["alias_id"] = self._storage.identity(self._link_path)
                self._storage.write_text(self._meta_path, _metadata.encode(record), durable=self._durable)
            except OSError as err:  # the alias is right; only ownership on a rerun is weaker
                warnings.warn(f"could not update {self._meta_path!r}: {err}", BestLinkWarning, stacklevel=4)
        self._owned_ident = record["alias_id"]
        self._best_score = value
        self._best_path = target
        self._link_kind = staged.kind

    def _restore_record(self, old_text: str | None) -> None:
        try:
            if old_text is None:
                self._storage.remove_file(self._meta_path)
            else:
                self._storage.write_text(self._meta_path, old_text, durable=self._durable)
        except OSError:
            pass  # the original error is the one to report; a stale record is repaired later

    # --- health ---------------------------------------------------------------

    def verify(self) -> AliasReport:
        """Check that the alias exists and points at :attr:`best_path`. No changes made."""
        with self._lock:
            return self._verify()

    def _verify(self) -> AliasReport:
        state = self._storage.inspect(self._link_path)
        record = None
        if state.kind in ("file", "dir") and self._best_path is not None:
            try:
                record = self._read_record()
            except AliasConflictError as err:
                return AliasReport("foreign", self._link_path, self._best_path, None, str(err))
        return diagnose(
            self._storage, self._link_path, self._best_path, state, record, self._owned_ident, self._meta_path
        )

    def repair(self) -> AliasReport:
        """Rebuild the alias if it is missing, dangling or points away from :attr:`best_path`.

        Returns the report after the repair. Refuses (with :class:`AliasConflictError`)
        to replace a file this library did not write. When the best checkpoint itself
        is gone there is nothing to point at: the report says so and nothing changes.
        """
        with self._lock:
            before = self._verify()
            if before.ok or before.status == "foreign":
                if before.status == "foreign":
                    raise AliasConflictError(before.detail)
                return before
            assert self._best_path is not None
            kind = self._storage.target_type(self._best_path)
            if kind is None:
                return AliasReport(
                    before.status,
                    self._link_path,
                    self._best_path,
                    before.actual,
                    f"the best checkpoint {self._best_path!r} no longer exists; nothing to point at",
                )
            record = self._read_record()
            extra = dict(record.get("extra") or {}) if record else {}
            self._publish(self._best_score, self._best_path, kind, extra)
            return self._verify()

    def restore_alias(self) -> AliasReport:
        """After :meth:`load_state_dict`: check the alias now and rebuild it if needed.

        :meth:`load_state_dict` leaves this check for the next :meth:`update`; call it
        to have the alias right at once (the Trainer and Fabric adapters do). Rebuilds
        the alias if it is missing, dangling or points elsewhere. If the best checkpoint
        itself is gone, warns (:class:`BestLinkWarning`) and forgets it, so the next
        checkpoint offered becomes the best. Returns the report.
        """
        with self._lock:
            self._needs_verify = False
            report = self.repair()
            if not report.ok:
                warnings.warn(
                    f"the best checkpoint restored from state, {self._best_path!r} (score "
                    f"{self._best_score!r}), cannot be linked: {report.detail}. The next checkpoint "
                    f"offered will become the best",
                    BestLinkWarning,
                    stacklevel=3,
                )
                self._best_score = None
                self._best_path = None
            return report

    # --- state ----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain, picklable, JSON-serialisable state (keep it in your checkpoint)."""
        with self._lock:
            return self._state(self._best_score, self._best_path)

    def _state_after(self, score: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The :meth:`state_dict` this linker will have once ``path`` is the best with ``score``.

        For saving the linker inside the very checkpoint that becomes the best (the
        Fabric helper does this). No I/O; ``path`` need not exist yet.
        """
        with self._lock:
            return self._state(to_score(score), self._storage.normalize(path))

    def _state(self, best_score: float | None, best_path: str | None) -> dict[str, Any]:
        rel = None if best_path is None else self._storage.relative(best_path, self._link_path)
        return {
            "version": _STATE_VERSION,
            "link_path": self._link_path,
            "mode": self._mode,
            "ties": self._ties,
            "best_score": best_score,
            "best_path": best_path,
            "best_path_relative": rel,
            "link_kind": self._link_kind,
        }

    def load_state_dict(self, state: dict[str, Any], *, verify: bool = True, allow_outside: bool = False) -> None:
        """Restore the best from :meth:`state_dict`.

        With ``verify=True`` the alias is checked and, if needed, rebuilt on the next
        :meth:`update` (or call :meth:`restore_alias` to do it now). ``verify=False``
        trusts the state and never touches files for it (for ranks that only mirror the
        rank that writes). If the checkpoint is gone but the run folder was moved with
        the alias, the best is found next to the alias again. A best checkpoint outside
        the alias's folder is refused unless ``allow_outside=True`` (the state is input,
        not authority: pass it when you trust where the state came from).

        Raises:
            ValueError: ``state`` is not a state of this library's format, or was saved
                with another ``mode``, ``ties`` or state version; nothing changed.
        """
        if not isinstance(state, dict) or "best_score" not in state or "best_path" not in state:
            raise ValueError(
                f"state must be a dict from BestLinker.state_dict(), got {type(state).__name__} {state!r:.200}"
            )
        if state.get("version", _STATE_VERSION) != _STATE_VERSION:
            raise ValueError(
                f"state['version'] must be {_STATE_VERSION}, got {state.get('version')!r}: this state was "
                f"written by another version of lightning-bestlink; upgrade it or start without the state"
            )
        for name, mine in (("mode", self._mode), ("ties", self._ties)):
            if state.get(name, mine) != mine:
                raise ValueError(
                    f"state was saved with {name}={state.get(name)!r} but this linker has {name}={mine!r}; "
                    f"construct the linker with {name}={state.get(name)!r}"
                )
        best_score = state["best_score"]
        best_path = state["best_path"]
        with self._lock:
            if best_path is None:
                self._best_score, self._best_path = None, None
                self._needs_verify = False
                return
            score = None if best_score is None else to_score(best_score, name="state['best_score']")
            target = self._storage.normalize(best_path)
            rel = state.get("best_path_relative")
            moved = state.get("link_path", self._link_path) != self._link_path
            if isinstance(rel, str) and rel and moved and self._storage.target_type(target) is None:
                # the run folder moved with the alias: find the checkpoint next to the alias
                beside = self._storage.absolute(rel, self._link_path)
                if self._storage.target_type(beside) is not None:
                    target = beside
            self._best_score = score
            self._best_path = target
            self._link_kind = state.get("link_kind")
            self._needs_verify = bool(verify)

    @classmethod
    def from_metadata(
        cls, link_path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
    ) -> BestLinker:
        """A linker for an existing alias, rebuilt from its record (the CLI's ``repair`` uses this).

        The linker makes the alias the way the record says it was made. Raises
        ``FileNotFoundError`` when there is no record.
        """
        record = read_metadata(link_path, storage_options=storage_options)
        if record is None:
            raise FileNotFoundError(f"no lightning-bestlink record next to {os.fspath(link_path)!r}")
        probe = storage_for(link_path, storage_options)
        recorded_link = record.get("link")
        link: LinkChoice = recorded_link if recorded_link in probe.link_kinds else "auto"
        linker = cls(link_path, mode=record["mode"], link=link, storage_options=storage_options)
        linker.load_state_dict(
            {"best_score": record["score"], "best_path": record["target"], "link_kind": record.get("link")},
            verify=False,
        )
        return linker


def read_metadata(
    link_path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The record next to an alias, with ``target`` made absolute; None if there is none.

    Handy for evaluation jobs: ``read_metadata("ckpt/best.ckpt")["score"]``.
    """
    storage = storage_for(link_path, storage_options)
    alias = storage.normalize(link_path)
    path = _metadata.metadata_path(alias)
    text = storage.read_text(path)
    if text is None:
        return None
    record = _metadata.decode(text, path)
    record["target"] = storage.absolute(str(record["target"]), alias)
    return record


__all__ = ["AliasConflictError", "AliasReport", "AliasWriteError", "BestLinkWarning", "BestLinker", "read_metadata"]
