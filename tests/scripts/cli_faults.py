"""Run ``lightning-bestlink`` with faults and counters the environment asks for (tests only).

- ``BESTLINK_TEST_UNREADABLE``: folders (``os.pathsep``-separated) whose listing fails with
  EACCES, as a folder of another user does (the tests run as root, which chmod cannot stop).
- ``BESTLINK_TEST_COUNTS``: a file; every 10 stats (or lstats) of a ``*.bestlink.json`` record
  and at exit, the counts of record stats, record opens and listings of folders under
  ``BESTLINK_TEST_FOLDER`` are written there.
- ``BESTLINK_TEST_SYSCALLS``: a file; at exit, how many path-taking calls of ``os`` the command
  made (``calls``) and the bytes of the paths it passed them (``path_bytes``: a descriptor, or a
  name relative to one, costs only its own length).
- ``BESTLINK_TEST_UID``: the command runs as this user (and group), the privileges dropped once
  the command line is imported (the interpreter's own files may not be readable to that user).
- ``BESTLINK_TEST_MOVE_ON_CHECK``: ``ALIAS|CHECKPOINT|SCORE``; the first time the command looks at
  ALIAS itself, a writer moves it to CHECKPOINT (SCORE, the alias's link kind) and deletes the
  checkpoint it named before, as training does between the command's read of the record and its
  check of the alias.
- ``BESTLINK_TEST_MOVE_ON_HOLD``: the same, right after ``path --hold``'s first hold is made.
- ``BESTLINK_TEST_MOVE_ON_STORAGE_HOLD``: the same, right after the first hold made in this process
  (``watch --exec``).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

blocked = {os.path.abspath(p) for p in os.environ.get("BESTLINK_TEST_UNREADABLE", "").split(os.pathsep) if p}
counts_file = os.environ.get("BESTLINK_TEST_COUNTS")
syscalls_file = os.environ.get("BESTLINK_TEST_SYSCALLS")
watched = os.path.abspath(os.environ.get("BESTLINK_TEST_FOLDER", "/nonexistent"))
counts = {"record_stats": 0, "record_opens": 0, "listings": 0}
syscalls = {"calls": 0, "path_bytes": 0}

real = {name: getattr(os, name) for name in ("open", "scandir", "listdir", "stat", "lstat", "readlink", "access")}


def _fd_path(fd: int) -> str:
    try:
        return str(real["readlink"](f"/proc/self/fd/{fd}"))
    except OSError:  # a process that dropped its privileges cannot read its own /proc/self/fd
        return ""


def _where(path: Any, dir_fd: int | None = None) -> str:
    """The absolute path a call acts on: a descriptor, or a name relative to one, included."""
    if isinstance(path, int):
        return _fd_path(path)
    text = os.fsdecode(path if path is not None else ".")
    if dir_fd is not None and not os.path.isabs(text):
        return os.path.join(_fd_path(dir_fd), text)
    return os.path.abspath(text)


def _check(path: Any, dir_fd: int | None = None) -> str:
    where = _where(path, dir_fd)
    if where in blocked:
        raise PermissionError(13, "Permission denied", where)
    return where


def _syscall(path: Any) -> None:
    syscalls["calls"] += 1
    if isinstance(path, (str, bytes)):
        syscalls["path_bytes"] += len(os.fsencode(path))


def _count_record(path: Any) -> None:
    if isinstance(path, str) and path.endswith(".bestlink.json"):
        counts["record_stats"] += 1
        if counts["record_stats"] % 10 == 0:
            dump()


def _listed(where: str) -> None:
    if where and where.startswith(watched):
        counts["listings"] += 1


def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
    _syscall(path)
    _check(path, dir_fd)
    return int(real["open"](path, flags, mode, dir_fd=dir_fd))


def scandir(path: Any = None) -> Any:
    _syscall(path)
    _listed(_check(path))
    return real["scandir"](path) if path is not None else real["scandir"]()


def listdir(path: Any = None) -> Any:
    _syscall(path)
    _listed(_check(path))
    return real["listdir"](path) if path is not None else real["listdir"]()


def counted(name: str) -> Any:
    def call(path: Any, *args: Any, **kwargs: Any) -> Any:
        _syscall(path)
        if name in ("stat", "lstat"):
            _count_record(path)
        return real[name](path, *args, **kwargs)

    return call


def dump() -> None:
    for file, data in ((counts_file, counts), (syscalls_file, syscalls)):
        if file:
            with open(file + ".tmp", "w") as fh:
                json.dump(data, fh)
            os.replace(file + ".tmp", file)


def audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and isinstance(args[0], str) and args[0].endswith(".bestlink.json"):
        counts["record_opens"] += 1


os.open, os.scandir, os.listdir = open_, scandir, listdir
for _name in ("stat", "lstat", "readlink", "access"):
    setattr(os, _name, counted(_name))
# the wrappers take descriptors where the functions they wrap do (the package probes these sets)
for _set in (os.supports_fd, os.supports_dir_fd, os.supports_follow_symlinks):
    _set.update(getattr(os, name) for name, function in real.items() if function in _set)
if counts_file:
    sys.addaudithook(audit)
if counts_file or syscalls_file:
    atexit.register(dump)

from lightning_bestlink.cli import main  # noqa: E402


def _move_on(spec: str) -> None:
    """Move the alias ``ALIAS|CHECKPOINT|SCORE`` on, as training does, and delete what it named."""
    import shutil

    from lightning_bestlink import BestLinker, read_record

    alias, checkpoint, score = spec.split("|")
    record = read_record(alias) or {}
    BestLinker(alias, link=record["link"]).update(float(score), checkpoint)
    (shutil.rmtree if os.path.isdir(record["target"]) else os.remove)(record["target"])


if os.environ.get("BESTLINK_TEST_MOVE_ON_CHECK"):
    from lightning_bestlink._storage.local import LocalStorage

    _inspect = LocalStorage.inspect

    def inspect_after_a_move(self: Any, alias: str, *args: Any, **kwargs: Any) -> Any:
        spec = os.environ["BESTLINK_TEST_MOVE_ON_CHECK"]
        if alias == spec.split("|")[0] and LocalStorage.inspect is inspect_after_a_move:
            LocalStorage.inspect = _inspect  # type: ignore[method-assign]
            _move_on(spec)
        return _inspect(self, alias, *args, **kwargs)

    LocalStorage.inspect = inspect_after_a_move  # type: ignore[method-assign]

if os.environ.get("BESTLINK_TEST_MOVE_ON_HOLD"):
    from lightning_bestlink._cli import path as _path

    _hold_detached = _path.hold_detached

    def hold_then_move(target: str, seconds: float) -> Any:
        _path.hold_detached = _hold_detached
        held = _hold_detached(target, seconds)
        _move_on(os.environ["BESTLINK_TEST_MOVE_ON_HOLD"])
        return held

    _path.hold_detached = hold_then_move

if os.environ.get("BESTLINK_TEST_MOVE_ON_STORAGE_HOLD"):
    from lightning_bestlink._storage.local import LocalStorage

    _hold = LocalStorage.hold

    def hold_and_move(self: Any, path: str) -> Any:
        LocalStorage.hold = _hold  # type: ignore[method-assign]
        held = _hold(self, path)
        _move_on(os.environ["BESTLINK_TEST_MOVE_ON_STORAGE_HOLD"])
        return held

    LocalStorage.hold = hold_and_move  # type: ignore[method-assign]

if os.environ.get("BESTLINK_TEST_UID"):
    # what the command imports on first use, imported now: the interpreter's files may be closed
    # to the user it becomes (the Lightning adapters are not needed by these commands)
    import importlib
    import pkgutil

    import lightning_bestlink

    for _module in ("datetime", "json", "shutil", "socket", "subprocess", "tempfile", "filelock"):
        importlib.import_module(_module)
    for _info in pkgutil.walk_packages(lightning_bestlink.__path__, "lightning_bestlink."):
        if not any(part in _info.name for part in ("callbacks", "pytorch_lightning", "fabric", "_trainer")):
            importlib.import_module(_info.name)
    uid = int(os.environ["BESTLINK_TEST_UID"])
    os.setgid(uid)
    os.setuid(uid)

sys.exit(main(sys.argv[1:]))
