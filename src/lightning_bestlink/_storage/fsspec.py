"""Storage on fsspec filesystems (object stores, ``memory://``): the alias is a copy
the filesystem makes itself, a server-side copy on object stores, which replaces the
object atomically. Never a download and re-upload, never a second serialisation.

One alias update is one copy request: ``CopyObject`` on S3 (s3fs), ``objects.rewrite``
on Google Cloud Storage (gcsfs), ``Copy Blob`` on Azure Blob (adlfs); the server copies
the bytes, the client sends and receives only headers and small JSON or XML answers.
On S3, GCS and Azure each copy is stamped with the record it was made for and the key it
was made as (object metadata, :data:`~.base.STAMP_KEY`, :data:`~.base.ALIAS_KEY`), and the
record can be written only over the version read (conditional writes, for a shared alias
without locks): ``_objects.py`` calls each
store's client for what fsspec does not offer. Identities are read from ``info()`` by kind
of key, not by store name (:data:`_VERSION_KEYS`). Errors of the client library
that are not ``OSError`` (botocore's connection errors, for one) are turned into
``OSError`` here, so the linker reports every storage failure the same way.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lightning_bestlink._errors import RecordError
from lightning_bestlink._storage._objects import objects_for
from lightning_bestlink._storage.base import (
    ALIAS_KEY,
    STAMP_KEY,
    AliasKind,
    AliasState,
    Ident,
    Item,
    LinkChoice,
    Removal,
    Staged,
    Storage,
    TargetType,
    alias_mark,
    is_url,
)

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: the keys of ``info()`` that change when an object is written, one group per kind of store; the
#: first group with a key present is the identity (with the size). GCS's ``generation`` is new for
#: every write of the object and only then: its ``etag`` and ``updated`` also change on a metadata
#: edit (a lifecycle storage-class change, say), which must not make our alias look foreign.
_VERSION_KEYS = (
    ("generation",),  # GCS (gcsfs)
    ("ETag", "LastModified"),  # S3 (s3fs): the ETag alone is the same for the same bytes
    ("etag",),  # Azure Blob (adlfs): a new ETag for every write
    ("mtime", "created"),  # any other filesystem (memory://, ...)
)


@contextmanager
def as_os_error(what: str, url: str) -> Iterator[None]:
    """Re-raise a non-``OSError`` failure of the filesystem as ``OSError`` (EIO), cause kept."""
    try:
        yield
    except OSError:
        raise
    except Exception as err:
        raise OSError(errno.EIO, f"{what} {url!r} failed: {type(err).__name__}: {err}") from err


def _ident_of(info: dict[str, Any]) -> Ident:
    """The size and the first group of :data:`_VERSION_KEYS` that ``info`` has."""
    for keys in _VERSION_KEYS:
        present = [f"{k}={info[k]}" for k in keys if info.get(k) is not None]
        if present:
            return ";".join([str(info.get("size")), *present])
    return str(info.get("size"))


class FsspecStorage(Storage):
    """Any fsspec filesystem: the alias is a copy the filesystem makes itself."""

    def __init__(self, fs: AbstractFileSystem) -> None:
        self.fs = fs
        # S3, GCS, Azure: versioned reads, conditional writes, stamped copies (None elsewhere)
        self._objects = objects_for(fs)
        self.stamps = self._objects is not None
        self.can_swap = self._objects is not None and self._objects.can_swap

    def _strip(self, path: str) -> str:
        return str(self.fs._strip_protocol(path))

    def _forget(self, path: str) -> None:
        """Drop what the filesystem cached about ``path``: its entry and its folder's listing
        (s3fs and gcsfs drop the folder's listing with the entry, adlfs does not)."""
        stripped = self._strip(path)
        self.fs.invalidate_cache(stripped)
        self.fs.invalidate_cache(posixpath.dirname(stripped))

    def info(self, path: str) -> dict[str, Any] | None:
        """What the server says of ``path`` now (None: nothing there); never a cached listing,
        which anyone sharing this filesystem instance may have left describing an older object."""
        self._forget(path)
        try:
            with as_os_error("looking up", path):
                info: dict[str, Any] = self.fs.info(self._strip(path))
        except FileNotFoundError:
            return None
        return info

    # --- paths ------------------------------------------------------------------

    def handles(self, path: str) -> bool:
        return is_url(path)

    def normalize(self, path: str | os.PathLike[str]) -> str:
        return str(self.fs.unstrip_protocol(self._strip(os.fspath(path))))

    def _within(self, path: str, folder: str) -> bool:
        """``path`` equals ``folder`` or lies below it; a path with ``..`` in it never does."""
        stripped = self._strip(path)
        if ".." in stripped.split("/"):
            return False  # object keys are literal: "a/../b" is not "b"
        return stripped == folder or stripped.startswith(folder.rstrip("/") + "/")

    def in_folder_of(self, alias: str, path: str) -> bool:
        folder = posixpath.dirname(self._strip(alias))
        return self._strip(path) != folder and self._within(path, folder)

    def encloses(self, path: str, alias: str) -> bool:
        return self._within(posixpath.dirname(self._strip(alias)), self._strip(path).rstrip("/"))

    # --- what is there ------------------------------------------------------------

    def target_type(self, path: str) -> TargetType | None:
        info = self.info(path)
        if info is None:
            return None
        return "dir" if info.get("type") == "directory" else "file"

    def inspect(self, alias: str, *, resolve: bool = True) -> AliasState:
        info = self._described(alias)
        if info is None:
            return AliasState("missing")
        kind: AliasKind = "dir" if info.get("type") == "directory" else "file"
        ident = _ident_of(info)
        meta = (info.get("metadata") or {}) if kind == "file" else {}
        # a stamp counts only on the key it was made as (else: a user's copy of another run's alias)
        stamp = meta.get(STAMP_KEY) if meta.get(ALIAS_KEY) == alias_mark(self._strip(alias)) else None
        return AliasState(kind, ident=ident, key=ident, stamp=stamp)

    def identity(self, path: str) -> Ident:
        info = self.info(path)
        return None if info is None else _ident_of(info)

    def looks_like_copy(self, alias: str, target: str) -> bool:
        a, t = self.info(alias), self.info(target)
        if a is None or t is None or a.get("type") == "directory" or t.get("type") == "directory":
            return False
        return a.get("size") is not None and a.get("size") == t.get("size")

    # --- writing the alias --------------------------------------------------------

    def check_can_alias(self, target: str, choice: LinkChoice, *, is_dir: bool) -> None:
        if is_dir:
            raise IsADirectoryError(
                errno.EISDIR,
                f"cannot alias the directory checkpoint {target!r} on {target.split('://', 1)[0]}://: an "
                f"object store has no atomic way to replace a directory; save sharded "
                f"checkpoints to a local or shared POSIX filesystem",
            )

    def stage(self, target: str, alias: str, choice: LinkChoice, *, is_dir: bool, durable: bool) -> Staged:
        # nothing to stage: the filesystem's own copy replaces the object atomically, and
        # the copy's identity is known only once it exists
        return Staged("copy", target, alias, None, None)

    def commit(self, staged: Staged, expected: AliasState, *, durable: bool) -> None:
        # not checked again here: nothing is staged, so no time passes between the look at the
        # alias and the copy but the record's write (an object store has no link to race with)
        src, dst = self._strip(staged.target), self._strip(staged.alias)
        try:
            with as_os_error(f"copying {staged.target!r} to", staged.alias):
                try:
                    # one file: cp_file skips copy()'s glob expansion and directory probes
                    # (two listings on S3); s3fs makes it one CopyObject request
                    self.fs.cp_file(src, dst)
                except NotImplementedError:
                    self.fs.copy(src, dst)
        finally:
            self._forget(dst)

    # --- the record ----------------------------------------------------------------

    def read_text(self, path: str, limit: int) -> str | None:
        try:
            with as_os_error("reading", path):
                data: bytes = self.fs.cat_file(self._strip(path), start=0, end=limit + 1)
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError:
            if not self._empty(path):
                raise
            data = b""
        return _checked_text(path, data, limit)

    def _empty(self, path: str) -> bool:
        """Whether the object at ``path`` holds 0 bytes: a range read of it fails (416 on S3, GCS, Azure)."""
        info = self.info(path)
        return info is not None and info.get("size") == 0

    def write_text(self, path: str, text: str, *, durable: bool) -> None:
        try:
            with as_os_error("writing", path):
                self.fs.pipe_file(self._strip(path), text.encode("utf-8"))
        finally:
            self._forget(path)

    def remove_file(self, path: str) -> None:
        try:
            with as_os_error("removing", path):
                self.fs.rm_file(self._strip(path))
        except FileNotFoundError:
            pass
        finally:
            self._forget(path)

    # --- removing a saved checkpoint (retention) --------------------------------------

    def remove_saved(self, alias: str, path: str, ident: Ident, kind: TargetType) -> Removal:
        # the object's identity is compared with a fresh info() right before the DELETE: an object
        # written at the key between the two requests is deleted (no conditional delete is used)
        if not self.in_folder_of(alias, path):
            return Removal("changed", "it lies outside the alias's folder")
        info = self.info(path)
        if info is None:
            return Removal("gone")
        if (info.get("type") == "directory") != (kind == "dir"):
            return Removal("changed", f"a {info.get('type')} is there now, where a {kind} was saved")
        if _ident_of(info) != ident:
            return Removal("changed", "another object is there now")
        self.remove_file(path)
        return Removal("deleted")

    # --- listing (the command line) ---------------------------------------------------
    # What the survey asks; fresh from the server like info(). An object store has no links,
    # and nothing can be held on it (hold() is the base's None: the object may be deleted).

    def _survey_item(self, info: dict[str, Any]) -> Item:
        name = str(info["name"]).rstrip("/")
        url = self.normalize(name)
        if info.get("type") == "directory":
            return Item(posixpath.basename(name), url, "dir", what="a directory")
        size = info.get("size")
        return Item(posixpath.basename(name), url, "file", size if isinstance(size, int) else None, what="an object")

    def lookup(self, path: str) -> Item | None:
        info = self.info(path)
        return None if info is None else self._survey_item(info)

    def listing(self, folder: str) -> list[Item]:
        stripped = self._strip(folder).rstrip("/")
        self.fs.invalidate_cache(stripped)  # fresh: a cached listing may predate the last update
        with as_os_error("listing", folder):
            infos = self.fs.ls(stripped, detail=True)
        return [self._survey_item(i) for i in infos if str(i["name"]).rstrip("/") != stripped]

    def tree_size(self, path: str) -> int | None:
        try:
            with as_os_error("measuring", path):
                return int(self.fs.du(self._strip(path), total=True))
        except OSError:
            return None

    # --- shared aliases: versioned record, conditional writes, stamped copies --------------

    def describe(self, path: str) -> tuple[str, TargetType | None, Ident]:
        # one lookup gives both what is there and its identity (the default asks the server twice)
        info = self.info(path)
        if info is None:
            return path, None, None
        return path, "dir" if info.get("type") == "directory" else "file", _ident_of(info)

    def _described(self, path: str) -> dict[str, Any] | None:
        """:meth:`info`, with the object's user metadata (where the client's info() has none: S3)."""
        if self._objects is None or not self._objects.own_head:
            return self.info(path)
        self._forget(path)
        with as_os_error("looking up", path):
            return self._objects.head(self._strip(path))

    def shared_refusal(self, alias: str) -> str | None:
        refusal = super().shared_refusal(alias)
        if refusal is not None and self._objects is not None and self._objects.swap_missing:
            return f"shared=True on {alias!r} needs conditional writes: {self._objects.swap_missing}"
        return refusal

    def read_versioned(self, path: str, limit: int) -> tuple[str | None, str | None]:
        if self._objects is None:
            return super().read_versioned(path, limit)
        try:
            with as_os_error("reading", path):
                found = self._objects.read(self._strip(path), limit)
        except OSError:
            if not self._empty(path):
                raise
            found = (b"", "")  # read as empty: refused as no record before anything is written over it
        if found is None:
            return None, None
        data, version = found
        return _checked_text(path, data, limit), version

    def swap_text(self, path: str, text: str, expect: str | None) -> None:
        if self._objects is None or not self.can_swap:
            return super().swap_text(path, text, expect)
        try:
            with as_os_error("writing", path):
                self._objects.write(self._strip(path), text.encode("utf-8"), expect)
        finally:
            self._forget(path)

    def commit_stamped(self, staged: Staged, expected: AliasState, *, stamp: str, durable: bool) -> None:
        if self._objects is None:
            return self.commit(staged, expected, durable=durable)
        try:
            with as_os_error(f"copying {staged.target!r} to", staged.alias):
                key = self._strip(staged.alias)
                self._objects.copy(self._strip(staged.target), key, {STAMP_KEY: stamp, ALIAS_KEY: alias_mark(key)})
        finally:
            self._forget(staged.alias)


def _checked_text(path: str, data: bytes, limit: int) -> str:
    if len(data) > limit:
        raise RecordError(f"{path!r} is larger than {limit} bytes: not a lightning-bestlink record; move it away")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"{path!r} is not UTF-8 text ({err}): not a lightning-bestlink record") from None
