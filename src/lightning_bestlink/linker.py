"""``BestLinker``: keeps an alias pointing at the best checkpoint seen so far.

It composes three independent parts: the score policy (:mod:`._score`), the
storage that writes the alias (:mod:`._publish`) and the JSON record next to it
(:mod:`._metadata`). It imports neither torch nor Lightning.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Literal, NamedTuple

from lightning_bestlink import _metadata
from lightning_bestlink._errors import AliasConflictError, AliasWriteError
from lightning_bestlink._publish import (
    LINK_CHOICES,
    AliasState,
    LinkChoice,
    Staged,
    Storage,
    now,
    storage_for,
    wrap_os_error,
)
from lightning_bestlink._score import Mode, Ties, check_mode, check_ties, is_better, to_score

Status = Literal["ok", "no-best", "missing", "dangling", "mismatch", "foreign"]
_STATE_VERSION = 1


class BestLinkWarning(UserWarning):
    """Something about the alias needed attention, and was handled."""


class AliasReport(NamedTuple):
    """The health of an alias, as :meth:`BestLinker.verify` sees it."""

    status: Status
    link_path: str
    expected: str | None
    actual: str | None
    detail: str

    @property
    def ok(self) -> bool:
        """True when nothing needs repair (a healthy alias, or no best yet and no alias)."""
        return self.status in ("ok", "no-best")


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
        if self._storage.remote and link in ("symlink", "hardlink"):
            raise ValueError(
                f"link={link!r} is not possible on {os.fspath(link_path)!r}: fsspec filesystems "
                f"have no links. Use link='auto' or 'copy' (a copy made by the filesystem itself)"
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
        """The best score so far, or None before the first successful update."""
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

    def update(
        self,
        score: Any,
        path: str | os.PathLike[str],
        *,
        extra: dict[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Offer a checkpoint; point the alias at it if its score is the best so far.

        Args:
            score: one real number (int, float, numpy scalar, 0-d tensor).
            path: the checkpoint file, or directory for sharded checkpoints. It must
                already be completely written; it is only checked when it becomes best.
            extra: JSON values recorded in the metadata (e.g. monitor, epoch, step).
            force: point the alias at ``path`` whatever the score, for callers that follow
                a decision made elsewhere (the Trainer adapter follows ModelCheckpoint's
                ``best_model_path``). NaN is still refused.

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
            better = is_better(value, self._best_score, self._mode, self._ties)
            if not (better or (force and value == value)):  # value == value: not NaN
                return False
            self._publish(value, *self._checked_target(path), extra)
            return True

    # --- writing the alias ----------------------------------------------------

    def _checked_target(self, path: str | os.PathLike[str]) -> tuple[str, Literal["file", "dir"]]:
        """The normalised target and what it is; raises when it cannot be the best."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
        text = os.fspath(path)
        is_url = "://" in text and not text.startswith(("file://", "local://"))
        if is_url != self._storage.remote:
            raise ValueError(
                f"path {text!r} and link_path {self._link_path!r} must be on the same filesystem; "
                f"put the alias next to the checkpoints"
            )
        target = self._storage.normalize(text)
        # compared before and after resolving: the alias itself is often a symlink
        if target != self._link_path and not self._storage.remote and os.path.islink(target):
            target = os.path.realpath(target)  # a link to a link would follow the wrong one later
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

    def _check_owned(self, state: AliasState, record: dict[str, Any] | None) -> None:
        if state.kind in ("missing", "symlink"):
            return  # replacing a link never destroys data
        if state.ident is not None and state.ident == self._owned_ident:
            return
        if record is not None:
            if state.ident in (record.get("alias_id"), record.get("previous_alias_id")):
                return
            if record.get("alias_id") is None and self._storage.remote:
                # a copy was under way when the writer stopped: the alias is ours if it matches
                target = self._storage.absolute(str(record.get("target")), self._link_path)
                if self._storage.size(self._link_path) == self._storage.size(target):
                    return
        raise AliasConflictError(
            f"link_path {self._link_path!r} is a {state.kind} that lightning-bestlink did not write "
            f"(no matching record in {self._meta_path!r}); nothing was changed. Move or delete it, "
            f"or choose another link_path"
        )

    def _publish(self, value: float, target: str, kind: Literal["file", "dir"], extra: dict[str, Any]) -> None:
        storage = self._storage
        action = f"pointing {self._link_path!r} at {target!r}"
        try:  # nothing is written yet: any storage error here leaves everything as it was
            if not self._cleaned:
                storage.cleanup(self._link_path, self._meta_path)
                self._cleaned = True
            old_text = storage.read_text(self._meta_path)
            state = storage.inspect(self._link_path)
        except OSError as err:
            raise wrap_os_error(err, action) from err
        record = None if old_text is None else _metadata.decode(old_text, self._meta_path)
        self._check_owned(state, record)
        try:
            staged = storage.stage(target, self._link_path, self._link, is_dir=kind == "dir", durable=self._durable)
        except IsADirectoryError:
            raise  # a directory this link kind cannot alias: a usage error, not a failed write
        except OSError as err:
            raise wrap_os_error(err, action) from err
        new = _metadata.make(
            alias=os.path.basename(self._link_path.rstrip("/")),
            target=storage.relative(target, self._link_path),
            link=staged.kind,
            mode=self._mode,
            score=value,
            unix_time=now(),
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
            raise wrap_os_error(err, action) from err
        except BaseException:
            storage.abort(staged)
            raise
        self._finish(value, target, staged, new)

    def _finish(self, value: float, target: str, staged: Staged, record: dict[str, Any]) -> None:
        if staged.ident is None and self._storage.remote:
            # the filesystem's copy has an identity only once it exists: record it
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
        storage, alias, expected = self._storage, self._link_path, self._best_path
        state = storage.inspect(alias)

        def report(status: Status, actual: str | None, detail: str) -> AliasReport:
            return AliasReport(status, alias, expected, actual, detail)

        if expected is None:
            if state.kind == "missing":
                return report("no-best", None, "no best checkpoint yet and no alias")
            return report("ok", None, "no best checkpoint recorded by this linker; alias left as found")
        if state.kind == "missing":
            return report("missing", None, f"{alias!r} does not exist")
        if state.kind == "symlink":
            actual = state.points_to
            if storage.target_type(alias) is None:
                return report("dangling", actual, f"{alias!r} points at {actual!r}, which does not exist")
            if actual == expected or _same_file(alias, expected):
                return report("ok", actual, "symlink to the best checkpoint")
            return report("mismatch", actual, f"{alias!r} points at {actual!r}, not at {expected!r}")
        try:
            record = self._read_record()
        except AliasConflictError as err:
            return report("foreign", None, str(err))
        if not storage.remote and _same_file(alias, expected):
            return report("ok", expected, "hard link to the best checkpoint")
        try:
            self._check_owned(state, record)
        except AliasConflictError as err:
            return report("foreign", None, str(err))
        assert record is not None or state.ident == self._owned_ident
        recorded = None if record is None else storage.absolute(str(record["target"]), alias)
        if record is not None and recorded != expected:
            return report("mismatch", recorded, f"{alias!r} is a copy of {recorded!r}, not of {expected!r}")
        if state.kind == "file" and storage.size(alias) != storage.size(expected):
            return report("mismatch", recorded, f"{alias!r} differs in size from {expected!r}")
        return report("ok", expected, f"{state.kind} copy of the best checkpoint")

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
            assert self._best_path is not None and self._best_score is not None
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
        """Run now the check that :meth:`load_state_dict` leaves for the next update.

        Rebuilds the alias if it is missing, dangling or points elsewhere. If the best
        checkpoint itself is gone, warns (:class:`BestLinkWarning`) and forgets it, so the
        next checkpoint offered becomes the best. Returns the report.
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
        """Plain, picklable, JSON-serialisable state."""
        with self._lock:
            return self._state(self._best_score, self._best_path)

    def prospective_state(self, score: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The :meth:`state_dict` this linker will have once ``path`` is the best with ``score``.

        For saving the linker inside the very checkpoint that becomes the best (the
        Fabric helper does this). No I/O; ``path`` need not exist yet.
        """
        with self._lock:
            return self._state(to_score(score), self.normalize(path))

    def normalize(self, path: str | os.PathLike[str]) -> str:
        """The form :attr:`best_path` takes for ``path`` (absolute, or a full URL). No I/O."""
        return self._storage.normalize(path)

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

    def load_state_dict(self, state: dict[str, Any], *, verify: bool = True) -> None:
        """Restore the best from :meth:`state_dict`.

        With ``verify=True`` the alias is checked and, if needed, rebuilt on the next
        :meth:`update` (or call :meth:`repair` to do it now). ``verify=False`` trusts
        the state and never touches files for it (for ranks that only mirror the
        rank that writes).
        """
        if not isinstance(state, dict) or "best_score" not in state or "best_path" not in state:
            raise ValueError(
                f"state must be a dict from BestLinker.state_dict(), got {type(state).__name__} {state!r:.200}"
            )
        if state.get("mode", self._mode) != self._mode:
            raise ValueError(
                f"state was saved with mode={state.get('mode')!r} but this linker has "
                f"mode={self._mode!r}; construct the linker with mode={state.get('mode')!r}"
            )
        best_score = state["best_score"]
        best_path = state["best_path"]
        with self._lock:
            if best_score is None or best_path is None:
                self._best_score, self._best_path = None, None
                self._needs_verify = False
                return
            target = self._storage.normalize(best_path)
            rel = state.get("best_path_relative")
            if rel and self._storage.target_type(target) is None:
                # the run folder moved: find the checkpoint next to the alias
                moved = self._storage.absolute(rel, self._link_path)
                if self._storage.target_type(moved) is not None:
                    target = moved
            self._best_score = to_score(best_score, name="state['best_score']")
            self._best_path = target
            self._link_kind = state.get("link_kind")
            self._needs_verify = bool(verify)

    @classmethod
    def from_metadata(
        cls, link_path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
    ) -> BestLinker:
        """Rebuild a linker from the record next to an existing alias (used by the CLI).

        Raises ``FileNotFoundError`` when there is no record.
        """
        record = read_metadata(link_path, storage_options=storage_options)
        if record is None:
            raise FileNotFoundError(f"no lightning-bestlink record next to {os.fspath(link_path)!r}")
        linker = cls(link_path, mode=record["mode"], storage_options=storage_options)
        if record.get("link") in LINK_CHOICES and not linker._storage.remote:
            linker._link = record["link"]  # a repair makes the alias the way it was made
        linker._best_score = float(record["score"])
        linker._best_path = record["target"]  # read_metadata made it absolute
        linker._link_kind = record.get("link")
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


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


__all__ = ["AliasConflictError", "AliasReport", "AliasWriteError", "BestLinkWarning", "BestLinker", "read_metadata"]
