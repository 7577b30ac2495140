"""Is this path a checkpoint the alias may point at? (regular file or shard directory, not the
alias, not a folder holding it, not a device; inside the alias's folder when it came from disk)."""

from __future__ import annotations

import errno
import os
from typing import Any, NamedTuple

from lightning_bestlink._errors import AliasWriteError, OutsideFolderError, link_loop
from lightning_bestlink._record import bookkeeping
from lightning_bestlink._storage import Ident, LinkChoice, Storage, TargetType


class Checked(NamedTuple):
    """A checkpoint the alias may point at, as one look saw it."""

    path: str  # normalised, links followed: the checkpoint itself
    kind: TargetType  # "file" or "dir"
    ident: Ident  # its identity (a copy records it, to notice a change after copying)


def check_target(
    storage: Storage, link_path: str, link: LinkChoice, path: str | os.PathLike[str], *, confined: bool = False
) -> Checked:
    """The checkpoint ``path`` names, looked at once; raises a clear error when it cannot be the best.

    ``confined``: the path came from a saved state or record (input, not authority) and must
    lie inside the alias's folder.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    text = os.fspath(path)
    if not text:
        raise ValueError("path must name a checkpoint, got an empty string")
    if "\0" in text:
        raise ValueError(f"path must not contain a NUL byte, got {text!r}")
    if not storage.handles(text):
        raise ValueError(
            f"path {text!r} and link_path {link_path!r} must be on the same filesystem; "
            f"put the alias next to the checkpoints"
        )
    given = storage.normalize(text)
    if given == link_path:  # before links are followed: the alias itself is often one
        raise ValueError(
            f"path must not be the alias itself, got {text!r} (link_path is {link_path!r}); "
            f"pass the checkpoint file the alias should point at"
        )
    try:
        target, kind, ident = storage.describe(given)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(link_loop(text)) from None
        raise AliasWriteError.from_os_error(err, f"looking at path {text!r}") from err
    what = bookkeeping(text) or (bookkeeping(target) if target != text else None)
    if what is not None:
        raise ValueError(
            f"path {text!r} is {what} ({os.path.basename(target)!r}), not a checkpoint; pass the checkpoint "
            f"file or shard directory the alias should point at"
        )
    if target == link_path:
        raise ValueError(
            f"path must not be the alias itself, got {text!r}, a link to it (link_path is {link_path!r}); "
            f"pass the checkpoint file the alias should point at"
        )
    if kind is None:
        raise FileNotFoundError(f"path {text!r} does not exist; call update() after the checkpoint is fully saved")
    if kind == "other":
        raise ValueError(
            f"path {text!r} is not a regular file or directory (a device, FIFO, socket, or a file of "
            f"/proc or /sys); a checkpoint is a file or a directory of shards"
        )
    if kind == "dir" and storage.encloses(target, link_path):
        raise ValueError(
            f"path {text!r} is a folder that holds the alias {link_path!r}: an alias inside what it "
            f"points at would link or copy into itself; pass the checkpoint file or shard directory"
        )
    storage.check_can_alias(target, link, is_dir=kind == "dir")
    if confined:
        check_inside(storage, link_path, given, f"the best checkpoint {text!r} (from a state or record)")
    return Checked(target, kind, ident)


def check_inside(storage: Storage, link_path: str, path: str, what: str) -> None:
    """Raise :class:`OutsideFolderError` unless ``path`` (links followed) lies inside the alias's folder.

    ``what`` names where the path came from, e.g. ``"state['best_path'] 'x.ckpt'"``.
    """
    if storage.in_folder_of(link_path, path):
        return
    leads_to = storage.resolve_target(path)
    leads = "" if leads_to == path else f", a link that leads to {leads_to!r},"
    raise OutsideFolderError(
        f"{what}{leads} lies outside the alias's folder "
        f"{os.path.dirname(link_path)!r}; nothing was changed. If you trust where it came from, "
        f"load it with allow_outside=True"
    )


def located(storage: Storage, link_path: str, target: str, state: dict[str, Any]) -> str:
    """``target``, or the checkpoint next to the alias when the run folder moved with it, or was
    copied with it keeping its times (``cp -a``: the copy's own checkpoint, not the original's)."""
    rel = state.get("best_path_relative")
    moved = state.get("link_path", link_path) != link_path
    if not (isinstance(rel, str) and rel and moved):
        return target
    beside = storage.absolute(rel, link_path)
    if not storage.in_folder_of(link_path, beside) or storage.target_type(beside) is None:
        return target  # a relative path never leads out; nothing of that name next to the alias
    if storage.target_type(target) is None:
        return beside  # moved
    try:
        copied = storage.copied_with_times(storage.identity(beside), storage.identity(target))
    except OSError:
        return target
    return beside if copied else target
