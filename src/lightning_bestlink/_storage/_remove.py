"""Removing a saved checkpoint from a local folder, only if it is still the one saved (for ``Retention``).

Every step goes through descriptors opened without following a link, from ``/`` down to
the checkpoint's folder (``openat`` with ``O_NOFOLLOW | O_DIRECTORY``): a component swapped
for a symlink since the save stops it, and nothing outside the alias's folder is reached.
The checkpoint is first renamed to a hidden name in its own folder and checked there (kind,
owner, identity): a file moved onto the path after the first look is put back, not deleted; so
is a directory holding a file of another user, or one modified or added after it was saved.
A directory that passes is renamed once more, to say so (:data:`CHECKED`), then removed with
``os.fwalk`` through descriptors (``shutil.rmtree(dir_fd=)`` needs Python 3.11). A run killed
half-way leaves a hidden name; the next run that still lists the checkpoint finishes it, if it
is that checkpoint: one not yet checked passes every check first (or goes back), one checked
and half removed has lost files and folder times, so only what is left is looked at.
"""

from __future__ import annotations

import errno
import os
import stat

from lightning_bestlink._storage import _files
from lightning_bestlink._storage._syscalls import FOLDER, rename_noreplace
from lightning_bestlink._storage.base import Ident, Removal, TargetType

_CAN_DIR_FD = {os.open, os.stat, os.rename, os.unlink, os.rmdir} <= os.supports_dir_fd
#: ``.<name>.bestlink-trash-<pid>-<random>``: a saved checkpoint being deleted
TRASH = f"{_files.TMP_MARK}trash-"
#: the end of a trash name once the directory passed every check: its removal began, so a run
#: killed then leaves a tree whose folders' times changed, which is not a reason to keep it
CHECKED = "-checked"


def remove_saved(folder: str, path: str, ident: Ident, kind: TargetType) -> Removal:
    """Remove ``path`` (inside ``folder``) if it is still the ``kind`` saved there with identity ``ident``."""
    if not _CAN_DIR_FD:
        raise OSError(errno.ENOTSUP, "this platform cannot delete relative to a folder descriptor", path)
    rel = os.path.relpath(path, folder)
    parts = rel.split(os.sep)
    if os.path.isabs(rel) or any(p in ("", ".", "..") for p in parts):
        return Removal("changed", f"it lies outside the alias's folder {folder!r}")
    try:
        fd = _open_folder(folder.split(os.sep)[1:] + parts[:-1])
    except FileNotFoundError:
        return Removal("gone")
    except OSError as err:
        if err.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        return Removal("changed", "a symbolic link or a file now stands on the way to it")
    try:
        return _remove_in(fd, parts[-1], ident, kind)
    finally:
        os.close(fd)


def settle_saved(folder: str, path: str, ident: Ident, kind: TargetType) -> str:
    """Settle a removal of ``path`` a killed run left half-way, if nothing is at ``path``: what was
    renamed aside and not yet checked is whole, and goes back under its name (``"restored"``); a
    tree checked and being removed may have lost entries, and its removal is finished
    (``"removed"``). ``""``: nothing of it was found (or something took its name)."""
    rel = os.path.relpath(path, folder)
    parts = rel.split(os.sep)
    if not _CAN_DIR_FD or os.path.isabs(rel) or any(p in ("", ".", "..") for p in parts):
        return ""
    try:
        fd = _open_folder(folder.split(os.sep)[1:] + parts[:-1])
    except OSError:
        return ""
    try:
        name = parts[-1]
        try:
            os.stat(name, dir_fd=fd, follow_symlinks=False)
            return ""  # there: whatever it is, the next removal decides
        except FileNotFoundError:
            pass
        prefix = f".{name}{TRASH}"
        with os.scandir(fd) as entries:
            hidden = sorted(e.name for e in entries if e.name.startswith(prefix))
        for leftover in hidden:
            if leftover.endswith(CHECKED):
                continue
            if _mismatch(os.stat(leftover, dir_fd=fd, follow_symlinks=False), ident, kind) is None:
                try:
                    _rename_new(fd, leftover, name)
                except FileExistsError:
                    return ""
                return "restored"
        return "removed" if hidden and _finish(fd, name, ident, kind).outcome == "deleted" else ""
    finally:
        os.close(fd)


