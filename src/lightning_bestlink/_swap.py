"""A shared alias on an object store: the writers agree on the record by compare-and-swap, and
the alias, a copy stamped with the record it was made for, catches up with the record.

The local shared mode serialises its writers with a lock. An object store has no lock, but it
writes an object only if it is still the version that was read. So one update is:

1. :meth:`SwapWriter.look_record`: read the record with its version (one small GET);
2. the linker decides: a better best on disk is adopted, and nothing is written;
3. :meth:`SwapWriter.publish`: write the new record only if it is still that version (a
   writer that lost gets :class:`~._storage.base.LostRace`; the linker reads again and decides
   again), then copy the target to the alias, stamped with the new record;
4. converge: read the record again; if another writer has moved it on meanwhile, copy *its*
   target with *its* stamp, and again, until the alias carries the stamp of the record as last read.

Every copy that lands is followed by its writer's read of the record, so the last copy to land
was made for the last record written: once the writers stop, alias and record agree, whatever
order their copies finished in. A writer stopped between its record and its copy (killed, a
failed request) leaves a record ahead of its alias; ``verify`` says so (the alias's stamp is not
the record's), and :meth:`SwapWriter.complete` (``repair``) or the next improving update catches
the alias up.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning_bestlink import _record
from lightning_bestlink._errors import AliasConflictError, AliasWriteError, BestLinkError
from lightning_bestlink._health import not_owned_detail, owned
from lightning_bestlink._storage import AliasState, Staged
from lightning_bestlink._storage.base import LostRace, record_stamp
from lightning_bestlink._targets import Checked
from lightning_bestlink._writer import AliasWriter, Look, pointing

_log = logging.getLogger("lightning_bestlink")

#: how many times one update reads the record again after losing a race, or copies again
#: because the record moved on: each one means another writer made progress, so the bound is
#: only a guard against a store that never lets a write through
TRIES = 100


class SwapWriter(AliasWriter):
    """Writes a shared alias on an object store and its record (see the module docstring).

    The record's format, the reads and the (no-op) lock are :class:`AliasWriter`'s; only the
    writing differs: conditional, then converging.
    """

    #: how many lost races (or copies because the record moved on) one update goes through
    tries = TRIES

    @classmethod
    def like(cls, writer: AliasWriter) -> SwapWriter:
        """A swap writer configured as ``writer``."""
        return cls(
            writer.storage,
            writer.link_path,
            link=writer.link,
            durable=writer.durable,
            lock_timeout=writer.lock_timeout,
            shared=True,
        )

    # --- the steps -----------------------------------------------------------------------

    def look_record(self) -> Look:
        """The record and its version: all a writer needs to decide (the alias is looked at
        only once the update is to be published)."""
        try:
            text, version = self.storage.read_versioned(self.record_path, _record.LIMIT)
        except BestLinkError:
            raise
        except OSError as err:
            raise AliasWriteError.from_os_error(err, f"reading {self.record_path!r}") from err
        return Look(text, None if text is None else _record.decode(text, self.record_path), None, version)

    def publish(
        self,
        seen: Look,
        value: float | None,
        checked: Checked,
        mode: str,
        extra: dict[str, Any],
        *,
        repair: bool = False,
        conditional: bool = True,
    ) -> dict[str, Any]:
        """Record the checkpoint ``checked`` as the best if the record is still as ``seen``, then copy it and
        converge. Raises :class:`LostRace` (nothing written) when another writer wrote it first. Always
        conditional (``conditional`` is the base class's choice).
        """
        storage, alias = self.storage, self.link_path
        action = pointing(alias, checked)
        try:
            state = storage.inspect(alias)
        except OSError as err:
            raise AliasWriteError.from_os_error(err, action) from err
        staged, new = self._stage(state, seen, value, checked, mode, extra, repair)
        text = _record.encode(new)
        self.pending = None
        try:
            storage.swap_text(self.record_path, text, seen.version)
        except LostRace:
            if self.look_record().text != text:
                raise
            # it was ours: the store wrote it, the answer was lost, and the client's retry was refused
        except OSError as err:
            raise AliasWriteError.from_os_error(err, action) from err
        try:
            storage.commit_stamped(staged, state, stamp=record_stamp(text), durable=self.durable)
        except OSError as err:
            self.pending = new
            raise AliasWriteError(
                f"{action}: the record {self.record_path!r} names it already (this update won it), but the copy "
                f"failed: {type(err).__name__}: {err}. The alias still holds the previous best; verify reports "
                f"that, and the next update of this linker, another writer's, or repair completes it",
                err.errno,
            ) from err
        self._converge(text)
        return new

    def complete(self) -> dict[str, Any] | None:
        """Copy the record's target to the alias if the alias has not caught up with it (``repair``).

        Returns the record the alias now agrees with (None: there is no record).
        """
        seen = self.look_record()
        if seen.text is None or seen.record is None:
            return None
        try:
            state = self.storage.inspect(self.link_path)
        except OSError as err:
            raise AliasWriteError.from_os_error(err, f"looking up {self.link_path!r}") from err
        if not owned(self.storage, self.link_path, state, seen.record, self.owned_ident, self.record_path):
            raise AliasConflictError(not_owned_detail(self.link_path, state.kind, self.record_path))
        if state.stamp != record_stamp(seen.text):
            self._copy_for(seen.text, strict=True)
            self._converge(seen.text)
        else:
            self.latest = seen.record
        return self.latest

    # --- catching the alias up ---------------------------------------------------------------

    def _converge(self, text: str) -> None:
        """After a copy made for the record ``text``: copy again while the record has moved on."""
        self.latest = _record.decode(text, self.record_path)
        for _ in range(TRIES):
            now = self.look_record()
            if now.text is None or now.text == text:
                return
            text = now.text
            self.latest = now.record
            if not self._copy_for(text):
                return
        _log.debug("%s: the record kept moving; the writer that moved it last completes the alias", self.record_path)

    def _copy_for(self, text: str, *, strict: bool = False) -> bool:
        """Copy the target that the record ``text`` names, stamped with it; False when it cannot be
        (``strict``: raise instead)."""
        storage, alias = self.storage, self.link_path
        record = _record.decode(text, self.record_path)
        target = storage.absolute(str(record["target"]), alias)
        # the record is input, not authority: copy only a checkpoint inside the alias's folder
        if _record.bookkeeping(target) is not None or not storage.in_folder_of(alias, target):
            detail = f"{self.record_path!r} names {target!r}, outside the alias's folder: not copied to the alias"
            if strict:
                raise AliasConflictError(f"{detail}; nothing was changed. Check who writes that record")
            _log.warning("%s", detail)
            return False
        staged = Staged("copy", target, alias, None, None)
        try:
            # an object store replaces the alias whole: there is no link to race with, nothing to check
            storage.commit_stamped(staged, AliasState("file"), stamp=record_stamp(text), durable=self.durable)
        except OSError as err:
            if strict:
                raise AliasWriteError.from_os_error(err, f"copying {target!r} to {alias!r}") from err
            # another writer's record: its writer (or repair) completes it; this update is done
            _log.debug("copying %r for %s failed: %s", target, self.record_path, err)
            return False
        return True
