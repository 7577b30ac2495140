"""System calls the standard library does not wrap: Linux ``renameat2`` (atomic exchange).

Loaded through ctypes on first use only, so importing the package stays light.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

_renameat2: Any = False  # False: not looked up yet; None: not available


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


def exchange(a: str, b: str) -> bool:
    """Atomically swap the names ``a`` and ``b``; False when the platform or filesystem cannot."""
    global _renameat2
    if _renameat2 is False:
        _renameat2 = _load_renameat2()
    if _renameat2 is None:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), a)
