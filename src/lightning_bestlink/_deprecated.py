"""The names of 0.1 that 0.2 renamed, kept for one release: each warns (``DeprecationWarning``) and
calls its new name. They go in 0.3 (the CHANGELOG lists them)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

from lightning_bestlink._errors import warn

if TYPE_CHECKING:
    from lightning_bestlink._health import AliasReport


def deprecated(old: str, new: str) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``."""
    warn(f"{old} is deprecated, use {new}; it will be removed in 0.3", DeprecationWarning)


class DeprecatedNames:
    """The old names of :class:`~lightning_bestlink.BestLinker` (a base class of it)."""

    @property
    def metadata_path(self) -> str:
        """Deprecated alias of :attr:`~lightning_bestlink.BestLinker.record_path` (removed in 0.3)."""
        deprecated("BestLinker.metadata_path", "BestLinker.record_path")
        return str(cast(Any, self).record_path)

    def restore_alias(self) -> AliasReport:
        """Deprecated alias of :meth:`~lightning_bestlink.BestLinker.repair` (removed in 0.3)."""
        deprecated("BestLinker.restore_alias()", "BestLinker.repair()")
        report: AliasReport = cast(Any, self).repair()
        return report

    @classmethod
    def from_metadata(
        cls,
        link_path: str | os.PathLike[str],
        *,
        storage_options: dict[str, Any] | None = None,
        allow_outside: bool = False,
    ) -> Any:
        """Deprecated alias of :meth:`~lightning_bestlink.BestLinker.from_record` (removed in 0.3)."""
        deprecated("BestLinker.from_metadata()", "BestLinker.from_record()")
        linker = cast(Any, cls)
        return linker.from_record(link_path, storage_options=storage_options, allow_outside=allow_outside)
