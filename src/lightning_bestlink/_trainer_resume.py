"""The Trainer adapter's resume decisions, as plain functions (no Trainer, no linker, no Lightning).

On a resume the callback has two candidates for the best: the one Lightning restored
(``best_model_path``/``best_model_score``) and the linker's saved ``best_link`` state,
which may lag one decision behind in the very checkpoint that became the best.
:func:`restored_best` picks the better; :func:`taken_over_key` finds state saved under
another class's key; :func:`described` says what the record's ``extra`` must hold so that
it describes its target (monitor, epoch, step, file name), :func:`checkpoint_position`
reads epoch and step from a checkpoint the run did not see saved, and :func:`proven` keeps a
record's epoch and step only where the record was written after its checkpoint last changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import Any

from lightning_bestlink._record import record_path
from lightning_bestlink._score import check_mode, is_better, to_score
from lightning_bestlink._state import check_state
from lightning_bestlink._storage import Storage, is_url
from lightning_bestlink.linker import BestLinker, read_record


def taken_over_key(
    states: dict[str, Any], state_key: str, classes: Iterable[type], base: type, taken: set[str]
) -> str | None:
    """The key under which a class of ``classes`` (a subclass of ``base``, not ``base``) saved this
    callback's state, when ``state_key`` (the stock key) is not in ``states`` and no other callback
    (``taken``) owns that key; None otherwise.

    >>> class Base: pass
    >>> class Mine(Base): pass
    >>> taken_over_key({"Mine{'m': 1}": {}}, "Base{'m': 1}", Mine.__mro__, Base, set())
    "Mine{'m': 1}"
    """
    if state_key in states:
        return None
    suffix = state_key[len(base.__qualname__) :]
    for cls in classes:
        key = cls.__qualname__ + suffix
        if cls is not base and issubclass(cls, base) and key in states and key not in taken:
            return key
    return None


def restored_best(
    loaded: dict[str, Any], score: Any, path: str, *, monitor: str | None, mode: str
) -> dict[str, Any] | None:
    """The state to restore the linker from: the better of Lightning's restored best (``score``,
    ``path``) and the saved ``best_link`` state ``loaded``; None when neither names a checkpoint.

    Lightning's wins only when strictly better (the saved state is the alias's own). Raises
    ``ValueError`` when ``loaded`` is not a usable state.

    >>> saved = {"best_score": 1.0, "best_path": "/c/a.ckpt"}
    >>> restored_best(saved, 0.5, "/c/b.ckpt", monitor="loss", mode="min")["best_path"]
    '/c/b.ckpt'
    >>> restored_best(saved, 2.0, "/c/b.ckpt", monitor="loss", mode="min")["best_path"]
    '/c/a.ckpt'
    """
    if monitor is None:  # the alias follows the latest save: Lightning's, without a score
        return {"best_score": None, "best_path": path} if path else None
    value = None if score is None else to_score(score)  # a 0-d tensor: the state holds plain numbers
    lightning = {"best_score": value, "best_path": path} if path else None
    if not loaded.get("best_path"):
        return lightning
    saved_score, _ = check_state(loaded, mode=mode, ties="first")
    if lightning is None or value is None:
        return loaded
    if saved_score is None:
        return lightning
    return lightning if is_better(value, saved_score, check_mode(mode)) else loaded


def described(target: str, monitor: str | None, known: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """The record's ``extra`` for ``target``: its monitor and file name, and the epoch and step of
    the first record in ``known`` that names ``target`` (records as ``read_record`` returns them).

    A record of another checkpoint lends nothing: its epoch and step are not this target's.

    >>> old = {"target": "/c/e1.ckpt", "extra": {"epoch": 1, "step": 8}}
    >>> described("/c/e4.ckpt", "loss", [old])
    {'monitor': 'loss', 'filename': 'e4.ckpt'}
    >>> described("/c/e1.ckpt", "loss", [None, old])
    {'epoch': 1, 'step': 8, 'monitor': 'loss', 'filename': 'e1.ckpt'}
    """
    extra: dict[str, Any] = {}
    for record in known:
        if record is not None and record.get("target") == target and isinstance(record.get("extra"), dict):
            extra = {k: v for k, v in record["extra"].items() if k not in ("monitor", "filename", "follows")}
            break
    extra.update(monitor=monitor, filename=os.path.basename(target.rstrip("/")))
    if monitor is None:
        extra["follows"] = "latest"  # score null: the latest save, not a measured best
    return extra


def describe(
    target: str,
    monitor: str | None,
    known: Iterable[dict[str, Any] | None],
    seen: tuple[str, int, int],
    *,
    file_first: bool = False,
    alias: BestLinker | None = None,
) -> dict[str, Any]:
    """:func:`described`, with the epoch and step of ``target``'s save when no record gives them:
    from ``seen`` (the last save of the best this run saw: normalised path, epoch, step), else
    read from the checkpoint, else from ``alias``'s record where it names ``target`` and was written
    after it last changed (:func:`proven`), else left out. ``file_first``: the checkpoint's own
    numbers win over a record's where it has them (a record of the same name may be older than the
    file's bytes)."""
    extra = described(target, monitor, known)
    if file_first or not has_position(extra):
        saved, epoch, step = seen
        position = (epoch, step) if saved == target else checkpoint_position(target)
        if position is None and alias is not None:  # read only then: an update rarely gets here
            record = proven(_read(alias.link_path), record_path(alias.link_path), alias.storage)
            told = described(target, monitor, [record])
            position = (told["epoch"], told["step"]) if has_position(told) else None
        if position is not None:
            extra.update(epoch=position[0], step=position[1])
    return extra


