"""Exceptions and the warning. Each exception subclasses a built-in so callers can catch
what they already know, and each pickles (it may cross a process boundary in a
distributed run)."""

from __future__ import annotations

import errno as _errno
import os as _os
import sys as _sys
import warnings as _warnings

#: this package's folder: a warning is shown at the first line outside it (the user's)
_PACKAGE = _os.path.dirname(_os.path.abspath(__file__)) + _os.sep


class BestLinkError(Exception):
    """Base of every error this library raises on purpose."""


class BestLinkWarning(UserWarning):
    """Something about the alias needed attention, and was handled."""


class AliasConflictError(BestLinkError, FileExistsError):
    """Something this library did not write sits where the alias goes; nothing was touched."""

    def __init__(self, message: str) -> None:
        super().__init__(_errno.EEXIST, message)

    def __str__(self) -> str:
        return str(self.args[1])

    def __reduce__(self) -> tuple[type[AliasConflictError], tuple[str]]:
        return (type(self), (str(self),))


class RecordError(AliasConflictError):
    """The record next to an alias cannot be used (not a regular file, too large, not our JSON,
    damaged); the record names the file and what is wrong, and nothing was changed."""


class OutsideFolderError(BestLinkError, ValueError):
    """A checkpoint named by a saved state or record lies outside the alias's folder; nothing was changed."""


class AliasBusyError(BestLinkError, TimeoutError):
    """Another process held the alias's lock for longer than ``lock_timeout``; nothing was changed."""

    def __reduce__(self) -> tuple[type[AliasBusyError], tuple[str]]:
        return (type(self), (str(self),))


class AliasWriteError(BestLinkError, OSError):
    """Writing the alias failed; the previous alias and the linker's state are intact, except on a
    shared object-store alias whose record was already won: the next update or ``repair`` then
    completes its copy."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(errno if errno is not None else _errno.EIO, message)
        self.message = message

    @classmethod
    def from_os_error(cls, err: OSError, action: str) -> AliasWriteError:
        """The error for ``action`` (e.g. "pointing 'best.ckpt' at 'a.ckpt'") failing with ``err``."""
        return cls(
            f"{action} failed: {err.__class__.__name__}: {err}; the previous alias and the linker's state "
            f"are unchanged",
            err.errno,
        )

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[AliasWriteError], tuple[str, int | None]]:
        return (type(self), (self.message, self.errno))


def link_loop(text: str) -> str:
    """What is wrong with a path that is a loop of symbolic links, and the fix."""
    return f"path {text!r} is a loop of symbolic links; pass the checkpoint itself"


def warn(message: str, category: type[Warning] = BestLinkWarning) -> None:
    """Warn at the user's line, however deep in the package the warning was raised (a fixed
    ``stacklevel`` is right for one call path only)."""
    frame, level = _sys._getframe(0), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    _warnings.warn(message, category, stacklevel=level)
