"""Fault injection: os.symlink, os.link, os.replace, the copy and the metadata write fail.

After a failed update the old alias is intact (same target, same bytes), the linker's
state and the metadata are unchanged and no temporary name is left; ``link="auto"``
falls back to the next kind only on "not supported here" errors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests._helpers import KIND_TARGET, KINDS, fill_of, leftovers, write_ckpt

from lightning_bestlink import AliasWriteError, BestLinker, BestLinkWarning, read_record
from lightning_bestlink._errors import AliasBusyError, AliasConflictError
from lightning_bestlink._storage import _clone, _files, _leftovers, _syscalls
from lightning_bestlink._storage.local import LocalStorage

ERRNOS = {"EXDEV": errno.EXDEV, "EPERM": errno.EPERM, "ENOSPC": errno.ENOSPC}
FAIL = None  # the update raises AliasWriteError and changes nothing
#: how the alias is published: Linux renameat2 (exchange / no-replace), or without it
#: (other platforms, NFS): one last check, then os.replace (os.link for a new alias)
PLATFORMS = ("renameat2", "portable")
FUNCS = ["symlink", "link", "copyfile", "copytree", "exchange", "replace"]

# The second update of a linker (the first one ran without faults) meets a fault in `func`.
# What it ends with, for an "unsupported here" errno (EXDEV, EPERM) and for ENOSPC: a link
# kind, or FAIL. A function that the update does not call changes nothing: not listed.
STAGING: dict[tuple[str, str, str], tuple[str | None, str | None]] = {
    ("symlink", "file", "symlink"): (FAIL, FAIL),
    ("symlink", "dir", "symlink"): (FAIL, FAIL),
    ("hardlink", "file", "link"): (FAIL, FAIL),
    ("copy", "file", "copyfile"): (FAIL, FAIL),
    ("copy", "dir", "copytree"): (FAIL, FAIL),
    ("copy", "dir", "copyfile"): (FAIL, FAIL),  # copytree copies each file with copyfile
    ("auto", "file", "symlink"): ("hardlink", FAIL),  # auto falls back only when unsupported
    ("auto", "dir", "symlink"): ("copy", FAIL),  # no hard links of directories
}
#: the call that publishes over an existing alias: renameat2's exchange, or without it
#: os.replace (a directory copy is moved aside and back instead: not faulted here)
PUBLISH = {"renameat2": "exchange", "portable": "replace"}
#: the call that publishes a first alias: renameat2's no-replace, or without it link(2),
#: which never replaces either (where links are unsupported: a last check, then rename)
FIRST_PUBLISH = {"renameat2": "rename_noreplace", "portable": "link"}
#: the kind each link= makes when nothing fails
UNFAULTED = {"symlink": "symlink", "hardlink": "hardlink", "copy": "copy", "auto": "symlink"}


def expected_outcome(platform: str, kind: str, target: str, func: str, err: int) -> str | None:
    """The link kind the second update ends with, or None (FAIL) when it must fail."""
    if func == PUBLISH[platform] and not (platform == "portable" and (kind, target) == ("copy", "dir")):
        return FAIL
    unsupported, real = STAGING.get((kind, target, func), (UNFAULTED[kind], UNFAULTED[kind]))
    return real if err == errno.ENOSPC else unsupported


def expected_first(platform: str, kind: str, func: str, err: int) -> str | None:
    """The link kind the first update (no alias yet) ends with, or None (FAIL)."""
    unsupported, real = STAGING.get((kind, "file", func), (UNFAULTED[kind], UNFAULTED[kind]))
    if func == FIRST_PUBLISH[platform] and unsupported is not FAIL:
        unsupported, real = (FAIL, FAIL) if platform == "renameat2" else (unsupported, FAIL)
    return real if err == errno.ENOSPC else unsupported


@pytest.fixture
def platform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "portable":
        monkeypatch.setattr(_syscalls, "exchange", lambda a, b: False)
        monkeypatch.setattr(_syscalls, "rename_noreplace", lambda a, b: False)
    return str(request.param)


class Snapshot:
    """What must survive a failed update."""

    def __init__(self, linker: BestLinker) -> None:
        self.linker = linker
        alias = linker.link_path
        self.exists = os.path.lexists(alias)
        self.mode = os.lstat(alias).st_mode if self.exists else None
        self.readlink = os.readlink(alias) if self.exists and os.path.islink(alias) else None
        self.ino = os.lstat(alias).st_ino if self.exists else None
        self.fill = fill_of(alias) if self.exists else None
        self.record = Path(linker.record_path).read_bytes() if os.path.exists(linker.record_path) else None
        self.state = linker.state_dict()

    def assert_unchanged(self) -> None:
        alias = self.linker.link_path
        assert os.path.lexists(alias) == self.exists
        if self.exists:
            st = os.lstat(alias)
            assert stat.S_IFMT(st.st_mode) == stat.S_IFMT(self.mode or 0)
            assert st.st_ino == self.ino
            assert (os.readlink(alias) if os.path.islink(alias) else None) == self.readlink
            assert fill_of(alias) == self.fill
        now = Path(self.linker.record_path).read_bytes() if os.path.exists(self.linker.record_path) else None
        assert now == self.record
        assert self.linker.state_dict() == self.state
        assert leftovers(os.path.dirname(alias)) == []


def inject(monkeypatch: pytest.MonkeyPatch, func: str, err: int, *, only_dst: str | None = None) -> list[str]:
    """Make ``func`` raise ``OSError(err)``; returns the list of calls seen."""
    calls: list[str] = []
    exc = OSError(err, os.strerror(err))
    if func == "replace":
        real = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if only_dst is None or os.fspath(dst) == only_dst:
                calls.append(func)
                raise exc
            real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        return calls

    def fail(*args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        raise exc

    if func in ("exchange", "rename_noreplace"):  # (a, b): b is the destination
        real_call = getattr(_syscalls, func)

        def on_dst(a: str, b: str, **kwargs: Any) -> Any:
            if only_dst is None or os.fspath(b) == only_dst:
                return fail()
            return real_call(a, b, **kwargs)

        monkeypatch.setattr(_syscalls, func, on_dst)
        return calls

    # a copy's bytes are made by _clone.copyfile (clone, copy_file_range, then shutil's copy): tests/test_clone.py
    owners = {"symlink": os, "link": os, "copyfile": _clone, "copytree": _clone}
    owner: Any = owners.get(func, _syscalls)  # exchange, rename_noreplace
    monkeypatch.setattr(owner, func, fail)
    return calls


@pytest.mark.parametrize("err_name", list(ERRNOS))
@pytest.mark.parametrize(
    ("platform", "func"),
    [(p, f) for p in PLATFORMS for f in FUNCS if (p, f) != ("portable", "exchange")],
    indirect=["platform"],
)
@pytest.mark.parametrize(("kind", "target"), KIND_TARGET)
def test_fault_during_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, kind: str, target: str, func: str, err_name: str
) -> None:
    err = ERRNOS[err_name]
    a = write_ckpt(tmp_path / "a", 1, kind=target)
    b = write_ckpt(tmp_path / "b", 2, kind=target)
    linker = BestLinker(tmp_path / "best", link=kind)  # type: ignore[arg-type]
    assert linker.update(0.5, a, extra={"epoch": 1})
    before = Snapshot(linker)
    expected = expected_outcome(platform, kind, target, func, err)
    with monkeypatch.context() as m:
        calls = inject(m, func, err, only_dst=linker.link_path)
        if expected is None:
            with pytest.raises(AliasWriteError) as info:
                linker.update(0.1, b, extra={"epoch": 2})
        else:
            assert linker.update(0.1, b, extra={"epoch": 2})
    if expected is None:
        assert calls, "the fault was never reached"
        assert isinstance(info.value, OSError)
        assert info.value.errno == err
        assert "unchanged" in str(info.value) and str(tmp_path / "best") in str(info.value)
        assert pickle.loads(pickle.dumps(info.value)).errno == info.value.errno
        before.assert_unchanged()
        assert fill_of(a) == 1 and fill_of(b) == 2
        # nothing was spoiled for the next attempt
        assert linker.update(0.1, b)
    else:
        assert linker.link_kind == expected
    assert fill_of(linker.link_path) == 2
    assert linker.best_path == str(b) and linker.best_score == 0.1
    assert linker.verify().ok
    assert leftovers(tmp_path) == []
    assert fill_of(a) == 1


@pytest.mark.parametrize("err_name", list(ERRNOS))
@pytest.mark.parametrize(
    ("platform", "func"),
    [
        (p, f)
        for p in PLATFORMS
        for f in ("symlink", "link", "copyfile", "rename_noreplace")
        if (p, f) != ("portable", "rename_noreplace")
    ],
    indirect=["platform"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_fault_on_first_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, kind: str, func: str, err_name: str
) -> None:
    err = ERRNOS[err_name]
    a = write_ckpt(tmp_path / "a", 1)
    linker = BestLinker(tmp_path / "best", link=kind)  # type: ignore[arg-type]
    expected = expected_first(platform, kind, func, err)
    with monkeypatch.context() as m:
        inject(m, func, err, only_dst=linker.link_path)
        if expected is None:
            with pytest.raises(AliasWriteError):
                linker.update(0.5, a)
        else:
            assert linker.update(0.5, a)
    if expected is None:
        assert sorted(os.listdir(tmp_path)) == [".best.bestlink.lock", "a"]  # no alias, no record, no temp
        assert linker.best_score is None and linker.best_path is None
    else:
        assert fill_of(linker.link_path) == 1


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"symlink": errno.EPERM}, "hardlink"),
        ({"symlink": errno.ENOTSUP}, "hardlink"),
        ({"symlink": 524}, "hardlink"),  # what NFS/CIFS return
        ({"symlink": errno.EPERM, "link": errno.EXDEV}, "copy"),
        ({"symlink": errno.EPERM, "link": errno.EMLINK}, "copy"),
        ({"symlink": errno.EACCES}, None),
        ({"symlink": errno.EEXIST}, None),
        ({"symlink": errno.EPERM, "link": errno.ENOSPC}, None),
        ({"symlink": errno.EPERM, "link": errno.EPERM, "copyfile": errno.EPERM}, None),
    ],
)
def test_auto_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faults: dict[str, int], expected: str) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    b = write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", link="auto")
    with monkeypatch.context() as m:
        for func, err in faults.items():
            inject(m, func, err)
        if expected is None:
            with pytest.raises(AliasWriteError):
                linker.update(0.5, a)
            assert sorted(os.listdir(tmp_path)) == [".best.bestlink.lock", "a", "b"]
            return
        assert linker.update(0.5, a)
        assert linker.link_kind == expected
        # the probe is remembered: the unsupported kind is not tried again
        assert linker.update(0.4, b)
        assert linker.link_kind == expected
    assert fill_of(linker.link_path) == 2
    assert leftovers(tmp_path) == []


#: how the record is swapped in: an exchange (survives a killed process), or with durable=True an
#: os.replace (whose flush on ext4 also survives a power loss)
RECORD_SWAP = {"exchange": False, "replace": True}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", [*RECORD_SWAP, "write_text"])
def test_fault_in_metadata_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, how: str) -> None:
    a = write_ckpt(tmp_path / "a", 1)
    b = write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", link=kind, durable=RECORD_SWAP.get(how, False))  # type: ignore[arg-type]
    assert linker.update(0.5, a)
    before = Snapshot(linker)
    calls = ["write_text"]
    with monkeypatch.context() as m:
        if how in RECORD_SWAP:
            calls = inject(m, how, errno.ENOSPC, only_dst=linker.record_path)
        else:

            def write_text(self: Any, path: str, text: str, *, durable: bool) -> None:
                raise OSError(errno.EROFS, "read-only file system", path)

            m.setattr(LocalStorage, "write_text", write_text)
        with pytest.raises(AliasWriteError, match="unchanged"):
            linker.update(0.1, b)
    assert calls, "the record's swap was never reached"
    before.assert_unchanged()
    assert linker.update(0.1, b)
    assert fill_of(linker.link_path) == 2


@pytest.mark.parametrize("kind", ["copy", "hardlink", "symlink"])
def test_swap_fails_and_restoring_the_record_fails_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # the record already names the new target when the swap fails, and putting the
    # old record back fails as well: the original error is raised, the alias is intact,
    # and the stale record still proves ownership of the old alias on the next run
    a = write_ckpt(tmp_path / "a", 1)
    b = write_ckpt(tmp_path / "b", 2)
    linker = BestLinker(tmp_path / "best", link=kind)  # type: ignore[arg-type]
    assert linker.update(0.5, a)
    real_write = LocalStorage.write_text
    writes: list[str] = []

    def write_once(self: Any, path: str, text: str, *, durable: bool) -> None:
        writes.append(path)
        if len(writes) > 1:
            raise OSError(errno.EIO, "I/O error", path)
        real_write(self, path, text, durable=durable)

    with monkeypatch.context() as m:
        inject(m, "exchange", errno.ENOSPC)
        m.setattr(LocalStorage, "write_text", write_once)
        with pytest.raises(AliasWriteError) as info:
            linker.update(0.1, b)
    assert info.value.errno == errno.ENOSPC
    assert fill_of(linker.link_path) == 1
    assert linker.best_path == str(a)
    assert leftovers(tmp_path) == []
    rerun = BestLinker(tmp_path / "best", link=kind)  # type: ignore[arg-type]
    assert rerun.update(0.9, b)
    assert fill_of(rerun.link_path) == 2 and rerun.verify().ok


@pytest.mark.parametrize("target", ["file", "dir"])
def test_interrupt_during_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    a = write_ckpt(tmp_path / "a", 1, kind=target)
    b = write_ckpt(tmp_path / "b", 2, kind=target)
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, a)
    before = Snapshot(linker)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(_syscalls, "exchange", interrupted)
        real = os.replace
        m.setattr(os, "replace", lambda s, d: interrupted() if d == linker.link_path else real(s, d))
        with pytest.raises(KeyboardInterrupt):
            linker.update(0.1, b)
    before.assert_unchanged()


def test_leftovers_of_a_killed_writer_are_removed_under_the_lock(tmp_path: Path) -> None:
    from filelock import FileLock

    a = write_ckpt(tmp_path / "a", 1)
    junk = [
        tmp_path / ".best.ckpt.bestlink-tmp-4242-deadbeef",
        tmp_path / ".best.ckpt.bestlink.json.bestlink-tmp-4242-cafebabe",
    ]
    junk[0].write_bytes(b"partial")
    junk[1].write_text("{")
    (tmp_path / ".best.ckpt.bestlink-tmp-4242-00000000").mkdir()  # a staged copy of a directory
    linker = BestLinker(tmp_path / "best.ckpt", lock_timeout=0.2)
    # a writer holds the lock: its temporary names are its own, and nobody touches them
    with FileLock(str(tmp_path / ".best.ckpt.bestlink.lock")), pytest.raises(AliasBusyError, match="lock_timeout"):
        linker.update(1.0, a)
    assert len(leftovers(tmp_path)) == 3
    assert not os.path.lexists(linker.link_path)
    # once the lock is free, whatever temporary names remain belong to a writer that was killed
    assert linker.update(1.0, a)
    assert leftovers(tmp_path) == []
    assert linker.verify().ok


def exchange_with_a_hand_at(alias: str, put_theirs: Callable[[], None], *, then: Callable[[], None]) -> Any:
    """``_syscalls.exchange``, with someone at work on the alias path: ``put_theirs`` runs just before
    the writer exchanges the new alias in (after it looked), ``then`` just before it swaps back."""
    real, onto_alias = _syscalls.exchange, 0

    def exchange(a: str, b: str) -> bool:
        nonlocal onto_alias
        if b == alias:
            onto_alias += 1
            (put_theirs if onto_alias == 1 else then)()
        return real(a, b)

    return exchange


@pytest.mark.parametrize("kind", ["symlink", "copy"])
@pytest.mark.parametrize("theirs", ["file", "symlink"])
def test_what_was_put_at_the_alias_mid_update_is_kept_when_swapping_it_back_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, theirs: str
) -> None:
    """The new alias is in and its record names it (the update happened); what someone put at the alias
    path is kept under a temporary name, and the warning says where: a file until they move it, a
    symbolic link (replaced, as one at the alias path always is) until the next writer's cleanup."""
    linker = BestLinker(tmp_path / "best.ckpt", link=kind)
    linker.update(0.5, write_ckpt(tmp_path / "a.ckpt", 1))
    alias = str(linker.link_path)

    def put_theirs() -> None:
        if theirs == "file":
            (tmp_path / "theirs").write_text("my notes")
        else:
            os.symlink("their-target", tmp_path / "theirs")
        os.replace(tmp_path / "theirs", alias)

    def fail() -> None:
        raise OSError(errno.EIO, "injected")

    b = write_ckpt(tmp_path / "b.ckpt", 2)
    monkeypatch.setattr(_syscalls, "exchange", exchange_with_a_hand_at(alias, put_theirs, then=fail))
    with pytest.warns(BestLinkWarning, match=r"putting it back failed \(\[Errno 5\] injected\)") as said:
        assert linker.update(0.1, b)
    monkeypatch.undo()
    assert (linker.best_path, fill_of(alias), linker.verify().ok) == (str(b), 2, True)
    kept = re.search(r"now '([^']+)'", str(said[0].message))
    assert kept is not None
    if theirs == "file":
        assert Path(kept[1]).read_text() == "my notes"
        next_writer = pytest.warns(BestLinkWarning, match=r"not put back \(the update was killed, or putting it back")
    else:
        assert os.readlink(kept[1]) == "their-target"
        next_writer = contextlib.nullcontext()
    with next_writer:
        assert BestLinker(tmp_path / "best.ckpt", link=kind).update(0.05, write_ckpt(tmp_path / "c.ckpt", 3))
    assert fill_of(alias) == 3
    assert os.path.lexists(kept[1]) == (theirs == "file")


