"""The storage seam: what the linker asks of the place where aliases live.

The linker never asks *what* a storage is, only what it can do: which link kinds
it can make, whether a path belongs to it, whether two paths are one file, what
identifies an alias it wrote. An alias change is always three steps: :meth:`stage`
it under a temporary name (nothing visible changes), :meth:`commit` it in one atomic
step, or :meth:`abort` it (nothing is left behind).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable
    from contextlib import AbstractContextManager

LinkKind = Literal["symlink", "hardlink", "copy"]
LinkChoice = Literal["auto", "symlink", "hardlink", "copy"]
LINK_CHOICES: tuple[LinkChoice, ...] = ("auto", "symlink", "hardlink", "copy")
AliasKind = Literal["missing", "symlink", "file", "dir"]
TargetType = Literal["file", "dir", "other"]  # other: a device, FIFO, socket, or a file of /proc or /sys
#: A JSON-friendly identity of a file or directory written as an alias.
Ident = Any

#: fsspec's names for the local filesystem: such URLs are plain paths to us
LOCAL_SCHEMES = ("file://", "local://")


def is_url(path: str) -> bool:
    """Whether ``path`` names a location on an fsspec filesystem other than the local one.

    >>> is_url("s3://bucket/run/best.ckpt"), is_url("file:///tmp/best.ckpt"), is_url("runs/best.ckpt")
    (True, False, False)
    """
    return "://" in path and not path.startswith(LOCAL_SCHEMES)


# --- listing and holding (the command line): what is in a folder --------------------

ItemKind = Literal["file", "dir", "link", "other"]


class Item(NamedTuple):
    """One name in a folder, as :meth:`Storage.listing` or :meth:`Storage.lookup` saw it."""

    name: str
    path: str  # absolute path, or URL
    kind: ItemKind  # "link": a symbolic link, described, not followed; "other": a FIFO, socket or device
    size: int | None = None  # bytes of a file; None for the others
    link_to: str | None = None  # a link's text, as written
    resolved: str | None = None  # a link's target, absolute, every link followed
    leads_to: ItemKind | None = None  # what a link leads to; None when it dangles
    what: str | None = None  # in words, what an "other" is, or what a link leads to: "a FIFO"


class AliasState(NamedTuple):
    """What is at the alias path now."""

    kind: AliasKind
    ident: Ident = None  # of a file or directory: what the record's alias_id is compared with
    points_to: str | None = None  # for a symlink: the normalised path it names
    key: Ident = None  # what is there (a symlink too), to notice a change before publishing over it
    stamp: str | None = None  # of a stamped copy: the stamp of the record it was made for (record_stamp)
    owner: int | None = None  # of a file or directory, where files have owners: whose it is


class Staged(NamedTuple):
    """An alias written under a temporary name, not yet published."""

    kind: LinkKind
    target: str
    alias: str
    tmp: str | None
    ident: Ident = None  # None when the identity is only known once committed


class Storage(ABC):
    """Where aliases live: one implementation per kind of filesystem (``local.py``, ``fsspec.py``).

    Subclasses implement the abstract methods; the others have defaults that fit a
    storage without links, temporary names or relative paths.
    """

    #: the link kinds this storage can make, in the order ``link="auto"`` tries them
    link_kinds: tuple[LinkKind, ...] = ("copy",)
    #: whether :meth:`lock` excludes other processes (a kernel lock, released when its holder dies)
    can_lock: bool = False

    # --- paths ------------------------------------------------------------------

    @abstractmethod
    def handles(self, path: str) -> bool:
        """Whether ``path`` (as the user wrote it) lives on this storage."""

    @abstractmethod
    def normalize(self, path: str | os.PathLike[str]) -> str:
        """The canonical form of a path on this storage (absolute, or a full URL). No I/O."""

    def resolve_target(self, path: str) -> str:
        """``path`` with links followed, so the alias names the checkpoint itself."""
        return path

    def relative(self, target: str, alias: str) -> str:
        """How the record stores ``target``: relative to the alias's folder where that exists."""
        return target

    def absolute(self, recorded: str, alias: str) -> str:
        """Inverse of :meth:`relative`."""
        return recorded

    def same_file(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are one file (two names of it); False when unknown."""
        return False

    @abstractmethod
    def in_folder_of(self, alias: str, path: str) -> bool:
        """Whether ``path`` (links followed) lies inside the alias's folder, below it or in it."""

    @abstractmethod
    def encloses(self, path: str, alias: str) -> bool:
        """Whether ``path`` is the alias's folder or a folder above it (an alias must not be inside its target)."""

    # --- what is there ------------------------------------------------------------

    @abstractmethod
    def target_type(self, path: str) -> TargetType | None:
        """``"file"``, ``"dir"``, or None when nothing is there."""

    def describe(self, path: str) -> tuple[str, TargetType | None, Ident]:
        """``path`` with links followed, what is there (None: nothing), and its identity: one look
        where the storage can (a checkpoint is checked, and a copy records its identity, from it)."""
        resolved = self.resolve_target(path)
        kind = self.target_type(resolved)
        return resolved, kind, None if kind is None else self.identity(resolved)

    @abstractmethod
    def inspect(self, alias: str, *, resolve: bool = True) -> AliasState:
        """Describe what sits at ``alias`` without following it. ``resolve``: also say where a symlink
        points (``points_to``); an update, which needs only its kind and key, spares that read."""

    def may_vouch(self, record: str, alias: AliasState) -> bool:
        """Whether the record file ``record`` may prove that what is at the alias (``alias``) is ours to
        replace: where files have owners and a sticky folder keeps users from replacing each other's
        files, only a record written by the alias's owner, this process's user or the folder's owner
        may (anyone can copy an identity into a record they plant in a shared folder)."""
        return True

    @abstractmethod
    def identity(self, path: str) -> Ident:
        """A JSON-friendly identity of the file or directory at ``path`` (None when nothing is there)."""

    @abstractmethod
    def looks_like_copy(self, alias: str, target: str) -> bool:
        """Whether the file at ``alias`` can be a complete copy of ``target`` (a cheap check)."""

    def copied_with_times(self, ident: Any, original: Any) -> bool:
        """Whether the identity ``ident`` is that of a copy of what had the identity ``original``,
        made keeping its times (``cp -a``, ``rsync -a``): another file, of the same size and
        modification time. False where identities cannot tell (this default)."""
        return False

    def same_content(self, a: str, b: str) -> bool | None:
        """Whether ``a`` and ``b`` hold the same bytes (files, or directory trees), read in full;
        None when this storage cannot compare them."""
        return None

    def tree_time(self, path: str) -> int | None:
        """The newest modification time (ns) in the directory tree at ``path``, never following a link;
        None where this storage cannot tell (what :meth:`remove_saved` compares a directory's files with)."""
        return None

    def same_tree(self, alias: str, target: str) -> bool | None:
        """For a copy of a directory checkpoint: whether its files still have the names, sizes and
        modification times of the checkpoint's (a file rewritten in place inside the checkpoint leaves
        the directory's own identity as it was); None when this storage cannot say."""
        return None

    # --- writing the alias --------------------------------------------------------

    def check_can_alias(self, target: str, choice: LinkChoice, *, is_dir: bool) -> None:
        """Raise ``IsADirectoryError`` (a usage error, before anything is written) when ``choice``
        cannot alias ``target`` here; :meth:`stage` relies on it having been called."""
        return None

    @abstractmethod
    def stage(self, target: str, alias: str, choice: LinkChoice, *, is_dir: bool, durable: bool) -> Staged:
        """Write the new alias under a temporary name (``is_dir``: the target is a directory)."""

    def lock(self, alias: str, timeout: float) -> AbstractContextManager[Any]:
        """A lock that serialises the writers of ``alias`` (``can_lock``: across processes)."""
        from contextlib import nullcontext

        return nullcontext()

    @abstractmethod
    def commit(self, staged: Staged, expected: AliasState, *, durable: bool) -> None:
        """Publish a staged alias in one atomic step, only over what ``expected`` describes.

        Raises ``FileExistsError`` (and changes nothing) when something else appeared at
        the alias path, or replaced what was there, since :meth:`inspect` described it;
        :class:`Displaced` when the new alias is in but what had appeared could not be put back.
        """

    def abort(self, staged: Staged) -> None:
        """Remove whatever :meth:`stage` left; never raises."""
        return None

    def cleanup(
        self, alias: str, *bookkeeping: str, ours: Collection[Ident] = (), named: Ident | None = None
    ) -> list[str]:
        """Remove temporary names that a killed process left next to ``alias`` and its ``bookkeeping``
        files (the record). ``ours``: the identities the alias's record names (its new alias and the
        one it replaced): what an exchange swapped out of the alias path is removed only if it is one.
        ``named``: the alias the record names; left under a temporary name while the alias path is
        empty (a writer killed between the two renames of a directory alias, where there is no
        exchange), it goes back to the alias path. Returns the names removed."""
        return []

    # --- the record ----------------------------------------------------------------

    @abstractmethod
    def read_text(self, path: str, limit: int) -> str | None:
        """The UTF-8 text of the regular file at ``path``, or None when there is nothing.

        Raises :class:`~lightning_bestlink._errors.RecordError` for anything else (a
        link, a FIFO or device, more than ``limit`` bytes, not UTF-8).
        """

    @abstractmethod
    def write_text(self, path: str, text: str, *, durable: bool) -> None:
        """Replace ``path`` with ``text`` atomically."""

    @abstractmethod
    def remove_file(self, path: str) -> None:
        """Remove a file this library wrote; missing is fine."""

    # --- removing a saved checkpoint (retention) --------------------------------------

    def settle_saved(self, alias: str, path: str, ident: Ident, kind: TargetType) -> str:
        """Settle what a removal of the checkpoint saved at ``path`` (``ident``, ``kind``), killed
        half-way, left under a hidden name while nothing is at ``path``: ``"restored"`` under its
        name when it is whole, ``"removed"`` when its deletion had begun, else ``""``. A storage
        whose removal is one request leaves nothing to settle (this default)."""
        return ""

    def remove_saved(self, alias: str, path: str, ident: Ident, kind: TargetType) -> Removal:
        """Remove the checkpoint at ``path`` if it is still the one saved there, with identity ``ident``.

        ``path`` lies inside the folder of ``alias`` and is reached from that folder without
        following a link; ``kind`` (``"file"`` or ``"dir"``) is what was saved, ``ident`` what
        :meth:`identity` said right after. Anything else found there (another file, a link, a
        directory where a file was saved, a file of another user) is left in place and said
        so. Raises ``OSError`` when removing fails; a storage that cannot remove safely raises
        ``OSError(ENOTSUP)`` (this default).
        """
        import errno

        raise OSError(errno.ENOTSUP, f"{type(self).__name__} cannot remove a saved checkpoint safely", path)

    # --- listing and holding (the command line) ----------------------------------------
    # What the survey of ``lightning-bestlink show/verify/repair/path/watch`` asks; the
    # linker never calls these. Identity ("did this file change?") is :meth:`identity`.

    @abstractmethod
    def lookup(self, path: str) -> Item | None:
        """What is at ``path`` (a link described, not followed); None when nothing is there.

        Raises ``OSError`` when it cannot be looked at (a folder on the way that cannot be entered).
        """

    @abstractmethod
    def listing(self, folder: str) -> list[Item]:
        """Every name in ``folder``, hidden ones too, in no particular order.

        A name that disappears while it is listed is left out (old checkpoints are deleted
        while training runs); any other failure raises ``OSError`` for the whole folder.
        """

    def tree_size(self, path: str) -> int | None:
        """The bytes of the files under the directory ``path``; None when that cannot be told."""
        return None

    def walk(self, root: str, visit: Callable[[str, list[Item] | OSError], Iterable[Item]]) -> None:
        """Call ``visit(folder, items)`` for ``root``, then, depth first and in the order given,
        for each sub-folder among the items that ``visit`` returns.

        ``items`` is the :meth:`listing` of the folder, or the ``OSError`` that stopped it
        (``visit`` then returns nothing). A storage may walk without one full path per
        look (local: relative to a directory descriptor, so a deep tree costs what a
        shallow one does, per folder).
        """
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                items: list[Item] | OSError = self.listing(folder)
            except OSError as err:
                items = err
            stack.extend(reversed([item.path for item in visit(folder, items)]))

    def hold(self, path: str) -> str | None:
        """A second name under which the checkpoint at ``path`` stays readable until :meth:`release`,
        even if ``path`` is deleted meanwhile; its file name is ``path``'s own. None: this storage
        cannot hold anything (an object store: the object may be deleted).

        Raises ``FileNotFoundError`` when the checkpoint is gone, ``OSError`` when no hold can
        be made (a folder the caller cannot write).
        """
        return None

    def release(self, held: str) -> None:
        """Remove a hold made by :meth:`hold`; never raises."""
        return None

    def release_stale(self, folder: str) -> list[str]:
        """Remove the holds in ``folder`` whose process has ended (a reader that was killed)."""
        return []

    # --- shared aliases without locks: the record as the point of agreement ------------
    # An object store has no lock, but it can write an object only if it is still the version
    # that was read (compare-and-swap). Writers of a shared alias there agree on the record;
    # the alias is a copy stamped with the record it was made for, so anyone can tell an alias
    # that caught up with its record from one that did not (a writer stopped between the two).

    #: whether :meth:`swap_text` can write a file only over the version read (conditional writes)
    can_swap: bool = False
    #: whether :meth:`commit_stamped` stamps the alias, and :meth:`inspect` reads the stamp back
    stamps: bool = False
    #: whether :meth:`stage` makes a copy under a temporary name first, so that its identity and its
    #: checkpoint's are in the record before it is published: a copy's record without them is not ours
    stages_copies: bool = False

    def shared_refusal(self, alias: str) -> str | None:
        """Why several processes cannot share the alias ``alias`` here (None: they can)."""
        if self.can_lock or self.can_swap:
            return None
        return (
            f"shared=True needs a filesystem with file locks (a local disk, NFS, a cluster filesystem) or an "
            f"object store with conditional writes (S3, GCS, Azure Blob): {alias!r} has neither, so writers "
            f"can neither exclude each other nor agree on a record. Give each writer its own alias there, or "
            f"keep the shared alias on one of those"
        )

    def read_versioned(self, path: str, limit: int) -> tuple[str | None, str | None]:
        """:meth:`read_text` with the version the store gave that content (None: nothing there,
        or a storage without versions), for :meth:`swap_text`."""
        return self.read_text(path, limit), None

    def swap_text(self, path: str, text: str, expect: str | None) -> None:
        """Write ``text`` to ``path`` only if it is still at version ``expect`` (None: only if
        nothing is there). Raises :class:`LostRace`, and changes nothing, when another writer
        wrote it first. Only where :attr:`can_swap`."""
        raise NotImplementedError(f"{type(self).__name__} has no conditional writes")

    def commit_stamped(self, staged: Staged, expected: AliasState, *, stamp: str, durable: bool) -> None:
        """:meth:`commit`, the alias stamped with ``stamp`` (the :func:`record_stamp` of the
        record it is made for) where the storage :attr:`stamps`; a plain commit elsewhere."""
        self.commit(staged, expected, durable=durable)


# --- removing a saved checkpoint (retention) ------------------------------------------


class Removal(NamedTuple):
    """What :meth:`Storage.remove_saved` did with a saved checkpoint."""

    #: ``deleted``; ``gone`` (nothing there); ``changed`` (something else is there now, left in
    #: place); ``foreign`` (owned by another user, left in place)
    outcome: Literal["deleted", "gone", "changed", "foreign"]
    detail: str = ""  # for changed and foreign: what is there instead, for the warning


# --- shared aliases without locks ---------------------------------------------------------

#: the object metadata key of an alias's stamp (Azure allows only C identifiers: no dashes)
STAMP_KEY = "bestlink_record"
#: ... and of the key it was made as: a copy of the alias elsewhere keeps its metadata (CopyObject
#: does by default, ``aws s3 cp`` too), and is no alias of the place it was copied to
ALIAS_KEY = "bestlink_alias"


def alias_mark(key: str) -> str:
    """What binds a stamped copy to the object key it was made as (ASCII, as metadata must be).

    >>> alias_mark("bucket/run/best.ckpt") == alias_mark("bucket/other/best.ckpt")
    False
    """
    return _digest(key)


def record_stamp(text: str) -> str:
    """What an alias copy is stamped with: a digest of the record's text it was made for.

    A digest rather than the store's version of the record: it is known before the store
    answers, it is the same on every store, and a record put back as it was (after a failed
    copy) matches its alias's stamp again.

    >>> record_stamp('{"format": "lightning-bestlink/1"}')
    '63342587bbade83e7b833aef36a1bebf'
    """
    return _digest(text)


def _digest(text: str) -> str:
    """32 hex digits of the SHA-256 of ``text`` (what stamps and marks are made of)."""
    import hashlib  # only where aliases are stamped

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Displaced(Exception):
    """What someone put at the alias path after it was looked at came out and could not be put back:
    it was kept at ``kept`` (``link``: it is a symbolic link, which the alias's next cleanup removes).
    ``published``: the new alias is in (the alias path was empty for it); else the alias path holds
    whatever someone else left there, or nothing. ``ours``: what came out is the previous alias itself
    (moved aside where no exchange is, then neither it nor the new alias could go in). Nothing was
    removed or replaced."""

    def __init__(
        self, alias: str, kept: str, link: bool, cause: OSError, *, published: bool, ours: bool = False
    ) -> None:
        super().__init__(alias, kept, link, cause, published)
        self.alias, self.kept, self.link, self.cause, self.published = alias, kept, link, cause, published
        self.ours = ours


class NameTaken(FileExistsError):
    """What was made under a temporary name was moved away and something else put there meanwhile:
    not the maker's to remove."""


class LostRace(FileExistsError):
    """Another writer wrote the record since it was read: nothing was written; read it again."""