def restore_alias(linker: BestLinker, state: dict[str, Any], monitor: str | None, seen: tuple[str, int, int]) -> str:
    """On rank zero, at the start of training after a restore: load ``state`` into the linker,
    rebuild the alias if needed, and make its record describe its target. Returns why the alias
    or its record was rebuilt ("" when nothing was wrong)."""
    linker.load_state_dict(state, allow_outside=True)  # the user chose to resume from this checkpoint
    storage, mine = linker.storage, record_path(linker.link_path)
    # judged as it is before a repair, which keeps the extra of a record of the same target under a
    # new time and identity
    first = _read(linker.link_path)
    kept = proven(first, mine, storage)
    before = linker.verify()
    after = linker.repair()
    repaired = "" if before.ok or not after.ok else before.detail
    if linker.best_path is None:
        return repaired
    saved = read_record(linker.link_path)
    origin = state.get("link_path")  # the alias where the state was saved (a resume into a new folder)
    there = _read(origin) if isinstance(origin, str) and origin != linker.link_path else None
    # a record naming the same file may be older than its bytes: a fixed file name, rewritten, and the
    # run killed before the record caught up; the file's own numbers are read once per resume, and a
    # record's only where it was written after the file last changed
    known = [kept, kept if saved == first else proven(saved, mine, storage)]
    if there is not None:
        known.append(proven(there, record_path(str(origin)), storage))
    wanted = describe(linker.best_path, monitor, known, seen, file_first=True)
    if saved is None or (saved["target"], saved["score"], saved["extra"]) != (
        linker.best_path,
        linker.best_score,
        wanted,
    ):
        # no record (the seed wrote none; a new folder has none yet), or one that does not describe
        # this target (it was another checkpoint's, or written without its epoch and step)
        linker.follow(linker.best_score, linker.best_path, extra=wanted)
        why = "its record was missing" if saved is None else "its record did not describe its checkpoint"
        repaired = repaired or why
    return repaired


def _read(link_path: str) -> dict[str, Any] | None:
    """The record of ``link_path``, or None when there is none or it cannot be read (only a
    description: the checkpoint itself is read instead, and verify() reports the record)."""
    try:
        return read_record(link_path)
    except (OSError, ValueError):
        return None


def proven(record: dict[str, Any] | None, record_file: str, storage: Storage) -> dict[str, Any] | None:
    """``record`` (as ``read_record`` returns it, read from ``record_file``) as a description of its
    target: without its epoch and step unless :func:`written_after_change` shows they are of the bytes
    the target holds now. Their absence is the safe answer: a resumed record leaves them out."""
    if record is None or not isinstance(record.get("extra"), dict):
        return record
    if not {"epoch", "step"} & record["extra"].keys() or written_after_change(record, record_file, storage):
        return record
    return {**record, "extra": {k: v for k, v in record["extra"].items() if k not in ("epoch", "step")}}


def written_after_change(record: dict[str, Any], record_file: str, storage: Storage) -> bool:
    """Whether ``record`` was written after its checkpoint last changed (its ``extra`` is of its bytes).

    False wherever that cannot be shown:

    - a record written by a repair: it keeps an older record's extra under a new time and identity;
    - a record of a copy whose checkpoint no longer has the identity it had when copied (``target_id``);
    - a checkpoint (a file, or the newest entry of a directory) modified after the time of the
      record file, or on another filesystem: one filesystem stamps both with one clock, whatever the
      writer's clock says. The same time counts as before: a save and its record, written a moment
      apart, often share a clock tick, while a rewrite after the record would need a whole epoch and
      its save within one tick;
    - or at or after the record's ``unix_time`` (the writer's clock): a record file copied or touched
      later is newer than the writing it reports;
    - a URL, a link, anything that cannot be stat'ed.
    """
    target, written, writer = record.get("target"), record.get("unix_time"), record.get("writer")
    if isinstance(writer, dict) and writer.get("repair"):
        return False
    if not isinstance(target, str) or is_url(target) or is_url(record_file):
        return False
    if isinstance(written, bool) or not isinstance(written, (int, float)):
        return False
    try:
        checkpoint, record_st = os.lstat(target), os.lstat(record_file)
        if stat.S_ISREG(checkpoint.st_mode):
            changed: int | None = checkpoint.st_mtime_ns
        elif stat.S_ISDIR(checkpoint.st_mode):
            changed = storage.tree_time(target)  # a file rewritten inside leaves the directory's own time
        else:
            return False
        if record.get("target_id") is not None and storage.identity(target) != record["target_id"]:
            return False
    except OSError:
        return False
    return (
        changed is not None
        and checkpoint.st_dev == record_st.st_dev
        and changed <= record_st.st_mtime_ns
        and changed < written * 1e9
    )


def has_position(extra: dict[str, Any]) -> bool:
    """Whether ``extra`` says at which epoch and step its checkpoint was saved."""
    return isinstance(extra.get("epoch"), int) and isinstance(extra.get("step"), int)


def checkpoint_position(path: str) -> tuple[int, int] | None:
    """``(epoch, global_step)`` stored in a Lightning checkpoint file, or None when it cannot say.

    Read with ``torch.load(mmap=True, weights_only=True)``: no tensor is loaded and no code in
    the file runs. None for a directory (a sharded checkpoint), a URL, a file torch cannot
    read that way, or one without both numbers: the record then leaves them out, never stale.
    """
    if is_url(path) or not os.path.isfile(path):
        return None
    try:
        import torch

        checkpoint = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except Exception:  # an old format, a custom object, a truncated file: the numbers stay unknown
        return None
    if not isinstance(checkpoint, dict):
        return None
    epoch, step = checkpoint.get("epoch"), checkpoint.get("global_step")
    if isinstance(epoch, bool) or isinstance(step, bool) or not isinstance(epoch, int) or not isinstance(step, int):
        return None
    return epoch, step
