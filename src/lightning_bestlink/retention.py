"""``Retention``: delete the checkpoints nobody needs, in loops that have no ``save_top_k``.

Keeps the ``keep_best`` best checkpoints by score, the current best and the latest (what the
aliases point at), and deletes the rest, as each new checkpoint is saved. Which to keep is
decided by a pure policy (:mod:`._keep`); deleting is :mod:`._prune`'s, and only ever touches:

- checkpoints this object saw saved (:meth:`Retention.saved`), fingerprinted right then, and
  still the same files: a file someone put at such a path later is never deleted;
- inside the best alias's folder;
- after the aliases moved, and never what any of its aliases points at.

The list of what it saw saved lives next to the best alias, in ``<alias>.bestlink.retention.json``
(written atomically), so it survives a kill and a resume without being part of any checkpoint.
It is read as input, not authority: entries outside the alias's folder or of the wrong shape
are a clear error that names the file.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

from lightning_bestlink import _keep, _prune
from lightning_bestlink._errors import AliasWriteError, BestLinkWarning, RecordError
from lightning_bestlink._score import to_score
from lightning_bestlink._storage import TargetType
from lightning_bestlink._storage._files import tmp_name
from lightning_bestlink.latest import check_step
from lightning_bestlink.linker import BestLinker

FORMAT = "lightning-bestlink-retention/1"
SUFFIX = ".bestlink.retention.json"  # not ".bestlink.json": that ends an alias's record
#: the list is read only up to this size (about 150 bytes per checkpoint kept)
LIMIT = 4 << 20


class _Entry(NamedTuple):
    path: str  # normalised, absolute (or a full URL)
    score: float | None
    step: int | None
    seq: int
    kind: TargetType
    fingerprint: Any


class Retention:
    """Delete saved checkpoints that are neither among the ``keep_best`` best, the current best, nor the latest.

    Args:
        best: the run's best alias. Its ``mode`` and ``ties`` rank the checkpoints, its
            checkpoint is never deleted, and the list of saved checkpoints lives next to it.
        latest: the latest alias (a :class:`~lightning_bestlink.LatestLinker`), if there is
            one: its checkpoint is never deleted either. Without it the newest save is kept.
        keep_best: how many of the best-scoring checkpoints to keep besides those; 0 keeps
            only the current best and the latest.
        protect: more aliases (another metric's best, say) whose checkpoints must stay.

    Call :meth:`saved` after each checkpoint is saved and its aliases have moved;
    ``save_and_link`` (plain loops) and ``lightning_bestlink.fabric.save_and_link`` do it for
    you, on rank zero. Checkpoints must lie in the best alias's folder (or below it).
    """

    def __init__(
        self,
        best: BestLinker,
        latest: BestLinker | None = None,
        *,
        keep_best: int = 1,
        protect: Sequence[BestLinker] = (),
    ) -> None:
        if not isinstance(best, BestLinker):
            raise TypeError(f"best must be a BestLinker (the run's best alias), got {type(best).__name__} {best!r}")
        for name, other in [("latest", latest), *(("protect", p) for p in protect)]:
            if other is not None and not isinstance(other, BestLinker):
                raise TypeError(f"{name} must be a BestLinker or LatestLinker, got {type(other).__name__} {other!r}")
            if other is not None and not best.storage.handles(other.link_path):
                raise ValueError(
                    f"{name} alias {other.link_path!r} and the best alias {best.link_path!r} must be on the "
                    f"same filesystem; put the aliases next to the checkpoints"
                )
        self._best = best
        self._latest = latest
        self._keep_best = _keep.check_keep_best(keep_best)
        self._protect = tuple(protect)
        self._storage = best.storage
        self._record_path = best.link_path + SUFFIX
        self._entries: list[_Entry] | None = None  # read on first use: ranks that only mirror never read it
        self._lock = threading.Lock()

    @property
    def best(self) -> BestLinker:
        """The best alias: it ranks the checkpoints."""
        return self._best

    @property
    def latest(self) -> BestLinker | None:
        """The latest alias, if any."""
        return self._latest

    @property
    def protect(self) -> tuple[BestLinker, ...]:
        """More aliases whose checkpoints are never deleted."""
        return self._protect

    @property
    def keep_best(self) -> int:
        """How many of the best-scoring checkpoints are kept besides the current best and the latest."""
        return self._keep_best

    @property
    def record_path(self) -> str:
        """The list of saved checkpoints (``<best alias>.bestlink.retention.json``)."""
        return self._record_path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._best.link_path!r}, keep_best={self._keep_best})"

    def _aliases(self) -> list[BestLinker]:
        return [self._best, *([self._latest] if self._latest is not None else []), *self._protect]

    def refusal(self, path: str | os.PathLike[str]) -> str | None:
        """Why a checkpoint about to be saved at ``path`` could not be managed (None: it can). No I/O."""
        text = os.fspath(path)
        if not self._storage.handles(text):
            return f"path {text!r} is not on the filesystem of the best alias {self._best.link_path!r}"
        if not self._storage.in_folder_of(self._best.link_path, self._storage.normalize(text)):
            return (
                f"Retention deletes checkpoints only inside the best alias's folder "
                f"{os.path.dirname(self._best.link_path)!r}, got path {text!r}; save the checkpoints there"
            )
        return None

    # --- the one public action ------------------------------------------------------

    def saved(self, path: str | os.PathLike[str], score: Any, *, step: Any = None) -> list[str]:
        """Record that ``path`` was just saved with ``score``, then delete what is no longer kept.

        Call it after the aliases moved to ``path`` (if they do): :meth:`record` then
        :meth:`prune`. ``score`` is ranked as the best alias ranks scores; ``None`` means the
        checkpoint has no score and is always kept. Returns the paths deleted.

        Raises:
            TypeError, ValueError: bad ``score`` or ``step``, or ``path`` outside the best
                alias's folder; nothing changed.
            FileNotFoundError: nothing at ``path``.
            RecordError: the list next to the alias is damaged or not this library's.
            AliasWriteError: the list could not be written; nothing was deleted.
        """
        self.record(path, score, step=step)
        return self.prune()

    def record(self, path: str | os.PathLike[str], score: Any, *, step: Any = None) -> None:
        """Put the checkpoint just saved at ``path`` on the list, with its fingerprint; delete nothing.

        The ``save_and_link`` helpers call it right after saving, before the aliases move, so
        that a run killed in between still knows the checkpoint is its own. Raises as :meth:`saved`.
        """
        value = None if score is None else to_score(score)
        step = None if step is None else check_step(step)
        with self._lock:
            target, kind = self._checked(path)
            fp = _prune.fingerprint(self._storage.identity(target))
            entries = [e for e in self._load() if e.path != target]  # saved again at the same path
            seq = max((e.seq for e in entries), default=0) + 1
            self._write([*entries, _Entry(target, value, step, seq, kind, fp)])

    def prune(self) -> list[str]:
        """Delete the listed checkpoints the policy no longer keeps; returns their paths.

        Call it after the aliases moved. A checkpoint that changed since it was saved, or that
        an alias points at, is left in place; one that fails to delete is retried at the next
        call (both warn with :class:`~lightning_bestlink.BestLinkWarning`).
        """
        with self._lock:
            entries = self._load()
            protected = {a.best_path for a in self._aliases() if a.best_path is not None}
            ranks = [_keep.Saved(e.path, e.score, e.seq) for e in entries]
            best_path, best_score = self._best.best_path, self._best.best_score
            if best_path is not None and best_score is not None and all(e.path != best_path for e in entries):
                # a best saved before this list began is never deleted (not on the list), but it
                # still counts as one of the best
                ranks.append(_keep.Saved(best_path, best_score, -1))
            doomed = _keep.to_delete(
                ranks, keep_best=self._keep_best, mode=self._best.mode, ties=self._best.ties, protected=protected
            )
            if not doomed:
                return []
            deleted = self._delete({s.path for s in doomed}, entries)
            self._write(self._entries or [])
            return deleted

    # --- deleting -------------------------------------------------------------------

    def _delete(self, doomed: set[str], entries: list[_Entry]) -> list[str]:
        deleted, forget = [], set()
        aliases = self._aliases()
        for entry in entries:
            if entry.path not in doomed:
                continue
            if _prune.aliased(self._storage, entry.path, aliases):
                continue  # kept for now; deleted once no alias points at it
            try:
                trash = tmp_name(self._record_path, "trash")
                outcome = _prune.delete(self._storage, entry.path, entry.kind, entry.fingerprint, trash)
            except OSError as err:
                warnings.warn(
                    f"could not delete {entry.path!r}, which the retention policy no longer keeps: {err}; "
                    f"it is tried again after the next save",
                    BestLinkWarning,
                    stacklevel=4,
                )
                continue
            if outcome == "changed":
                warnings.warn(
                    f"{entry.path!r} changed since it was saved (another file is there now); the retention "
                    f"policy leaves it in place and forgets it",
                    BestLinkWarning,
                    stacklevel=4,
                )
            elif outcome == "deleted":
                deleted.append(entry.path)
                import logging  # the core logs, never prints; the import is free after the first

                logging.getLogger("lightning_bestlink").info("retention: deleted %s", entry.path)
            forget.add(entry.path)
        self._entries = [e for e in entries if e.path not in forget]
        return deleted

    def _checked(self, path: str | os.PathLike[str]) -> tuple[str, TargetType]:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise TypeError(f"path must be a non-empty str or os.PathLike, got {path!r}")
        text = os.fspath(path)
        problem = self.refusal(text)
        if problem:
            raise ValueError(problem)
        storage = self._storage
        given = storage.normalize(text)
        target = storage.resolve_target(given)
        if any(a.link_path in (given, target) for a in self._aliases()):
            raise ValueError(f"path {text!r} is an alias, not a checkpoint; pass the checkpoint that was saved")
        kind = storage.target_type(target)
        if kind is None:
            raise FileNotFoundError(f"path {text!r} does not exist; call saved() once the checkpoint is written")
        if kind == "other":
            raise ValueError(f"path {text!r} is not a regular file or directory; a checkpoint is one of those")
        if kind == "dir":  # a storage that cannot alias a directory cannot delete one atomically either
            storage.check_can_alias(target, "copy", is_dir=True)
        return target, kind

    # --- the list next to the alias ---------------------------------------------------

    def _load(self) -> list[_Entry]:
        if self._entries is None:
            # what a killed run left half-done: a directory being deleted, a list being written
            self._storage.cleanup(self._record_path)
            text = self._storage.read_text(self._record_path, LIMIT)
            self._entries = [] if text is None else self._decode(text)
        return self._entries

    def _write(self, entries: list[_Entry]) -> None:
        storage, alias = self._storage, self._best.link_path
        record = {
            "format": FORMAT,
            "alias": os.path.basename(alias),
            "mode": self._best.mode,
            "ties": self._best.ties,
            "saved": [
                {
                    "path": storage.relative(e.path, alias),
                    "score": e.score if e.score is None or math.isfinite(e.score) else repr(e.score),
                    "step": e.step,
                    "seq": e.seq,
                    "kind": e.kind,
                    "fingerprint": e.fingerprint,
                }
                for e in entries
            ],
        }
        try:
            storage.write_text(self._record_path, json.dumps(record, separators=(", ", ": ")) + "\n", durable=False)
        except OSError as err:
            raise AliasWriteError.from_os_error(err, f"writing the retention list {self._record_path!r}") from err
        self._entries = entries

    def _decode(self, text: str) -> list[_Entry]:
        path = self._record_path
        try:
            record = json.loads(text)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("saved"), list):
            raise RecordError(
                f"{path!r} exists but is not a lightning-bestlink retention list (no 'format': {FORMAT!r}); "
                f"nothing was deleted. Move it away (the checkpoints it listed are then kept) or choose another "
                f"link_path"
            )
        for name, mine in (("mode", self._best.mode), ("ties", self._best.ties)):
            if record.get(name) != mine:
                raise RecordError(
                    f"{path!r} ranks checkpoints with {name}={record.get(name)!r}, but the best alias has "
                    f"{name}={mine!r}; nothing was deleted. Use the same {name}, or move the list away to start over"
                )
        entries = []
        for i, raw in enumerate(record["saved"]):
            entry, problem = self._entry(raw)
            if entry is None:
                raise RecordError(
                    f"{path!r} is damaged: entry {i} {problem}; nothing was deleted. Move it away to start over "
                    f"(the checkpoints it listed are then kept)"
                )
            entries.append(entry)
        return entries

    def _entry(self, raw: Any) -> tuple[_Entry | None, str]:
        """One entry of the list, checked (the list is input: it decides what gets deleted)."""
        if not isinstance(raw, dict):
            return None, f"must be an object, got {raw!r:.80}"
        rel, score, step, seq = raw.get("path"), raw.get("score"), raw.get("step"), raw.get("seq")
        if not isinstance(rel, str) or not rel or "\0" in rel:
            return None, f"'path' must be a non-empty path, got {rel!r:.80}"
        target = self._storage.absolute(rel, self._best.link_path)
        if not self._storage.in_folder_of(self._best.link_path, target):
            return None, f"names {rel!r}, which lies outside the alias's folder"
        if score in ("nan", "inf", "-inf"):
            score = float(score)
        elif isinstance(score, bool) or not isinstance(score, (int, float, type(None))):
            return None, f"'score' must be a number or null, got {score!r:.80}"
        elif isinstance(score, int):
            try:
                score = float(score)
            except OverflowError:
                return None, f"'score' is out of range for a float, got {str(score)[:40]}..."
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            return None, f"'seq' must be a whole number >= 0, got {seq!r:.80}"
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            return None, f"'step' must be a whole number >= 0 or null, got {step!r:.80}"
        if raw.get("kind") not in ("file", "dir"):
            return None, f"'kind' must be 'file' or 'dir', got {raw.get('kind')!r:.80}"
        fp = raw.get("fingerprint")
        if not (isinstance(fp, str) or (isinstance(fp, list) and all(type(v) is int for v in fp))):
            return None, f"'fingerprint' must be a string or a list of integers, got {fp!r:.80}"
        return _Entry(target, score, step, seq, raw["kind"], fp), ""


__all__ = ["Retention"]
