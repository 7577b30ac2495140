"""What a killed writer left next to an alias: the temporary names of its updates, and which of them
can be removed without losing anything a user made (:data:`~._files.STAGED` and
:data:`~._files.SWAPPED` say what each name may hold)."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable

from lightning_bestlink._errors import warn
from lightning_bestlink._storage._files import (
    STAGED,
    SWAPPED,
    TMP_MARK,
    as_staged,
    ident_of,
    publish_new,
    remove_tree_or_file,
)
from lightning_bestlink._storage.base import Ident


def slot_of(staged: str) -> str:
    """The exchange slot of a staged temporary name (the same name, tagged SWAPPED)."""
    head, _, name = staged.rpartition("/")
    return f"{head}/{name.replace(f'{TMP_MARK}{STAGED}-', f'{TMP_MARK}{SWAPPED}-', 1)}"


def removable_leftover(tag_and_rest: str, st: os.stat_result, ours: Collection[Ident]) -> bool:
    """Whether a leftover under a temporary name of an alias (the name after its ``TMP_MARK``, and
    ``st``, not followed) can be removed without losing anything a user made; ``ours``: the
    identities the alias's record names."""
    if tag_and_rest.startswith(f"{STAGED}-") or stat.S_ISLNK(st.st_mode):
        return True
    return ident_of(st) in ours


def remove_leftovers(
    alias: str, bookkeeping: Iterable[str], ours: Collection[Ident], named: Ident | None = None
) -> list[str]:
    """Remove what killed writers left under the temporary names of ``alias`` and its ``bookkeeping``
    files (the record), with the alias's lock held: no writer of it is half-way then. ``ours``: the
    identities the record names; ``named``: the alias it names, which goes back to an empty alias
    path instead (see :meth:`~lightning_bestlink._storage.base.Storage.cleanup`). Returns the paths removed.

    Every temporary name of these paths is a leftover of a killed writer (on this host, or another
    sharing the folder)."""
    removed: list[str] = []
    me = os.geteuid()
    for path in (alias, *bookkeeping):
        head, base = os.path.split(path)
        prefix = f".{base}{TMP_MARK}"
        try:
            entries = list(os.scandir(head))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not entry.name.startswith(prefix):
                continue
            theirs = False
            try:
                st = entry.stat(follow_symlinks=False)
                theirs = st.st_uid != me
                if theirs and not (path == alias and ident_of(st) in ours):
                    # another user's name is left alone, unless it is what the record names: the alias
                    # another writer of a shared folder had made, which this writer swapped out
                    continue
                tag_and_rest = entry.name[len(prefix) :]
                # only from a slot: a tree under a staged name may be half removed, its top unchanged
                slotted = tag_and_rest.startswith(f"{SWAPPED}-")
                if path == alias and slotted and ident_of(st) == named and _put_back(entry.path, alias):
                    continue
                if path == alias and not removable_leftover(tag_and_rest, st, ours):
                    warn(
                        f"{entry.path!r}, a temporary name of the alias {alias!r}, holds something its "
                        f"record does not name: something put at the alias path during an update, swapped out and "
                        f"not put back (the update was killed, or putting it back failed); it was left as it is. "
                        f"If it is yours, move it where you want it (not onto the alias path, which holds the "
                        f"alias); delete it if not"
                    )
                    continue
                _remove(alias, tag_and_rest, entry.path, st)
                removed.append(entry.path)
            except FileNotFoundError:
                pass
            except PermissionError:
                if not theirs:
                    raise  # a sticky folder keeps another user's: left for them
    return removed


def _remove(alias: str, tag_and_rest: str, path: str, st: os.stat_result) -> None:
    """Remove a leftover; a tree not under a staged name yet is renamed to one first (:func:`as_staged`)."""
    if stat.S_ISDIR(st.st_mode) and not tag_and_rest.startswith(f"{STAGED}-"):
        path = as_staged(path, alias)
    remove_tree_or_file(path)


def _put_back(leftover: str, alias: str) -> bool:
    """Put the alias the record names, left under a temporary name, back at the alias path if nothing
    is there (a writer killed between moving the old alias aside and moving it in); whether it went."""
    if os.path.lexists(alias):
        return False
    try:
        publish_new(leftover, alias)  # never over what another hand put there meanwhile
    except OSError:
        return False
    return True
