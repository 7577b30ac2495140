"""System calls the standard library does not wrap: Linux ``renameat2``.

Two of its flags make the alias swap safe against a file that appears or changes at
the alias path while the new alias is staged: ``RENAME_NOREPLACE`` publishes only if
nothing is there, ``RENAME_EXCHANGE`` swaps two names atomically (so what was at the
alias can be checked, and swapped back, after the swap). Loaded through ctypes on
first use only, so importing the package stays light. Also the open flags that every walk
through descriptors here uses.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# what renameat2 answers where the platform or the filesystem lacks the flag (NFS: EINVAL)
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP)

#: open flags that never follow a link at the last name (nor leak the descriptor to a child)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
#: ... of a folder, opened to work relative to it
FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW

_renameat2: Any = False  # False: not looked up yet; None: not available
# what os.fsencode does, as one method call (it is a Python function, called twice per alias update)
_FS_ENCODING = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def _load_renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _renameat2_call(a: str, b: str, flags: int, dir_fd: int | None = None) -> bool:
    global _renameat2
    if _renameat2 is False:
        _renameat2 = _load_renameat2()
    if _renameat2 is None:
        return False
    fd = _AT_FDCWD if dir_fd is None else dir_fd  # dir_fd: both names are relative to that folder
    if _renameat2(fd, a.encode(*_FS_ENCODING), fd, b.encode(*_FS_ENCODING), flags) == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), b)


def exchange(a: str, b: str) -> bool:
    """Atomically swap the names ``a`` and ``b`` (both must exist); False when the platform cannot."""
    return _renameat2_call(a, b, _RENAME_EXCHANGE)


def rename_noreplace(src: str, dst: str, *, dir_fd: int | None = None) -> bool:
    """Rename ``src`` to ``dst`` only if ``dst`` does not exist (else ``FileExistsError``).

    ``dir_fd``: both names are relative to that open folder. False when the platform or
    filesystem cannot do it in one step.
    """
    return _renameat2_call(src, dst, _RENAME_NOREPLACE, dir_fd)
