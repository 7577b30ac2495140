"""Copy aliases share blocks where the filesystem can (issue 16).

On a loop-mounted XFS made with ``-m reflink=1`` a copy alias of a file and of a directory
checkpoint adds no data blocks, with the bytes identical. Where the filesystem cannot clone
(ext4), or a step fails with an error that means "not here", the next step makes the copy;
real errors (ENOSPC, EIO) fail the update and change nothing.
"""

from __future__ import annotations

import errno
import fcntl
import filecmp
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._helpers import as_nobody, as_root, fill_of, leftovers, write_ckpt
from tests._xfs import cannot_mount, free_bytes, xfs_mount

from lightning_bestlink import AliasWriteError, BestLinker
from lightning_bestlink._storage import _clone

MiB = 1 << 20
#: checkpoint data per test: a full copy of it is 64 MiB of new blocks
DATA = 64 * MiB
#: What a clone may still allocate: metadata, never data. XFS (4 KiB blocks) allocates inodes in
#: chunks of 64 (8 blocks), and a clone adds a reference-count btree record; the alias's JSON record
#: takes 1 block, a new directory (and each inode) a few, and btree splits of the free-space, block-map
#: and reference-count trees a block or two each. Measured: 4 KiB for a file, 36 KiB for a directory
#: of three shards. 1 MiB (256 blocks) covers that with room, and is 1/64 of what a copy writes.
METADATA_SLACK = 1 * MiB

pytestmark = pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="Linux only: FICLONE, copy_file_range")


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = cannot_mount()
    if reason:
        pytest.skip(reason)
    try:
        with xfs_mount(tmp_path_factory.mktemp("xfs")) as mnt:
            yield mnt
    except RuntimeError as err:  # a container without the right to mount, a kernel without XFS
        if any(s in str(err).lower() for s in ("permission denied", "not permitted", "unknown filesystem")):
            pytest.skip(f"this machine cannot mount an XFS image: {err}")
        raise


