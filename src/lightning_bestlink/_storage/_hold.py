"""Holding a local checkpoint for a reader: a second name that deleting the checkpoint does not reach.

A hold is a hidden folder next to the checkpoint,
``.bestlink-hold-<host>-<pid>.<pid namespace>.<start time>-<random>``, with the checkpoint in
it under its own file name: a hard link, or for a directory checkpoint a tree of hard links
(a clone or a copy where the filesystem cannot link). Training deleting the checkpoint then
removes one name of it; the data stays readable through the hold until the hold is released.
The name says which process holds it: a hold whose process is no longer running on this host
was left by a killed reader, and :func:`release_stale` removes it. The process is known by its
pid namespace and start time too: a container sharing the host's name and the folder, but not
its processes, never takes another's reader for dead, and a reused pid never keeps a stale hold.

The writer's cleanup removes names starting with ``.<alias>.bestlink-``; a hold never
starts so (``_record.bookkeeping`` recognises it, and the survey skips hidden names).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat

from lightning_bestlink._storage._files import is_unsupported

#: what starts the name of every hold folder
HOLD_MARK = ".bestlink-hold-"

_log = logging.getLogger(__name__)


def _host() -> str:
    # no "-" in it: the pid is then the second-to-last part of the name, whatever the host is called
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def hold(path: str) -> str:
    """Hold the checkpoint (file or directory) at ``path``; returns the held path (see the module).

    A directory is held file by file: one deleted while it is walked is held in part, without an
    error (a file deleted before the walk reached it is simply not listed). Training deletes a
    checkpoint only once the alias has moved on, so a caller holding what an alias names checks
    afterwards that the alias still names it (``path --hold``, ``watch --exec``)."""
    folder, name = os.path.split(path)
    st = os.lstat(path)  # FileNotFoundError: the checkpoint is gone already
    place = os.path.join(folder, f"{HOLD_MARK}{_host()}-{_process(os.getpid())}-{os.urandom(4).hex()}")
    os.mkdir(place)
    held = os.path.join(place, name)
    try:
        if stat.S_ISDIR(st.st_mode):
            _hold_tree(path, held)  # see hold()'s docstring: what a walk cannot see
        else:
            _hold_file(path, held)
    except BaseException:
        shutil.rmtree(place, ignore_errors=True)
        raise
    return held


def _hold_file(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
        return
    except OSError as err:
        # another filesystem, hard links refused (protected_hardlinks: a file of another user), too many
        if not is_unsupported(err, "hardlink"):
            raise
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    from lightning_bestlink._storage import _clone  # a clone where the filesystem can, else a copy

    # readable by no one else while it fills; then the checkpoint's own group and mode, as a link
    # would have kept them, or none of the group's rights where this user cannot give it that group
    _clone.copyfile(src, dst, mode=0o600, finish=_as_held)


def _as_held(fd: int, st: os.stat_result) -> None:
    """The group and mode of the checkpoint (``st``) for its held copy (``fd``: never by name)."""
    mode = stat.S_IMODE(st.st_mode)
    try:
        os.fchown(fd, -1, st.st_gid)
    except OSError:
        mode &= ~0o070
    os.fchmod(fd, mode)


def _hold_tree(src: str, dst: str) -> None:
    os.mkdir(dst)
    with os.scandir(src) as entries:
        for entry in entries:
            target = os.path.join(dst, entry.name)
            if entry.is_dir(follow_symlinks=False):
                _hold_tree(entry.path, target)
            elif entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            else:
                _hold_file(entry.path, target)


def _place_of(held: str) -> str | None:
    place = os.path.dirname(held)
    return place if os.path.basename(place).startswith(HOLD_MARK) else None


def release(held: str) -> None:
    """Remove the hold ``held``; never raises (what is left is removed as stale later)."""
    place = _place_of(held)
    if place is None:  # never remove what is not a hold
        return
    try:
        shutil.rmtree(place)
    except FileNotFoundError:
        pass
    except OSError:
        _log.debug("could not release the hold %s", place, exc_info=True)


def _namespace() -> str:
    """The pid namespace of the running process ("" where there is no /proc to say)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _process(pid: int) -> str:
    """Who holds: ``<pid>.<pid namespace>.<start time>``, or the pid alone where /proc cannot say more."""
    start = _started(pid)
    namespace = _namespace()
    return f"{pid}.{namespace}.{start}" if start and namespace else str(pid)


def _started(pid: int) -> str | None:
    """When process ``pid`` of this pid namespace started (clock ticks since boot); "" when it runs but
    /proc cannot say (macOS); None when it does not run. A zombie does not: a container whose first
    process reaps no children keeps a killed reader's entry, and ``kill(pid, 0)`` still finds it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()  # after the name, which may hold anything
        return None if fields[:1] in ([b"Z"], [b"X"]) else fields[19].decode()  # field 22: starttime
    except FileNotFoundError:
        return None
    except (OSError, IndexError):  # no /proc (macOS): ask the kernel
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # EPERM: running, as another user
        return ""
    return ""


def _left(process: str) -> bool:
    """Whether the process a hold's name gives (``<pid>`` or ``<pid>.<namespace>.<start>``) has ended:
    not running, or its pid reused by a later process. A hold made in another pid namespace is never
    taken for left (its pid means another process here)."""
    pid, *more = process.split(".")
    if not pid.isdigit():
        return False
    started = _started(int(pid))
    if not more:  # a name without them (a hold of an earlier version)
        return started is None
    if len(more) != 2 or more[0] != _namespace():
        return False
    return started is None or (started != "" and started != more[1])


def release_stale(folder: str) -> list[str]:
    """Remove the holds in ``folder`` that a process of this host left when it died."""
    removed: list[str] = []
    host = _host()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(HOLD_MARK)]
    except OSError:
        return removed
    for entry in entries:
        parts = entry.name[len(HOLD_MARK) :].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not _left(parts[1]):
            continue
        try:
            shutil.rmtree(entry.path)
        except OSError:
            _log.debug("could not remove the stale hold %s", entry.path, exc_info=True)
            continue
        removed.append(entry.path)
    return removed