def test_what_was_put_at_the_alias_goes_back_when_the_new_alias_was_taken_away_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    linker = BestLinker(tmp_path / "best.ckpt", link="symlink")
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    linker.update(0.5, a)
    alias = str(linker.link_path)

    def put_theirs() -> None:
        (tmp_path / "theirs").write_text("my notes")
        os.replace(tmp_path / "theirs", alias)

    def move_the_new_alias_away() -> None:
        os.rename(alias, tmp_path / "moved away")

    monkeypatch.setattr(_syscalls, "exchange", exchange_with_a_hand_at(alias, put_theirs, then=move_the_new_alias_away))
    with pytest.raises(AliasConflictError, match="created or replaced by someone else"):
        linker.update(0.1, write_ckpt(tmp_path / "b.ckpt", 2))
    assert Path(alias).read_text() == "my notes"
    assert linker.best_path == read_record(alias)["target"] == str(a)  # type: ignore[index]


def copied_directory_alias(tmp_path: Path) -> BestLinker:
    """A linker whose alias is a copy of a directory checkpoint (``a.ckpt``, fill 1)."""
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    linker.update(0.5, write_ckpt(tmp_path / "a.ckpt", 1, kind="dir"))
    return linker


@pytest.mark.parametrize("platform", ["portable"], indirect=True)  # as on NFS: renameat2 flags refused
def test_without_an_exchange_a_directory_alias_whose_removal_stopped_half_way_is_removed_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    linker = copied_directory_alias(tmp_path)

    def one_file_then_killed(path: str | None) -> None:
        assert path is not None
        os.unlink(os.path.join(path, sorted(os.listdir(path))[0]))

    with monkeypatch.context() as m:
        m.setattr(_files, "discard", one_file_then_killed)
        linker.update(0.1, write_ckpt(tmp_path / "b.ckpt", 2, kind="dir"))
    assert len(leftovers(tmp_path)) == 1  # the old alias, half removed
    BestLinker(tmp_path / "best.ckpt", link="copy").update(0.05, write_ckpt(tmp_path / "c.ckpt", 3, kind="dir"))
    assert leftovers(tmp_path) == []