@pytest.fixture
def on_xfs(xfs: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh folder on the XFS mount, emptied afterwards (the image is shared by the module)."""
    d = xfs / request.node.name.replace("[", "-").replace("]", "")
    d.mkdir()
    yield d
    shutil.rmtree(d)


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
    return path


def plain_copy(src: Path, dst: Path) -> None:
    """A copy that writes every byte itself (the control: what a copy costs without sharing)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(MiB):
            fout.write(chunk)


# --- on a filesystem that clones ---------------------------------------------------------------


def test_copy_alias_of_a_file_adds_no_data_blocks(on_xfs: Path) -> None:
    a = random_file(on_xfs / "epoch=1.ckpt", DATA)
    b = random_file(on_xfs / "epoch=2.ckpt", DATA)
    linker = BestLinker(on_xfs / "best.ckpt", link="copy")
    for score, target in ((0.5, a), (0.2, b)):
        before = free_bytes(on_xfs)
        assert linker.update(score, target)
        used = before - free_bytes(on_xfs)
        assert used <= METADATA_SLACK, f"a copy alias of {DATA} B took {used} B of new blocks"
        alias = Path(linker.link_path)
        assert not alias.is_symlink() and not os.path.samestat(alias.stat(), target.stat()), "a copy, not a link"
        assert filecmp.cmp(alias, target, shallow=False)
        assert linker.link_kind == "copy" and linker.verify().ok
    assert leftovers(on_xfs) == []
    # the control: the measurement sees a copy that shares nothing
    before = free_bytes(on_xfs)
    plain_copy(b, on_xfs / "control.ckpt")
    assert before - free_bytes(on_xfs) >= DATA


def test_copy_alias_of_a_directory_checkpoint_adds_no_data_blocks(on_xfs: Path) -> None:
    shard = DATA // 4
    ckpt = on_xfs / "step=100"
    for i in range(4):
        random_file(ckpt / f"shard-{i}.distcp", shard)
    (ckpt / ".metadata").write_bytes(b"{}")
    os.symlink("shard-0.distcp", ckpt / "latest")  # a link inside the checkpoint stays a link
    os.chmod(ckpt / "shard-3.distcp", 0o600)
    linker = BestLinker(on_xfs / "best", link="copy")
    before = free_bytes(on_xfs)
    assert linker.update(1.0, ckpt)
    used = before - free_bytes(on_xfs)
    assert used <= METADATA_SLACK, f"a copy alias of a {DATA} B directory took {used} B of new blocks"
    alias = Path(linker.link_path)
    assert alias.is_dir() and not alias.is_symlink()
    assert sorted(os.listdir(alias)) == sorted(os.listdir(ckpt))
    assert filecmp.dircmp(alias, ckpt).diff_files == []
    for i in range(4):
        assert filecmp.cmp(alias / f"shard-{i}.distcp", ckpt / f"shard-{i}.distcp", shallow=False)
    assert os.readlink(alias / "latest") == "shard-0.distcp"
    assert stat.S_IMODE((alias / "shard-3.distcp").stat().st_mode) == 0o600
    assert linker.verify().ok and leftovers(on_xfs) == []


def test_each_step_of_the_chain_shares_blocks_on_xfs(on_xfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = random_file(on_xfs / "a.ckpt", 16 * MiB)
    before = free_bytes(on_xfs)
    assert _clone.copyfile(str(src), str(on_xfs / "by-clone")) == "clone"
    monkeypatch.setattr(_clone, "FICLONE", None)  # a Python or architecture without the ioctl number
    assert _clone.copyfile(str(src), str(on_xfs / "by-range")) == "copy_file_range"  # XFS remaps here too
    assert before - free_bytes(on_xfs) <= METADATA_SLACK
    for name in ("by-clone", "by-range"):
        assert filecmp.cmp(src, on_xfs / name, shallow=False)


@pytest.mark.parametrize("durable", [False, True])
def test_updates_on_xfs_stay_atomic_owned_and_identified(on_xfs: Path, durable: bool) -> None:
    a, b = write_ckpt(on_xfs / "a.ckpt", 1), write_ckpt(on_xfs / "b.ckpt", 2)
    linker = BestLinker(on_xfs / "best.ckpt", link="copy", durable=durable)
    assert linker.update(0.5, a) and linker.update(0.1, b)
    assert fill_of(linker.link_path) == 2 and fill_of(a) == 1
    # the copy's own identity: its mtime nanoseconds are its own, not the clone source's
    st = os.lstat(linker.link_path)
    from lightning_bestlink import read_record

    record = read_record(linker.link_path)
    assert record is not None and record["alias_id"] == [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    # a new process recognises the clone as its alias and replaces it
    assert BestLinker(on_xfs / "best.ckpt", link="copy").update(0.9, a)
    assert fill_of(linker.link_path) == 1 and leftovers(on_xfs) == []


# --- where the filesystem cannot clone ---------------------------------------------------------


def fs_type(path: Path) -> str:
    real, best, kind = os.path.realpath(path), "", "unknown"
    with open("/proc/mounts") as fh:
        for line in fh:
            parts = line.split()
            mount = parts[1].replace("\\040", " ")
            if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


def spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, fault: int | None = None) -> list[Any]:
    """Record each call of ``owner.name`` and its outcome (an errno, or "ok"); ``fault`` makes it raise."""
    real = getattr(owner, name)
    seen: list[Any] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if fault is not None:
            seen.append(fault)
            raise OSError(fault, os.strerror(fault))
        try:
            result = real(*args, **kwargs)
        except OSError as err:
            seen.append(err.errno)
            raise
        seen.append("ok")
        return result

    monkeypatch.setattr(owner, name, wrapper)
    return seen


def test_on_ext4_the_clone_falls_through_to_copy_file_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = fs_type(tmp_path)
    if kind not in ("ext4", "ext3", "ext2"):
        pytest.skip(f"the temporary folder is on {kind}; this test needs ext4, which cannot clone")
    ioctl = spy(monkeypatch, fcntl, "ioctl")
    ranges = spy(monkeypatch, os, "copy_file_range")
    plain = spy(monkeypatch, _clone, "_plain")
    a, b = write_ckpt(tmp_path / "a.ckpt", 1, size=3 * MiB), write_ckpt(tmp_path / "b.ckpt", 2, kind="dir")
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    assert linker.update(0.5, a)
    assert ioctl == [errno.EOPNOTSUPP], "ext4 answers FICLONE with EOPNOTSUPP"
    assert ranges[0] == "ok" and plain == []
    assert fill_of(linker.link_path) == 1 and not os.path.samestat(os.stat(linker.link_path), a.stat())
    linker2 = BestLinker(tmp_path / "best-dir", link="copy")
    assert linker2.update(0.5, b)
    assert fill_of(linker2.link_path) == 2 and plain == []
    assert leftovers(tmp_path) == []


#: "cannot here" errors fall through to the next step
FALL_THROUGH = {"EXDEV": errno.EXDEV, "EOPNOTSUPP": errno.EOPNOTSUPP, "EINVAL": errno.EINVAL, "ENOSYS": errno.ENOSYS}
#: real errors fail the update
REAL = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO, "EDQUOT": errno.EDQUOT}


def faulted(monkeypatch: pytest.MonkeyPatch, step: str, err: int) -> dict[str, list[Any]]:
    """Spy on the three steps; ``step`` ("clone", "range" or "both") raises ``err``.

    When only the second step is faulted, the clone answers EOPNOTSUPP (as ext4 does), whatever
    filesystem the temporary folder is on.
    """
    clone_fault = err if step in ("clone", "both") else errno.EOPNOTSUPP if step == "range" else None
    return {
        "clone": spy(monkeypatch, fcntl, "ioctl", clone_fault),
        "range": spy(monkeypatch, os, "copy_file_range", err if step in ("range", "both") else None),
        "plain": spy(monkeypatch, _clone, "_plain"),
    }


@pytest.mark.parametrize("target", ["file", "dir"])
@pytest.mark.parametrize("err_name", list(FALL_THROUGH))
@pytest.mark.parametrize(("step", "made_by"), [("clone", "range"), ("range", "plain"), ("both", "plain")])
def test_cannot_clone_here_falls_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, made_by: str, err_name: str, target: str
) -> None:
    a, b = write_ckpt(tmp_path / "a", 1, kind=target), write_ckpt(tmp_path / "b", 2, kind=target)
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, a)
    with monkeypatch.context() as m:
        calls = faulted(m, step, FALL_THROUGH[err_name])
        assert linker.update(0.1, b)
    if made_by == "range":
        assert "ok" in calls["range"] and calls["plain"] == []
    else:
        assert calls["plain"], "the plain copy made it"
    assert fill_of(linker.link_path) == 2 and fill_of(a) == 1 and fill_of(b) == 2
    assert linker.link_kind == "copy" and linker.verify().ok
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["file", "dir"])
@pytest.mark.parametrize("err_name", list(REAL))
@pytest.mark.parametrize("step", ["clone", "range"])
def test_real_errors_do_not_fall_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, err_name: str, target: str
) -> None:
    err = REAL[err_name]
    a, b = write_ckpt(tmp_path / "a", 1, kind=target), write_ckpt(tmp_path / "b", 2, kind=target)
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, a)
    record = Path(linker.record_path).read_bytes()
    state = linker.state_dict()
    with monkeypatch.context() as m:
        calls = faulted(m, step, err)
        with pytest.raises(AliasWriteError, match="unchanged") as info:
            linker.update(0.1, b)
    assert info.value.errno == err
    assert err in calls[step]
    if step == "clone":
        assert calls["range"] == [], "a real error of the clone is not retried another way"
    assert calls["plain"] == []
    assert fill_of(linker.link_path) == 1, "the old alias is intact"
    assert Path(linker.record_path).read_bytes() == record and linker.state_dict() == state
    assert leftovers(tmp_path) == []
    assert linker.update(0.1, b) and fill_of(linker.link_path) == 2  # nothing was spoiled for the next try


