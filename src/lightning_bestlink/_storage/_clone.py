"""Copies that share blocks where the filesystem can: a clone, else an in-kernel copy, else a plain one.

A copy alias costs a whole checkpoint of new blocks on most filesystems. Those that can share
blocks between files (XFS with reflink, btrfs, bcachefs) make a clone in a few metadata writes,
whatever the size; NFS 4.2 and SMB copy on the server. In order, :func:`copyfile` tries:

1. ``ioctl(FICLONE)``: the new file shares every block of the old one (Linux 4.5+);
2. ``os.copy_file_range``: the kernel copies, and may clone or copy on the server (Linux 4.5+);
3. the plain copy: ``sendfile``, else a read and write loop.

Every step works on the descriptor of the new file, opened once with ``O_EXCL``: nothing is
re-opened by name, so a link planted at the temporary name during the copy is never written
through (nor its mode or times changed: see ``finish``). :func:`copytree` makes a directory's
copy the same way, each entry relative to the descriptor of the folder it made for it.

A step falls through to the next only on an error that means "cannot do it here"
(:data:`CANNOT`); any other error (ENOSPC, EIO, EDQUOT, ...) is raised, as the plain copy's
would be. Callers stage the copy under a temporary name exactly as before: only how its
bytes are made changes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import shutil
import stat
from collections.abc import Callable
from typing import IO, Literal

from lightning_bestlink._storage._syscalls import FOLDER, NOFOLLOW
from lightning_bestlink._storage.base import NameTaken

How = Literal["clone", "copy_file_range", "copy"]

#: errnos of FICLONE and copy_file_range(2) that mean "not here" (see their man pages):
#: EXDEV (the two files are on different filesystems), EOPNOTSUPP/ENOTSUP (the filesystem
#: cannot share blocks, or is too old for the call: ext4, tmpfs, XFS without reflink), EINVAL (it
#: cannot for this pair of files: btrfs with different checksum flags, files that are not regular),
#: ENOSYS (no such system call), ENOTTY (a kernel without FICLONE), ETXTBSY (one is a swap file:
#: a plain copy still reads it), and 524 (ENOTSUPP, which NFS and CIFS let out to user space).
CANNOT = frozenset(
    {
        errno.EXDEV,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.EINVAL,
        errno.ENOSYS,
        errno.ENOTTY,
        errno.ETXTBSY,
        524,
    }
)

# _IOW(0x94, 9, int). Python 3.12 has fcntl.FICLONE; before that, the number is spelled out here
# for the architectures whose ioctl encoding gives it (not powerpc, mips, sparc, alpha).
_FICLONE_COMMON = 0x40049409
_COMMON_IOCTL = ("x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "riscv64", "s390x", "loongarch64")


def _ficlone_number() -> int | None:
    number = getattr(fcntl, "FICLONE", None)
    if number is not None:
        return int(number)
    machine = platform.machine().lower()
    return _FICLONE_COMMON if machine in _COMMON_IOCTL or machine.startswith("armv") else None


FICLONE = _ficlone_number()
#: the most one copy_file_range call is asked for (Linux copies at most about 2 GiB per call)
_CHUNK = 1 << 30


def copyfile(
    src: str,
    dst: str,
    *,
    mode: int = 0o666,
    finish: Callable[[int, os.stat_result], None] | None = None,
    dir_fd: int | None = None,
) -> How:
    """Copy the regular file ``src`` to the new file ``dst``; returns how the bytes were made.

    ``dst`` must not exist (it is created with ``O_EXCL``, so nothing is written through a
    link planted at its name), with ``mode`` (less the umask); ``dir_fd``: ``dst`` is relative
    to that folder. ``finish(fd, st)``: what to do to the copy once its bytes are in, on its
    descriptor (``st``: the stat of ``src``), e.g. give it ``src``'s mode and times. Raises
    :class:`NameTaken` when the copy was moved away from ``dst`` meanwhile.
    """

    def opener(name: str, flags: int) -> int:
        return os.open(name, flags, mode, dir_fd=dir_fd)

    with open(src, "rb") as fin, open(dst, "xb", opener=opener) as fout:
        how: How = "clone" if _clone(fin, fout) else "copy_file_range" if _copy_range(fin, fout) else "copy"
        if how == "copy":
            _plain(fin, fout)
        if finish is not None:
            finish(fout.fileno(), os.fstat(fin.fileno()))
        _still_at(fout.fileno(), dst, dir_fd)
    return how


def copytree(src: str, dst: str, *, finish: Callable[[int, os.stat_result], None] | None = None) -> None:
    """Copy the directory tree ``src`` to the new directory ``dst``: files as :func:`copyfile` copies
    them, with their mode and times; links as links; folders with their mode and times. Each entry
    is made relative to the descriptor of the folder made for it (opened without following a link,
    and readable by no one else until it is complete): a link planted in place of a folder being
    filled is never written through. ``finish``: as for :func:`copyfile`, on the top folder. Raises
    :class:`NameTaken` when ``dst`` was moved away meanwhile."""
    os.mkdir(dst, 0o700)
    taken = NameTaken(errno.EEXIST, "something else was put at the copy's name while it was made", dst)
    try:  # until the folder is known to be the one just made, what is there is not this copy's
        fd = os.open(dst, FOLDER)
    except OSError as err:
        raise taken from err
    try:
        try:
            made = not os.listdir(fd) and (os.fstat(fd).st_uid == os.geteuid() or _made_here(fd))
        except OSError as err:
            raise taken from err
        if not made:
            raise taken
        _fill(src, fd)
        top = os.stat(src)
        same_mode_and_times(fd, top, removable=True)
        if finish is not None:
            finish(fd, top)
        _still_at(fd, dst, None)
    finally:
        os.close(fd)


def _made_here(fd: int) -> bool:
    """Whether the folder open at ``fd`` has the owner this filesystem gives what this process makes
    (itself, or another where the filesystem chooses: root squashed on NFS, ``uid=`` on CIFS or FAT):
    a folder another user put in place of the one just made has theirs. Learnt from a file made in it."""
    probe = os.open(_PROBE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600, dir_fd=fd)
    try:
        made_by = os.fstat(probe).st_uid
    finally:
        os.close(probe)
        os.unlink(_PROBE, dir_fd=fd)
    return os.fstat(fd).st_uid == made_by


_PROBE = ".bestlink-probe"


def _fill(src: str, fd: int) -> None:
    with os.scandir(src) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False):
                os.mkdir(entry.name, 0o700, dir_fd=fd)
                sub = os.open(entry.name, FOLDER, dir_fd=fd)
                try:
                    _fill(entry.path, sub)
                    same_mode_and_times(sub, st, removable=True)  # once filled: filling it changed its time
                finally:
                    os.close(sub)
            elif entry.is_symlink():
                os.symlink(os.readlink(entry.path), entry.name, dir_fd=fd)
                os.utime(entry.name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd, follow_symlinks=False)
            elif stat.S_ISREG(st.st_mode):
                copyfile(entry.path, entry.name, dir_fd=fd, finish=same_mode_and_times)
            else:  # opening a FIFO would wait for a writer; a device or socket holds no checkpoint
                problem = "not a regular file, link or folder, which a copy cannot hold; move it out of the checkpoint"
                raise OSError(errno.EINVAL, problem, entry.path)


def _still_at(fd: int, name: str, dir_fd: int | None) -> None:
    """Raise :class:`NameTaken` unless ``name`` (in ``dir_fd``) still names what ``fd`` is open on."""
    if not os.path.samestat(os.fstat(fd), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)):
        raise NameTaken(errno.EEXIST, "something else was put at the copy's name while it was made", name)


def same_mode_and_times(fd: int, st: os.stat_result, *, removable: bool = False) -> None:
    """Give the open file ``fd`` the mode and times of ``st``, as ``shutil.copystat`` does by name.
    ``removable``: a folder of a copy stays writable by its owner (a read-only one could never be
    emptied, and the copy never removed; a folder's mode is no part of a checkpoint's contents)."""
    os.fchmod(fd, st.st_mode & 0o7777 | (stat.S_IWUSR | stat.S_IXUSR if removable else 0))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _plain(fin: IO[bytes], fout: IO[bytes]) -> None:
    """The plain copy, from the start (over whatever an earlier step left half-done)."""
    fout.seek(0)
    fout.truncate()
    src, dst = fin.fileno(), fout.fileno()
    size, offset = os.fstat(src).st_size, 0
    try:
        while True:  # in the kernel, where sendfile can write to a file (Linux)
            n = os.sendfile(dst, src, offset, max(min(size - offset, _CHUNK), 1 << 23))
            if n == 0:
                return
            offset += n
    except (OSError, AttributeError) as err:
        if offset or (isinstance(err, OSError) and err.errno not in CANNOT | _NO_SENDFILE):
            raise
    fout.seek(0)
    fin.seek(0)
    shutil.copyfileobj(fin, fout, 8 << 20)
    fout.flush()


#: sendfile(2) cannot write to a regular file here (macOS and the BSDs: sockets only)
_NO_SENDFILE = frozenset({errno.ENOTSOCK, getattr(errno, "EOPNOTSUPP", errno.EINVAL)})


def _clone(fin: IO[bytes], fout: IO[bytes]) -> bool:
    if FICLONE is None:
        return False
    try:
        fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
    except OSError as err:
        if err.errno in CANNOT:
            return False
        raise
    return True


def _copy_range(fin: IO[bytes], fout: IO[bytes]) -> bool:
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is None:
        return False
    size = os.fstat(fin.fileno()).st_size
    copied = 0
    try:
        while True:  # to the end of the file, as a plain copy goes
            n = copy_file_range(fin.fileno(), fout.fileno(), max(min(size - copied, _CHUNK), 1 << 23))
            if n == 0:
                break
            copied += n
    except OSError as err:
        if err.errno in CANNOT:
            return False
        raise
    # fewer bytes than the file holds: some filesystems answer 0 at once (files of /proc, FUSE)
    return copied >= size