def rename_with_a_folder_put_at(alias: str, tmp_path: Path, *, on_put_back: Callable[[], None] | None = None) -> Any:
    """``os.rename``, with someone replacing the alias by their folder (``theirs``, holding notes.txt)
    between the writer's last check and its rename; ``on_put_back`` runs as the writer puts it back."""
    real, moved_out = os.rename, ""

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal moved_out
        if on_put_back is not None and os.fspath(src) == moved_out:
            on_put_back()
        if os.fspath(src) == alias and not moved_out:
            real(alias, tmp_path / "ours")
            (tmp_path / "theirs").mkdir()
            (tmp_path / "theirs" / "notes.txt").write_text("my notes")
            real(tmp_path / "theirs", alias)
            moved_out = os.fspath(dst)
        real(src, dst, *args, **kwargs)

    return rename


@pytest.mark.parametrize("platform", ["portable"], indirect=True)  # as on NFS: renameat2 flags refused
def test_without_an_exchange_a_folder_put_at_the_alias_after_the_last_check_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    linker = copied_directory_alias(tmp_path)
    monkeypatch.setattr(os, "rename", rename_with_a_folder_put_at(str(linker.link_path), tmp_path))
    with pytest.raises(AliasConflictError):
        linker.update(0.1, write_ckpt(tmp_path / "b.ckpt", 2, kind="dir"))
    assert (tmp_path / "best.ckpt" / "notes.txt").read_text() == "my notes"


