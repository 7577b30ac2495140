"""One alias update as one transaction: lock, look, check ownership, stage, record, publish.

:class:`AliasWriter` knows nothing of scores: the linker decides *whether* an alias
moves, the writer makes the move safe. Inside :meth:`AliasWriter.exclusive` (the alias's
lock: two writers never interleave) the linker calls :meth:`~AliasWriter.look`, which
returns what is on disk (the record, what is at the alias path), decides, and then calls
:meth:`~AliasWriter.publish`, which refuses to replace what this library did not write,
stages the new alias under a temporary name, writes the record (first: a process killed
between the two still recognises its alias, and the record names the staged alias's
identity, so a check after such a kill sees that the alias was never published), and
publishes with one atomic step that changes nothing if the alias path changed since it was
looked at. Any failure leaves the previous alias and record as they were. The writer never
calls back into the linker: it returns what it saw and what it wrote.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from lightning_bestlink import _record
from lightning_bestlink._errors import (
    AliasBusyError,
    AliasConflictError,
    AliasWriteError,
    BestLinkError,
    warn,
)
from lightning_bestlink._health import not_owned_detail, owned
from lightning_bestlink._storage import AliasState, LinkChoice, Staged, Storage
from lightning_bestlink._storage.base import Displaced, LostRace, record_stamp
from lightning_bestlink._targets import Checked


class Look(NamedTuple):
    """What one look at the alias found (inside the lock)."""

    text: str | None  # the record's text, to put back if publishing fails
    record: dict[str, Any] | None  # the record, checked; None when there is none
    state: AliasState | None  # what is at the alias path (None: not looked at yet)
    version: str | None = None  # the record's version, where the store writes conditionally


class AliasWriter:
    """Writes the alias at ``link_path`` and its record, one update at a time.

    The linker's loop: inside :meth:`exclusive`, :meth:`look_record`, decide, :meth:`publish`; a
    writer that serialises its writers with a lock never loses a race (``tries`` is 1), one that
    writes conditionally (``_swap.SwapWriter``) may, and the loop looks and decides again.
    """

    #: looks and publishes one update may take (another writer may win a conditional write)
    tries = 1
    #: the record the alias last caught up with, when another writer may have moved it meanwhile
    latest: dict[str, Any] | None = None
    #: a record this writer wrote for an alias it could not publish (never, under a lock)
    pending: dict[str, Any] | None = None

    def __init__(
        self,
        storage: Storage,
        link_path: str,
        *,
        link: LinkChoice,
        durable: bool,
        lock_timeout: float,
        shared: bool,
    ) -> None:
        self.storage = storage
        self.link_path = link_path
        self.record_path = _record.record_path(link_path)
        self._name = os.path.basename(link_path.rstrip("/"))  # the alias's name, as records hold it
        self.link = link
        self.durable = durable
        self.lock_timeout = lock_timeout
        self.owned_ident: Any = None  # identity of the file alias this process last wrote
        self._id = (os.getpid(), os.urandom(8).hex())  # the process, and its writer_id
        self._host = _host()
        # several writers (shared=True): a killed peer's leftovers are cleaned at every update, not once
        self.shared = shared
        self._cleaned = False
        self._last_written: dict[str, Any] | None = None  # the record this writer last wrote
        self._last_text = ""  # ... and its text: read back unchanged, it needs no decoding
        self._warned: set[str] = set()  # the other writers already named in a warning

    @property
    def writer_id(self) -> str:
        """Who writes (in the record): this writer's records are told apart from another's, and a
        process forked from this one (or given a copy of it) is another writer."""
        return self._id_in(os.getpid())

    def _id_in(self, pid: int) -> str:
        if self._id[0] != pid:
            self._id = (pid, os.urandom(8).hex())
        return self._id[1]

    def exclusive(self) -> _Exclusive:
        """Hold the alias's lock (``with writer.exclusive():``): no other writer of this alias runs meanwhile."""
        return _Exclusive(self.storage.lock(self.link_path, self.lock_timeout), self)

    def look_record(self) -> Look:
        """What the linker decides from: here, the whole look (a local look is a few system calls),
        without reading where a symlink alias points (deciding and publishing need its kind and key)."""
        return self.look(resolve=False)

    def look(self, *, resolve: bool = True, versioned: bool = False) -> Look:
        """The record and what is at the alias path, read under the lock (after removing what a
        killed writer left). Writes nothing but that cleanup. ``resolve``: as :meth:`Storage.inspect`;
        ``versioned``: with the record's version, for a conditional :meth:`publish`."""
        storage, alias = self.storage, self.link_path
        version = None
        try:
            if versioned:
                text, version = storage.read_versioned(self.record_path, _record.LIMIT)
            else:
                text = storage.read_text(self.record_path, _record.LIMIT)
            record = self._decoded(text)
            if self.shared or not self._cleaned:
                # what a killed writer swapped out of the alias path is removed only if the record names it
                ours = [] if record is None else [record.get("alias_id"), record.get("previous_alias_id")]
                named = None if record is None else record.get("alias_id")
                storage.cleanup(alias, self.record_path, ours=[i for i in ours if i is not None], named=named)
                self._cleaned = True
            state = storage.inspect(alias, resolve=resolve)
        except BestLinkError:
            raise
        except OSError as err:
            raise AliasWriteError.from_os_error(err, f"looking at {alias!r}") from err
        return Look(text, record, state, version)

    def _decoded(self, text: str | None) -> dict[str, Any] | None:
        if text is None:
            return None
        if self._last_written is not None and text == self._last_text:  # what this writer wrote: known good
            return dict(self._last_written, extra=dict(self._last_written["extra"]))
        return _record.decode(text, self.record_path)

    def publish(
        self,
        seen: Look,
        value: float | None,
        checked: Checked,
        mode: str,
        extra: dict[str, Any],
        *,
        repair: bool = False,
        conditional: bool = False,
    ) -> dict[str, Any]:
        """Point the alias at ``target`` over what ``seen`` found there; returns the new record.

        Call it inside :meth:`exclusive`, after :meth:`look`. ``repair``: the record says so
        (a repair rebuilds an alias; it is no other writer's decision). ``conditional``: the
        record is written only over the version ``seen`` read (a look with ``versioned``), else
        :class:`LostRace` and nothing changed: where writers cannot lock (an object store).
        """
        storage, alias = self.storage, self.link_path
        assert seen.state is not None  # a local look always looks at the alias
        if not (self.shared or repair):
            self._note_other_writer(seen.record)
        staged, new = self._stage(seen.state, seen, value, checked, mode, extra, repair)
        try:
            # the record goes first: it names the staged alias, so a run killed between the
            # two renames still recognises whichever alias it finds as its own
            text = _record.encode(new)
            if conditional:
                storage.swap_text(self.record_path, text, seen.version)
            else:
                storage.write_text(self.record_path, text, durable=self.durable)
            try:
                # where copies are stamped (object stores), with the record they are made for
                stamp = record_stamp(text) if storage.stamps else ""
                storage.commit_stamped(staged, seen.state, stamp=stamp, durable=self.durable)
            except Displaced as err:
                if not err.published:
                    self._restore_record(seen.text)
                raise
            except BaseException:
                if not conditional:  # else another writer may have recorded a better best since: left ahead
                    self._restore_record(seen.text)
                raise
        except Displaced as err:
            if not err.published:
                if err.kept != staged.tmp:  # else it holds theirs now
                    storage.abort(staged)
                if err.ours:
                    raise AliasWriteError(
                        f"{pointing(alias, checked)} failed ({err.__cause__}), and putting the previous alias back "
                        f"failed too ({err.cause}): the alias path is empty now. The previous alias is kept as "
                        f"{err.kept!r}, and the record is as it was before this update (it names that alias). Move "
                        f"it back to {alias!r}, or let the next update (or `lightning-bestlink repair`) make the "
                        f"alias again; nothing was removed",
                        err.cause.errno,
                    ) from err
                now = "is empty now" if self._empty(alias) else "holds what someone else left there"
                raise AliasConflictError(
                    f"link_path {alias!r} was changed by someone else while the new alias was being written, and "
                    f"what they had put there could not be put back ({err.cause}): it is kept as {err.kept!r}. "
                    f"The alias path {now}, the record is as it was before this update, and nothing was removed. "
                    f"Move what was kept where you want it, then retry (an update, or `lightning-bestlink repair`, "
                    f"makes the alias again where the alias path is empty)"
                ) from err
            self._finish(staged, new, text)
            what = (
                "a symbolic link, replaced as one at the alias path always is; it stays there until the next "
                "writer of this alias removes it"
                if err.link
                else "kept as it is. Move it where you want it"
            )
            warn(
                f"something was put at {alias!r} while the alias was being updated, and putting it back failed "
                f"({err.cause}); the alias points at {checked.path!r}, as its record says. What was put there is "
                f"now {err.kept!r}: {what}"
            )
            return new
        except LostRace:
            storage.abort(staged)
            raise
        except FileExistsError as err:
            storage.abort(staged)
            raise AliasConflictError(
                f"link_path {alias!r} was created or replaced by someone else while the new alias was being "
                f"written; nothing was changed (what is there now was left as it is). Move it away and retry"
            ) from err
        except OSError as err:
            storage.abort(staged)
            ahead = (
                " (the record was written first: the next repair or update completes the alias)" if conditional else ""
            )
            raise AliasWriteError.from_os_error(err, pointing(alias, checked) + ahead) from err
        except BaseException:
            storage.abort(staged)
            raise
        self._finish(staged, new, text)
        return new

    def _empty(self, alias: str) -> bool:
        """Whether nothing is at the alias path now (for an error's message: unknown counts as not empty)."""
        try:
            return self.storage.inspect(alias, resolve=False).kind == "missing"
        except OSError:
            return False

    def _note_other_writer(self, record: dict[str, Any] | None) -> None:
        """Warn once per other writer that wrote this alias since this one last did: without
        shared=True, two writers replace each other's best."""
        if self._last_written is None or record is None or record == self._last_written:
            return
        writer = record.get("writer") or {}
        if writer.get("id") in (None, self.writer_id) or writer.get("repair") or writer["id"] in self._warned:
            return
        self._warned.add(writer["id"])
        warn(
            f"another writer (host {writer.get('host')!r}, pid {writer.get('pid')}) updated {self.link_path!r} "
            f"since this process last did, to {record.get('target')!r}: two writers of one alias replace each "
            f"other's best. Give each run its own alias (another folder or best name), or pass shared=True to "
            f"every writer to keep the best of all"
        )

    def _stage(
        self,
        state: AliasState,
        seen: Look,
        value: float | None,
        checked: Checked,
        mode: str,
        extra: dict[str, Any],
        repair: bool,
    ) -> tuple[Staged, dict[str, Any]]:
        """Check that the alias found (``state``) is this writer's, stage the new alias, and make
        the record that names it (nothing published yet)."""
        if not owned(self.storage, self.link_path, state, seen.record, self.owned_ident, self.record_path):
            raise AliasConflictError(not_owned_detail(self.link_path, state.kind, self.record_path))
        try:  # the linker checked that this link kind can alias this target (check_can_alias)
            staged = self.storage.stage(
                checked.path, self.link_path, self.link, is_dir=checked.kind == "dir", durable=self.durable
            )
            # the identity was taken before the copy started: a checkpoint changed while it is copied
            # no longer matches it
            return staged, self._record(staged, state, value, mode, extra, repair, checked.ident)
        except OSError as err:
            raise AliasWriteError.from_os_error(err, pointing(self.link_path, checked)) from err

    def _record(
        self,
        staged: Staged,
        state: AliasState,
        value: float | None,
        mode: str,
        extra: dict[str, Any],
        repair: bool,
        target_id: Any,
    ) -> dict[str, Any]:
        return _record.make(
            alias=self._name,
            target=self.storage.relative(staged.target, self.link_path),
            link=staged.kind,
            mode=mode,
            score=value,
            unix_time=time.time(),
            alias_id=staged.ident,
            previous_alias_id=state.ident,
            target_id=target_id if staged.kind == "copy" else None,  # links need no proof of content
            writer={
                "host": self._host,
                "pid": (pid := os.getpid()),
                "id": self._id_in(pid),
                **({"repair": True} if repair else {}),
            },
            extra=extra,
        )

    def _finish(self, staged: Staged, record: dict[str, Any], text: str) -> None:
        if staged.ident is None and staged.kind != "symlink" and not self.storage.stamps:
            # a copy the filesystem made itself has an identity only once it exists: record it
            # (a stamped copy is known by its stamp: the record stays as the stamp says)
            try:
                record["alias_id"] = self.storage.identity(self.link_path)
                text = _record.encode(record)
                self.storage.write_text(self.record_path, text, durable=self.durable)
            except OSError as err:  # the alias is right; only ownership on a rerun is weaker
                warn(f"could not update {self.record_path!r}: {err}")
        self.owned_ident = record["alias_id"]
        self._last_written, self._last_text = record, text

    def _restore_record(self, old_text: str | None) -> None:
        try:
            if old_text is None:
                self.storage.remove_file(self.record_path)
            else:
                self.storage.write_text(self.record_path, old_text, durable=self.durable)
        except OSError:
            pass  # the original error is the one to report; a stale record is repaired later


class _Exclusive:
    """The alias's lock, held for one ``with`` block; failing to take it raises this library's errors.

    A class, not a ``contextlib.contextmanager`` generator: it is entered at every update."""

    __slots__ = ("lock", "writer")

    def __init__(self, lock: AbstractContextManager[Any], writer: AliasWriter) -> None:
        self.lock, self.writer = lock, writer

    def __enter__(self) -> None:
        alias, timeout = self.writer.link_path, self.writer.lock_timeout
        try:
            self.lock.__enter__()
        except TimeoutError as err:
            raise AliasBusyError(
                f"another process has held the lock of {alias!r} for more than {timeout} s; "
                f"nothing was changed. Raise lock_timeout if its updates are slow (large copies), or look for a "
                f"hung writer"
            ) from err
        except BestLinkError:
            raise
        except OSError as err:
            raise AliasWriteError.from_os_error(err, f"locking {alias!r}") from err

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(None, None, None)


def pointing(alias: str, checked: Checked) -> str:
    """What an update was doing, for its error (made only then: an update makes no text it does not write)."""
    return f"pointing {alias!r} at {checked.path!r}"


def _host() -> str:
    return os.uname().nodename