def test_a_short_copy_file_range_falls_back_to_the_plain_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # some filesystems (FUSE, files of /proc) answer 0 bytes at once: the plain copy makes the file
    monkeypatch.setattr(_clone, "FICLONE", None)
    monkeypatch.setattr(os, "copy_file_range", lambda *args: 0)
    src = write_ckpt(tmp_path / "a", 7, size=MiB)
    assert _clone.copyfile(str(src), str(tmp_path / "b")) == "copy"
    assert fill_of(tmp_path / "b") == 7


def test_the_copy_never_writes_through_a_name_planted_at_the_temporary_path(tmp_path: Path) -> None:
    victim = write_ckpt(tmp_path / "victim", 9)
    os.symlink(victim, tmp_path / "tmp-name")
    with pytest.raises(FileExistsError):
        _clone.copyfile(str(write_ckpt(tmp_path / "a", 1)), str(tmp_path / "tmp-name"))
    assert fill_of(victim) == 9


def test_errnos_that_fall_through_are_only_the_cannot_here_ones() -> None:
    assert {errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ETXTBSY} <= _clone.CANNOT
    assert not {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EBADF} & _clone.CANNOT


def test_a_directory_copy_never_writes_through_a_link_planted_in_place_of_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "private"
    victim.mkdir(mode=0o700)
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, write_ckpt(tmp_path / "a", 1, kind="dir"))
    real, planted = _clone.copyfile, []

    def copyfile(src: str, dst: str, **kwargs: Any) -> Any:
        if not planted:  # as the first file is copied, a hand swaps the folder being filled for a link
            staged = next(p for p in tmp_path.iterdir() if p.name.startswith(".best.") and p.is_dir())
            staged.rename(tmp_path / "moved-away")
            staged.symlink_to(victim)
            planted.append(staged)
        return real(src, dst, **kwargs)

    monkeypatch.setattr(_clone, "copyfile", copyfile)
    with pytest.raises(AliasWriteError, match="something else was put at the copy's name"):
        linker.update(0.1, write_ckpt(tmp_path / "b", 2, kind="dir"))
    monkeypatch.undo()
    assert os.listdir(victim) == [] and stat.S_IMODE(victim.stat().st_mode) == 0o700
    assert fill_of(tmp_path / "moved-away") == 2  # the copy went to the folder it made
    assert planted[0].is_symlink(), "what was put there is left to whoever put it"
    assert (fill_of(linker.link_path), linker.verify().ok) == (1, True)


def test_a_directory_checkpoint_holding_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, write_ckpt(tmp_path / "a", 1, kind="dir"))
    b = write_ckpt(tmp_path / "b", 2, kind="dir")
    os.mkfifo(b / "pipe")
    refused = "not a regular file, link or folder, which a copy cannot hold; move it out of the checkpoint"
    with pytest.raises(AliasWriteError, match=refused):
        linker.update(0.1, b)
    assert (fill_of(linker.link_path), leftovers(tmp_path)) == (1, [])


@pytest.mark.parametrize("put", ["a link to another file", "a file of its own"])
def test_the_plain_copy_never_writes_through_a_name_planted_at_the_temporary_path_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, put: str
) -> None:
    victim = write_ckpt(tmp_path / "victim", 9)
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, write_ckpt(tmp_path / "a", 1))

    def swap(fin: Any, fout: Any) -> bool:  # as the in-kernel copy fails (another filesystem), a hand
        os.rename(fout.name, tmp_path / "moved-away")  # that may write the folder puts something at its name
        if put == "a link to another file":
            os.symlink(victim, fout.name)
        else:
            Path(fout.name).write_text("someone's notes")
        return False

    monkeypatch.setattr(_clone, "FICLONE", None)
    monkeypatch.setattr(_clone, "_copy_range", swap)
    with pytest.raises(AliasWriteError, match="something else was put at the copy's name while it was made"):
        linker.update(0.1, write_ckpt(tmp_path / "b", 2))
    monkeypatch.undo()
    assert fill_of(victim) == 9 and (victim.stat().st_mode & 0o777) == 0o644
    assert fill_of(tmp_path / "moved-away") == 2  # the copy went to the file it made
    (theirs,) = [p for p in tmp_path.iterdir() if p.name.startswith(".best.bestlink-tmp-")]  # left to its maker
    assert os.readlink(theirs) == str(victim) if theirs.is_symlink() else theirs.read_text() == "someone's notes"
    assert (fill_of(linker.link_path), linker.best_path, linker.verify().ok) == (1, str(tmp_path / "a"), True)


@as_root
def test_a_directory_copy_of_a_checkpoint_with_a_read_only_folder_leaves_no_old_copy_behind(
    shared_folder: Path,
) -> None:
    # a copy keeps its checkpoint's folder modes: its read-only folder must not keep the old copy for good
    as_nobody(
        """
        folder = Path(sys.argv[1])
        linker = BestLinker(folder / "best", link="copy")
        for epoch in range(3):
            shard = folder / f"epoch={epoch}"
            (shard / "model").mkdir(parents=True)
            (shard / "model" / "weights.bin").write_bytes(bytes([epoch]) * 100)
            (shard / "model").chmod(0o555)
            assert linker.update(1.0 - epoch / 10, shard)
        left = [n for n in os.listdir(folder) if n.startswith(".best.bestlink-")]
        assert left == [], left
        assert linker.verify(deep=True).ok
        """,
        str(shared_folder),
    )


def test_verify_deep_of_a_directory_copy_holding_a_dangling_link_compares_the_link(tmp_path: Path) -> None:
    shard = write_ckpt(tmp_path / "a", 1, kind="dir")
    os.symlink("no-such-file", shard / "latest")  # a link inside the checkpoint that leads nowhere
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, shard)
    assert linker.verify(deep=True).ok
    os.unlink(Path(linker.link_path) / "latest")
    os.symlink("another-file", Path(linker.link_path) / "latest")
    assert not linker.verify(deep=True).ok


@as_root
def test_a_directory_copy_is_made_where_the_filesystem_gives_new_files_another_owner(shared_folder: Path) -> None:
    # root on NFS with root_squash (or CIFS and FAT mounted with uid=): what this process makes is owned
    # by someone else; the folder it just made is still the one it fills
    script = """
        import ctypes, os, sys
        from pathlib import Path
        from lightning_bestlink import BestLinker
        folder = Path(sys.argv[1])
        for epoch in range(2):
            (folder / f"epoch={epoch}").mkdir()
            (folder / f"epoch={epoch}" / "weights.bin").write_bytes(bytes([epoch]) * 100)
        warm = BestLinker(folder / "warm-up", link="copy")  # what the library imports on first use, as root
        for epoch in range(2):
            assert warm.update(1.0 - epoch / 10, folder / f"epoch={epoch}") and warm.verify(deep=True).ok
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setfsgid(65534)  # files made from here on belong to 65534, as root squash makes them
        libc.setfsuid(65534)
        linker = BestLinker(folder / "best", link="copy")
        for epoch in range(2):
            assert linker.update(1.0 - epoch / 10, folder / f"epoch={epoch}")
        assert os.stat(folder / "best").st_uid == 65534 and linker.verify(deep=True).ok
        assert [n for n in os.listdir(folder) if n.startswith(".best.bestlink-tmp-")] == []
    """
    argv = [sys.executable, "-c", textwrap.dedent(script), str(shared_folder)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@as_root
@pytest.mark.parametrize("probe", ["made", "refused"], ids=["its probe made", "its probe refused"])
def test_a_directory_copy_never_fills_a_folder_another_user_put_in_place_of_the_one_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probe: str
) -> None:
    linker = BestLinker(tmp_path / "best", link="copy")
    assert linker.update(0.5, write_ckpt(tmp_path / "a", 1, kind="dir"))
    real, theirs = os.mkdir, []

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        real(path, *args, **kwargs)
        if not theirs and os.path.basename(os.fspath(path)).startswith(".best."):  # the copy's folder, just made
            os.rmdir(path)  # another user who may write the run folder puts an empty private one of theirs there
            real(path, 0o700)
            os.chown(path, 65533, 65533)
            theirs.append(Path(path))

    def refused(fd: int) -> bool:  # as where this user may not write in their folder
        raise PermissionError(errno.EACCES, "Permission denied", ".bestlink-probe")

    b = write_ckpt(tmp_path / "b", 2, kind="dir")
    monkeypatch.setattr(os, "mkdir", mkdir)
    if probe == "refused":
        monkeypatch.setattr(_clone, "_made_here", refused)
    with pytest.raises(AliasWriteError, match=r"something else was put at the copy's name.*\.best\.bestlink-tmp-"):
        linker.update(0.1, b)
    monkeypatch.undo()
    assert os.listdir(theirs[0]) == [] and theirs[0].stat().st_uid == 65533  # left as it is, nothing in it
    assert (fill_of(linker.link_path), linker.verify().ok) == (1, True)