@pytest.mark.parametrize("platform", ["portable"], indirect=True)  # as on NFS: renameat2 flags refused
def test_without_an_exchange_a_folder_that_cannot_be_put_back_is_kept_and_the_new_alias_goes_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    linker = copied_directory_alias(tmp_path)
    alias = str(linker.link_path)

    def fail() -> None:
        raise OSError(errno.EIO, "injected")

    b = write_ckpt(tmp_path / "b.ckpt", 2, kind="dir")
    monkeypatch.setattr(os, "rename", rename_with_a_folder_put_at(alias, tmp_path, on_put_back=fail))
    with pytest.warns(BestLinkWarning, match="putting it back failed") as said:
        assert linker.update(0.1, b)
    monkeypatch.undo()
    kept = re.search(r"now '([^']+)'", str(said[0].message))
    assert kept is not None
    assert (Path(kept[1]) / "notes.txt").read_text() == "my notes"
    assert (fill_of(alias), linker.best_path, linker.verify().ok) == (2, str(b), True)


@pytest.mark.parametrize("platform", ["portable"], indirect=True)  # as on NFS: renameat2 flags refused
@pytest.mark.parametrize("kind", ["symlink", "copy"])
def test_without_an_exchange_a_folder_that_cannot_go_back_over_a_third_file_keeps_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, kind: str
) -> None:
    linker = copied_directory_alias(tmp_path)
    linker = BestLinker(linker.link_path, link=kind)  # a symlink replaces a copied folder through this path too
    alias = str(linker.link_path)

    def another_hand() -> None:  # as theirs goes back, another hand writes a file there
        Path(alias).write_text("another user's file")

    monkeypatch.setattr(os, "rename", rename_with_a_folder_put_at(alias, tmp_path, on_put_back=another_hand))
    with pytest.raises(AliasConflictError, match=r"could not be put back .* kept as '([^']+)'") as raised:
        linker.update(0.1, write_ckpt(tmp_path / "b.ckpt", 2, kind="dir"))
    monkeypatch.undo()
    assert Path(alias).read_text() == "another user's file"
    kept = re.search(r"kept as '([^']+)'", str(raised.value))
    assert kept is not None and (Path(kept[1]) / "notes.txt").read_text() == "my notes"
    assert read_record(alias)["target"] == str(tmp_path / "a.ckpt")  # type: ignore[index]


