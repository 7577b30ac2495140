"""Checking the alias against the best, and rebuilding it: :meth:`~lightning_bestlink.BestLinker.verify`
and :meth:`~lightning_bestlink.BestLinker.repair` (a part of ``BestLinker``; the rules are :mod:`._health`'s)."""

from __future__ import annotations

from typing import Any

from lightning_bestlink import _record
from lightning_bestlink._errors import AliasConflictError, AliasWriteError, warn
from lightning_bestlink._fields import LinkerFields
from lightning_bestlink._health import AliasReport, diagnose
from lightning_bestlink._storage import AliasState
from lightning_bestlink._storage.base import LostRace, record_stamp

#: how many times a repair where writers cannot lock reads the record again after losing its write
_LOOKS = 3


class AliasChecks(LinkerFields):
    """``verify`` and ``repair`` of :class:`~lightning_bestlink.BestLinker`."""

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
        text = None
        if self._shared or (state.kind in ("file", "dir") and self._best_path is not None):
            try:
                text = self._storage.read_text(self._record_path, _record.LIMIT)
                record = None if text is None else _record.decode(text, self._record_path)
            except AliasConflictError as err:
                return AliasReport("foreign", self._link_path, self._best_path, None, str(err))
            self._catch_up(record)
        return self._diagnose(state, record, deep=deep, text=text)

    def _diagnose(
        self, state: AliasState, record: dict[str, Any] | None, *, deep: bool = False, text: str | None = None
    ) -> AliasReport:
        """``text``: the record's text as read, which a stamped copy is checked against."""
        return diagnose(
            self._storage,
            self._link_path,
            self._best_path,
            state,
            record,
            self._writer.owned_ident,
            self._record_path,
            deep=deep,
            record_stamp=record_stamp(text) if text is not None and state.stamp is not None else None,
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
        # where writers cannot lock (an object store), the record is written only over the version
        # read: a writer that recorded a new best meanwhile (a sweep's trial) is followed, not overwritten
        conditional = self._swapper is None and self._storage.can_swap and not self._storage.can_lock
        with self._lock:
            self._needs_check = False
            for _ in range(_LOOKS if conditional else 1):
                with self._writer.exclusive():
                    seen = self._writer.look(versioned=conditional)
                    self._catch_up(seen.record)
                    assert seen.state is not None  # look() looks at the alias too
                    before = self._diagnose(seen.state, seen.record, text=seen.text)
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
                    if self._swapper is None:
                        try:
                            record = self._writer.publish(
                                seen, self._best_score, target, self._mode, extra, repair=True, conditional=conditional
                            )
                        except LostRace:  # the record changed since it was read: decide again from it
                            continue
                        self._best_path, self._link_kind = target.path, str(record["link"])
                        if conditional:  # a writer that recorded a better best during the copy: the alias follows it
                            from lightning_bestlink._swap import SwapWriter

                            self._catch_up(SwapWriter.like(self._writer).complete())
                        return self._verify()
                # a shared alias on an object store: first the alias catches up with the record; only
                # when there is none, or this linker's best beats it, is a record written
                self._catch_up(self._swapper.complete())
                if not self._verify().ok:
                    self._write(self._best_score, target, extra, repair=True)
                return self._verify()
            raise AliasWriteError(
                f"repairing {self._link_path!r}: its record {self._record_path!r} changed before each of {_LOOKS} "
                f"writes (another writer is updating it); nothing was changed. Retry when it is done"
            )

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
