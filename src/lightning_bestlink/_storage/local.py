"""Local (POSIX or Windows) paths: a symlink, hard link or copy, staged then renamed.

The new alias is written under a hidden temporary name in the alias's own folder
and published with one ``os.replace`` (a directory, which ``rename`` cannot put over
another, with an atomic exchange where the platform has one).
"""

from __future__ import annotations

import errno
import os
import stat

import lightning_bestlink._storage._syscalls as _syscalls
from lightning_bestlink._storage.base import (
    LOCAL_SCHEMES,
    AliasKind,
    AliasState,
    Ident,
    LinkChoice,
    LinkKind,
    Staged,
    Storage,
    TargetType,
    is_url,
)

#: what marks a temporary name; a name with it and a dead pid is a leftover to remove
TMP_MARK = ".bestlink-"

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
_WINERROR_PRIVILEGE_NOT_HELD = 1314


def is_unsupported(err: OSError, kind: str) -> bool:
    """Whether ``err`` from making a ``kind`` link means "not supported here"."""
    if getattr(err, "winerror", None) == _WINERROR_PRIVILEGE_NOT_HELD:
        return True
    if kind == "hardlink" and err.errno == errno.EMLINK:
        return True
    return err.errno in _UNSUPPORTED


def tmp_name(path: str, tag: str) -> str:
    """A hidden sibling of ``path`` that :meth:`LocalStorage.cleanup` recognises."""
    head, base = os.path.split(path)
    return os.path.join(head, f".{base}{TMP_MARK}{tag}-{os.getpid()}-{os.urandom(4).hex()}")


