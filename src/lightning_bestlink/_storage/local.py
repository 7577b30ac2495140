"""Local paths (Linux; POSIX systems without renameat2 get the fallbacks below): a symlink, hard
link or copy, staged then published.

The new alias is written under a hidden temporary name in the alias's own folder
and published in one atomic step that replaces only what was checked to be there
(``renameat2`` exchange or no-replace on Linux; a last check and ``os.replace``
elsewhere). Writers of one alias take a lock file next to it (``filelock``).
The file primitives live in ``_files.py``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Collection, Iterable
from typing import Any

from lightning_bestlink._storage._compare import same_bytes, same_tree
from lightning_bestlink._storage._files import (
    STAGED,
    SWAPPED,
    DescriptorLock,
    discard,
    folder_of,
    fsync_dir,
    ident_of,
    is_unsupported,
    key_of,
    make,
    publish_new,
    read_regular,
    relative_to_folder,
    replace_expected,
    swap_in,
    tmp_name,
    virtual_devices,
)
from lightning_bestlink._storage._leftovers import remove_leftovers, slot_of
from lightning_bestlink._storage.base import (
    LOCAL_SCHEMES,
    AliasKind,
    AliasState,
    Displaced,
    Ident,
    Item,
    LinkChoice,
    LinkKind,
    NameTaken,
    Removal,
    Staged,
    Storage,
    TargetType,
    is_url,
)


def _type_of(st: os.stat_result) -> TargetType:
    if st.st_dev in virtual_devices():
        return "other"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _remember(known: set[str], item: str, most: int) -> None:
    """Add ``item`` to a cache of at most ``most`` items (few are in use at a time: it starts over when full)."""
    if len(known) >= most:
        known.clear()
    known.add(item)


class LocalStorage(Storage):
    """Local paths: symlink, hardlink or copy, staged then renamed, under a lock file next to the alias."""

    link_kinds: tuple[LinkKind, ...] = ("symlink", "hardlink", "copy")
    can_lock = True
    stages_copies = True

    def __init__(self) -> None:
        # link kinds that failed with "not supported" here; "auto" skips them next time
        self._unsupported: set[str] = set()
        # what write_text last wrote, per path, with the file's identity: reading it back is a
        # stat instead of open/read/close, and any change by someone else shows in the stat
        self._written: dict[str, tuple[Ident, str]] = {}
        # what normalize() found unchanged by resolving links: folders, then whole paths (an update
        # normalises its checkpoint's path twice). A folder reached through a link is resolved at
        # every call: the link may be pointed elsewhere meanwhile (runs/latest -> a newer run)
        self._real_folders: set[str] = set()
        self._normal: set[str] = set()
        self._locks: dict[str, DescriptorLock] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_locks"] = {}  # a lock held by this process stays with it; a copy makes its own
        return state

    # --- paths ------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        return not is_url(path)

    def normalize(self, path: str | os.PathLike[str]) -> str:
        text = os.fspath(path)
        if text in self._normal:
            return text
        given = text
        for scheme in LOCAL_SCHEMES:
            if text.startswith(scheme):
                text = text[len(scheme) :]
                break
        head, base = os.path.split(os.path.abspath(os.path.expanduser(text)))
        if head not in self._real_folders:
            real = os.path.realpath(head)  # a relative link must start from the real folder
            if real != head:
                return os.path.join(real, base)
            _remember(self._real_folders, head, 1024)
        normal = os.path.join(head, base)
        if normal == given:  # absolute, normal, no link on the way: the same at the next call
            _remember(self._normal, normal, 64)
        return normal

    def resolve_target(self, path: str) -> str:
        # a link to a link would follow the wrong file once the middle link moves
        return os.path.realpath(path) if os.path.islink(path) else path

    def relative(self, target: str, alias: str) -> str:
        return relative_to_folder(target, folder_of(alias))

    def absolute(self, recorded: str, alias: str) -> str:
        if "/" not in recorded and recorded not in ("", ".", ".."):  # a name next to the alias, as records hold it
            return f"{alias.rpartition('/')[0]}/{recorded}"
        return os.path.normpath(os.path.join(os.path.dirname(alias), recorded))

    def same_file(self, a: str, b: str) -> bool:
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False

    def in_folder_of(self, alias: str, path: str) -> bool:
        folder = os.path.realpath(os.path.dirname(alias))
        real = os.path.realpath(path)
        return real != folder and os.path.commonpath([folder, real]) == folder

    def encloses(self, path: str, alias: str) -> bool:
        folder, real = os.path.realpath(os.path.dirname(alias)), os.path.realpath(path)
        return os.path.commonpath([folder, real]) == real

    # --- what is there ------------------------------------------------------------

    def target_type(self, path: str) -> TargetType | None:
        try:
            return _type_of(os.stat(path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def describe(self, path: str) -> tuple[str, TargetType | None, Ident]:
        try:
            st = os.lstat(path)  # a checkpoint that is no link: one system call says it all
            if stat.S_ISLNK(st.st_mode):
                path = self.resolve_target(path)
                st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return path, None, None
        return path, _type_of(st), ident_of(st)

    def inspect(self, alias: str, *, resolve: bool = True) -> AliasState:
        try:
            st = os.lstat(alias)
        except (FileNotFoundError, NotADirectoryError):
            return AliasState("missing")
        if stat.S_ISLNK(st.st_mode):
            if not resolve:
                return AliasState("symlink", key=key_of(st))
            raw = os.readlink(alias)
            named = os.path.join(os.path.dirname(alias), raw)
            # ".." after a linked folder climbs out of where the link leads, not out of its name
            points_to = os.path.realpath(named) if ".." in raw.split("/") else os.path.normpath(named)
            return AliasState("symlink", points_to=points_to, key=key_of(st))
        kind: AliasKind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        return AliasState(kind, ident=ident_of(st), key=key_of(st), owner=st.st_uid)

    def may_vouch(self, record: str, alias: AliasState) -> bool:
        try:
            uid = os.lstat(record).st_uid
            if uid in (os.geteuid(), alias.owner):
                return True
            folder = os.stat(folder_of(record))
        except (FileNotFoundError, NotADirectoryError):
            return False
        # without the sticky bit, whoever could write the record could replace the alias too: their
        # record proves no more than they could do (two users' sweep in a group-writable folder)
        return not folder.st_mode & stat.S_ISVTX or uid == folder.st_uid

    def identity(self, path: str) -> Ident:
        try:
            return ident_of(os.lstat(path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def looks_like_copy(self, alias: str, target: str) -> bool:
        try:
            a, t = os.stat(alias), os.stat(target)
        except OSError:
            return False
        if stat.S_ISDIR(a.st_mode) or stat.S_ISDIR(t.st_mode):
            return stat.S_ISDIR(a.st_mode) and stat.S_ISDIR(t.st_mode)
        return a.st_size == t.st_size

    def copied_with_times(self, ident: Any, original: Any) -> bool:
        # device, inode, size, mtime in ns: a copy's random nanoseconds (see _files._stamp) kept too
        if not (isinstance(ident, list) and isinstance(original, list) and len(ident) == len(original) == 4):
            return False
        return bool(ident[:2] != original[:2] and ident[2:] == original[2:])

    def same_content(self, a: str, b: str) -> bool | None:
        return same_bytes(a, b)

    def tree_time(self, path: str) -> int | None:
        from lightning_bestlink._storage._remove import newest_mtime  # with removals: on first use

        try:
            return newest_mtime(path)
        except (FileNotFoundError, NotADirectoryError):  # gone meanwhile: listed without it, so never deleted
            return None

    def same_tree(self, alias: str, target: str) -> bool | None:
        try:
            return same_tree(alias, target)
        except OSError:
            return False

    # --- writing the alias --------------------------------------------------------

    def lock(self, alias: str, timeout: float) -> DescriptorLock:
        lock = self._locks.get(alias)
        if lock is None:
            path = os.path.join(os.path.dirname(alias), f".{os.path.basename(alias)}.bestlink.lock")
            lock = self._locks[alias] = DescriptorLock(path, timeout)
        return lock

    def _candidates(self, choice: LinkChoice, is_dir: bool) -> tuple[LinkKind, ...]:
        if choice != "auto":
            return (choice,)
        order: tuple[LinkKind, ...] = ("symlink", "copy") if is_dir else ("symlink", "hardlink", "copy")
        if not self._unsupported:  # as long as every kind worked here, all of them
            return order
        return tuple(k for k in order if k not in self._unsupported) or ("copy",)

    def check_can_alias(self, target: str, choice: LinkChoice, *, is_dir: bool) -> None:
        if choice == "hardlink" and is_dir:
            raise IsADirectoryError(
                errno.EISDIR,
                f"link='hardlink' cannot alias the directory checkpoint {target!r}: directories "
                f"have no hard links; use link='auto', 'symlink' or 'copy'",
            )

    def stage(self, target: str, alias: str, choice: LinkChoice, *, is_dir: bool, durable: bool) -> Staged:
        candidates = self._candidates(choice, is_dir)
        for i, kind in enumerate(candidates):
            # a link is exchanged where it is staged (what comes out is judged by the cleanup); a file or
            # folder is moved to its exchange slot first (only what the record names is removed from there)
            tmp = tmp_name(alias, SWAPPED if kind == "symlink" else STAGED)
            try:
                try:
                    make(kind, target, tmp, is_dir, durable=durable)
                except FileNotFoundError:
                    if os.path.isdir(os.path.dirname(alias)):
                        raise
                    # the alias's folder does not exist yet: make it (only then, to spare a syscall)
                    os.makedirs(os.path.dirname(alias), exist_ok=True)
                    make(kind, target, tmp, is_dir, durable=durable)
            except OSError as err:
                if not isinstance(err, NameTaken):  # else what is there now is someone else's
                    discard(tmp)
                if choice == "auto" and i + 1 < len(candidates) and is_unsupported(err, kind):
                    self._unsupported.add(kind)
                    continue
                raise
            except BaseException:
                discard(tmp)
                raise
            ident = None if kind == "symlink" else ident_of(os.lstat(tmp))
            return Staged(kind, target, alias, tmp, ident)
        raise AssertionError("unreachable: the last candidate either returns or raises")

    def commit(self, staged: Staged, expected: AliasState, *, durable: bool) -> None:
        tmp, alias = staged.tmp, staged.alias
        assert tmp is not None
        try:
            if expected.kind == "missing":
                publish_new(tmp, alias)
            elif staged.kind == "symlink":
                replace_expected(tmp, alias, expected, self.inspect)
            else:
                slot = slot_of(tmp)
                os.rename(tmp, slot)
                try:
                    replace_expected(slot, alias, expected, self.inspect)
                except BaseException:
                    with contextlib.suppress(OSError):
                        if ident_of(os.lstat(slot)) == staged.ident:  # ours, swapped back: anything else stays
                            discard(slot)
                    raise
        except Displaced:  # published all the same
            if durable:
                fsync_dir(os.path.dirname(alias))
            raise
        if durable:
            fsync_dir(os.path.dirname(alias))

    def abort(self, staged: Staged) -> None:
        if staged.tmp is not None and staged.kind == "symlink":  # staged in its slot: what is there may have
            with contextlib.suppress(OSError):  # come out of the alias path, if swapping it back failed
                if not stat.S_ISLNK(os.lstat(staged.tmp).st_mode):
                    return  # not ours: the cleanup keeps it, with a warning
        discard(staged.tmp)

    def cleanup(
        self, alias: str, *bookkeeping: str, ours: Collection[Ident] = (), named: Ident | None = None
    ) -> list[str]:
        # called with the alias's lock held: no other writer is half-way
        return remove_leftovers(alias, bookkeeping, ours, named)

    # --- the record ----------------------------------------------------------------

    def read_text(self, path: str, limit: int) -> str | None:
        cached = self._written.get(path)
        if cached is not None:
            try:
                if ident_of(os.stat(path)) == cached[0]:
                    return cached[1]
            except FileNotFoundError:
                return None
        return read_regular(path, limit)

    def write_text(self, path: str, text: str, *, durable: bool) -> None:
        tmp = tmp_name(path, "tmp")
        self._written.pop(path, None)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            try:
                data = text.encode("utf-8")
                while data:  # a record is one write; a short write only on a full disk, which raises
                    data = data[os.write(fd, data) :]
                if durable:
                    os.fsync(fd)
                key = ident_of(os.fstat(fd))  # the rename keeps inode, size and mtime
            finally:
                os.close(fd)
            swap_in(tmp, path, durable=durable)
        except BaseException:
            discard(tmp)
            raise
        self._written[path] = (key, text)

    def remove_file(self, path: str) -> None:
        self._written.pop(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    # --- removing a saved checkpoint (retention) --------------------------------------

    def settle_saved(self, alias: str, path: str, ident: Ident, kind: TargetType) -> str:
        from lightning_bestlink._storage._remove import settle_saved

        return settle_saved(os.path.dirname(alias), path, ident, kind)

    def remove_saved(self, alias: str, path: str, ident: Ident, kind: TargetType) -> Removal:
        # through descriptors opened without following a link, renamed aside and checked before
        # it is deleted: see _remove.py
        from lightning_bestlink._storage._remove import remove_saved  # only once a checkpoint goes

        return remove_saved(os.path.dirname(alias), path, ident, kind)

    # --- listing and holding (the command line) ----------------------------------------
    # Read-only looks for the survey (``_listing.py``: relative to directory descriptors), and
    # holds of a checkpoint for a reader (``_hold.py``); imported on first use.

    def lookup(self, path: str) -> Item | None:
        from lightning_bestlink._storage import _listing

        return _listing.lookup(path)

    def listing(self, folder: str) -> list[Item]:
        from lightning_bestlink._storage import _listing

        return _listing.listing(folder)

    def tree_size(self, path: str) -> int | None:
        from lightning_bestlink._storage import _listing

        return _listing.tree_size(path)

    def walk(self, root: str, visit: Callable[[str, list[Item] | OSError], Iterable[Item]]) -> None:
        from lightning_bestlink._storage import _listing

        if not _listing.BY_DESCRIPTOR:
            return super().walk(root, visit)
        return _listing.walk(root, visit)

    def hold(self, path: str) -> str | None:
        from lightning_bestlink._storage import _hold

        return _hold.hold(path)

    def release(self, held: str) -> None:
        from lightning_bestlink._storage import _hold

        _hold.release(held)

    def release_stale(self, folder: str) -> list[str]:
        from lightning_bestlink._storage import _hold

        return _hold.release_stale(folder)
