"""A survey of checkpoint folders: folders in, data out (aliases, records, checkpoints).

Nothing here prints or writes: ``cli.py`` renders what :func:`scan` and
:func:`folders` find, and the tests read it directly. Aliases are found by their
records (``<alias>.bestlink.json``), whatever their name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from lightning_bestlink._errors import AliasConflictError
from lightning_bestlink._health import AliasReport
from lightning_bestlink._metadata import SUFFIX
from lightning_bestlink._names import is_last_name
from lightning_bestlink.linker import BestLinker, read_metadata

#: file names taken for checkpoints (besides the targets of aliases, whatever their name)
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
#: what marks a directory as one sharded checkpoint (torch.distributed.checkpoint, Lightning FSDP/DeepSpeed)
_SHARDED_MARKERS = (".metadata", "meta.pt", "latest", "zero_to_fp32.py")


# --- what is in a folder ------------------------------------------------------------


@dataclass
class Alias:
    """One alias with a record in the folder, and its health."""

    name: str
    path: str
    record: dict[str, Any] | None = None
    report: AliasReport | None = None
    error: str | None = None  # the record could not be read

    @property
    def ok(self) -> bool:
        return self.error is None and self.report is not None and self.report.ok

    @property
    def status(self) -> str:
        if self.error is not None:
            return "bad-record"
        assert self.report is not None
        return self.report.status

    @property
    def target(self) -> str | None:
        return None if self.record is None else str(self.record["target"])

    @property
    def label(self) -> str:
        """The mark on the checkpoint row: ``best`` for ``best.ckpt``, ``best-acc`` for ``best-acc.ckpt``."""
        stem, ext = os.path.splitext(self.name)
        return stem if ext and stem else self.name


@dataclass
class Entry:
    """A checkpoint (file or directory) in the folder."""

    name: str
    path: str
    is_dir: bool
    size: int | None
    marks: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # of the aliases that point here
    link_to: str | None = None  # a symlink that is neither a recorded alias nor a last link


@dataclass
class Folder:
    """What ``show``, ``verify`` and ``repair`` know about one directory."""

    path: str
    entries: list[Entry]
    aliases: list[Alias]
    unrecorded: list[str]  # names that look like a best alias but have no record
    subdirs: bool  # has sub-directories that are not checkpoints (for the "-r" hint)

    @property
    def empty(self) -> bool:
        return not (self.entries or self.aliases or self.unrecorded)


def _natural(name: str) -> list[Any]:
    """Sort key: ``epoch=9`` before ``epoch=10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_sharded(path: str) -> bool:
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return any(n in _SHARDED_MARKERS or n.endswith(".distcp") for n in names)


def _tree_size(path: str) -> int | None:
    total = 0
    try:
        for top, _, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(top, name)).st_size
                except OSError:
                    pass
    except OSError:
        return None
    return total


def _load_alias(folder: str, name: str) -> Alias:
    alias = Alias(name, os.path.join(folder, name))
    try:
        alias.record = read_metadata(alias.path)
        alias.report = BestLinker.from_metadata(alias.path).verify()
    except AliasConflictError:  # not JSON, or not our format
        alias.error = f"{name}{SUFFIX} is not a lightning-bestlink record"
    except (KeyError, TypeError, ValueError) as err:  # our format, but a field is missing or wrong
        alias.error = f"{name}{SUFFIX} is damaged ({type(err).__name__}: {err})"
    except OSError as err:
        alias.error = f"cannot read {name}{SUFFIX}: {err.strerror or err}"
    return alias


def scan(folder: str) -> Folder:
    """Read one directory: checkpoints, aliases with records, last checkpoints. Changes nothing."""
    folder = os.path.abspath(folder)
    with os.scandir(folder) as it:
        listing = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: _natural(e.name))
    alias_names = {e.name[: -len(SUFFIX)] for e in listing if e.name.endswith(SUFFIX) and len(e.name) > len(SUFFIX)}
    aliases = [_load_alias(folder, name) for name in sorted(alias_names, key=_natural)]
    targets = {a.target for a in aliases if a.target is not None}

    entries: dict[str, Entry] = {}
    last_targets: list[str] = []
    unrecorded: list[str] = []
    subdirs = False
    for e in listing:
        if e.name.endswith(SUFFIX) or e.name in alias_names:
            continue
        is_link = e.is_symlink()
        if is_link and is_last_name(e.name):
            last_targets.append(os.path.realpath(e.path))  # save_last="link": marks the checkpoint it names
            continue
        try:
            is_dir = e.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        looks_like = e.name.endswith(CHECKPOINT_SUFFIXES) or e.path in targets or bool(is_last_name(e.name))
        if is_dir and not is_link and not looks_like and not _is_sharded(e.path):
            subdirs = True
            continue
        if not (looks_like or is_link or is_dir):
            continue
        if e.name.startswith("best") or (is_link and not looks_like):
            unrecorded.append(e.name)
        if is_link:
            size = None
            link_to = os.readlink(e.path)
        else:
            size = _tree_size(e.path) if is_dir else e.stat(follow_symlinks=False).st_size
            link_to = None
        entries[e.path] = Entry(e.name, e.path, is_dir, size, link_to=link_to)
        if is_last_name(e.name) and not is_link:
            entries[e.path].marks.append("last")

    for alias in aliases:
        if alias.target in entries:
            entries[alias.target].marks.append(alias.label)
            if alias.record is not None:
                entries[alias.target].records.append(alias.record)
    for target in last_targets:
        if target in entries and "last" not in entries[target].marks:
            entries[target].marks.append("last")
    return Folder(folder, list(entries.values()), aliases, unrecorded, subdirs)


def folders(root: str, recursive: bool) -> list[Folder]:
    """``root`` alone, or with ``recursive`` every folder under it holding checkpoints or aliases."""
    if not recursive:
        return [scan(root)]
    found: list[Folder] = []
    for top, dirs, _ in os.walk(root):
        try:
            folder = scan(top)
        except PermissionError:
            dirs[:] = []
            continue
        inside = {e.name for e in folder.entries if e.is_dir}
        dirs[:] = sorted((d for d in dirs if not d.startswith(".") and d not in inside), key=_natural)
        if not folder.empty:
            found.append(folder)
    return found
