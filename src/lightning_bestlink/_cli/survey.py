"""A survey of checkpoint folders: folders in, data out (aliases, records, checkpoints).

Nothing here prints or writes: the commands render what :func:`scan`, :func:`folders`
and :func:`~.alias.load_alias` (one alias, in ``alias.py``) find, and the tests read it
directly. Aliases are found by their records (``<alias>.bestlink.json``), whatever their
name. Folders are local paths or fsspec URLs, read through the storage seam
(``Storage.listing``, ``lookup``, ``walk``): each folder is listed once, and ``-r`` walks
a tree without resolving each folder's path again (a tree 2,000 levels deep costs, per
folder, what a shallow one does).

Everything read is input, not authority: a record that is not a regular file is not
opened, a record that cannot be read or a folder that cannot be listed becomes an
``error`` on the alias or folder, and the survey goes on to the next one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightning_bestlink._cli.alias import Alias, leads_to, load_alias, parent, reason, storage_of
from lightning_bestlink._record import SUFFIX
from lightning_bestlink._storage import Storage
from lightning_bestlink._storage.base import Item

#: file names taken for checkpoints (besides the targets of aliases, whatever their name)
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
#: what marks a directory as one sharded checkpoint (torch.distributed.checkpoint, Lightning FSDP/DeepSpeed)
_SHARDED_MARKERS = (".metadata", "meta.pt", "latest", "zero_to_fp32.py")


# --- what is in a folder ------------------------------------------------------------


@dataclass
class Entry:
    """A checkpoint (file or directory) in the folder, or a link that is not a recorded alias."""

    name: str
    path: str
    is_dir: bool
    size: int | None
    marks: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # of the aliases that point here
    link_to: str | None = None  # a symlink: its text
    dangling: bool = False  # a symlink to nothing


@dataclass
class Folder:
    """What ``show``, ``verify`` and ``repair`` know about one directory."""

    path: str
    entries: list[Entry] = field(default_factory=list)
    aliases: list[Alias] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # names that look like an alias but have no record
    subdirs: list[str] = field(default_factory=list)  # sub-folders that are not checkpoints (for -r)
    error: str | None = None  # the folder could not be listed: why

    @property
    def empty(self) -> bool:
        return not (self.entries or self.aliases or self.unrecorded or self.error)


def is_last_name(name: str) -> bool:
    r"""Whether Lightning's ``ckpt_path="last"`` would take a checkpoint named ``name``.

    Lightning (``ModelCheckpoint._find_last_checkpoints``) matches ``^last(-(\d+))?`` against
    the stem, which every stem starting with ``last`` passes: ``last.ckpt``, ``last-v1.ckpt``,
    ``last_run.ckpt``, and ``lastly.ckpt`` too. (The Trainer adapter applies the same rule
    to its ``CHECKPOINT_NAME_LAST``.)

    >>> is_last_name("last-v1.ckpt"), is_last_name("lastly.ckpt"), is_last_name("epoch=3.ckpt")
    (True, True, False)
    """
    return os.path.basename(name).startswith("last")


def natural(name: str) -> list[Any]:
    """Sort key: ``epoch=9`` before ``epoch=10``."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def folder_path(storage: Storage, arg: str) -> str:
    """A folder as the user named it, normalised, itself resolved too (it may be a link to the real one)."""
    return storage.resolve_target(storage.normalize(arg))


# --- one folder -----------------------------------------------------------------------


def _looks_like_checkpoint(name: str) -> bool:
    return name.endswith(CHECKPOINT_SUFFIXES) or is_last_name(name)


def _shard_names(items: list[Item]) -> bool:
    """Whether a folder holding ``items`` is one sharded checkpoint."""
    return any(i.name in _SHARDED_MARKERS or i.name.endswith(".distcp") for i in items)


def _is_sharded(storage: Storage, path: str) -> bool:
    try:
        return _shard_names(storage.listing(path))
    except OSError:
        return False


def _unreadable(path: str, err: OSError) -> Folder:
    return Folder(path, error=f"cannot read this folder: {reason(err)}")


