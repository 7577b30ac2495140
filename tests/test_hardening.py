"""Ownership and confinement that cannot be fooled; hostile inputs give clear errors (issue 13).

Each test reproduces a case an adversarial review found, and failed before the fix.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from tests._helpers import fill_of, leftovers, write_ckpt

from lightning_bestlink import AliasConflictError, BestLinker, read_record
from lightning_bestlink._errors import RecordError
from lightning_bestlink._storage import _clone, _syscalls

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX files: FIFOs, /dev, /proc, symlinks")


# --- 1. an identity that a new file cannot match by accident --------------------------


@pytest.mark.parametrize("kind", ["copy", "hardlink"])
def test_a_file_reusing_the_alias_inode_number_is_not_taken_for_the_alias(tmp_path: Path, kind: str) -> None:
    a, b, c = (write_ckpt(tmp_path / f"{n}.ckpt", i) for i, n in enumerate("abc"))
    alias = tmp_path / "best.ckpt"
    reused = 0
    for attempt in range(10):
        linker = BestLinker(alias, link=kind)  # type: ignore[arg-type]
        assert linker.update(0.5, a) and linker.update(0.4, b)
        record = read_record(alias)
        assert record is not None
        mine = {tuple(record[k][:2]) for k in ("alias_id", "previous_alias_id") if record[k]}  # (st_dev, st_ino)
        alias.unlink()
        if kind == "hardlink":
            b.unlink()  # the last name of that inode goes: its number is free again
        alias.write_bytes(Path(c).read_bytes())  # the user's own file, same size as a checkpoint
        st = os.lstat(alias)
        reused += (st.st_dev, st.st_ino) in mine
        with pytest.raises(AliasConflictError, match="did not write"):
            BestLinker(alias, link=kind).update(0.1, c)  # type: ignore[arg-type]
        with pytest.raises(AliasConflictError, match="did not write"):
            linker.update(0.1, c)  # the process that wrote it is not fooled either
        assert fill_of(alias) == 2, f"the user's file was replaced (attempt {attempt}, identity {mine})"
        alias.unlink()
        if kind == "hardlink":
            b = write_ckpt(tmp_path / "b.ckpt", 1)
        Path(linker.record_path).unlink()
    assert reused, "the filesystem never reused the inode number: the test proved nothing here"


def test_a_hard_link_alias_stays_ours_when_its_checkpoint_is_rewritten_in_place(tmp_path: Path) -> None:
    # Lightning <= 2.3 rewrites a fixed-name best checkpoint in place: same inode, new mtime
    a, b = write_ckpt(tmp_path / "model.ckpt", 1), write_ckpt(tmp_path / "b.ckpt", 2)
    linker = BestLinker(tmp_path / "best.ckpt", link="hardlink")
    assert linker.update(0.5, a)
    with open(a, "r+b") as fh:
        fh.write(Path(b).read_bytes())
    assert BestLinker(tmp_path / "best.ckpt", link="hardlink").update(0.4, a)
    assert fill_of(tmp_path / "best.ckpt") == 2


# --- 2. a file that appears while the alias is staged is never overwritten --------------


@pytest.mark.parametrize("platform", ["renameat2", "portable"])
@pytest.mark.parametrize("before", ["missing", "symlink"])
def test_a_file_created_at_the_alias_during_the_copy_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, before: str
) -> None:
    a, b = write_ckpt(tmp_path / "a.ckpt", 1), write_ckpt(tmp_path / "b.ckpt", 2)
    alias = tmp_path / "best.ckpt"
    if before == "symlink":
        assert BestLinker(alias, link="symlink").update(0.5, a)
        Path(str(alias) + ".bestlink.json").unlink()  # a copy linker now writes over a plain link
    if platform == "portable":
        monkeypatch.setattr(_syscalls, "exchange", lambda x, y: False)
        monkeypatch.setattr(_syscalls, "rename_noreplace", lambda x, y: False)
    real_copy = _clone.copyfile  # what makes a copy's bytes

    def slow_copy(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_copy(src, dst, *args, **kwargs)
        if os.path.lexists(alias):  # while the checkpoint is copied, someone puts a file there
            alias.unlink()
        alias.write_bytes(b"precious")
        return result

    monkeypatch.setattr(_clone, "copyfile", slow_copy)
    linker = BestLinker(alias, link="copy")
    with pytest.raises(AliasConflictError, match="while the new alias was being written"):
        linker.update(0.1, b)
    assert alias.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []
    assert linker.best_path is None


# --- 3. the record and the state are input: targets stay inside the alias's folder ----


def _plant_record(alias: Path, target: str, link: str = "copy") -> None:
    record = {"format": "lightning-bestlink/1", "alias": alias.name, "target": target, "link": link}
    record.update(mode="min", score=0.1, alias_id=None, previous_alias_id=None, extra={})
    Path(str(alias) + ".bestlink.json").write_text(json.dumps(record))


@pytest.mark.parametrize("link", ["copy", "hardlink", "symlink"])
def test_repair_refuses_a_planted_record_that_points_outside(tmp_path: Path, link: str) -> None:
    secret = write_ckpt(tmp_path / "private" / "secret.ckpt", 7)
    run = tmp_path / "shared-run"
    run.mkdir()
    _plant_record(run / "best.ckpt", os.path.relpath(secret, run), link)
    with pytest.raises(ValueError, match=r"outside the alias's folder.*allow_outside=True"):
        BestLinker.from_record(run / "best.ckpt").repair()
    assert sorted(os.listdir(run)) == ["best.ckpt.bestlink.json"]
    # the caller may allow it explicitly
    assert BestLinker.from_record(run / "best.ckpt", allow_outside=True).repair().ok
    assert fill_of(run / "best.ckpt") == 7


def test_a_record_naming_the_folder_itself_is_refused(tmp_path: Path) -> None:
    write_ckpt(tmp_path / "run" / "a.ckpt", 1)
    for target in ("..", "."):
        _plant_record(tmp_path / "run" / "best.ckpt", target)
        with pytest.raises(ValueError, match=r"outside the alias's folder|holds the alias"):
            BestLinker.from_record(tmp_path / "run" / "best.ckpt", allow_outside=True).repair()
    # nothing written but the lock that repair takes before it reads the record again
    assert sorted(os.listdir(tmp_path / "run")) == [".best.ckpt.bestlink.lock", "a.ckpt", "best.ckpt.bestlink.json"]


def test_the_relative_fallback_never_leads_out_of_the_folder(tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "run" / "best.ckpt")
    state = {"version": 1, "link_path": "/elsewhere/best.ckpt", "mode": "min", "ties": "first"}
    state.update(best_score=0.1, best_path="/elsewhere/gone.ckpt", best_path_relative="../../../../../../etc/passwd")
    with pytest.raises(ValueError, match="outside the alias's folder"):
        linker.load_state_dict(state)
    assert linker.best_path is None


def test_memory_record_naming_another_folder_is_refused() -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/other-bucket/secret.ckpt", b"secret")
    fs.pipe_file(
        "/bucket/run/best.ckpt.bestlink.json",
        json.dumps(
            {"format": "lightning-bestlink/1", "target": "memory://other-bucket/secret.ckpt", "link": "copy"}
            | {"mode": "min", "score": 0.1, "alias_id": None, "previous_alias_id": None, "extra": {}}
        ).encode(),
    )
    try:
        with pytest.raises(ValueError, match="outside the alias's folder"):
            BestLinker.from_record("memory://bucket/run/best.ckpt").repair()
        assert not fs.exists("/bucket/run/best.ckpt")
    finally:
        fs.rm("/bucket", recursive=True)
        fs.rm("/other-bucket", recursive=True)


@posix_only
@pytest.mark.parametrize("path", ["/dev/null", "/proc/self/environ", "fifo"])
def test_targets_that_are_not_files_or_directories_are_refused(tmp_path: Path, path: str) -> None:
    if path == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    with pytest.raises(ValueError, match="not a regular file or directory"):
        linker.update(0.1, path)
    assert not os.path.lexists(linker.link_path)


# --- 4. an alias folder reached through a symlink --------------------------------------


@posix_only
@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_a_symlinked_alias_folder_gets_a_link_that_resolves(tmp_path: Path, link: str, monkeypatch: Any) -> None:
    real = tmp_path / "data" / "a" / "b" / "ckpt"
    a = write_ckpt(real / "epoch=1.ckpt", 1)
    monkeypatch.chdir(tmp_path)
    os.symlink(os.path.relpath(real, tmp_path), "ckpt")
    linker = BestLinker("ckpt/best.ckpt", link=link)  # type: ignore[arg-type]
    assert linker.update(0.5, "ckpt/epoch=1.ckpt")
    assert fill_of("ckpt/best.ckpt") == 1 and linker.verify().ok
    if link == "symlink":
        assert os.readlink(real / "best.ckpt") == "epoch=1.ckpt"
    os.unlink(real / "best.ckpt")
    assert BestLinker.from_record("ckpt/best.ckpt").repair().ok
    assert fill_of("ckpt/best.ckpt") == 1
    assert a.exists()


# --- 5. hostile or damaged records --------------------------------------------------------


def _record_hazard(tmp_path: Path, hazard: str) -> Path:
    record = tmp_path / "best.ckpt.bestlink.json"
    if hazard == "fifo":
        os.mkfifo(record)
    elif hazard == "dev-zero":
        os.symlink("/dev/zero", record)
    elif hazard == "nested":
        record.write_text("[" * 100_000)
    elif hazard == "huge-score":
        record.write_text(
            '{"format": "lightning-bestlink/1", "target": "a.ckpt", "mode": "min", "score": ' + "9" * 400 + "}"
        )
    elif hazard == "not-utf8":
        record.write_bytes(b'{"format": "\xff\xfe"}')
    elif hazard == "too-large":
        record.write_text(" " * (2 << 20) + "{}")
    return record


HAZARDS = ["fifo", "dev-zero", "nested", "huge-score", "not-utf8", "too-large"]


@posix_only
@pytest.mark.parametrize("hazard", HAZARDS)
def test_a_hostile_record_is_a_clear_error_naming_the_file(tmp_path: Path, hazard: str) -> None:
    record = _record_hazard(tmp_path, hazard)
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    outcome: list[BaseException] = []

    def attempt() -> None:  # a FIFO used to block forever: run it where a hang is detectable
        for call in (
            lambda: BestLinker(tmp_path / "best.ckpt").update(0.1, a),
            lambda: read_record(a.parent / "best.ckpt"),
        ):
            try:
                call()
            except Exception as err:
                outcome.append(err)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "reading the record hung"
    assert len(outcome) == 2 and all(isinstance(err, RecordError) for err in outcome), outcome
    assert all(str(record) in str(err) for err in outcome)
    assert not os.path.lexists(tmp_path / "best.ckpt")


# --- 7. verify is not fooled by a same-size copy ----------------------------------------


def test_verify_sees_a_copy_alias_overwritten_with_another_checkpoint(tmp_path: Path) -> None:
    a, b = write_ckpt(tmp_path / "a.ckpt", 1), write_ckpt(tmp_path / "b.ckpt", 2)  # same size
    linker = BestLinker(tmp_path / "best.ckpt", link="copy")
    assert linker.update(0.5, a)
    subprocess.run(["cp", str(b), str(tmp_path / "best.ckpt")], check=True)  # in place: same inode, same size
    for checker in (linker, BestLinker.from_record(tmp_path / "best.ckpt")):
        report = checker.verify()
        assert not report.ok and report.status == "foreign", report


# --- 8. inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "match"), [("", "empty"), (".", "holds the alias"), ("..", "holds the alias")])
def test_paths_that_are_not_a_checkpoint(tmp_path: Path, monkeypatch: Any, path: str, match: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    linker = BestLinker("best.ckpt", link="copy")
    with pytest.raises(ValueError, match=match):
        linker.update(0.1, path)
    assert os.listdir(tmp_path / "sub") == []


def test_a_tilde_is_the_home_folder(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_ckpt(tmp_path / "a.ckpt", 1)
    linker = BestLinker("~/best.ckpt")
    assert linker.link_path == str(tmp_path / "best.ckpt")
    assert linker.update(0.1, "~/a.ckpt")
    assert not (Path.cwd() / "~").exists()


@posix_only
def test_a_symlink_loop_target_is_a_clear_error(tmp_path: Path) -> None:
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    with pytest.raises(ValueError, match="loop of symbolic links"):
        BestLinker(tmp_path / "best.ckpt").update(0.1, tmp_path / "loop-a")


@pytest.mark.parametrize(
    ("score", "error", "match"),
    [(10**400, ValueError, "out of range"), (float("inf") * 0, None, None)],
)
def test_scores_out_of_range(tmp_path: Path, score: Any, error: Any, match: Any) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    if error is None:  # NaN: not an error, never the best
        assert not linker.update(score, tmp_path / "nothing")
        return
    with pytest.raises(error, match=match):
        linker.update(score, tmp_path / "nothing")


def test_a_fully_masked_numpy_score_is_refused(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    linker = BestLinker(tmp_path / "best.ckpt")
    for masked in (np.ma.masked_array([1.0], mask=[True]), np.ma.masked):
        with pytest.raises(ValueError, match="masked"):
            linker.update(masked, tmp_path / "nothing")


def test_extra_that_is_circular_or_too_deep(tmp_path: Path) -> None:
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    circular: dict[str, Any] = {}
    circular["self"] = circular
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100_000):
        node["x"] = {}
        node = node["x"]
    linker = BestLinker(tmp_path / "best.ckpt")
    for extra in (circular, deep):
        with pytest.raises(TypeError, match="nested too deeply"):
            linker.update(0.1, a, extra=extra)
    with pytest.raises(ValueError, match="at most"):
        linker.update(0.1, a, extra={"blob": "x" * (1 << 20)})
    assert not os.path.lexists(linker.link_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"best_score": math.nan}, "NaN"), ({"version": 99}, "version"), ({"best_path": 3}, "best_path")],
)
def test_load_state_dict_refuses_a_damaged_state(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    a = write_ckpt(tmp_path / "a.ckpt", 1)
    linker = BestLinker(tmp_path / "best.ckpt")
    assert linker.update(0.5, a)
    state = {**linker.state_dict(), **change}
    fresh = BestLinker(tmp_path / "best.ckpt")
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(state)
    assert fresh.best_path is None and fresh.best_score is None


# --- 10. two writers on one alias never leave the alias and its record apart --------------

WRITER = """
import random, sys
from lightning_bestlink import BestLinker
alias, targets, seed = sys.argv[1], sys.argv[2:-1], int(sys.argv[-1])
rng = random.Random(seed)
linker = BestLinker(alias, link="hardlink")
for i in range(150):
    linker.follow(rng.random(), rng.choice(targets))
"""


@posix_only
@pytest.mark.slow
def test_two_writers_keep_the_alias_and_its_record_together(tmp_path: Path) -> None:
    targets = [str(write_ckpt(tmp_path / f"c{i}.ckpt", i)) for i in range(4)]
    alias = str(tmp_path / "best.ckpt")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, alias, *targets, str(seed)], stderr=subprocess.PIPE)
        for seed in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-2000:]
    record = read_record(alias)
    assert record is not None
    assert os.path.samefile(alias, record["target"])
    assert BestLinker.from_record(alias).verify().ok
    assert leftovers(tmp_path) == []
