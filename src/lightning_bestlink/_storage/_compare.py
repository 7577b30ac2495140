"""What two copies hold: their bytes compared in full, or the names, sizes and times of the files in two
directory trees (what a copy of a sharded checkpoint keeps from its checkpoint)."""

from __future__ import annotations

import os
import stat


def same_bytes(a: str, b: str, tops: tuple[str, str] | None = None) -> bool:
    """Whether the files (or directory trees) ``a`` and ``b`` hold the same bytes, read in full.

    A link inside a tree must name the same path in both, and lead to the same thing: nowhere in both,
    one file, or the same place in each tree (compared there). What it leads to outside the trees is
    never read (a file of /proc may never end)."""
    tops = tops or (a, b)
    sa, sb = os.lstat(a), os.lstat(b)
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b) and _same_lead(a, b, tops)
    if stat.S_ISDIR(sa.st_mode):
        names = sorted(os.listdir(a))
        return names == sorted(os.listdir(b)) and all(
            same_bytes(os.path.join(a, n), os.path.join(b, n), tops) for n in names
        )
    if sa.st_size != sb.st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk = fa.read(1 << 20)
            if chunk != fb.read(1 << 20):
                return False
            if not chunk:
                return True


def _same_lead(a: str, b: str, tops: tuple[str, str]) -> bool:
    """Whether the links ``a`` and ``b`` (of the same text) lead to the same thing (see same_bytes)."""
    ends = [_end(a), _end(b)]
    if ends[0] is None or ends[1] is None:
        return ends[0] is ends[1]  # nowhere in both (dangling, or a loop)
    if os.path.samestat(ends[0], ends[1]):
        return True
    try:
        at = [os.path.relpath(os.path.realpath(p), os.path.realpath(top)) for p, top in zip((a, b), tops, strict=True)]
    except (OSError, RecursionError):  # a chain of links too long to follow
        return False
    inside = at[0] != os.pardir and not at[0].startswith(os.pardir + os.sep)
    return inside and at[0] == at[1]  # the same entry of both trees: compared where the walk meets it


def _end(link: str) -> os.stat_result | None:
    """What ``link`` leads to, or None: nowhere (dangling, a loop, a chain longer than the kernel follows)."""
    try:
        return os.stat(link)
    except OSError:
        return None


def same_tree(a: str, b: str) -> bool:
    """Whether the directory trees ``a`` and ``b`` hold files of the same names, sizes and modification
    times (in ns), and the same sub-folders and links: a copy (``copytree`` with ``copystat``) keeps them,
    so a file of the checkpoint rewritten in place since, or one added or removed, shows here."""
    copy, checkpoint = _shape(a), _shape(b)
    return len(copy) == len(checkpoint) and all(
        c[:3] == k[:3] and _same_time(c[3], k[3]) for c, k in zip(copy, checkpoint, strict=True)
    )


#: the time steps of filesystems coarser than a nanosecond: NTFS and CIFS (100 ns), exFAT (10 ms),
#: ext2 with small inodes (1 s); FAT's two seconds are not among them: half of the rewrites a second
#: later would pass
_STEPS = (100, 10**7, 10**9)


def _same_time(copy_ns: int, checkpoint_ns: int) -> bool:
    """A coarser filesystem stores a copy's time cut down to its step: what it can keep of the
    checkpoint's time is all it is held to (a rewrite within one step is what a time cannot see)."""
    return copy_ns == checkpoint_ns or any(copy_ns == checkpoint_ns - checkpoint_ns % step for step in _STEPS)


def _shape(top: str) -> list[tuple[str, int, int, int]]:
    found: list[tuple[str, int, int, int]] = []
    for folder, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            st = os.lstat(path)
            where = os.path.relpath(path, top)
            kind = stat.S_IFMT(st.st_mode)  # not the permissions: a filesystem may not keep them (FAT)
            if stat.S_ISDIR(st.st_mode):
                found.append((where, kind, 0, 0))  # a folder's time changes as its files are written
            else:
                found.append((where, kind, st.st_size, st.st_mtime_ns))
    return sorted(found)
