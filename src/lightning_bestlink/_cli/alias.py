"""One alias, as the survey sees it: its record, its health, and whether the record may be trusted.

:func:`load_alias` never raises: whatever is wrong becomes the alias's ``status`` and a
sentence (``error`` or the report's detail). What it checks, in order:

1. the record is a regular file (a FIFO would block the read, a link to ``/dev/zero``
   never end it) that reads as a lightning-bestlink record (``unreadable-record``);
2. the checkpoint the record names lies inside the alias's folder, links followed, the
   rule ``repair`` applies before it writes (``outside``, unless the caller allows it: a
   record is input, not authority, and the Trainer writes such a record only after a
   resume into a new folder);
3. the alias points at that checkpoint (:meth:`BestLinker.verify`); a checkpoint that
   cannot be looked at (a folder on its way the user cannot enter) is
   ``unreadable-checkpoint``, not a damaged record.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, Literal

from lightning_bestlink._errors import AliasConflictError
from lightning_bestlink._health import AliasReport
from lightning_bestlink._record import SUFFIX
from lightning_bestlink._storage import Storage, is_url, storage_for
from lightning_bestlink._storage.base import Item
from lightning_bestlink.linker import BestLinker, read_record

#: what reading a damaged record can raise besides AliasConflictError and OSError (JSON nested too
#: deep, a number too large for a float, bytes that are not UTF-8, a field of the wrong type)
_DAMAGE = (ValueError, TypeError, KeyError, RecursionError, OverflowError)


@dataclass
class Alias:
    """One alias with a record in the folder, and its health."""

    name: str
    path: str
    record: dict[str, Any] | None = None
    report: AliasReport | None = None
    error: str | None = None  # the record could not be read, or the alias not checked: why
    unreadable: Literal["record", "checkpoint"] = "record"  # what ``error`` is about
    outside: str | None = None  # where the record's checkpoint leads, when that is outside the alias's folder
    allow_outside: bool = False  # the caller trusts records that name a checkpoint outside the folder
    under_root: bool = False  # ... and it lies under the folder the user asked about (show/verify/repair DIR)

    @property
    def record_path(self) -> str:
        return self.path + SUFFIX

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "no-best")

    @property
    def trusted_outside(self) -> bool:
        """A checkpoint outside the alias's folder is trusted: the caller allowed it, or it lies
        under the folder the user asked about (a Trainer resumed into a new ``version_N``)."""
        return self.allow_outside or self.under_root

    @property
    def refused(self) -> bool:
        """The record names a checkpoint outside the alias's folder, and it is not trusted."""
        return self.error is None and self.outside is not None and not self.trusted_outside

    @property
    def status(self) -> str:
        """A status of :class:`AliasReport`, or ``unreadable-record``, ``unreadable-checkpoint``, ``outside``."""
        if self.error is not None:
            return f"unreadable-{self.unreadable}"
        if self.refused:
            return "outside"
        return "unreadable-record" if self.report is None else self.report.status

    @property
    def target(self) -> str | None:
        """The best checkpoint the record names (absolute, or a URL)."""
        return None if self.record is None else str(self.record["target"])

    @property
    def follows_latest(self) -> bool:
        """Whether the alias follows the latest save (a ``LatestLinker``'s ``last.ckpt``), not a best."""
        extra = (self.record or {}).get("extra")
        return isinstance(extra, dict) and extra.get("follows") == "latest"

    @property
    def label(self) -> str:
        """The mark on the checkpoint row: ``best`` for ``best.ckpt``, ``best-acc`` for ``best-acc.ckpt``."""
        stem, ext = os.path.splitext(self.name)
        return stem if ext and stem else self.name


def reason(err: OSError) -> str:
    """``"Permission denied"`` for an ``OSError``; its text when it has no ``strerror``."""
    return err.strerror or str(err)


def storage_of(path: str) -> Storage:
    """The storage of ``path``; a URL whose filesystem cannot be opened (no s3fs, a bad URL)
    raises ``OSError`` naming it."""
    try:
        return storage_for(path)
    except OSError:
        raise
    except Exception as err:
        raise OSError(errno.EIO, f"opening {path!r} failed: {type(err).__name__}: {err}") from err


def parent(path: str) -> str:
    """The folder of ``path`` (a local path or a URL)."""
    return path.rstrip("/").rsplit("/", 1)[0] if is_url(path) else os.path.dirname(path)


def leads_to(path: str) -> str:
    """Where ``path`` leads, every link on the way followed (a URL has no links)."""
    return path if is_url(path) else os.path.realpath(path)


def _below(path: str, folder: str) -> str:
    """``path`` relative to ``folder`` when it lies below it (a URL too), else as it is."""
    base = folder.rstrip("/" if is_url(folder) else os.sep) + ("/" if is_url(folder) else os.sep)
    return path[len(base) :] if path.startswith(base) else path


