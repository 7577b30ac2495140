"""What the parts of :class:`~lightning_bestlink.BestLinker` share: its fields, declared once.

``BestLinker`` is one class written in three modules: ``linker.py`` (the decision and the
writing), ``_checking.py`` (verify and repair) and ``_restoring.py`` (its saved state). This
declares the fields they all use, for the type checker; ``BestLinker.__init__`` sets them.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from lightning_bestlink._score import Mode, Ties
from lightning_bestlink._storage import LinkChoice, Storage

if TYPE_CHECKING:
    from lightning_bestlink._swap import SwapWriter
    from lightning_bestlink._targets import Checked
    from lightning_bestlink._writer import AliasWriter


class LinkerFields:
    """The fields every part of a linker reads and writes (set by ``BestLinker.__init__``)."""

    _storage: Storage
    _link_path: str
    _record_path: str
    _link: LinkChoice
    _mode: Mode
    _ties: Ties
    _shared: bool
    _writer: AliasWriter
    _swapper: SwapWriter | None
    _best_score: float | None
    _best_path: str | None
    _link_kind: str | None
    _confined: bool  # the best came from a state or record: it must stay inside the folder
    _needs_check: bool  # after load_state_dict: the next update checks the alias first
    _restored: bool  # the best came from load_state_dict (forgotten if its checkpoint is gone)
    _follows_record: bool  # made by from_record: the record on disk is the authority
    _lock: threading.RLock

    if TYPE_CHECKING:  # defined in linker.py

        def _checked_target(self, path: str | os.PathLike[str], *, confined: bool = False) -> Checked: ...
        def _write(
            self,
            value: float | None,
            target: Any,
            extra: dict[str, Any],
            *,
            against_disk: bool = ...,
            repair: bool = ...,
        ) -> dict[str, Any] | None: ...
        def _catch_up(self, record: dict[str, Any] | None) -> None: ...