def scan(folder: str, *, allow_outside: bool = False, root: str | None = None, deep: bool = False) -> Folder:
    """Read one directory (a path or URL): checkpoints, aliases with records, last checkpoints.

    Changes nothing. A directory that cannot be listed gives a :class:`Folder` with
    ``error`` set; a record that cannot be read gives an :class:`Alias` with ``error`` set.
    ``allow_outside``, ``root``, ``deep``: see :func:`load_alias`.
    """
    storage = storage_of(folder)
    path = folder_path(storage, folder)
    try:
        items = storage.listing(path)
    except OSError as err:
        return _unreadable(path, err)
    return _survey(storage, path, items, lambda item: _is_sharded(storage, item.path), allow_outside, root, deep)


def _survey(
    storage: Storage,
    path: str,
    items: list[Item],
    sharded: Callable[[Item], bool],
    allow_outside: bool,
    root: str | None = None,
    deep: bool = False,
) -> Folder:
    """The folder at ``path`` from its listing; ``sharded`` tells a checkpoint directory from a sub-folder."""
    listing = sorted((i for i in items if not i.name.startswith(".")), key=lambda i: natural(i.name))
    records = {i.name[: -len(SUFFIX)]: i for i in listing if i.name.endswith(SUFFIX) and len(i.name) > len(SUFFIX)}

    def path_of(name: str) -> str:  # the alias a record is of
        return records[name].path[: -len(SUFFIX)]

    aliases = [
        load_alias(path_of(name), records[name], storage, allow_outside=allow_outside, root=root, deep=deep)
        for name in sorted(records, key=natural)
    ]
    targets = {a.target for a in aliases if a.target is not None}

    result = Folder(path, aliases=aliases)
    entries: dict[str, Entry] = {}
    last_links: list[Item] = []
    for item in listing:
        if item.name.endswith(SUFFIX) or item.name in records:
            continue
        named = _looks_like_checkpoint(item.name) or item.path in targets
        if item.kind == "link":
            if is_last_name(item.name):
                last_links.append(item)  # save_last="link": marks the checkpoint it names
                continue
            entries[item.path] = Entry(
                item.name, item.path, item.leads_to == "dir", None, link_to=item.link_to, dangling=item.leads_to is None
            )
            if not named or item.name.startswith("best"):
                result.unrecorded.append(item.name)
            continue
        if item.kind == "dir":
            if not named and not sharded(item):
                result.subdirs.append(item.path)
                continue
            entries[item.path] = Entry(item.name, item.path, True, storage.tree_size(item.path))
        elif item.kind == "file" and named:
            entries[item.path] = Entry(item.name, item.path, False, item.size)
        else:
            continue
        if item.name.startswith("best"):
            result.unrecorded.append(item.name)
        if is_last_name(item.name):
            entries[item.path].marks.append("last")

    for alias in aliases:
        if alias.target in entries:
            entries[alias.target].marks.append(alias.label)
            if alias.record is not None:
                entries[alias.target].records.append(alias.record)
    # the folder's path is resolved (and sub-folders reached through links are not entered),
    # so a link's resolved target is the path of the entry it names
    for link in last_links:
        marked = entries.get(link.resolved or "")
        if marked is not None and link.leads_to is not None:
            if "last" not in marked.marks:
                marked.marks.append("last")
            continue
        # dangling, or pointing out of the folder: a row of its own, so it is not hidden
        entries[link.path] = Entry(
            link.name,
            link.path,
            link.leads_to == "dir",
            None,
            ["last"],
            link_to=link.link_to,
            dangling=link.leads_to is None,
        )
    result.entries = sorted(entries.values(), key=lambda e: natural(e.name))
    return result