@pytest.mark.parametrize("platform", ["portable"], indirect=True)  # as on NFS: renameat2 flags refused
def test_without_an_exchange_a_directory_alias_that_cannot_go_in_nor_back_is_kept_and_the_error_says_the_path_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    linker = copied_directory_alias(tmp_path)
    alias, real = str(linker.link_path), os.rename

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(dst) == alias:  # neither the new alias nor, after it, the previous one goes in
            raise OSError(errno.EIO, "injected")
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    empty = r"the alias path is empty now\. The previous alias is kept as '([^']+)'"
    with pytest.raises(AliasWriteError, match=empty) as raised:
        linker.update(0.1, write_ckpt(tmp_path / "b.ckpt", 2, kind="dir"))
    monkeypatch.undo()
    kept = re.search(r"kept as '([^']+)'", str(raised.value))
    assert kept is not None and fill_of(kept[1]) == 1
    assert not os.path.lexists(alias)
    assert read_record(alias)["target"] == str(tmp_path / "a.ckpt")  # type: ignore[index]
    os.rename(kept[1], alias)  # as the message says: moved back, it is the alias its record names
    assert BestLinker.from_record(alias).verify().ok
    assert linker.update(0.1, tmp_path / "b.ckpt") and fill_of(alias) == 2 and linker.verify().ok


