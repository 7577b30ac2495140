"""Listing a folder for the survey: local directories and fsspec URLs, as the same items.

Read-only. Each folder is listed once; a folder that cannot be listed raises ``OSError``
for the survey to report. On fsspec URLs the filesystem comes from
``fsspec.core.url_to_fs`` with no options: credentials and endpoint come from the
environment (``AWS_*`` for s3fs) or fsspec's configuration (``FSSPEC_S3_ENDPOINT_URL``,
``FSSPEC_CONFIG_DIR``), as for the linker the commands build.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from typing import Any, Literal

from lightning_bestlink._storage import is_url, storage_for
from lightning_bestlink._storage.base import LOCAL_SCHEMES
from lightning_bestlink._storage.fsspec import FsspecStorage, as_os_error

ItemKind = Literal["file", "dir", "link", "other"]


@dataclass(frozen=True)
class Item:
    """One name in a folder, as the listing saw it."""

    name: str
    path: str  # absolute path, or URL
    kind: ItemKind  # "link": a symbolic link (local only); "other": a FIFO, socket or device
    size: int | None = None  # bytes of a file; None for the others
    link_to: str | None = None  # a link's text, as written
    resolved: str | None = None  # a link's target, absolute, every link followed
    leads_to: ItemKind | None = None  # what a link leads to; None when it dangles


def what(mode: int) -> str:
    """``"a FIFO"``, ``"a directory"``... for an ``st_mode``."""
    for test, text in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return text
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _kind(mode: int) -> ItemKind:
    if stat.S_ISREG(mode):
        return "file"
    return "dir" if stat.S_ISDIR(mode) else "other"


class LocalLister:
    """Plain paths (and ``file://`` URLs)."""

    def normalize(self, path: str) -> str:
        for scheme in LOCAL_SCHEMES:
            if path.startswith(scheme):
                path = path[len(scheme) :]
        # the folders on the way resolved, as the linker resolves them (not the last name: it may
        # be an alias that is a link): a record's target then names the path the listing shows
        head, name = os.path.split(os.path.abspath(os.path.expanduser(path)))
        return os.path.join(os.path.realpath(head), name) if name else os.path.realpath(head)

    def normalize_folder(self, path: str) -> str:
        """A folder to list, the folder itself resolved too (it may be a link to the real one)."""
        return os.path.realpath(self.normalize(path))

    def join(self, folder: str, name: str) -> str:
        return os.path.join(folder, name)

    def lookup(self, path: str) -> Item | None:
        """The item at ``path`` (links described, not followed), None when nothing is there."""
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        name = os.path.basename(path)
        if not stat.S_ISLNK(st.st_mode):
            return Item(name, path, _kind(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else None)
        try:
            leads_to: ItemKind | None = _kind(os.stat(path).st_mode)
        except OSError:  # dangling, a loop, or a folder on the way that cannot be read
            leads_to = None
        return Item(name, path, "link", None, os.readlink(path), os.path.realpath(path), leads_to)

    def listing(self, folder: str) -> list[Item]:
        items = []
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    item = self.lookup(entry.path)
                except OSError:  # gone between the listing and the look (old checkpoints are pruned)
                    continue
                if item is not None:
                    items.append(item)
        return items

    def fingerprint(self, path: str) -> Any:
        """What changes whenever the file at ``path`` is replaced (None when there is none): one stat."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)

    def names(self, folder: str) -> list[str]:
        try:
            return os.listdir(folder)
        except OSError:
            return []

    def tree_size(self, path: str) -> int | None:
        total = 0
        for top, _, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(top, name)).st_size
                except OSError:
                    pass
        return total


class FsspecLister:
    """Any fsspec URL (``s3://bucket/run``): an object store has no links. Looks go through the
    alias storage (fresh from the server, client errors as ``OSError``)."""

    def __init__(self, storage: FsspecStorage) -> None:
        self.storage = storage
        self.fs = storage.fs

    def _strip(self, url: str) -> str:
        return str(self.fs._strip_protocol(url))

    def normalize(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(self._strip(path)))

    def normalize_folder(self, path: str) -> str:
        return self.normalize(path)

    def join(self, folder: str, name: str) -> str:
        return folder.rstrip("/") + "/" + name

    def _item(self, info: dict[str, Any]) -> Item:
        name = str(info["name"]).rstrip("/")
        url = self.normalize(name)
        if info.get("type") == "directory":
            return Item(posixpath.basename(name), url, "dir")
        size = info.get("size")
        return Item(posixpath.basename(name), url, "file", size if isinstance(size, int) else None)

    def lookup(self, path: str) -> Item | None:
        info = self.storage.info(path)
        return None if info is None else self._item(info)

    def listing(self, folder: str) -> list[Item]:
        stripped = self._strip(folder).rstrip("/")
        self.fs.invalidate_cache(stripped)  # fresh: a cached listing may predate the last update
        with as_os_error("listing", folder):
            infos = self.fs.ls(stripped, detail=True)
        return [self._item(i) for i in infos if str(i["name"]).rstrip("/") != stripped]

    def fingerprint(self, path: str) -> Any:
        """What changes whenever the object at ``path`` is replaced (None when there is none): one request."""
        return self.storage.identity(path)

    def names(self, folder: str) -> list[str]:
        try:
            return [item.name for item in self.listing(folder)]
        except OSError:
            return []

    def tree_size(self, path: str) -> int | None:
        try:
            with as_os_error("measuring", path):
                return int(self.fs.du(self._strip(path), total=True))
        except OSError:
            return None


Lister = LocalLister | FsspecLister


def parent(path: str) -> str:
    """The folder of ``path`` (a local path or a URL)."""
    return path.rstrip("/").rsplit("/", 1)[0] if is_url(path) else os.path.dirname(path)


def lister_for(path: str) -> Lister:
    """The lister for ``path``: fsspec for URLs (other than ``file://``), local otherwise."""
    if not is_url(path):
        return LocalLister()
    with as_os_error("opening", path):
        storage = storage_for(path)
    assert isinstance(storage, FsspecStorage)
    return FsspecLister(storage)