def folders(root: str, recursive: bool, *, allow_outside: bool = False, deep: bool = False) -> list[Folder]:
    """``root`` alone, or with ``recursive`` every folder under it holding checkpoints or aliases.

    A record naming a checkpoint elsewhere under ``root`` is trusted (:func:`load_alias`): the
    user asked about that tree.

    Folders that cannot be read are in the list, with their ``error``. Symbolic links to
    folders and hidden folders are not entered. Each folder is listed once: a sub-folder
    that turns out to be a sharded checkpoint becomes a row of its parent.
    """
    if not recursive:
        return [scan(root, allow_outside=allow_outside, root=root, deep=deep)]
    storage = storage_of(root)
    seen: list[Folder] = []
    parent_of: dict[str, Folder] = {}
    top = folder_path(storage, root)

    def visit(path: str, items: list[Item] | OSError) -> list[Item]:
        above = parent_of.pop(path, None)
        if isinstance(items, OSError):
            seen.append(_unreadable(path, items))
            return []
        if above is not None and _shard_names(items):  # not a folder: a checkpoint of its parent
            above.subdirs.remove(path)
            name = os.path.basename(path)
            above.entries.append(Entry(name, path, True, storage.tree_size(path)))
            above.entries.sort(key=lambda e: natural(e.name))
            if name.startswith("best"):
                above.unrecorded = sorted([*above.unrecorded, name], key=natural)
            return []
        folder = _survey(storage, path, items, lambda item: False, allow_outside, top, deep)
        seen.append(folder)
        subdirs = set(folder.subdirs)
        below = [i for i in sorted(items, key=lambda i: natural(i.name)) if i.path in subdirs]
        parent_of.update((i.path, folder) for i in below)
        return below

    storage.walk(top, visit)
    return [f for f in seen if not f.empty]


@dataclass
class Located:
    """The alias a command line argument names (``path`` and ``watch``), or why there is none."""

    alias: str | None  # the alias path (absolute, or a URL)
    folder: Folder | None = None  # the folder surveyed, when the argument was one
    error: str | None = None
    exists: bool = True  # False: nothing at all is at the argument's path
    loaded: Alias | None = None  # the alias as the folder's survey loaded it


def locate(arg: str, *, allow_outside: bool = False) -> Located:
    """Which alias ``arg`` names: the alias itself (it has a record), its record, or a folder
    holding one best alias (aliases that follow the latest save, ``last.pt``, do not compete
    with it), or one alias in all. Reads only."""
    storage = storage_of(arg)
    path = storage.normalize(arg)
    if path.endswith(SUFFIX) and len(os.path.basename(path)) > len(SUFFIX):
        return Located(path[: -len(SUFFIX)])
    try:
        if storage.lookup(path + SUFFIX) is not None:
            return Located(path)
        item = storage.lookup(path)
    except OSError as err:
        return Located(None, error=f"cannot look at {arg}: {reason(err)}")
    if item is None:
        return Located(path, error=f"{arg} does not exist (no folder, no alias, no {SUFFIX} record)", exists=False)
    if (item.leads_to if item.kind == "link" else item.kind) != "dir":
        return Located(None, error=f"{arg} is not a folder and has no {SUFFIX} record next to it")
    folder = scan(path, allow_outside=allow_outside)
    if folder.error is not None:
        return Located(None, folder, f"{arg}: {folder.error}")
    if not folder.aliases:
        return Located(None, folder, f"no lightning-bestlink alias in {arg} (no {SUFFIX} record)")
    # an unreadable record may be a best alias: it competes
    best = [a for a in folder.aliases if not a.follows_latest]
    chosen = best if best else folder.aliases
    if len(chosen) > 1:
        names = ", ".join(a.name + (" (its record unreadable)" if a.record is None else "") for a in chosen)
        what = "best aliases" if best and len(best) < len(folder.aliases) else "aliases"
        return Located(None, folder, f"{arg} holds {len(chosen)} {what} ({names}); name one of them")
    return Located(chosen[0].path, folder, loaded=chosen[0])


__all__ = [  # with what it re-exports of .alias: the commands read through the survey alone
    "Alias",
    "Entry",
    "Folder",
    "Located",
    "folder_path",
    "folders",
    "leads_to",
    "load_alias",
    "locate",
    "natural",
    "parent",
    "reason",
    "scan",
    "storage_of",
]
