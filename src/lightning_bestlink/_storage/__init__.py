"""Where aliases live: one storage per kind of filesystem, chosen from the path.

- ``local.py``: plain paths and ``file://`` (symlink, hard link or copy, staged then renamed);
- ``fsspec.py``: any other fsspec URL (a copy the filesystem makes itself, server-side on S3).

``base.py`` is the seam the linker talks to; ``_syscalls.py`` wraps what the
standard library lacks (``renameat2``).
"""

from __future__ import annotations

import os
from typing import Any

from lightning_bestlink._storage.base import (
    LINK_CHOICES,
    AliasState,
    Ident,
    LinkChoice,
    LinkKind,
    Staged,
    Storage,
    TargetType,
    is_url,
)


def storage_for(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Storage:
    """The storage for ``path``: local for plain paths and ``file://``, fsspec for other URLs."""
    text = os.fspath(path)
    if not is_url(text):
        if storage_options:
            raise ValueError(
                f"storage_options only apply to fsspec URLs, got {storage_options!r} for the "
                f"local path {text!r}; drop storage_options"
            )
        from lightning_bestlink._storage.local import LocalStorage  # on first use: a light package import

        return LocalStorage()
    import fsspec  # only remote users pay for the import

    from lightning_bestlink._storage.fsspec import FsspecStorage

    fs, _ = fsspec.core.url_to_fs(text, **(storage_options or {}))
    return FsspecStorage(fs)


__all__ = [
    "LINK_CHOICES",
    "AliasState",
    "Ident",
    "LinkChoice",
    "LinkKind",
    "Staged",
    "Storage",
    "TargetType",
    "is_url",
    "storage_for",
]
