"""One alias update as one transaction: lock, look, check ownership, stage, record, publish.

:class:`AliasWriter` knows nothing of scores: the linker decides *whether* an alias
moves, the writer makes the move safe. Under the alias's lock (so two writers never
interleave), it reads the record and what is at the alias path, refuses to replace
what this library did not write, stages the new alias under a temporary name, writes
the record (first: a process killed between the two still recognises its alias), and
publishes with one atomic step that changes nothing if the alias path changed since it
was looked at. Any failure leaves the previous alias and record as they were.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lightning_bestlink import _record
from lightning_bestlink._errors import (
    AliasBusyError,
    AliasConflictError,
    AliasWriteError,
    BestLinkError,
    BestLinkWarning,
)
from lightning_bestlink._health import not_owned_detail, owned
from lightning_bestlink._storage import LinkChoice, Staged, Storage, TargetType
from lightning_bestlink._storage.base import record_stamp

#: given the record on disk (None when there is none), whether the update should still go ahead
Proceed = Callable[[dict[str, Any] | None], bool]


class AliasWriter:
    """Writes the alias at ``link_path`` and its record, one update at a time."""

    def __init__(
        self,
        storage: Storage,
        link_path: str,
        *,
        link: LinkChoice,
        durable: bool,
        lock_timeout: float,
        clean_every_time: bool,
    ) -> None:
        self.storage = storage
        self.link_path = link_path
        self.record_path = _record.record_path(link_path)
        self.link = link
        self.durable = durable
        self.lock_timeout = lock_timeout
        self.owned_ident: Any = None  # identity of the file alias this process last wrote
        # leftovers of killed writers: once per writer, or at every update when others share the alias
        self._clean_every_time = clean_every_time
        self._cleaned = False

    def read_record(self) -> dict[str, Any] | None:
        """The record next to the alias, checked (``RecordError`` when it is not one)."""
        return _record.read(self.storage, self.record_path)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the alias's lock: no other writer of this alias runs meanwhile."""
        lock = self.storage.lock(self.link_path, self.lock_timeout)
        try:
            lock.__enter__()
        except TimeoutError as err:
            raise AliasBusyError(
                f"another process has held the lock of {self.link_path!r} for more than {self.lock_timeout} s; "
                f"nothing was changed. Raise lock_timeout if its updates are slow (large copies), or look for a "
                f"hung writer"
            ) from err
        except OSError as err:
            raise AliasWriteError.from_os_error(err, f"locking {self.link_path!r}") from err
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    def write(
        self,
        value: float | None,
        target: str,
        kind: TargetType,
        mode: str,
        extra: dict[str, Any],
        proceed: Proceed | None = None,
    ) -> dict[str, Any] | None:
        """Point the alias at ``target``; returns the new record, or None when ``proceed`` said no."""
        with self.exclusive():
            storage, alias = self.storage, self.link_path
            action = f"pointing {alias!r} at {target!r}"
            try:  # nothing is written yet: any storage error here leaves everything as it was
                if self._clean_every_time or not self._cleaned:
                    storage.cleanup(alias, self.record_path)
                    self._cleaned = True
                old_text = storage.read_text(self.record_path, _record.LIMIT)
                state = storage.inspect(alias)
            except BestLinkError:
                raise
            except OSError as err:
                raise AliasWriteError.from_os_error(err, action) from err
            record = None if old_text is None else _record.decode(old_text, self.record_path)
            if proceed is not None and not proceed(record):
                return None
            if not owned(storage, alias, state, record, self.owned_ident):
                raise AliasConflictError(not_owned_detail(alias, state.kind, self.record_path))
            try:  # the linker checked that this link kind can alias this target (check_can_alias)
                staged = storage.stage(target, alias, self.link, is_dir=kind == "dir", durable=self.durable)
            except OSError as err:
                raise AliasWriteError.from_os_error(err, action) from err
            new = _record.make(
                alias=os.path.basename(alias.rstrip("/")),
                target=storage.relative(target, alias),
                link=staged.kind,
                mode=mode,
                score=value,
                unix_time=time.time(),
                alias_id=staged.ident,
                previous_alias_id=state.ident,
                extra=extra,
            )
            try:
                # the record goes first: it names the staged alias, so a run killed between the
                # two renames still recognises whichever alias it finds as its own
                text = _record.encode(new)
                storage.write_text(self.record_path, text, durable=self.durable)
                try:
                    # where copies are stamped (object stores), with the record they are made for
                    stamp = record_stamp(text) if storage.stamps else ""
                    storage.commit_stamped(staged, state, stamp=stamp, durable=self.durable)
                except BaseException:
                    self._restore_record(old_text)
                    raise
            except FileExistsError as err:
                storage.abort(staged)
                raise AliasConflictError(
                    f"link_path {alias!r} was created or replaced by someone else while the new alias was being "
                    f"written; nothing was changed (what is there now was left as it is). Move it away and retry"
                ) from err
            except OSError as err:
                storage.abort(staged)
                raise AliasWriteError.from_os_error(err, action) from err
            except BaseException:
                storage.abort(staged)
                raise
            self._finish(staged, new)
            return new

    def _finish(self, staged: Staged, record: dict[str, Any]) -> None:
        if staged.ident is None and staged.kind != "symlink" and not self.storage.stamps:
            # a copy the filesystem made itself has an identity only once it exists: record it
            # (a stamped copy is known by its stamp: the record stays as the stamp says)
            try:
                record["alias_id"] = self.storage.identity(self.link_path)
                self.storage.write_text(self.record_path, _record.encode(record), durable=self.durable)
            except OSError as err:  # the alias is right; only ownership on a rerun is weaker
                warnings.warn(f"could not update {self.record_path!r}: {err}", BestLinkWarning, stacklevel=5)
        self.owned_ident = record["alias_id"]

    def _restore_record(self, old_text: str | None) -> None:
        try:
            if old_text is None:
                self.storage.remove_file(self.record_path)
            else:
                self.storage.write_text(self.record_path, old_text, durable=self.durable)
        except OSError:
            pass  # the original error is the one to report; a stale record is repaired later
