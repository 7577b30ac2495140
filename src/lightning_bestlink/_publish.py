"""Storage: how the alias is written, and nothing about which score is better.

Every alias change is staged under a hidden temporary name in the alias's own
directory and published with one rename (``os.replace``; for directories an atomic
exchange, ``renameat2(RENAME_EXCHANGE)``). On filesystems reached through fsspec
the alias is a copy the filesystem makes itself (a server-side copy on object
stores), which replaces the object atomically.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from abc import ABC, abstractmethod
from typing import Any, Literal, NamedTuple

from lightning_bestlink._errors import AliasWriteError

LinkKind = Literal["symlink", "hardlink", "copy"]
LinkChoice = Literal["auto", "symlink", "hardlink", "copy"]
LINK_CHOICES: tuple[str, ...] = ("auto", "symlink", "hardlink", "copy")
AliasKind = Literal["missing", "symlink", "file", "dir"]
#: A JSON-friendly identity of a file or directory written as an alias.
Ident = Any

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


# --- atomic exchange of two paths (Linux renameat2) --------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only for directory swaps: keeps the core's import light

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2: Any = False  # False: not looked up yet; None: not available


def exchange(a: str, b: str) -> bool:
    """Atomically swap the names ``a`` and ``b``; False when the platform cannot."""
    global _renameat2
    if _renameat2 is False:
        _renameat2 = _load_renameat2()
    if _renameat2 is None:
        return False
    import ctypes

    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), a)


# --- the storage interface --------------------------------------------------------


class AliasState(NamedTuple):
    """What is at the alias path now."""

    kind: AliasKind
    ident: Ident = None
    points_to: str | None = None  # for a symlink: the normalised path it names


class Staged(NamedTuple):
    """An alias written under a temporary name, not yet published."""

    kind: LinkKind
    target: str
    alias: str
    tmp: str | None
    ident: Ident = None


class Storage(ABC):
    """Where aliases live. One implementation per kind of filesystem."""

    remote: bool = False

    @abstractmethod
    def normalize(self, path: str | os.PathLike[str]) -> str:
        """The canonical form of a path on this storage."""

    @abstractmethod
    def target_type(self, path: str) -> Literal["file", "dir"] | None:
        """``"file"``, ``"dir"``, or None when nothing is there."""

    @abstractmethod
    def inspect(self, alias: str) -> AliasState:
        """Describe what sits at ``alias`` without following it."""

    @abstractmethod
    def stage(self, target: str, alias: str, choice: LinkChoice, *, is_dir: bool, durable: bool) -> Staged:
        """Write the new alias under a temporary name (``is_dir``: the target is a directory)."""

    @abstractmethod
    def commit(self, staged: Staged, *, durable: bool) -> None:
        """Publish a staged alias in one atomic step."""

    @abstractmethod
    def abort(self, staged: Staged) -> None:
        """Remove whatever :meth:`stage` left; never raises."""

    @abstractmethod
    def identity(self, path: str) -> Ident:
        """A JSON-friendly identity of the file or directory at ``path``."""

    @abstractmethod
    def cleanup(self, *paths: str) -> list[str]:
        """Remove temporary names that a killed process left next to ``paths``."""

    @abstractmethod
    def read_text(self, path: str) -> str | None:
        """The text at ``path``, or None when there is nothing."""

    @abstractmethod
    def write_text(self, path: str, text: str, *, durable: bool) -> None:
        """Replace ``path`` with ``text`` atomically."""

    @abstractmethod
    def remove_file(self, path: str) -> None:
        """Remove a file this library wrote; missing is fine."""

    @abstractmethod
    def relative(self, target: str, alias: str) -> str:
        """How the metadata records ``target``: relative to the alias where possible."""

    @abstractmethod
    def absolute(self, recorded: str, alias: str) -> str:
        """Inverse of :meth:`relative`."""

    @abstractmethod
    def size(self, path: str) -> int | None:
        """Size in bytes of a file, None for directories or missing paths."""


# --- local filesystem -------------------------------------------------------------


def _remove_tree_or_file(path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        import shutil

        shutil.rmtree(path)
    else:
        os.unlink(path)


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

    def __init__(self) -> None:
        # link kinds that failed with "not supported" here; "auto" skips them next time
        self._unsupported: set[str] = set()
        # what write_text last wrote, per path, with the file's identity: reading it back is a
        # stat instead of open/read/close, and any change by someone else shows in the stat
        self._written: dict[str, tuple[tuple[int, int, int, int], str]] = {}

    def normalize(self, path: str | os.PathLike[str]) -> str:
        text = os.fspath(path)
        for scheme in ("file://", "local://"):  # fsspec's names for the local filesystem
            if text.startswith(scheme):
                text = text[len(scheme) :]
                break
        return os.path.abspath(text)

    def target_type(self, path: str) -> Literal["file", "dir"] | None:
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
        st = os.lstat(path)
        return [st.st_dev, st.st_ino]

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
                    self._make(kind, target, tmp, is_dir, durable=durable)
                except FileNotFoundError:
                    if os.path.isdir(os.path.dirname(alias)):
                        raise
                    # the alias's folder does not exist yet: make it (only then, to spare a syscall)
                    os.makedirs(os.path.dirname(alias), exist_ok=True)
                    self._make(kind, target, tmp, is_dir, durable=durable)
            except OSError as err:
                self._discard(tmp)
                if choice == "auto" and i + 1 < len(candidates) and is_unsupported(err, kind):
                    self._unsupported.add(kind)
                    continue
                raise
            except BaseException:
                self._discard(tmp)
                raise
            ident = None if kind == "symlink" else self.identity(tmp)
            return Staged(kind, target, alias, tmp, ident)
        raise AssertionError("unreachable: the last candidate either returns or raises")

    @staticmethod
    def _make(kind: LinkKind, target: str, tmp: str, is_dir: bool, *, durable: bool) -> None:
        if kind == "symlink":
            try:
                rel = os.path.relpath(target, os.path.dirname(tmp))
            except ValueError:  # another drive on Windows: no relative path exists
                rel = target
            os.symlink(rel, tmp, target_is_directory=is_dir)
        elif kind == "hardlink":
            os.link(target, tmp, follow_symlinks=False)
        elif is_dir:
            import shutil  # copies only: the import stays off the link path

            shutil.copytree(target, tmp, symlinks=True)
        else:
            import shutil

            shutil.copyfile(target, tmp)
            shutil.copymode(target, tmp)
            if durable:
                _fsync_file(tmp)

    @staticmethod
    def _discard(path: str | None) -> None:
        if path is None:
            return
        try:
            _remove_tree_or_file(path)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # left for cleanup(); the caller's own error is the one that matters

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
            if exchange(tmp, alias):
                self._discard(tmp)  # the old alias now sits at tmp
            else:
                trash = tmp_name(alias, "old")
                os.rename(alias, trash)  # short window without an alias: no atomic exchange here
                try:
                    os.rename(tmp, alias)
                except BaseException:
                    os.rename(trash, alias)
                    raise
                self._discard(trash)
        else:
            os.replace(tmp, alias)
        if durable:
            _fsync_dir(os.path.dirname(alias))

    def abort(self, staged: Staged) -> None:
        self._discard(staged.tmp)

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
            self._discard(tmp)
            raise
        self._written[path] = (key, text)

    def remove_file(self, path: str) -> None:
        self._written.pop(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def relative(self, target: str, alias: str) -> str:
        try:
            return os.path.relpath(target, os.path.dirname(alias))
        except ValueError:
            return target

    def absolute(self, recorded: str, alias: str) -> str:
        return os.path.normpath(os.path.join(os.path.dirname(alias), recorded))

    def size(self, path: str) -> int | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_size


def storage_for(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Storage:
    """Pick the storage for ``path``: local for plain paths and ``file://``, fsspec otherwise."""
    text = os.fspath(path)
    if "://" not in text or text.startswith(("file://", "local://")):
        if storage_options:
            raise ValueError(
                f"storage_options only apply to fsspec URLs, got {storage_options!r} for the "
                f"local path {text!r}; drop storage_options"
            )
        return LocalStorage()
    import fsspec  # only remote users pay for the import

    from lightning_bestlink._remote import FsspecStorage

    fs, _ = fsspec.core.url_to_fs(text, **(storage_options or {}))
    return FsspecStorage(fs)


def wrap_os_error(err: OSError, action: str) -> AliasWriteError:
    """An :class:`AliasWriteError` that says what failed and that nothing was lost."""
    return AliasWriteError(
        f"{action} failed: {err.__class__.__name__}: {err}; the previous alias and the linker's state are unchanged",
        err.errno,
    )


def now() -> float:
    """Wall-clock time (a function so tests can freeze it)."""
    return time.time()
