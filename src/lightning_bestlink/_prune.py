"""Deleting one checkpoint for :class:`~lightning_bestlink.Retention`, only when it is provably the one it saw.

What the policy (:mod:`._keep`) lets go is deleted here, after three checks on what is
on disk now: it is still the same kind (file or directory), its fingerprint is the one
taken right after it was saved, and no alias resolves to it. A directory is first renamed
to a temporary name (``trash``, next to the retention list): a reader never meets half a
checkpoint under its name, and if the process is killed half-way the next run removes the rest.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterable
from typing import Any, Literal

from lightning_bestlink._storage import Storage, TargetType
from lightning_bestlink.linker import BestLinker

Outcome = Literal["deleted", "gone", "changed", "aliased"]


def fingerprint(ident: Any) -> Any:
    """What proves a file is still the checkpoint that was saved, from the storage's identity.

    A local identity is ``[st_dev, st_ino, st_size, st_mtime_ns]``: the device number differs
    between the machines that mount one NFS share, and a run folder copied with its times
    (``cp -a``, ``rsync -t``) keeps size and nanosecond mtime but not the inode, so those two
    are what is compared. A remote identity (size, ETag, modification time) is kept whole.
    """
    if isinstance(ident, list) and len(ident) == 4:
        return ident[2:]
    return ident


def aliased(storage: Storage, path: str, linkers: Iterable[BestLinker]) -> bool:
    """Whether any of the aliases points at ``path`` now (by its state, or as a link resolving to it)."""
    return any(linker.best_path == path or storage.same_file(linker.link_path, path) for linker in linkers)


def delete(storage: Storage, path: str, kind: TargetType, saved_print: Any, trash: str) -> Outcome:
    """Delete the checkpoint at ``path`` if it is the one that was saved; say what happened.

    Raises ``OSError`` when deleting fails for another reason than the checkpoint being gone.
    """
    now = storage.target_type(path)
    if now is None:
        return "gone"
    if now != kind or fingerprint(storage.identity(path)) != saved_print:
        return "changed"
    if kind == "file":
        storage.remove_file(path)
        return "deleted"
    # a directory (local storage: retention refused directory checkpoints where aliases cannot be)
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return "gone"
    except OSError as err:
        if err.errno != errno.EXDEV:  # a mount point in between: delete in place
            raise
        trash = path
    _rmtree(trash)
    return "deleted"


def _rmtree(path: str) -> None:
    import shutil  # only once a directory checkpoint goes: importing the package stays light

    def gone_is_fine(func: Any, name: str, exc: Any) -> None:
        # another process removing the same leftover (the alias's cleanup) is not an error
        err = exc if isinstance(exc, BaseException) else exc[1]
        if not isinstance(err, FileNotFoundError):
            raise err

    if sys.version_info >= (3, 12):  # onerror= is deprecated there
        shutil.rmtree(path, onexc=gone_is_fine)
    else:
        shutil.rmtree(path, onerror=gone_is_fine)
