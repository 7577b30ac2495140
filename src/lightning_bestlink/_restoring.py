"""A linker's saved state: :meth:`~lightning_bestlink.BestLinker.state_dict`, ``load_state_dict`` and
``from_record`` (a part of ``BestLinker``; the state's format is :mod:`._state`'s)."""

from __future__ import annotations

import os
from typing import Any, TypeVar

from lightning_bestlink._deprecated import deprecated
from lightning_bestlink._fields import LinkerFields
from lightning_bestlink._record import read_record
from lightning_bestlink._score import to_score
from lightning_bestlink._state import check_state, make_state
from lightning_bestlink._storage import LINK_CHOICES, LinkChoice, storage_for
from lightning_bestlink._targets import check_inside, located

_L = TypeVar("_L", bound="StateIO")


class StateIO(LinkerFields):
    """``state_dict``, ``load_state_dict`` and ``from_record`` of :class:`~lightning_bestlink.BestLinker`."""

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
        cls: type[_L],
        link_path: str | os.PathLike[str],
        *,
        record: dict[str, Any] | None = None,
        storage_options: dict[str, Any] | None = None,
        allow_outside: bool = False,
        lock_timeout: float = 60.0,
    ) -> _L:
        """A linker for an existing alias, rebuilt from its record (the CLI's ``repair`` uses this).

        The linker makes the alias the way the record says it was made. The record is
        input, not authority: its target must lie inside the alias's folder unless
        ``allow_outside=True``. ``record``: the record as :func:`read_record` returned it,
        when the caller has read it already (it is not read again). ``lock_timeout``: as for
        :class:`BestLinker`. Raises
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
        fixed = cls._record_kwargs(record)
        linker = cls(link_path, link=link, storage_options=storage_options, lock_timeout=lock_timeout, **fixed)  # type: ignore[call-arg]
        state = {"best_score": record["score"], "best_path": record["target"], "link_kind": record.get("link")}
        linker.load_state_dict(state, allow_outside=allow_outside)
        linker._follows_record = True  # the record, not this process, says what the best is
        linker._restored = False  # a repair of a gone best reports it; there is no run to forget it for
        return linker

    @classmethod
    def _record_kwargs(cls, record: dict[str, Any]) -> dict[str, Any]:
        """The constructor arguments a record fixes (a subclass with fixed ones overrides this)."""
        return {"mode": record["mode"]}
