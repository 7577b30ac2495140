"""A small XFS filesystem with reflink, loop-mounted for the duration of a test (or a benchmark).

Needs root, a loop device and ``mkfs.xfs`` (Debian's ``xfsprogs``; ``.ci/run`` installs it).
:func:`cannot_mount` says why a machine cannot, :func:`xfs_mount` mounts a sparse image in a
folder of the caller's and always unmounts and removes it, on failure too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

#: a sparse image file: only what the test writes takes room on the host (mkfs.xfs needs 300 MiB or more)
IMAGE_BYTES = 512 << 20


def _tool(name: str) -> str | None:
    """The path of a system tool; /usr/sbin and /sbin may be missing from a non-login PATH."""
    found = shutil.which(name)
    if found is None:
        found = next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)
    return found


def cannot_mount() -> str | None:
    """Why this machine cannot loop-mount an XFS image, or None when it can try."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "loop-mounting an XFS image needs root"
    if not os.path.exists("/dev/loop-control") and not os.path.exists("/dev/loop0"):
        return "no loop device (/dev/loop-control) on this machine"
    if _tool("mkfs.xfs") is None:
        return "no mkfs.xfs on this machine (Debian: apt-get install xfsprogs)"
    if _tool("mount") is None or _tool("umount") is None:
        return "no mount/umount on this machine"
    return None


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool(tool) or tool, *args], capture_output=True, text=True, timeout=120, check=False)


@contextlib.contextmanager
def xfs_mount(folder: str | os.PathLike[str], size: int = IMAGE_BYTES) -> Iterator[Path]:
    """Yield the mount point of a fresh XFS (``-m reflink=1``) made in ``folder``; always cleaned up.

    Raises ``RuntimeError`` with the tool's message when making or mounting it fails.
    """
    root = Path(folder)
    image, mnt = root / "xfs.img", root / "mnt"
    with open(image, "wb") as fh:
        fh.truncate(size)
    mounted = False
    try:
        made = _run("mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image))
        if made.returncode:
            raise RuntimeError(f"mkfs.xfs -m reflink=1 failed: {made.stderr.strip()}")
        mnt.mkdir()
        done = _run("mount", "-o", "loop", str(image), str(mnt))
        if done.returncode:
            raise RuntimeError(f"mount -o loop failed: {done.stderr.strip()}")
        mounted = True
        yield mnt
    finally:
        if mounted and _run("umount", str(mnt)).returncode:
            _run("umount", "-l", str(mnt))  # something still holds a file open: detach it lazily
        with contextlib.suppress(OSError):
            image.unlink()
        with contextlib.suppress(OSError):
            mnt.rmdir()


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes of the filesystem at ``path`` once everything written is on disk."""
    os.sync()
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize
