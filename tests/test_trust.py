"""What the core vouches for, and what it refuses to act on (issue 21): the files it keeps next to an
alias are never checkpoints; a kill at any system call never makes verify vouch for the wrong model;
locks and inputs that are not what they should be are clear errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from tests._cli import cli
from tests._helpers import as_nobody, as_root, fill_of, write_ckpt

from lightning_bestlink import (
    AliasConflictError,
    BestLinker,
    BestLinkWarning,
    OutsideFolderError,
    RecordError,
    read_record,
)

BOOKKEEPING = {
    "record": "best.ckpt.bestlink.json",
    "lock": ".best.ckpt.bestlink.lock",
    "retention list": "best.ckpt.bestlink.retention.json",
    "temporary file": ".best.ckpt.bestlink-tmp-1-abcd",
}


@pytest.mark.parametrize("which", sorted(BOOKKEEPING))
def test_an_update_onto_a_file_kept_next_to_an_alias_is_refused_before_anything_changes(
    tmp_path: Path, which: str
) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    record_before = (tmp_path / "best.ckpt.bestlink.json").read_bytes()
    name = BOOKKEEPING[which]
    if not (tmp_path / name).exists():
        (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match=rf"path '.*{name}' is (the|a) .*, not a checkpoint"):
        linker.update(0.5, tmp_path / name)
    assert os.readlink(tmp_path / "best.ckpt") == "a.ckpt"
    assert (tmp_path / "best.ckpt.bestlink.json").read_bytes() == record_before


def test_a_link_that_leads_to_the_record_is_refused_too(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    (tmp_path / "epoch=9.ckpt").symlink_to("best.ckpt.bestlink.json")
    with pytest.raises(ValueError, match=r"is the record of an alias \('best.ckpt.bestlink.json'\)"):
        linker.update(0.5, tmp_path / "epoch=9.ckpt")


def test_a_forged_state_naming_the_record_is_refused_when_loaded(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    state = linker.state_dict()
    state.update(best_score=0.0, best_path=str(tmp_path / "best.ckpt.bestlink.json"))
    fresh = BestLinker(tmp_path / "best.ckpt")
    with pytest.raises(ValueError, match=r"state\['best_path'\] names the record of an alias, not a checkpoint"):
        fresh.load_state_dict(state)
    assert fresh.best_path is None


def test_a_forged_record_naming_itself_is_damaged_and_verify_says_so(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    linker.update(1.0, write_ckpt(tmp_path / "a.ckpt", 1))
    record_file = tmp_path / "best.ckpt.bestlink.json"
    record = json.loads(record_file.read_text())
    record["target"] = "best.ckpt.bestlink.json"
    record_file.write_text(json.dumps(record))
    (tmp_path / "best.ckpt").unlink()
    (tmp_path / "best.ckpt").symlink_to("best.ckpt.bestlink.json")
    with pytest.raises(RecordError, match=r"'target' names the record of an alias, not a checkpoint"):
        BestLinker.from_record(tmp_path / "best.ckpt")


def test_a_nul_byte_in_a_path_is_a_clear_error(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    with pytest.raises(ValueError, match=r"path must not contain a NUL byte, got '.*a\\x00b.ckpt'"):
        linker.update(1.0, str(tmp_path / "a\0b.ckpt"))


# --- the lock file (issue 21 items 13, 14) ----------------------------------------------


@pytest.mark.parametrize("planted", ["dangling link", "link to a file", "link to /dev/null", "fifo"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_and_nothing_is_created(tmp_path: Path, planted: str) -> None:
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (outside / "theirs.txt").write_text("keep me")
    lock = run / ".best.ckpt.bestlink.lock"
    if planted == "dangling link":
        lock.symlink_to(outside / "created-by-us")
    elif planted == "link to a file":
        lock.symlink_to(outside / "theirs.txt")
    elif planted == "link to /dev/null":
        lock.symlink_to("/dev/null")
    else:
        os.mkfifo(lock)
    linker = BestLinker(run / "best.ckpt")
    with pytest.raises(
        AliasConflictError,
        match=r"the lock file '.*\.best\.ckpt\.bestlink\.lock' is (a symbolic link|not a regular file)",
    ):
        linker.update(0.5, write_ckpt(run / "a.ckpt", 1))
    assert sorted(os.listdir(outside)) == ["theirs.txt"] and (outside / "theirs.txt").read_text() == "keep me"
    assert not os.path.lexists(run / "best.ckpt") and not (run / "best.ckpt.bestlink.json").exists()


@as_root
def test_a_lock_made_by_another_user_is_usable_by_whoever_may_write_the_folder(shared_folder: Path) -> None:
    # a sweep folder two users write (group-writable, not sticky: both may replace the alias)
    shared_folder.chmod(0o777)
    first = BestLinker(shared_folder / "best.ckpt", shared=True)
    first.update(0.5, write_ckpt(shared_folder / "a.ckpt", 1))  # root's lock: 0644 under umask 022
    write_ckpt(shared_folder / "b.ckpt", 2).chmod(0o644)
    as_nobody(
        """
        from lightning_bestlink import BestLinker
        assert BestLinker(sys.argv[1] + "/best.ckpt", shared=True).update(0.1, sys.argv[1] + "/b.ckpt")
        """,
        str(shared_folder),
    )
    assert read_record(shared_folder / "best.ckpt")["target"] == str(shared_folder / "b.ckpt")  # type: ignore[index]


@as_root
def test_a_lock_another_user_cannot_read_is_an_error_that_names_it_and_the_fix(shared_folder: Path) -> None:
    shared_folder.chmod(0o777)
    first = BestLinker(shared_folder / "best.ckpt", shared=True)
    first.update(0.5, write_ckpt(shared_folder / "a.ckpt", 1))
    (shared_folder / ".best.ckpt.bestlink.lock").chmod(0o600)  # as under umask 077
    write_ckpt(shared_folder / "b.ckpt", 2).chmod(0o644)
    as_nobody(
        """
        from lightning_bestlink import AliasWriteError, BestLinker
        try:
            BestLinker(sys.argv[1] + "/best.ckpt", shared=True).update(0.1, sys.argv[1] + "/b.ckpt")
        except AliasWriteError as err:
            assert "lock file" in str(err) and "belongs to uid 0 and has mode -rw-------" in str(err), err
            assert "chmod a+r" in str(err), err
        else:
            raise AssertionError("no error")
        """,
        str(shared_folder),
    )
    assert read_record(shared_folder / "best.ckpt")["target"] == str(shared_folder / "a.ckpt")  # type: ignore[index]


# --- what verify proves, and repair racing a writer (issue 21 items 7, 8) ---------------


def test_verify_of_a_copy_sees_a_rewritten_checkpoint_and_deep_sees_a_restored_time(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    linker.update(0.5, a)
    assert linker.verify().ok and linker.verify(deep=True).detail.endswith("(bytes compared)")
    before = os.stat(a)
    write_ckpt(a, 9)  # rewritten in place, same size: the copy holds the old bytes
    report = linker.verify()
    assert (report.status, report.detail) == (
        "mismatch",
        f"{str(a)!r} changed after it was copied to {linker.link_path!r}: the copy holds the old bytes",
    )
    os.utime(a, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and its time put back
    assert linker.verify().ok  # what an identity cannot see, as documented
    report = linker.verify(deep=True)
    assert report.status == "mismatch" and "does not hold the bytes of" in report.detail


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_the_command_line_verify_deep_sees_a_checkpoint_rewritten_with_its_time_put_back(
    tmp_path: Path, kind: str
) -> None:
    a = write_ckpt(tmp_path / "a.ckpt", 1, kind=kind)
    BestLinker(tmp_path / "best.ckpt", link="copy").update(0.5, a)
    rewritten = a / "shard-1.bin" if kind == "dir" else a
    before = os.stat(rewritten)
    rewritten.write_bytes(bytes(len(rewritten.read_bytes())))  # in place, same size, and its time put back
    os.utime(rewritten, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert cli("verify", tmp_path).returncode == 0  # what an identity cannot see, as documented
    deep = cli("verify", "--deep", tmp_path)
    assert deep.returncode == 1 and "mismatch" in deep.stdout and "does not hold the bytes of" in deep.stdout


def test_verify_of_a_copied_shard_directory_sees_a_shard_rewritten_in_place(tmp_path: Path) -> None:
    # rewriting a file inside a directory leaves the directory's own identity as it was
    a = write_ckpt(tmp_path / "a.ckpt", 1, kind="dir")
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    linker.update(0.5, a)
    assert linker.verify().ok
    (a / "shard-1.bin").write_bytes(b"another run's shard")
    report = linker.verify()
    assert (report.status, report.detail) == (
        "mismatch",
        f"a file inside {str(a)!r} changed after it was copied to {linker.link_path!r}: the copy holds the old one",
    )
    assert cli("path", tmp_path).returncode == 1


@pytest.mark.parametrize("step", [100, 10**7, 10**9], ids=["NTFS-100ns", "exFAT-10ms", "ext2-1s"])
def test_a_copied_shard_directory_on_a_filesystem_with_coarser_times_is_still_its_copy(
    tmp_path: Path, step: int
) -> None:
    a = write_ckpt(tmp_path / "a.ckpt", 1, kind="dir")
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    linker.update(0.5, a)
    for shard in (tmp_path / "best.ckpt").iterdir():  # as such a filesystem stores the copy's times
        st = shard.stat()
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns - st.st_mtime_ns % step))
        shard.chmod(0o755)
    assert linker.verify().ok
    shard = a / "shard-1.bin"  # rewritten in place a step later, with the same size
    later = shard.stat().st_mtime_ns + step
    shard.write_bytes(bytes(len(shard.read_bytes())))
    os.utime(shard, ns=(later, later))
    assert linker.verify().status == "mismatch"


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "shared"])
def test_a_repair_made_before_a_writer_moved_the_alias_never_puts_back_the_older_best(
    tmp_path: Path, shared: bool
) -> None:
    a, b = write_ckpt(tmp_path / "a.ckpt", 1), write_ckpt(tmp_path / "b.ckpt", 2)
    writer = BestLinker(tmp_path / "best.ckpt", shared=shared)
    writer.update(0.5, a)
    stale = BestLinker.from_record(tmp_path / "best.ckpt")  # repair's view: read before the writer moves on
    assert writer.update(0.1, b)
    (tmp_path / "best.ckpt").unlink()  # something for the repair to do
    assert stale.repair().ok
    assert os.readlink(tmp_path / "best.ckpt") == "b.ckpt"
    assert read_record(tmp_path / "best.ckpt")["score"] == 0.1  # type: ignore[index]


def test_two_writers_of_one_alias_without_shared_are_told_who_the_other_is(tmp_path: Path) -> None:
    one, two = BestLinker(tmp_path / "best.ckpt"), BestLinker(tmp_path / "best.ckpt")
    one.update(0.5, write_ckpt(tmp_path / "a.ckpt", 1))
    two.update(0.4, write_ckpt(tmp_path / "b.ckpt", 2))
    pattern = rf"another writer \(host {socket.gethostname()!r}, pid {os.getpid()}\) updated .* to 'b.ckpt'"
    with pytest.warns(BestLinkWarning, match=pattern) as said:
        one.update(0.3, write_ckpt(tmp_path / "c.ckpt", 3))
    assert said[0].filename == __file__  # shown at the caller's line
    one.update(0.2, write_ckpt(tmp_path / "d.ckpt", 4))  # once per other writer


# --- inputs (issue 21 items 15, 16) --------------------------------------------------------


@pytest.mark.parametrize("link_path", ["ckpt/", "ckpt/.", ".", "..", "ckpt/.."])
def test_a_link_path_that_names_a_folder_is_refused_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_path: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(
        ValueError, match=r"link_path must name the alias file, got the folder .*; e\.g\. '.*best\.ckpt'"
    ):
        BestLinker(link_path)


def test_nul_bytes_are_clear_errors_naming_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"link_path must not contain a NUL byte"):
        BestLinker(str(tmp_path / "be\0st.ckpt"))
    linker = BestLinker(tmp_path / "best.ckpt")
    with pytest.raises(ValueError, match=r"state\['best_path'\] must be a path or None, got '.*a\\x00.ckpt'"):
        linker.load_state_dict({"best_score": 0.1, "best_path": str(tmp_path / "a\0.ckpt")})


def test_a_state_naming_a_link_inside_the_folder_that_leads_out_says_where_it_leads(tmp_path: Path) -> None:
    secret = write_ckpt(tmp_path / "private" / "secret.ckpt", 7)
    run = tmp_path / "run"
    run.mkdir()
    (run / "inner.ckpt").symlink_to(secret)
    linker = BestLinker(run / "best.ckpt")
    with pytest.raises(
        OutsideFolderError, match=rf"'{run / 'inner.ckpt'}', a link that leads to '{secret}', lies outside"
    ):
        linker.load_state_dict({"best_score": 0.1, "best_path": str(run / "inner.ckpt")})


@as_root
def test_a_file_of_another_user_under_a_temporary_name_of_the_alias_is_never_cleaned_up(shared_folder: Path) -> None:
    planted = shared_folder / ".best.ckpt.bestlink-tmp-1-planted"
    as_nobody("Path(sys.argv[1]).write_text('theirs')", str(planted))
    mine = shared_folder / ".best.ckpt.bestlink-tmp-2-leftover"
    mine.symlink_to("a.ckpt")  # what a writer killed before publishing a symlink leaves
    BestLinker(shared_folder / "best.ckpt").update(0.5, write_ckpt(shared_folder / "a.ckpt", 1))
    assert planted.read_text() == "theirs" and not mine.exists()


@as_root
def test_a_record_another_user_planted_does_not_make_a_users_file_at_the_alias_ours(shared_folder: Path) -> None:
    # in a sticky folder the other user cannot remove the file, and must not get it replaced either
    alias = shared_folder / "best.ckpt"
    alias.write_text("hand-picked")
    a = write_ckpt(shared_folder / "a.ckpt", 1)
    as_nobody(
        """
        st = os.stat(sys.argv[1])
        claim = {"format": "lightning-bestlink/1", "alias": "best.ckpt", "target": "a.ckpt", "link": "copy",
                 "mode": "min", "score": 9.0, "alias_id": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]}
        Path(sys.argv[1] + ".bestlink.json").write_text(json.dumps(claim))
        """,
        str(alias),
    )
    with pytest.raises(AliasConflictError, match="did not write"):
        BestLinker(alias, link="copy").update(0.5, a)
    repair = cli("repair", shared_folder)
    assert repair.returncode == 1 and "foreign" in repair.stdout, repair.stdout + repair.stderr
    assert alias.read_text() == "hand-picked"


@as_root
def test_a_record_of_another_user_who_could_replace_the_alias_vouches_for_it(shared_folder: Path) -> None:
    # a sweep two users write (no sticky bit): the other user's update wrote its record and was
    # killed before it published; whoever updates next completes it
    shared_folder.chmod(0o777)
    alias = shared_folder / "best.ckpt"
    BestLinker(alias, link="copy").update(0.5, write_ckpt(shared_folder / "a.ckpt", 1))
    write_ckpt(shared_folder / "b.ckpt", 2).chmod(0o644)
    as_nobody(
        """
        st = os.stat(sys.argv[1])
        record = json.loads(Path(sys.argv[1] + ".bestlink.json").read_text())
        record.update(target="b.ckpt", score=0.4, previous_alias_id=[st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns],
                      alias_id=[st.st_dev, st.st_ino + 1, st.st_size, st.st_mtime_ns])
        Path(sys.argv[1] + ".bestlink.json.new").write_text(json.dumps(record))
        os.replace(sys.argv[1] + ".bestlink.json.new", sys.argv[1] + ".bestlink.json")
        """,
        str(alias),
    )
    assert (shared_folder / "best.ckpt.bestlink.json").stat().st_uid == 65534
    assert BestLinker(alias, link="copy").update(0.3, write_ckpt(shared_folder / "c.ckpt", 3))
    assert fill_of(alias) == 3


def test_the_old_alias_of_another_writer_left_in_a_slot_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    # a sweep two users write: this writer swapped out the other's copy, and was killed before removing it
    BestLinker(tmp_path / "best.ckpt", link="copy").update(0.5, write_ckpt(tmp_path / "a.ckpt", 1))
    theirs = write_ckpt(tmp_path / ".best.ckpt.bestlink-out-1-0000abcd", 7)
    os.chown(theirs, 65534, 65534)
    record_file = tmp_path / "best.ckpt.bestlink.json"
    st = theirs.stat()
    record = json.loads(record_file.read_text())
    record["previous_alias_id"] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    record_file.write_text(json.dumps(record))
    BestLinker(tmp_path / "best.ckpt", link="copy").update(0.1, write_ckpt(tmp_path / "b.ckpt", 2))
    assert not theirs.exists()


def test_a_symlink_repointed_through_a_linked_folder_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    run, other = tmp_path / "run", tmp_path / "other"
    (other / "deep").mkdir(parents=True)
    run.mkdir()
    best, lookalike = write_ckpt(run / "x.ckpt", 1), write_ckpt(other / "x.ckpt", 2)
    (run / "sub").symlink_to(other / "deep")
    linker = BestLinker(run / "best.ckpt", link="symlink")
    linker.update(0.1, best)
    (run / "new").symlink_to("sub/../x.ckpt")  # run/x.ckpt by its text, other/x.ckpt for the kernel
    os.replace(run / "new", run / "best.ckpt")
    report = linker.verify()
    assert (report.status, report.actual) == ("mismatch", str(lookalike))
    assert cli("path", run).returncode == 1


@pytest.mark.parametrize(
    ("nulled", "status"),
    [(("alias_id", "target_id", "previous_alias_id"), "foreign"), (("target_id",), "mismatch")],
)
def test_a_copy_record_edited_to_name_a_lookalike_without_identities_is_never_ok(
    tmp_path: Path, nulled: tuple[str, ...], status: str
) -> None:
    # checkpoints of one model have one size: sizes alone cannot tell them apart
    first, second = write_ckpt(tmp_path / "epoch=1.ckpt", 1), write_ckpt(tmp_path / "epoch=2.ckpt", 2)
    assert first.stat().st_size == second.stat().st_size
    BestLinker(tmp_path / "best.ckpt", link="copy").update(0.1, first)
    record_file = tmp_path / "best.ckpt.bestlink.json"
    record = json.loads(record_file.read_text())
    record.update(target="epoch=2.ckpt", **dict.fromkeys(nulled))
    record_file.write_text(json.dumps(record))
    assert BestLinker.from_record(tmp_path / "best.ckpt").verify().status == status
    assert cli("path", tmp_path).returncode == 1


@pytest.mark.parametrize("how", ["written", "a copy of the alias"])
def test_a_file_an_exchange_left_in_its_slot_is_kept_with_a_warning(tmp_path: Path, how: str) -> None:
    # a file put at the alias path is exchanged out, then put back: a writer killed in between leaves it here
    BestLinker(tmp_path / "best.ckpt", link="copy").update(0.5, write_ckpt(tmp_path / "a.ckpt", 1))
    theirs = tmp_path / ".best.ckpt.bestlink-out-1-0000abcd"
    if how == "written":
        theirs.write_text("my notes")
    else:  # as `cp -a best.ckpt`: the same bytes, times and attributes, another file
        shutil.copy2(tmp_path / "best.ckpt", theirs)
    kept = theirs.read_bytes()
    with pytest.warns(BestLinkWarning, match=rf"'{theirs}', a temporary name of the alias .* left as it is"):
        BestLinker(tmp_path / "best.ckpt", link="copy").update(0.1, write_ckpt(tmp_path / "b.ckpt", 2))
    assert theirs.read_bytes() == kept


def test_a_file_with_the_size_and_time_of_a_copy_alias_but_other_bytes_is_not_taken_for_it(tmp_path: Path) -> None:
    # a folder copied with its times (cp -a) has the alias's size and stamped time on another inode: taken
    # for the alias only if it holds the bytes its record names; anything else at the alias path is kept
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    linker.update(0.5, write_ckpt(tmp_path / "a.ckpt", 1))
    alias = Path(linker.link_path)
    st = alias.stat()

    def put_at_the_alias(data: bytes) -> None:  # another inode, with the alias's size and time
        (tmp_path / "other").write_bytes(data)
        os.utime(tmp_path / "other", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp_path / "other", alias)
        assert alias.stat().st_ino != st.st_ino and alias.stat().st_mtime_ns == st.st_mtime_ns

    put_at_the_alias(bytes(st.st_size))  # the user's own bytes
    with pytest.raises(AliasConflictError, match="did not write"):
        BestLinker(alias, link="copy").update(0.1, write_ckpt(tmp_path / "b.ckpt", 2))
    assert alias.read_bytes() == bytes(st.st_size)
    put_at_the_alias((tmp_path / "a.ckpt").read_bytes())  # the alias's bytes, as cp -a copies them: replaced
    assert BestLinker(alias, link="copy").update(0.1, tmp_path / "b.ckpt") and fill_of(alias) == 2


def test_a_copied_alias_whose_checkpoint_is_gone_is_refused_with_the_usual_error(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    linker.update(0.5, write_ckpt(tmp_path / "a.ckpt", 1))
    alias = Path(linker.link_path)
    st = alias.stat()
    shutil.copy2(alias, tmp_path / "other")  # the alias as cp -a copies it: another inode, its size and time
    os.replace(tmp_path / "other", alias)
    assert alias.stat().st_ino != st.st_ino and alias.stat().st_mtime_ns == st.st_mtime_ns
    (tmp_path / "a.ckpt").unlink()  # what its record names is gone: nothing proves it holds nothing else
    with pytest.raises(AliasConflictError, match="did not write"):
        BestLinker(alias, link="copy").update(0.1, write_ckpt(tmp_path / "b.ckpt", 2))
    assert fill_of(alias) == 1
