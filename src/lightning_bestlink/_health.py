"""Is the alias what its record says, and is the thing at the alias path ours to replace.

Two pure rules on what the storage reports (no writing): :func:`owned` decides
whether a file or directory at the alias path was written by this library (so it
may be replaced), :func:`diagnose` compares the alias with the best checkpoint.

What a check proves, by link kind (and what it cannot):

- symlink: the link leads to the best checkpoint (followed as the kernel follows it; exact).
- hardlink: the alias is another name of the best checkpoint's file (same device and
  inode; exact, whatever happens to the bytes).
- copy: the alias is the very copy the record names (its identity: device, inode, size and
  modification time in nanoseconds, which each copy gets at random), and the checkpoint has
  the identity it had when it was copied (a directory's files: their names, sizes and times).
  A writer killed after writing the record but before publishing the copy leaves the previous
  copy at the alias path: its identity is the record's ``previous_alias_id``, and the check
  says so. An identity cannot see a
  checkpoint rewritten in place with the same size and its modification time put back;
  ``deep=True`` compares the bytes (local files and directories).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from lightning_bestlink._storage import AliasState, Storage

Status = Literal["ok", "no-best", "missing", "dangling", "mismatch", "foreign"]


class AliasReport(NamedTuple):
    """The health of an alias, as :meth:`BestLinker.verify` sees it."""

    status: Status
    link_path: str
    expected: str | None
    actual: str | None
    detail: str

    @property
    def ok(self) -> bool:
        """True when nothing needs repair (a healthy alias, or no best yet and no alias)."""
        return self.status in ("ok", "no-best")


def owned(
    storage: Storage, alias: str, state: AliasState, record: dict[str, Any] | None, mine: Any, record_path: str
) -> bool:
    """Whether what sits at ``alias`` (described by ``state``) may be replaced.

    ``mine`` is the identity of the alias this process last wrote, ``record`` the
    record read from ``record_path`` (None when there is none).
    """
    if state.kind in ("missing", "symlink"):
        return True  # replacing a link never destroys data
    if state.stamp is not None:
        return True  # a copy this library made and stamped with its record (object stores)
    if state.ident is not None and state.ident == mine:
        return True
    if record is None or not storage.may_vouch(record_path, state):
        return False
    if state.ident in (record.get("alias_id"), record.get("previous_alias_id")):
        return True
    recorded = storage.absolute(str(record.get("target")), alias)
    if record.get("link") == "hardlink" and storage.same_file(alias, recorded):
        return True  # another name of the recorded checkpoint (rewritten in place, say): no data lost
    if record.get("link") == "copy" and storage.copied_with_times(state.ident, record.get("alias_id")):
        # the alias of a run folder copied with its times (cp -a, rsync -a: the stamped nanoseconds
        # too): replaced only if it holds the very bytes of what its record names, so nothing is lost
        try:
            return storage.same_content(alias, recorded) is True
        except OSError:  # the checkpoint gone, or unreadable: nothing proves the alias is a copy of it
            return False
    unproven = not (storage.stamps or storage.stages_copies)
    if unproven and record.get("alias_id") is None and record.get("link") == "copy":
        # a copy whose identity is known only once it exists was under way when the
        # writer stopped: the alias is ours if it is a complete copy of the target
        return storage.looks_like_copy(alias, recorded)
    return False


def not_owned_detail(alias: str, kind: str, record_path: str) -> str:
    """What :class:`AliasConflictError` says about an alias path this library did not write."""
    return (
        f"link_path {alias!r} is a {kind} that lightning-bestlink did not write, or that was changed "
        f"since (it does not match the record {record_path!r}); nothing was changed. Move it away, "
        f"or choose another link_path"
    )


def diagnose(
    storage: Storage,
    alias: str,
    expected: str | None,
    state: AliasState,
    record: dict[str, Any] | None,
    mine: Any,
    record_path: str,
    *,
    deep: bool = False,
    record_stamp: str | None = None,
) -> AliasReport:
    """Compare the alias (``state``) with the best checkpoint ``expected``. Reads only.

    ``record_stamp``: the stamp of the record as read, for a stamped copy (object stores).
    """

    def report(status: Status, actual: str | None, detail: str) -> AliasReport:
        return AliasReport(status, alias, expected, actual, detail)

    if expected is None:
        if state.kind == "missing":
            return report("no-best", None, "no best checkpoint yet and no alias")
        return report("ok", None, "no best checkpoint recorded by this linker; alias left as found")
    if state.kind == "missing":
        return report("missing", None, f"{alias!r} does not exist")
    if state.kind == "symlink":
        actual = state.points_to
        if storage.target_type(alias) is None:
            return report("dangling", actual, f"{alias!r} points at {actual!r}, which does not exist")
        if storage.same_file(alias, expected):  # where the kernel leads, not the link's text
            return report("ok", actual, "symlink to the best checkpoint")
        return report("mismatch", actual, f"{alias!r} points at {actual!r}, not at {expected!r}")
    if storage.same_file(alias, expected):
        return report("ok", expected, "hard link to the best checkpoint")
    if not owned(storage, alias, state, record, mine, record_path):
        return report("foreign", None, not_owned_detail(alias, state.kind, record_path))
    if record is None:  # ours by this process's own memory, with the record gone: nothing to check it by
        return report("mismatch", None, f"{alias!r} has no record ({record_path!r} is missing); repair rewrites both")
    recorded = storage.absolute(str(record["target"]), alias)
    if recorded != expected:
        return report("mismatch", recorded, f"{alias!r} is an alias of {recorded!r}, not of {expected!r}")
    if state.stamp is not None and record_stamp is not None:
        # a stamped copy (object stores) says which record it was made for: that proves more than
        # an identity (an S3 copy of the same checkpoint within a second has the identity it replaced)
        if state.stamp != record_stamp:
            return report(
                "mismatch",
                None,
                f"the record names {recorded!r}, but {alias!r} is still the copy made for an earlier record: "
                f"the record was written and the copy never made (the writer stopped in between: killed, or "
                f"the copy request failed); repair completes it",
            )
    elif state.ident is not None and state.ident == record.get("previous_alias_id"):
        return report(
            "mismatch",
            None,
            f"{alias!r} still holds the alias its record replaced: an update to {expected!r} stopped after "
            f"writing the record and before publishing the alias; repair completes it",
        )
    if record.get("link") != "copy":
        return report("mismatch", None, f"{alias!r} is not a hard link to {expected!r}, as its record says it is")
    alias_id, target_id = record.get("alias_id"), record.get("target_id")
    if storage.stages_copies and (alias_id is None or target_id is None):
        return report(
            "mismatch",
            None,
            f"the record {record_path!r} gives no identity for the copy at {alias!r} or for {expected!r}, as "
            f"every record of a copy here does: it was edited, or not written by lightning-bestlink; repair "
            f"rewrites both",
        )
    if alias_id is not None and state.ident != alias_id:
        return report("mismatch", None, f"{alias!r} is not the copy its record names (another copy is there)")
    now = storage.identity(expected)
    if now is None:
        return report("mismatch", None, f"{alias!r} is a copy of {expected!r}, which no longer exists")
    if target_id is not None and now != target_id:
        return report(
            "mismatch", None, f"{expected!r} changed after it was copied to {alias!r}: the copy holds the old bytes"
        )
    if target_id is None and not storage.looks_like_copy(alias, expected):
        changed = f"{alias!r} is no longer a copy of {expected!r}: the checkpoint changed after it was copied"
        return report("mismatch", None, changed)
    if state.kind == "dir" and storage.same_tree(alias, expected) is False:
        changed = f"a file inside {expected!r} changed after it was copied to {alias!r}: the copy holds the old one"
        return report("mismatch", None, changed)
    if deep:
        same = storage.same_content(alias, expected)
        if same is False:
            return report("mismatch", None, f"{alias!r} does not hold the bytes of {expected!r} (compared in full)")
        how = "bytes compared" if same else "bytes not comparable here: identities checked"
        return report("ok", expected, f"{state.kind} copy of the best checkpoint ({how})")
    return report("ok", expected, f"{state.kind} copy of the best checkpoint (identities checked)")