def _read(alias: Alias, item: Item | None) -> None:
    """Read the record into ``alias.record``, or say in ``alias.error`` why it cannot be."""
    record_name = alias.name + SUFFIX
    if item is None:
        alias.error = f"{record_name} does not exist"
        return
    kind = item.leads_to if item.kind == "link" else item.kind
    if kind != "file":
        if item.kind == "link" and kind is None:
            shape = f"a symbolic link to {item.link_to!r}, which does not exist"
        elif item.kind == "link":
            shape = f"a symbolic link to {item.what or 'something that is not a regular file'}"
        else:
            shape = item.what or "not a regular file"
        alias.error = f"{record_name} is not a regular file but {shape}; it was not read"
        return
    try:
        alias.record = read_record(alias.path)
        if alias.record is None:
            alias.error = f"{record_name} disappeared while it was read"
    except AliasConflictError as err:  # not JSON, not our format, or a field is wrong: the message names the file
        alias.error = str(err)
    except OSError as err:
        alias.error = f"cannot read {record_name}: {reason(err)}"
    except _DAMAGE as err:
        alias.error = f"{record_name} is damaged and cannot be read: {type(err).__name__}: {str(err)[:200]}"


def _blocked(storage: Storage, target: str) -> str | None:
    """Why the checkpoint at ``target`` cannot be looked at (a folder on the way the user cannot
    enter), or None when it can, or simply is not there."""
    try:
        storage.lookup(target)
    except OSError as err:
        return reason(err)
    return None


def _inside(folder: str) -> str:
    """A name inside ``folder`` (``in_folder_of`` asks about the folder of a path)."""
    return folder.rstrip("/") + "/" + SUFFIX if is_url(folder) else os.path.join(folder, SUFFIX)


def load_alias(
    path: str,
    record_item: Item | None = None,
    storage: Storage | None = None,
    *,
    allow_outside: bool = False,
    root: str | None = None,
    deep: bool = False,
) -> Alias:
    """Read the record of the alias at ``path`` and check the alias against it. Never raises.

    ``record_item`` is what a listing saw at the record's path (looked up when not given).
    ``allow_outside``: a record naming a checkpoint outside the alias's folder is checked like
    any other instead of being ``outside`` (see the module docstring); so is one naming a
    checkpoint under ``root``, the folder the user asked about. When training moved the alias
    on while it was checked (the check read a newer record), it is read and checked again: the
    record returned is the one the check vouches for. ``deep``: a copy's bytes are compared with
    the checkpoint's (:meth:`BestLinker.verify`).
    """
    try:
        storage = storage or storage_of(path)
    except OSError as err:
        alias = Alias(os.path.basename(path), path, allow_outside=allow_outside)
        alias.error = f"cannot read {alias.name}{SUFFIX}: {reason(err)}"
        return alias
    for _ in range(_LOOKS):
        alias = _look(path, record_item, storage, allow_outside=allow_outside, root=root, deep=deep)
        report, target = alias.report, alias.target
        if report is None or target is None:
            return alias
        moved_on = report.expected not in (None, storage.normalize(target)) or (not alias.ok and _changed(alias))
        if not moved_on:
            return alias
        record_item = None  # moved on meanwhile (a new record while the alias was checked): look again
    alias.report, alias.error = None, f"the alias moved on at each of {_LOOKS} looks (training updates it); try again"
    return alias


_LOOKS = 3


def _changed(alias: Alias) -> bool:
    """Whether the record now differs from the one ``alias`` was checked against (an alias found
    ahead of the record it was checked against was moved on by training meanwhile)."""
    try:
        return read_record(alias.path) != alias.record
    except (AliasConflictError, OSError, *_DAMAGE):
        return False


def _look(
    path: str, record_item: Item | None, storage: Storage, *, allow_outside: bool, root: str | None, deep: bool
) -> Alias:
    alias = Alias(os.path.basename(path), path, allow_outside=allow_outside)
    try:
        item = record_item if record_item is not None else storage.lookup(alias.record_path)
    except OSError as err:
        alias.error = f"cannot read {alias.name}{SUFFIX}: {reason(err)}"
        return alias
    _read(alias, item)
    if alias.record is None:
        return alias
    target = str(alias.record["target"])
    if not storage.in_folder_of(path, target):
        alias.outside = target if is_url(path) else leads_to(target)  # a bucket's relative name: no folder here
        alias.under_root = root is not None and storage.in_folder_of(_inside(root), target)
        if not alias.trusted_outside:
            return alias  # not looked at further: what it names is none of this folder's business
    failure: OSError | None = None
    try:
        # checking reads only; acting on the record (repair) is confined the same way
        alias.report = BestLinker.from_record(path, record=alias.record, allow_outside=True).verify(deep=deep)
    except AliasConflictError as err:
        alias.error = str(err)
        return alias
    except OSError as err:
        failure = err
    except _DAMAGE as err:
        alias.error = f"{alias.name}{SUFFIX} is damaged: {type(err).__name__}: {str(err)[:200]}"
        return alias
    if failure is not None or not alias.ok:
        # a checkpoint behind a folder the user cannot enter looks gone, or fails the check: say why
        blocked = _blocked(storage, target)
        if blocked is not None:
            named = _below(target, parent(path))
            alias.error, alias.unreadable = f"cannot look at {named}, which its record names: {blocked}", "checkpoint"
        elif failure is not None:
            alias.error = f"cannot check {alias.name} against {alias.name}{SUFFIX}: {reason(failure)}"
            alias.unreadable = "checkpoint"
    return alias


__all__ = ["Alias", "leads_to", "load_alias", "parent", "reason", "storage_of"]
