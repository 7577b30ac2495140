"""File primitives for local aliases: temporary names, identities, bounded reads, and the
publishing step that never replaces what it did not expect.

``local.py`` decides what to do (which link kind, when to fall back); this module
does each step with as few system calls as it takes.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn

import lightning_bestlink._storage._syscalls as _syscalls
from lightning_bestlink._errors import AliasConflictError, RecordError
from lightning_bestlink._storage.base import AliasState, Displaced, Ident, LinkKind

#: what marks a temporary name (``.<alias>.bestlink-<tag>-<pid>-<random>``); the alias's cleanup, run
#: under its lock, removes every such name of that alias: no writer of it can be half-way then
TMP_MARK = ".bestlink-"
#: the tags of an alias's temporary names. STAGED: a new alias made there and never published (only
#: a writer of the alias makes one: a leftover is always removed). SWAPPED: the slot an exchange
#: swaps the old alias into, where a file someone had put at the alias path lands if the writer is
#: killed before swapping it back: a leftover there is removed only if it is a link, or what the
#: alias's record names (the new alias, about to be swapped in, or the old one it replaced)
STAGED, SWAPPED = "tmp", "out"


# Errors that mean "this filesystem cannot make that kind of link here". Anything
# else (ENOSPC, EACCES, EEXIST, ...) is a real failure and must not trigger a fallback.
_UNSUPPORTED = {
    errno.EPERM,
    errno.EXDEV,
    errno.ENOSYS,
    getattr(errno, "ENOTSUP", 95),
    getattr(errno, "EOPNOTSUPP", 95),
    524,  # ENOTSUPP, what Linux NFS/CIFS return for symlinks they refuse
}


def is_unsupported(err: OSError, kind: str) -> bool:
    """Whether ``err`` from making a ``kind`` link means "not supported here"."""
    if kind == "hardlink" and err.errno == errno.EMLINK:
        return True
    return err.errno in _UNSUPPORTED


# the last part of a temporary name: a count from a random start, so that a name is new without a
# system call for randomness at every update (the process id tells two writers apart on one host,
# the random start two hosts that share the folder)
_serial = itertools.count(int.from_bytes(os.urandom(4), "big"))


def tmp_name(path: str, tag: str) -> str:
    """A hidden sibling of ``path`` that :meth:`LocalStorage.cleanup` recognises."""
    head, sep, base = path.rpartition("/")  # POSIX paths: what os.path.split and join do, in one step
    return f"{head}{sep}.{base}{TMP_MARK}{tag}-{pid()}-{next(_serial) & 0xFFFFFFFF:08x}"


_pid = os.getpid()


def pid() -> int:
    """The id of the running process, without a system call each time: set again in a child that
    Python forks, kept from the parent in one forked from C, which only names temporary files with
    it (each written under its alias's lock, so two processes never stage at the same time)."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def remove_tree_or_file(path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        import shutil

        shutil.rmtree(path)
    else:
        os.unlink(path)


def _unlink_quietly(path: str) -> None:
    """Unlink a file or link this writer swapped out; a failure leaves it for the alias's cleanup."""
    try:
        os.unlink(path)
    except OSError:
        pass


def discard(path: str | None) -> None:
    """Remove a temporary name; errors are left for :meth:`LocalStorage.cleanup`."""
    if path is None:
        return
    try:
        remove_tree_or_file(path)
    except OSError:
        pass  # the caller's own error is the one that matters


def ident_of(st: os.stat_result) -> Ident:
    """What identifies a file or directory: an inode number alone is reused once freed (ext4
    does so at once), so size and modification time in nanoseconds come with it."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def key_of(st: os.stat_result) -> Ident:
    """What was at a path, to notice a change before publishing over it."""
    return [st.st_dev, st.st_ino] if stat.S_ISLNK(st.st_mode) else ident_of(st)


def _stamp(path: str | int) -> None:
    """Give a fresh copy (a directory's path, or a file's descriptor) random nanoseconds in its
    mtime (within its second).

    A copy's identity must not be matched by a file someone writes at the alias path later,
    even one that reuses the freed inode number with the same size in the same clock tick.
    """
    st = os.lstat(path) if isinstance(path, str) else os.fstat(path)
    nanos = int.from_bytes(os.urandom(4), "little") % 1_000_000_000
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - st.st_mtime_ns % 1_000_000_000 + nanos))


_VIRTUAL_DEVICES: set[int] | None = None  # filled on first use


def virtual_devices() -> set[int]:
    """The devices of /proc, /sys and /dev: their files are views of the system, never checkpoints."""
    global _VIRTUAL_DEVICES
    if _VIRTUAL_DEVICES is None:
        found = set()
        for root in ("/proc", "/sys", "/dev"):
            try:
                found.add(os.stat(root).st_dev)
            except OSError:
                pass
        _VIRTUAL_DEVICES = found
    return _VIRTUAL_DEVICES


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _changed(alias: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "something else was put there while the new alias was staged", alias)


def publish_new(tmp: str, alias: str) -> None:
    """Move ``tmp`` to ``alias`` only if nothing is at ``alias``; ``FileExistsError`` otherwise."""
    if _syscalls.rename_noreplace(tmp, alias):
        return
    if not os.path.isdir(tmp) or os.path.islink(tmp):
        try:  # link(2) never replaces: a second name appears only where none is
            os.link(tmp, alias, follow_symlinks=False)
        except FileExistsError:
            raise _changed(alias) from None
        except OSError as err:
            if not is_unsupported(err, "hardlink"):
                raise
        else:
            os.unlink(tmp)
            return
    # neither here (a directory without renameat2, or no hard links on this filesystem): check
    # once more; rename() of a directory also fails on anything but an empty directory
    if os.path.lexists(alias):
        raise _changed(alias)
    os.rename(tmp, alias)


def replace_expected(tmp: str, alias: str, expected: AliasState, inspect: Callable[[str], AliasState]) -> None:
    """Put ``tmp`` at ``alias`` if ``alias`` still holds what ``expected`` describes; else change nothing."""
    if _syscalls.exchange(tmp, alias):
        # the old alias now sits at tmp: it must be what was checked, or it goes back
        old = os.lstat(tmp)
        if key_of(old) != expected.key:
            try:
                _syscalls.exchange(tmp, alias)
            except OSError as err:
                link = stat.S_ISLNK(old.st_mode)
                if os.path.lexists(alias):  # the new alias, exchanged in: it stays, what came out is kept
                    raise Displaced(alias, tmp, link, err, published=True) from err
                _not_put_back(tmp, None, alias, link, err)  # someone took the new alias away meanwhile
            raise _changed(alias)
        if stat.S_ISDIR(old.st_mode):
            _remove_old_tree(tmp, alias)
        else:
            _unlink_quietly(tmp)
        return
    # no atomic exchange here: check once more right before the one rename
    if inspect(alias).key != expected.key:
        raise _changed(alias)
    if expected.kind == "dir" or (os.path.isdir(tmp) and not os.path.islink(tmp)):
        # rename() cannot put a directory over a file or a non-empty directory
        trash = tmp_name(alias, SWAPPED)
        os.rename(alias, trash)  # short window without an alias: no atomic exchange on this platform
        out = os.lstat(trash)
        if key_of(out) != expected.key:  # moved in after the last check: it goes back
            try:
                publish_new(trash, alias)  # not over what yet another hand put there meanwhile
            except OSError as err:
                _not_put_back(trash, tmp, alias, stat.S_ISLNK(out.st_mode), err)
            raise _changed(alias)
        try:
            os.rename(tmp, alias)
        except BaseException as err:
            try:
                publish_new(trash, alias)  # the previous alias goes back, not over what another hand put there
            except OSError as back:
                raise Displaced(alias, trash, False, back, published=False, ours=True) from err
            raise
        _remove_old_tree(trash, alias)
    else:
        os.replace(tmp, alias)


def _not_put_back(kept: str, new: str | None, alias: str, link: bool, err: OSError) -> NoReturn:
    """What came out of the alias path (at ``kept``) could not go back (``err``). Only where the alias
    path is empty does ``new`` go in (:class:`Displaced`, published), or, with no new alias of ours
    left (None), what came out goes back after all (``FileExistsError``, as on any change); else it
    stays at ``kept`` (:class:`Displaced`, not published)."""
    try:
        publish_new(kept if new is None else new, alias)  # never over what yet another hand put there
    except OSError:
        raise Displaced(alias, kept, link, err, published=False) from err
    if new is None:
        raise _changed(alias) from err
    raise Displaced(alias, kept, link, err, published=True) from err


def _remove_old_tree(old: str, alias: str) -> None:
    """Remove the old alias, checked and swapped out to ``old`` (see :func:`as_staged`)."""
    discard(as_staged(old, alias))


def as_staged(tree: str, alias: str) -> str:
    """Rename ``tree``, a temporary name of ``alias`` about to be removed, to a staged name; returns it.
    Emptied one file at a time, a killed removal would leave a tree the record no longer names, which
    the next cleanup could only keep; a staged name it removes whatever is left of it."""
    doomed = tmp_name(alias, STAGED)
    os.rename(tree, doomed)
    return doomed


def folder_of(path: str) -> str:
    """The folder of a normalised absolute path, as ``os.path.dirname`` gives it, in one step.

    >>> folder_of("/runs/a/best.ckpt"), folder_of("/best.ckpt")
    ('/runs/a', '/')
    """
    return path.rpartition("/")[0] or "/"


def relative_to_folder(path: str, folder: str) -> str:
    """``path`` relative to ``folder`` (both absolute and normalised)."""
    head, _, name = path.rpartition("/")
    if (head or "/") == folder:  # the checkpoint next to the alias: no need for relpath's work
        return name
    return os.path.relpath(path, folder)


def swap_in(tmp: str, path: str, *, durable: bool) -> None:
    """Put the complete file ``tmp`` at ``path`` in one atomic step (a reader sees the old file or the new).

    Durable: ``os.replace``, which on ext4 also flushes the new file's data before the rename
    commits (so a power loss never leaves an empty file), at about 80 us on the disks measured.
    Otherwise the promise is only "survives a killed process", which an atomic exchange keeps
    for a tenth of that: swap the two names, then remove the old file (now at ``tmp``; a kill in
    between leaves it for the alias's cleanup).
    """
    if not durable:
        try:
            if _syscalls.exchange(tmp, path):
                _unlink_quietly(tmp)  # the old record (a file: records are only ever files)
                return
        except FileNotFoundError:
            pass  # nothing at ``path`` yet: a plain rename creates it
    os.replace(tmp, path)


def read_regular(path: str, limit: int) -> str | None:
    """The text of the regular file at ``path`` (at most ``limit`` bytes); None when nothing is there.

    Never follows a symlink, never blocks on a FIFO, never reads more than ``limit`` + 1 bytes.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _syscalls.NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP or os.path.islink(path):
            raise RecordError(f"{path!r} is a symbolic link, not a record file; move it away") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RecordError(f"{path!r} is not a regular file (mode {stat.filemode(st.st_mode)}); move it away")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise RecordError(f"{path!r} is larger than {limit} bytes: not a lightning-bestlink record; move it away")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(
            f"{path!r} is not UTF-8 text ({err}): not a lightning-bestlink record; move it away"
        ) from None


def make(kind: LinkKind, target: str, tmp: str, is_dir: bool, *, durable: bool) -> None:
    if kind == "symlink":
        os.symlink(relative_to_folder(target, folder_of(tmp)), tmp, target_is_directory=is_dir)
    elif kind == "hardlink":
        os.link(target, tmp, follow_symlinks=False)
    else:
        from lightning_bestlink._storage import _clone  # a clone where the filesystem can, file by file

        if is_dir:  # entry by entry through descriptors, stamped on the folder's own
            _clone.copytree(target, tmp, finish=lambda fd, st: _stamp(fd))
        else:  # mode, stamp and flush on the copy's descriptor: never through a name planted at tmp
            _clone.copyfile(target, tmp, finish=partial(_finish_copy, durable=durable))


def _finish_copy(fd: int, st: os.stat_result, *, durable: bool) -> None:
    os.fchmod(fd, st.st_mode & 0o7777)  # as shutil.copymode
    _stamp(fd)
    if durable:
        os.fsync(fd)


def open_lock_file(path: str) -> int:
    """A descriptor of the lock file at ``path``, made if missing; never through a link.

    An existing lock is opened for reading only: ``flock`` needs no more, so whoever may
    write the alias's folder can use a lock another user made (its mode follows the umask).
    Anything but a regular file there (a symlink, a FIFO, a device) is refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _syscalls.NOFOLLOW)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:  # a lock someone else makes meanwhile is used as it is
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _syscalls.NOFOLLOW, 0o666)  # the umask applies
        except FileExistsError:
            return open_lock_file(path)
    except PermissionError as err:
        try:
            st = os.lstat(path)
            whose = f"it belongs to uid {st.st_uid} and has mode {stat.filemode(st.st_mode)}"
        except OSError:
            whose = "it cannot be looked at"
        raise PermissionError(
            err.errno,
            f"the lock file {path!r} cannot be opened ({whose}); every writer of the alias must be able to read "
            f"it: ask its owner to run `chmod a+r` on it, or delete it while nothing writes the alias",
        ) from None
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise AliasConflictError(
            f"the lock file {path!r} is a symbolic link (to {os.readlink(path)!r}), not a lock this library made; "
            f"nothing was changed. Delete it while nothing writes the alias, and retry"
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise AliasConflictError(
            f"the lock file {path!r} is not a regular file (mode {stat.filemode(st.st_mode)}): not a lock this "
            f"library made; nothing was changed. Delete it while nothing writes the alias, and retry"
        )
    return fd


_filelock: Any = None  # the filelock module, imported by the first lock taken


class DescriptorLock:
    """An exclusive lock on a lock file, held open: each acquisition is one ``flock`` call.

    The file stays open for the life of the object (reopened after a fork: a child must not
    share its parent's lock), so locking costs two system calls, not an open and a close
    too. ``filelock.lock_descriptor`` does the locking (``flock``): a kernel lock, released when
    its holder dies. Waiting polls until ``timeout``.
    """

    _POLL = 0.01  # seconds between attempts while another process holds the lock

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self._fd: int | None = None
        self._pid = 0

    def _descriptor(self) -> int:
        # os.getpid(), not the cached pid(): a fork made outside Python (C code) runs no fork hooks,
        # and a child sharing its parent's open lock file would share its lock
        if self._fd is None or self._pid != os.getpid():
            self._fd = open_lock_file(self.path)
            self._pid = os.getpid()
            import weakref

            weakref.finalize(self, os.close, self._fd)
        return self._fd

    def __enter__(self) -> DescriptorLock:
        global _filelock
        if _filelock is None:
            import filelock  # only once an alias is written

            _filelock = filelock
        fd = self._descriptor()
        deadline = time.monotonic() + self.timeout
        while not _filelock.lock_descriptor(fd, blocking=False):
            if time.monotonic() >= deadline:
                raise TimeoutError(errno.ETIMEDOUT, f"the lock {self.path!r} is held by another process")
            time.sleep(self._POLL)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._fd is not None and _filelock is not None
        _filelock.unlock_descriptor(self._fd)

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "timeout": self.timeout, "_fd": None, "_pid": 0}