def _remove_tree_or_file(path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        import shutil

        shutil.rmtree(path)
    else:
        os.unlink(path)


def _discard(path: str | None) -> None:
    """Remove a temporary name; errors are left for :meth:`LocalStorage.cleanup`."""
    if path is None:
        return
    try:
        _remove_tree_or_file(path)
    except OSError:
        pass  # the caller's own error is the one that matters


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers: this linker is the only writer of its names
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _file_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _fsync_dir(path: str) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


class LocalStorage(Storage):
    """Local paths: symlink, hardlink or copy, staged then renamed."""

    link_kinds: tuple[LinkKind, ...] = ("symlink", "hardlink", "copy")

    def __init__(self) -> None:
        # link kinds that failed with "not supported" here; "auto" skips them next time
        self._unsupported: set[str] = set()
        # what write_text last wrote, per path, with the file's identity: reading it back is a
        # stat instead of open/read/close, and any change by someone else shows in the stat
        self._written: dict[str, tuple[tuple[int, int, int, int], str]] = {}

    # --- paths ------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        return not is_url(path)

    def normalize(self, path: str | os.PathLike[str]) -> str:
        text = os.fspath(path)
        for scheme in LOCAL_SCHEMES:
            if text.startswith(scheme):
                text = text[len(scheme) :]
                break
        return os.path.abspath(text)

    def resolve_target(self, path: str) -> str:
        # a link to a link would follow the wrong file once the middle link moves
        return os.path.realpath(path) if os.path.islink(path) else path

    def relative(self, target: str, alias: str) -> str:
        try:
            return os.path.relpath(target, os.path.dirname(alias))
        except ValueError:  # another drive on Windows: no relative path exists
            return target

    def absolute(self, recorded: str, alias: str) -> str:
        return os.path.normpath(os.path.join(os.path.dirname(alias), recorded))

    def same_file(self, a: str, b: str) -> bool:
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False

    # --- what is there ------------------------------------------------------------

    def target_type(self, path: str) -> TargetType | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return "dir" if stat.S_ISDIR(st.st_mode) else "file"

    def inspect(self, alias: str) -> AliasState:
        try:
            st = os.lstat(alias)
        except (FileNotFoundError, NotADirectoryError):
            return AliasState("missing")
        if stat.S_ISLNK(st.st_mode):
            raw = os.readlink(alias)
            return AliasState("symlink", points_to=os.path.normpath(os.path.join(os.path.dirname(alias), raw)))
        kind: AliasKind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        return AliasState(kind, ident=[st.st_dev, st.st_ino])

    def identity(self, path: str) -> Ident:
        return _identity(path)

    def looks_like_copy(self, alias: str, target: str) -> bool:
        try:
            a, t = os.stat(alias), os.stat(target)
        except OSError:
            return False
        if stat.S_ISDIR(a.st_mode) or stat.S_ISDIR(t.st_mode):
            return stat.S_ISDIR(a.st_mode) and stat.S_ISDIR(t.st_mode)
        return a.st_size == t.st_size

    # --- writing the alias --------------------------------------------------------

    def _candidates(self, choice: LinkChoice, is_dir: bool) -> list[LinkKind]:
        if choice != "auto":
            return [choice]
        order: list[LinkKind] = ["symlink", "copy"] if is_dir else ["symlink", "hardlink", "copy"]
        usable = [k for k in order if k not in self._unsupported]
        return usable or ["copy"]

    def stage(self, target: str, alias: str, choice: LinkChoice, *, is_dir: bool, durable: bool) -> Staged:
        if choice == "hardlink" and is_dir:
            raise IsADirectoryError(
                errno.EISDIR,
                f"link='hardlink' cannot alias the directory checkpoint {target!r}: directories "
                f"have no hard links; use link='auto', 'symlink' or 'copy'",
            )
        candidates = self._candidates(choice, is_dir)
        for i, kind in enumerate(candidates):
            tmp = tmp_name(alias, "tmp")
            try:
                try:
                    _make(kind, target, tmp, is_dir, durable=durable)
                except FileNotFoundError:
                    if os.path.isdir(os.path.dirname(alias)):
                        raise
                    # the alias's folder does not exist yet: make it (only then, to spare a syscall)
                    os.makedirs(os.path.dirname(alias), exist_ok=True)
                    _make(kind, target, tmp, is_dir, durable=durable)
            except OSError as err:
                _discard(tmp)
                if choice == "auto" and i + 1 < len(candidates) and is_unsupported(err, kind):
                    self._unsupported.add(kind)
                    continue
                raise
            except BaseException:
                _discard(tmp)
                raise
            ident = None if kind == "symlink" else _identity(tmp)
            return Staged(kind, target, alias, tmp, ident)
        raise AssertionError("unreachable: the last candidate either returns or raises")

    def commit(self, staged: Staged, *, durable: bool) -> None:
        tmp, alias = staged.tmp, staged.alias
        assert tmp is not None
        try:
            old = os.lstat(alias)
        except FileNotFoundError:
            old = None
        # rename(2) onto another name of the same inode is a no-op that leaves tmp behind
        if (
            staged.kind == "hardlink"
            and old is not None
            and not stat.S_ISLNK(old.st_mode)
            and os.path.samestat(old, os.lstat(tmp))
        ):
            os.unlink(tmp)
            return
        tmp_is_dir = staged.kind == "copy" and stat.S_ISDIR(os.lstat(tmp).st_mode)  # links are never dirs
        if old is not None and (stat.S_ISDIR(old.st_mode) or tmp_is_dir):
            # rename() cannot put a directory over a file or a non-empty directory
            if _syscalls.exchange(tmp, alias):
                _discard(tmp)  # the old alias now sits at tmp
            else:
                trash = tmp_name(alias, "old")
                os.rename(alias, trash)  # short window without an alias: no atomic exchange here
                try:
                    os.rename(tmp, alias)
                except BaseException:
                    os.rename(trash, alias)
                    raise
                _discard(trash)
        else:
            os.replace(tmp, alias)
        if durable:
            _fsync_dir(os.path.dirname(alias))

    def abort(self, staged: Staged) -> None:
        _discard(staged.tmp)

    def cleanup(self, *paths: str) -> list[str]:
        removed: list[str] = []
        for path in paths:
            head, base = os.path.split(path)
            prefix = f".{base}{TMP_MARK}"
            try:
                entries = list(os.scandir(head))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.name.startswith(prefix):
                    continue
                parts = entry.name[len(prefix) :].split("-")
                if len(parts) != 3 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
                    continue
                try:
                    _remove_tree_or_file(entry.path)
                    removed.append(entry.path)
                except FileNotFoundError:
                    pass
        return removed

    # --- the record ----------------------------------------------------------------

    def read_text(self, path: str) -> str | None:
        cached = self._written.get(path)
        if cached is not None:
            try:
                if _file_key(os.stat(path)) == cached[0]:
                    return cached[1]
            except FileNotFoundError:
                return None
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write_text(self, path: str, text: str, *, durable: bool) -> None:
        tmp = tmp_name(path, "tmp")
        self._written.pop(path, None)
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
                key = _file_key(os.fstat(fh.fileno()))  # the rename keeps inode, size and mtime
            os.replace(tmp, path)
        except BaseException:
            _discard(tmp)
            raise
        self._written[path] = (key, text)

    def remove_file(self, path: str) -> None:
        self._written.pop(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _identity(path: str) -> Ident:
    st = os.lstat(path)
    return [st.st_dev, st.st_ino]


def _make(kind: LinkKind, target: str, tmp: str, is_dir: bool, *, durable: bool) -> None:
    if kind == "symlink":
        try:
            rel = os.path.relpath(target, os.path.dirname(tmp))
        except ValueError:  # another drive on Windows: no relative path exists
            rel = target
        os.symlink(rel, tmp, target_is_directory=is_dir)
    elif kind == "hardlink":
        os.link(target, tmp, follow_symlinks=False)
    else:
        import shutil  # copies only: the import stays off the link path

        if is_dir:
            shutil.copytree(target, tmp, symlinks=True)
        else:
            shutil.copyfile(target, tmp)
            shutil.copymode(target, tmp)
            if durable:
                _fsync_file(tmp)