@pytest.mark.parametrize("platform", ["portable"], indirect=True)  # as on NFS: renameat2 flags refused
def test_without_an_exchange_a_folder_that_cannot_go_back_while_the_new_alias_cannot_go_in_says_the_path_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    linker = copied_directory_alias(tmp_path)
    alias = str(linker.link_path)
    theirs_out = rename_with_a_folder_put_at(alias, tmp_path, on_put_back=lambda: None)

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(dst) == alias and os.fspath(src) != alias and os.path.lexists(tmp_path / "ours"):
            raise OSError(errno.EIO, "injected")  # once theirs is out: it cannot go back, nor the new alias in
        theirs_out(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(AliasConflictError, match=r"kept as '([^']+)'\. The alias path is empty now") as raised:
        linker.update(0.1, write_ckpt(tmp_path / "b.ckpt", 2, kind="dir"))
    monkeypatch.undo()
    kept = re.search(r"kept as '([^']+)'", str(raised.value))
    assert kept is not None and (Path(kept[1]) / "notes.txt").read_text() == "my notes"
    assert not os.path.lexists(alias)
    assert read_record(alias)["target"] == str(tmp_path / "a.ckpt")  # type: ignore[index]


def test_a_cleanup_killed_half_way_through_an_old_directory_alias_is_finished_by_the_next_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    linker = copied_directory_alias(tmp_path)
    with monkeypatch.context() as m:  # killed right after the exchange: the old copy stays in its slot
        m.setattr(_files, "_remove_old_tree", lambda old, alias: None)
        linker.update(0.1, write_ckpt(tmp_path / "b.ckpt", 2, kind="dir"))
    assert len(leftovers(tmp_path)) == 1

    def one_file_then_killed(path: str) -> None:
        os.unlink(os.path.join(path, sorted(os.listdir(path))[0]))
        raise KeyboardInterrupt  # stands for the kill

    c = write_ckpt(tmp_path / "c.ckpt", 3, kind="dir")
    with monkeypatch.context() as m:  # the next process's cleanup, killed
        m.setattr(_leftovers, "remove_tree_or_file", one_file_then_killed)
        with pytest.raises(KeyboardInterrupt):
            BestLinker(tmp_path / "best.ckpt", link="copy").update(0.05, c)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what is left is the library's own: removed without a word
        assert BestLinker(tmp_path / "best.ckpt", link="copy").update(0.05, c)
    assert leftovers(tmp_path) == [] and fill_of(tmp_path / "best.ckpt") == 3


def test_a_tree_under_a_staged_name_is_never_put_back_at_an_empty_alias_path(tmp_path: Path) -> None:
    # a staged tree may be one the cleanup was removing when it was killed: from inside out, a folder's
    # removal leaves the top's identity as it was; only an exchange slot's tree is whole
    linker = copied_directory_alias(tmp_path)
    alias = Path(linker.link_path)
    named = read_record(alias)["alias_id"]  # type: ignore[index]
    staged = tmp_path / f".best.ckpt{_files.TMP_MARK}{_files.STAGED}-4242-0000002a"
    alias.rename(staged)
    assert BestLinker.from_record(alias).repair().ok  # the cleanup removes it; the alias is made anew
    assert not staged.exists() and read_record(alias)["alias_id"] != named  # type: ignore[index]
