"""Local folders as the command line's survey sees them: items, relative to a directory descriptor.

Each folder is opened once and its names looked at relative to that descriptor
(``fstatat``), and the walk opens each sub-folder relative to its parent's. So a look
costs the same in a folder 2,000 levels down as at the top: no system call is given a
path longer than a name, and no path is resolved again for each folder.

A name that disappears between the listing and the look is left out (training deletes
old checkpoints); any other failure (a folder the user can list but not enter) stops the
folder's listing with an ``OSError`` that says so. A folder whose path is longer than
the system takes (``PATH_MAX``) is reported instead of listed: nothing in it could be
opened by its path afterwards (records, checkpoints).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable

from lightning_bestlink._storage.base import Item, ItemKind

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
#: folders opened as descriptors and looked into relative to them (where the platform allows it)
BY_DESCRIPTOR = os.scandir in os.supports_fd and {os.open, os.stat, os.readlink} <= os.supports_dir_fd
#: sub-folders opened ahead, relative to their parent, at most: the rest are opened by path
_AHEAD = 32


def _path_max() -> int | None:
    try:
        return os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):  # a system with no limit to tell
        return None


PATH_MAX = _path_max()


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


def item(name: str, path: str, st: os.stat_result, dir_fd: int | None = None) -> Item:
    """The item for ``name`` (at ``path``) from its ``lstat``; a link is read and followed once."""
    if not stat.S_ISLNK(st.st_mode):
        kind = _kind(st.st_mode)
        return Item(name, path, kind, st.st_size if kind == "file" else None, what=what(st.st_mode))
    where = name if dir_fd is not None else path
    link_to = os.readlink(where, dir_fd=dir_fd)
    try:
        target = os.stat(where, dir_fd=dir_fd)
    except OSError:  # dangling, a loop, or a folder on the way that cannot be entered
        return Item(name, path, "link", None, link_to, os.path.realpath(path), None)
    return Item(name, path, "link", None, link_to, os.path.realpath(path), _kind(target.st_mode), what(target.st_mode))


def lookup(path: str) -> Item | None:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return item(os.path.basename(path), path, st)


def _not_entered(folder: str) -> PermissionError:
    return PermissionError(
        errno.EACCES, "Permission denied: its names can be listed, but not looked at (no search permission)", folder
    )


def items_at(fd: int, folder: str) -> list[Item]:
    """The items of the folder open as ``fd`` (whose path is ``folder``)."""
    found = []
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)  # fstatat(fd, name): relative to the folder
            except FileNotFoundError:
                continue  # gone between the listing and the look (an old checkpoint deleted)
            except PermissionError:
                raise _not_entered(folder) from None
            found.append(item(entry.name, os.path.join(folder, entry.name), st, fd))
    return found


def _too_long(folder: str) -> OSError | None:
    size = len(os.fsencode(folder))
    if PATH_MAX is None or size < PATH_MAX:
        return None
    return OSError(
        errno.ENAMETOOLONG,
        f"its path is {size} bytes long, more than this system takes ({PATH_MAX}, PATH_MAX): nothing in it "
        f"can be opened by its path",
        folder,
    )


def _open(folder: str) -> int:
    too_long = _too_long(folder)
    if too_long is not None:
        raise too_long
    return os.open(folder, _DIR_FLAGS)


def listing(folder: str) -> list[Item]:
    if not BY_DESCRIPTOR:
        with os.scandir(folder) as entries:
            return [i for i in (_by_path(e) for e in entries) if i is not None]
    fd = _open(folder)
    try:
        return items_at(fd, folder)
    finally:
        os.close(fd)


def _by_path(entry: os.DirEntry[str]) -> Item | None:
    try:
        return item(entry.name, entry.path, entry.stat(follow_symlinks=False))
    except FileNotFoundError:
        return None
    except PermissionError:
        raise _not_entered(os.path.dirname(entry.path)) from None


def walk(root: str, visit: Callable[[str, list[Item] | OSError], Iterable[Item]]) -> None:
    """:meth:`Storage.walk` for local folders: each sub-folder opened relative to its parent."""
    stack: list[tuple[str, int | None]] = [(root, None)]
    ahead = 0  # descriptors opened for folders still on the stack
    try:
        while stack:
            folder, fd = stack.pop()
            if fd is not None:
                ahead -= 1
            try:
                if fd is None:
                    fd = _open(folder)
                else:
                    too_long = _too_long(folder)
                    if too_long is not None:
                        raise too_long
                found: list[Item] | OSError = items_at(fd, folder)
            except OSError as err:
                found = err
            try:
                children = []
                for sub in visit(folder, found):
                    child = None
                    if fd is not None and ahead < _AHEAD:
                        try:  # relative, and never through a link put there since the listing
                            child = os.open(sub.name, _DIR_FLAGS | getattr(os, "O_NOFOLLOW", 0), dir_fd=fd)
                            ahead += 1
                        except OSError:
                            child = None  # opened by path when its turn comes: the error is reported then
                    children.append((sub.path, child))
                stack.extend(reversed(children))
            finally:
                if fd is not None:
                    os.close(fd)
    finally:
        for _, fd in stack:
            if fd is not None:
                os.close(fd)


def tree_size(path: str) -> int:
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total
