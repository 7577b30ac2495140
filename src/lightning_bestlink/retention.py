"""``Retention``: delete the checkpoints nobody needs, in loops that have no ``save_top_k``.

What is kept is a pure policy (:mod:`._keep`): the ``keep_best`` best by score, what the
aliases point at, the newest save, every save without a score, and every save that scored
strictly better than the best alias holds (the alias failed to move to it: kept until it has
moved past it; a tie is not, whatever ``ties``). What may be deleted is decided on the
authority of the run itself, never of a file in the folder:

- only checkpoints this run saved, or the run it resumed from: the list travels in the run's
  state, inside its checkpoints (:meth:`Retention.state_dict`, which the ``save_and_link``
  helpers save in each checkpoint, this one included). A checkpoint the list lost (a resume
  from an older checkpoint, a state left out) is kept, never deleted;
- each identified right after it was saved (the storage's identity: device, inode, size and
  mtime locally; size and version remotely), and deleted only if it is still that file or
  directory, owned by this user, reached from the alias's folder without following a link
  (:meth:`~lightning_bestlink._storage.Storage.remove_saved`);
- after the aliases moved, and never what any of them points at.

The list of lightning-bestlink 0.1, a file next to the alias (``best.ckpt.bestlink.retention.json``),
is no longer read: anyone who can write the folder could add to it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from lightning_bestlink import _record
from lightning_bestlink._errors import link_loop, warn
from lightning_bestlink._keep import Entry, Saved, check_keep_best, decode, encode, next_seq, to_delete, unvouched
from lightning_bestlink._record import bookkeeping
from lightning_bestlink._score import is_better, to_score
from lightning_bestlink._storage import Ident, TargetType
from lightning_bestlink.linker import BestLinker

_log = logging.getLogger("lightning_bestlink")
#: the list of 0.1, next to the best alias: no longer read (a warning says so once)
OLD_LIST_SUFFIX = ".bestlink.retention.json"


# --- Retention ----------------------------------------------------------------------------------


class Retention:
    """Delete saved checkpoints that are neither among the ``keep_best`` best, the current best, nor the latest.

    Args:
        best: the run's best alias. Its ``mode`` and ``ties`` rank the checkpoints, and its
            checkpoint is never deleted. Checkpoints must lie in its folder (or below it).
        latest: the latest alias (a :class:`~lightning_bestlink.LatestLinker`), if there is
            one: its checkpoint is never deleted either. Without it the newest save is kept.
        keep_best: how many of the best-scoring checkpoints to keep besides those; 0 keeps
            only the current best and the latest.
        protect: more aliases (another metric's best, a sweep's) whose checkpoints must stay.

    Put it in the state you save and hand it to ``save_and_link(..., retention=keep)`` (plain
    loops) or ``lightning_bestlink.fabric.save_and_link``: each checkpoint then carries the list
    of what the run saved, this one included, and a resume from it (``keep.load_state_dict``,
    or ``lightning_bestlink.fabric.load``) goes on deleting what the policy lets go.

    Example:
        >>> import os, tempfile
        >>> from lightning_bestlink import BestLinker, Retention
        >>> d = tempfile.mkdtemp()
        >>> best = BestLinker(os.path.join(d, "best.ckpt"), mode="min")
        >>> keep = Retention(best, keep_best=0)
        >>> for epoch, loss in enumerate([0.5, 0.3, 0.4]):
        ...     path = os.path.join(d, f"epoch={epoch}.ckpt")
        ...     with open(path, "w") as fh:
        ...         _ = fh.write("weights")
        ...     _ = best.update(loss, path)
        ...     gone = keep.saved(path, loss)
        >>> sorted(n for n in os.listdir(d) if n.startswith("epoch="))  # the best, and the newest
        ['epoch=1.ckpt', 'epoch=2.ckpt']
        >>> [e["path"] for e in keep.state_dict()["saved"]]
        ['epoch=1.ckpt', 'epoch=2.ckpt']
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
        if isinstance(protect, (BestLinker, str, bytes)) or not isinstance(protect, Sequence):
            raise TypeError(f"protect must be a list of BestLinker aliases, got {protect!r}; e.g. protect=[sweep]")
        named = [("latest", latest)] if latest is not None else []
        for name, other in [*named, *((f"protect[{i}]", p) for i, p in enumerate(protect))]:
            if not isinstance(other, BestLinker):
                raise TypeError(f"{name} must be a BestLinker or LatestLinker, got {type(other).__name__} {other!r}")
            if not best.storage.handles(other.link_path):
                raise ValueError(
                    f"{name} alias {other.link_path!r} and the best alias {best.link_path!r} must be on the "
                    f"same filesystem; put the aliases next to the checkpoints"
                )
        self._best, self._latest, self._protect = best, latest, tuple(protect)
        self._keep_best = check_keep_best(keep_best)
        self._storage = best.storage
        link_path = best.link_path
        self._prefix = link_path[: len(link_path) - len(os.path.basename(link_path))]  # the folder, with its "/"
        self._entries: list[Entry] = []
        self._resumed = False  # a loaded state: a removal a killed run left half-way is undone once
        self._told_old_list = False
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
        """Deprecated: the list of 0.1 next to the alias, no longer written nor read (removed in 0.3)."""
        warn(
            "Retention.record_path is deprecated: the list of saved checkpoints is in the run's state "
            "(Retention.state_dict()), not in a file; it will be removed in 0.3",
            DeprecationWarning,
        )
        return self._best.link_path + OLD_LIST_SUFFIX

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._best.link_path!r}, keep_best={self._keep_best})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # picklable (Fabric 2.0 pickles what is in its state): the lock is not
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def aliases(self) -> list[BestLinker]:
        """The aliases whose checkpoints are never deleted: best, latest, protect."""
        return [self._best, *([self._latest] if self._latest is not None else []), *self._protect]

    def refusal(self, path: str | os.PathLike[str]) -> str | None:
        """Why a checkpoint about to be saved at ``path`` could not be managed (None: it can)."""
        text = os.fspath(path)
        if "\0" in text:
            return f"path must not contain a NUL byte, got {text!r}"
        storage = self._storage
        if not storage.handles(text):
            return f"path {text!r} is not on the filesystem of the best alias {self._best.link_path!r}"
        given = storage.normalize(text)
        if not storage.in_folder_of(self._best.link_path, given):
            return (
                f"Retention deletes checkpoints only inside the best alias's folder "
                f"{os.path.dirname(self._best.link_path)!r}, got path {text!r}; save the checkpoints there"
            )
        # what a link leads to was not saved under that name, maybe not by this run (a user's
        # pretrained weights): never listed, so never deleted; a save would write through the link
        now = storage.inspect(given)
        if now.kind == "symlink" and all(a.link_path != given for a in self.aliases()):  # an alias: _checked says so
            try:
                storage.target_type(given)  # follows it
            except OSError as err:
                if err.errno == errno.ELOOP:
                    return link_loop(text)
                raise
            return (
                f"path {text!r} is a symbolic link (to {now.points_to!r}): Retention deletes only a checkpoint "
                f"saved under its own name, never what a link leads to; save the checkpoint at a path that is "
                f"not a link"
            )
        return None

    # --- saving and deleting ------------------------------------------------------------------

    def saved(self, path: str | os.PathLike[str], score: Any, *, step: Any = None) -> list[str]:
        """Record that ``path`` was just saved with ``score``, then delete what is no longer kept.

        Call it after the aliases moved to ``path`` (if they do): :meth:`record`, then
        :meth:`prune`. ``score`` is ranked as the best alias ranks scores; ``None`` means the
        checkpoint has no score and is always kept. Returns the paths deleted.

        Raises:
            TypeError, ValueError: bad ``score``, or ``path`` outside the best alias's folder,
                an alias, a symbolic link (what it leads to is never deleted), a file this library
                keeps next to an alias, not a file or directory; nothing changed.
            FileNotFoundError: nothing at ``path``.
        """
        self.record(path, score, step=step)
        return self.prune()

    def record(self, path: str | os.PathLike[str], score: Any, *, step: Any = None) -> None:
        """Put the checkpoint just saved at ``path`` on the list, identified as it is now; delete nothing.

        The ``save_and_link`` helpers call it right after saving, before the aliases move.
        ``step`` is deprecated and unused (the order of the calls is the order of the saves).
        Raises as :meth:`saved`.
        """
        if step is not None:
            warn(
                "Retention.saved()/record() no longer take step= (the order of the calls is the order of the "
                "saves); drop it. It will be refused from 0.3",
                DeprecationWarning,
            )
        value = None if score is None else to_score(score)
        with self._lock:
            target, kind = self._checked(path)
            ident = self._identity(target, kind, self._storage.identity(target))
            entries = [e for e in self._entries if e.path != target]  # saved again at the same path
            self._entries = [*entries, Entry(target, value, next_seq(entries), kind, ident)]

    def prune(self) -> list[str]:
        """Delete the listed checkpoints the policy no longer keeps; returns their paths.

        Call it after the aliases moved. A checkpoint that is no longer what was saved, or that
        an alias points at, is left in place; one that fails to delete is retried at the next
        call (both warn with :class:`~lightning_bestlink.BestLinkWarning`).
        """
        with self._lock:
            self._tell_old_list()
            entries = self._identified(self._entries)
            aliases = self.aliases()
            ranks = [Saved(e.path, e.score, e.seq) for e in entries]
            best_path, best_score = self._best.best_path, self._best.best_score
            if best_path is not None and best_score is not None and all(e.path != best_path for e in entries):
                ranks.append(Saved(best_path, best_score, -1))  # not on the list, never deleted, yet among the best
            protected = {a.best_path for a in aliases if a.best_path is not None}
            if best_score is not None:  # better than what the alias holds: it failed to move there; kept until it has
                mode = self._best.mode  # strictly better ("first"): a tie is no better than what the alias keeps
                protected.update(
                    e.path for e in entries if e.score is not None and is_better(e.score, best_score, mode, "first")
                )
            doomed = {
                s.path
                for s in to_delete(
                    ranks, keep_best=self._keep_best, mode=self._best.mode, ties=self._best.ties, protected=protected
                )
            }
            deleted, kept = [], []
            for entry in entries:
                if entry.path not in doomed or any(self._storage.same_file(a.link_path, entry.path) for a in aliases):
                    kept.append(entry)  # an alias resolves to it: deleted once none does
                    continue
                outcome = self._delete(entry)
                if outcome == "deleted":
                    deleted.append(entry.path)
                elif outcome == "retry":
                    kept.append(entry)
            self._entries = kept
            return deleted

    def _delete(self, entry: Entry) -> str:
        """Delete one checkpoint if it is still the one saved: ``deleted``, ``forget`` it, or ``retry`` later."""
        assert entry.kind is not None
        try:
            removal = self._storage.remove_saved(self._best.link_path, entry.path, entry.ident, entry.kind)
        except OSError as err:
            warn(
                f"could not delete {entry.path!r}, which the retention policy no longer keeps: {err}; it is tried "
                f"again after the next save"
            )
            return "retry"
        if removal.outcome == "deleted":
            _log.info("retention: deleted %s", entry.path)
            return "deleted"
        if removal.outcome != "gone":
            warn(
                f"{entry.path!r} is no longer the checkpoint this run saved there ({removal.detail}); the retention "
                f"policy leaves it in place and forgets it"
            )
        return "forget"

    def _identified(self, entries: list[Entry]) -> list[Entry]:
        """The entries, those not looked at yet (from a loaded state) identified as they are now.
        After a resume, a listed checkpoint that a killed run was deleting, still whole under a
        hidden name, is first put back under its name: the policy decides again, perhaps otherwise
        (``keep_best`` raised, a resume from an older checkpoint whose best it is); one whose
        deletion had begun is finished (``Storage.settle_saved``)."""
        if self._resumed:
            self._resumed = False
            for e in entries:
                if e.kind is None:
                    continue
                try:
                    settled = self._storage.settle_saved(self._best.link_path, e.path, e.ident, e.kind)
                except OSError as err:  # left as it is: the next removal of it tries again
                    _log.debug("retention: could not settle %s: %s", e.path, err)
                    continue
                if settled:
                    _log.info("retention: %s %s, which a killed run was deleting", settled, e.path)
        out = []
        for e in entries:
            if e.kind is None:
                now = self._storage.inspect(e.path)  # without following a link: the same identity as identity()
                if now.kind not in ("file", "dir"):
                    continue  # gone, or a link where a checkpoint was saved: not ours to delete
                e = e._replace(kind=now.kind, ident=self._identity(e.path, now.kind, now.ident))
            out.append(e)
        return out

    def _identity(self, path: str, kind: TargetType, ident: Ident) -> Ident:
        """``ident``; a directory's also holds the newest time in its tree where the storage tells it,
        as removal checks it (its own identity misses a file added or rewritten below its top)."""
        newest = self._storage.tree_time(path) if kind == "dir" and isinstance(ident, list) else None
        return ident if newest is None else [*ident, newest]

    def _tell_old_list(self) -> None:
        if self._told_old_list:
            return
        self._told_old_list = True
        old = self._best.link_path + OLD_LIST_SUFFIX
        if self._storage.inspect(old).kind != "missing":
            warn(
                f"{old!r} is the retention list of lightning-bestlink 0.1: it is no longer read (what Retention "
                f"deletes now comes from the run's own state, inside its checkpoints), so the checkpoints it "
                f"lists are kept. Delete them, and the list, yourself if you no longer need them"
            )

    def _checked(self, path: str | os.PathLike[str]) -> tuple[str, TargetType]:
        if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str) or not os.fspath(path):
            raise TypeError(f"path must be a non-empty str or os.PathLike, got {path!r}")
        text = os.fspath(path)
        problem = self.refusal(text)
        if problem:
            raise ValueError(problem)
        storage = self._storage
        given = storage.normalize(text)
        try:
            target = storage.resolve_target(given)
            kind = storage.target_type(target)
        except OSError as err:
            if err.errno == errno.ELOOP:  # a link on the way to it (one at the path itself: see refusal())
                raise ValueError(link_loop(text)) from None
            raise
        if any(a.link_path in (given, target) for a in self.aliases()):
            raise ValueError(f"path {text!r} is an alias, not a checkpoint; pass the checkpoint that was saved")
        what = bookkeeping(target)
        if what is not None:
            raise ValueError(f"path {text!r} is {what}, not a checkpoint; pass the checkpoint that was saved")
        if kind is None:
            raise FileNotFoundError(f"path {text!r} does not exist; call saved() once the checkpoint is written")
        if kind == "other":
            raise ValueError(f"path {text!r} is not a regular file or directory; a checkpoint is one of those")
        if not target.startswith(self._prefix):  # resolved through a link to elsewhere
            raise ValueError(f"path {text!r} leads to {target!r}, outside the best alias's folder; save it there")
        if kind == "dir":  # a storage that cannot alias a directory cannot delete one atomically either
            storage.check_can_alias(target, "copy", is_dir=True)
        return target, kind

    # --- state ------------------------------------------------------------------------------------

    def state_dict(self, *, after: tuple[Any, str | os.PathLike[str]] | None = None) -> dict[str, Any]:
        """Plain, picklable state: the checkpoints this run saved, with their scores and identities.

        Keep it in your checkpoints (the ``save_and_link`` helpers do): it is what a resume may
        delete. ``after=(score, path)``: the state once ``path`` is saved with ``score``, for
        saving inside that very checkpoint; ``path`` is listed without an identity, taken when
        a resumed run first looks at it. Nothing is read from the checkpoints or written.
        """
        with self._lock:
            entries = list(self._entries)
        if after is not None:
            score, path = after
            target = self._storage.normalize(path) if "\0" not in os.fspath(path) else ""
            if not target.startswith(self._prefix):
                reason = self.refusal(path) or "it lies outside the best alias's folder"
                raise ValueError(f"after names {os.fspath(path)!r}, which Retention cannot manage: {reason}")
            entries = [e for e in entries if e.path != target]
            entries.append(Entry(target, None if score is None else to_score(score), next_seq(entries), None, None))
        return encode(entries, self._prefix, self._best.mode, self._best.ties)

    def load_state_dict(
        self, state: dict[str, Any], *, saved_in: str | os.PathLike[str] | None = None, mirror: bool = False
    ) -> None:
        """Restore the list from :meth:`state_dict` (a resume). No I/O but resolving ``saved_in``.

        The state is input, not authority: each entry must name a path of plain names inside the
        best alias's folder, and is deleted later only if what is there is still what was saved.
        Only the checkpoint the state was saved in may be listed without an identity (it is
        identified when first looked at), and only where ``saved_in``, the checkpoint you loaded
        the state from (the latest alias's path will do), names it: a state cannot make a file
        deletable by naming it so. Any other such entry is left out, with a warning, and never
        deleted. A state saved by a Retention of another folder (a run moved, or resumed into a
        new folder), or one that names no folder, lists nothing deletable here: it loads empty,
        with a warning. ``mirror=True``: the state of this Retention in another process (rank
        zero's, after it looked at the files), taken as it is, with nothing looked at.

        Raises:
            ValueError: ``state`` is not a state of this format, was saved with another ``mode``
                or ``ties``, or is damaged; nothing changed.
        """
        entries, dropped = decode(state, self._prefix, self._best.mode, self._best.ties)
        if mirror:
            with self._lock:
                self._entries = entries
            return
        origin = self._origin(saved_in) if any(e.kind is None for e in entries) else None  # looked up once
        unsure = [e.path for e in entries if e.kind is None and e.path != origin]
        entries = [e for e in entries if e.path not in unsure]  # nothing vouches for them: never deleted
        with self._lock:
            self._entries, self._resumed = entries, True
        loaded = None if saved_in is None else os.fspath(saved_in)
        for message in unvouched(state.get("folder"), self._prefix, dropped, unsure, loaded):
            warn(message)

    def _origin(self, saved_in: str | os.PathLike[str] | None) -> str | None:
        """The checkpoint at ``saved_in``, as entries name it: links followed, and for one of this
        Retention's aliases (a copy or hard link of it too) what its record names."""
        if saved_in is None or not isinstance(saved_in, (str, os.PathLike)) or "\0" in os.fspath(saved_in):
            return None
        text, storage = os.fspath(saved_in), self._storage
        if not text or not storage.handles(text):
            return None
        path = storage.normalize(text)
        if any(a.link_path == path for a in self.aliases()):
            try:
                record = _record.read(storage, _record.record_path(path))
            except (OSError, ValueError):
                return None
            return None if record is None else storage.absolute(str(record["target"]), path)
        return storage.resolve_target(path)

    def identify(self) -> None:
        """Identify, as they are now, the listed checkpoints not looked at yet: the one a loaded state was saved in.

        The ``save_and_link`` helpers call it before each save, so the state saved in the next
        checkpoint names it by its identity; :meth:`prune` does too. One that is gone, or a
        symbolic link now, is forgotten (kept).
        """
        with self._lock:
            self._entries = self._identified(self._entries)


__all__ = ["Retention"]