@as_root
def test_removing_what_a_killed_update_left_never_makes_the_alias_folder_writable(shared_folder: Path) -> None:
    as_nobody(
        """
        run = Path(sys.argv[1]) / "run"
        run.mkdir()
        (run / "a").mkdir()
        (run / "a" / "w.bin").write_bytes(b"a")
        BestLinker(run / "best", link="copy").update(1.0, run / "a")
        leftover = run / ".best.bestlink-tmp-999-0000abcd"  # a copy a killed update was making
        leftover.mkdir()
        (leftover / "w.bin").write_bytes(b"b")
        run.chmod(0o555)  # the user made the run read-only
        try:
            BestLinker(run / "best", link="copy").update(0.5, run / "a")
        except OSError as err:  # AliasWriteError: the leftover cannot be removed from a read-only folder
            assert "Permission denied" in str(err), err
        assert oct(run.stat().st_mode & 0o777) == "0o555", oct(run.stat().st_mode)
        """,
        str(shared_folder),
    )


def test_verify_deep_follows_a_link_that_leaves_the_checkpoint_to_what_it_reads(tmp_path: Path) -> None:
    # a relative link out of a sharded checkpoint leads elsewhere from the copy: what loading it reads differs
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "opt.bin").write_bytes(b"AAAA")
    shard = write_ckpt(tmp_path / "run" / "epoch=3", 3, kind="dir")
    os.symlink("../../shared/opt.bin", shard / "opt.bin")
    (shard / "inside").symlink_to(sorted(p.name for p in shard.iterdir() if p.is_file())[0])  # stays inside
    linker = BestLinker(tmp_path / "aliases" / "run" / "best", link="copy")  # one folder deeper
    assert linker.update(0.5, shard)
    assert not linker.verify(deep=True).ok  # the copy's link leads nowhere: the checkpoint's reads AAAA
    elsewhere = tmp_path / "aliases" / "shared"
    elsewhere.mkdir()
    (elsewhere / "opt.bin").write_bytes(b"AAAA")  # now it leads to another file (what is outside is never read)
    assert not linker.verify(deep=True).ok
    os.unlink(Path(linker.link_path) / "opt.bin")
    os.symlink(tmp_path / "shared" / "opt.bin", Path(linker.link_path) / "opt.bin")  # the very file
    assert not linker.verify(deep=True).ok, "not the link the checkpoint holds"


def test_verify_deep_never_reads_what_a_link_leads_to_outside_the_checkpoint(tmp_path: Path) -> None:
    # a FIFO (or a file of /proc) read to compare would never end: links out of the tree are compared by
    # where they lead, never by what is there
    for pipes in (tmp_path / "pipes", tmp_path / "aliases" / "pipes"):
        pipes.mkdir(parents=True)
        os.mkfifo(pipes / "in")
    shard = write_ckpt(tmp_path / "run" / "epoch=3", 3, kind="dir")
    os.symlink(tmp_path / "pipes" / "in", shard / "same")  # absolute: the very FIFO from both
    os.mkdir(shard / "..meta")
    os.symlink("..meta", shard / "meta")  # inside the tree, whatever its name starts with
    linker = BestLinker(tmp_path / "aliases" / "run" / "best", link="copy")
    assert linker.update(0.5, shard) and linker.verify(deep=True).ok
    os.symlink("../../pipes/in", shard / "feed")  # from the copy, one folder deeper: the other FIFO
    assert linker.repair().ok  # the checkpoint changed after it was copied: copied again
    done: list[Any] = []
    checking = threading.Thread(target=lambda: done.append(linker.verify(deep=True)), daemon=True)
    checking.start()
    checking.join(60)
    assert done and not done[0].ok  # answered, without opening a FIFO