def _open_folder(parts: list[str]) -> int:
    """A descriptor of the folder ``/parts...``, opened one component at a time, never following a link."""
    fd = os.open(os.sep, FOLDER)
    try:
        for part in parts:
            if part:
                fd, parent = os.open(part, FOLDER, dir_fd=fd), fd
                os.close(parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mismatch(st: os.stat_result, ident: Ident, kind: TargetType, items: int = 4) -> Removal | None:
    """Why what ``st`` describes is not the checkpoint saved as ``ident`` and ``kind`` (None: it is);
    ``items=2``: the same device and inode (a tree half removed has changed size and time)."""
    mode = stat.S_IFMT(st.st_mode)
    if mode != (stat.S_IFDIR if kind == "dir" else stat.S_IFREG):
        what = {stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a directory", stat.S_IFREG: "a file"}
        return Removal("changed", f"{what.get(mode, 'a special file')} is there now, where a {kind} was saved")
    if st.st_uid != os.geteuid():
        return Removal("foreign", f"it is owned by another user (uid {st.st_uid})")
    if not isinstance(ident, (list, tuple)) or _files.ident_of(st)[:items] != list(ident)[:items]:  # a dir's has a 5th
        return Removal("changed", "another file is there now")
    return None


def newest_mtime(path: str) -> int:
    """The newest modification time (ns) in the tree at ``path``, never following a link.

    A directory's own identity says nothing of a file added or rewritten below its top: its
    identity as saved (:func:`remove_saved`) carries this too, and anything inside modified
    later keeps it (mtime, not ctime: a reader's hold hard-links the files, which changes ctime).
    """
    newest = os.lstat(path).st_mtime_ns
    for _, dirs, files, sub in os.fwalk(path, follow_symlinks=False):
        for child in (*dirs, *files):
            newest = max(newest, os.stat(child, dir_fd=sub, follow_symlinks=False).st_mtime_ns)
    return newest


def _remove_in(fd: int, name: str, ident: Ident, kind: TargetType) -> Removal:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return _finish(fd, name, ident, kind)
    problem = _mismatch(st, ident, kind)
    if problem is not None:
        return problem
    trash = f".{name}{TRASH}{os.getpid()}-{os.urandom(4).hex()}"
    try:
        _rename_new(fd, name, trash)
    except FileNotFoundError:
        return Removal("gone")
    return _check_and_remove(fd, trash, name, ident, kind)


def _check_and_remove(fd: int, hidden: str, name: str, ident: Ident, kind: TargetType) -> Removal:
    """Remove ``hidden`` (``name`` renamed) if it is all the checkpoint saved; else put it back under ``name``."""
    # moved onto the path after the first look; or another user's file inside, or one changed since
    problem = _mismatch(os.stat(hidden, dir_fd=fd, follow_symlinks=False), ident, kind)
    if problem is None and kind == "dir":
        problem = _changed_inside(fd, hidden, ident)
    if problem is not None:
        try:
            _rename_new(fd, hidden, name)
        except FileExistsError:
            kept = f"{problem.detail}; another file took its name, so it is kept as {hidden!r}"
            return Removal(problem.outcome, kept)
        return Removal(problem.outcome, f"{problem.detail} (it was put back under its name)")
    if kind == "dir":  # checked: a kill from here on leaves a tree half removed, to be finished (see _finish)
        _rename_new(fd, hidden, hidden + CHECKED)
        hidden += CHECKED
    try:
        _remove_at(fd, hidden, kind)
    except OSError:
        if kind == "file":  # nothing was removed: back under its name (a half-removed tree stays hidden)
            _rename_new(fd, hidden, name)
        raise
    return Removal("deleted")


def _rename_new(fd: int, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` in the folder ``fd`` only if nothing is at ``dst`` (else ``FileExistsError``)."""
    if rename_noreplace(src, dst, dir_fd=fd):
        return
    # no renameat2 here (NFS, not Linux): link(2) never replaces; a directory has no links
    if not stat.S_ISDIR(os.stat(src, dir_fd=fd, follow_symlinks=False).st_mode):
        try:
            os.link(src, dst, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        except OSError as err:
            if not _files.is_unsupported(err, "hardlink"):
                raise
        else:
            os.unlink(src, dir_fd=fd)
            return
    try:
        os.stat(dst, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=fd, dst_dir_fd=fd)  # a last look, then the one rename left
        return
    raise FileExistsError(errno.EEXIST, "something is there already", dst)


def _finish(fd: int, name: str, ident: Ident, kind: TargetType) -> Removal:
    """Nothing at ``name``: finish a deletion a killed run left under a hidden name, if it is this checkpoint
    and passes the checks of a first removal; one that fails goes back under ``name``."""
    prefix = f".{name}{TRASH}"
    with os.scandir(fd) as entries:
        names = [e.name for e in entries if e.name.startswith(prefix)]
    for hidden in names:
        st = os.stat(hidden, dir_fd=fd, follow_symlinks=False)
        if not isinstance(ident, (list, tuple)) or [st.st_dev, st.st_ino] != list(ident[:2]):
            continue  # not this checkpoint: a name proves nothing (another user's, another save's)
        if not (kind == "dir" and hidden.endswith(CHECKED)):  # killed before it was checked: check it all now
            return _check_and_remove(fd, hidden, name, ident, kind)
        # checked, then killed while removing: what is left is looked at, not the folders' times
        problem = _mismatch(st, ident, kind, items=2) or _changed_inside(fd, hidden, ident, folder_times=False)
        if problem is not None:  # half of it may be gone: never put back under its name
            return Removal(problem.outcome, f"{problem.detail}; half removed, it is kept as {hidden!r}")
        _remove_at(fd, hidden, kind)
        return Removal("deleted")
    return Removal("gone")


def _changed_inside(fd: int, name: str, ident: Ident, *, folder_times: bool = True) -> Removal | None:
    """Why the tree ``name`` is not all the checkpoint saved: an entry of another user, or one modified
    after the newest time in ``ident`` (:func:`newest_mtime`, its 5th item); None if it is.
    ``folder_times=False``: a folder's time is not looked at (removing its entries changed it)."""
    if not isinstance(ident, (list, tuple)) or len(ident) < 5:
        return Removal("changed", "it was listed without the times of the files inside it, so they cannot be checked")
    me = os.geteuid()
    for top, dirs, files, sub in os.fwalk(name, dir_fd=fd, onerror=_raise):
        for child in (*dirs, *files):
            st = os.stat(child, dir_fd=sub, follow_symlinks=False)
            where = os.path.join(top, child)[len(name) + 1 :]
            if st.st_uid != me:
                return Removal("foreign", f"it holds {where!r} (uid {st.st_uid}), owned by another user")
            if st.st_mtime_ns > ident[4] and (folder_times or not stat.S_ISDIR(st.st_mode)):
                return Removal("changed", f"{where!r} inside it was modified or added after it was saved")
    return None


def _remove_at(fd: int, name: str, kind: TargetType) -> None:
    """Remove ``name`` in the folder ``fd``, a file or a whole tree, never following a link.

    In a tree, an entry of another user (one that arrived after :func:`_changed_inside` looked)
    is left, and so is the tree around it: removing it then fails, and is tried again later.
    """
    me = os.geteuid()
    try:
        if kind != "dir":
            os.unlink(name, dir_fd=fd)
            return
        for _, dirs, files, sub in os.fwalk(name, dir_fd=fd, topdown=False, onerror=_raise):
            for child in (*files, *dirs):  # a link to a directory is listed in dirs: unlinked, not followed
                st = os.stat(child, dir_fd=sub, follow_symlinks=False)
                if st.st_uid != me:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(child, dir_fd=sub)
                else:
                    os.unlink(child, dir_fd=sub)
        os.rmdir(name, dir_fd=fd)
    except FileNotFoundError:
        pass  # another process finishing the same leftover


def _raise(err: OSError) -> None:
    raise err
