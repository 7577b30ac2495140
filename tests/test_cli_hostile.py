"""Hostile or damaged folders: the commands never hang or abort, name what is wrong, and go on.

Every damaged record sits in a folder surveyed before a second folder with a missing
alias: ``verify -r`` must still report that one, and ``repair -r`` still repair it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests._cli import BEST, cli, make_run, needs_symlinks, row

from lightning_bestlink import BestLinker
from lightning_bestlink._cli.render import problem
from lightning_bestlink._cli.survey import Alias
from lightning_bestlink._health import AliasReport

RECORD = "best.ckpt.bestlink.json"


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # opening it for reading would block until a writer comes


def _dev_zero(path: Path) -> None:
    os.symlink("/dev/zero", path)  # reading it never ends


def _nested(path: Path) -> None:
    path.write_text("[" * 100_000)


def _huge_score(path: Path) -> None:
    path.write_text(
        '{"format": "lightning-bestlink/1", "alias": "best.ckpt", "target": "epoch=2.ckpt", "link": "symlink", '
        f'"mode": "min", "score": {"9" * 400}, "extra": {{}}}}'
    )


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'{"format": "lightning-bestlink/1", "target": "\xff\xfe\xfa.ckpt"}')


def _repeated_keys(path: Path) -> None:
    # JSON readers keep the last of a repeated key (or the first): a record that says two things says neither
    path.write_text(
        '{"format": "lightning-bestlink/1", "alias": "best.ckpt", "target": "epoch=2.ckpt", "link": "symlink", '
        '"mode": "min", "score": 0.3, "extra": {}, "target": "epoch=0.ckpt", "score": 0.01}'
    )


def _directory(path: Path) -> None:
    path.mkdir()


def _dangling_link(path: Path) -> None:
    os.symlink("gone.json", path)


HOSTILE: dict[str, Callable[[Path], None]] = {
    "fifo": _fifo,
    "symlink to /dev/zero": _dev_zero,
    "100k nested [": _nested,
    "400-digit score": _huge_score,
    "not UTF-8": _not_utf8,
    "repeated keys": _repeated_keys,
    "a directory": _directory,
    "dangling symlink": _dangling_link,
}


def two_runs(tmp_path: Path, damage: Callable[[Path], None]) -> tuple[Path, Path]:
    """``a/`` with a hostile record, ``b/`` (surveyed after it) with its alias deleted."""
    a, b = tmp_path / "a", tmp_path / "b"
    make_run(a)
    make_run(b)
    (a / RECORD).unlink()
    damage(a / RECORD)
    (b / "best.ckpt").unlink()
    return a, b


@needs_symlinks
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_record_is_named_and_the_survey_goes_on(tmp_path: Path, case: str) -> None:
    a, b = two_runs(tmp_path, HOSTILE[case])

    shown = cli("show", "-r", tmp_path, timeout=60)
    assert shown.returncode == 0, shown.stderr  # show reports; the folder itself was read
    assert "Traceback" not in shown.stderr
    health = row(shown.stdout, "best.ckpt")
    assert "unreadable record" in health and RECORD in health
    assert "(1 of 1 alias needs attention)" in shown.stdout.split(str(b))[1]  # b was surveyed too

    verified = cli("verify", "-r", tmp_path, timeout=60)
    assert verified.returncode == 1
    assert "Traceback" not in verified.stderr
    failed = [line for line in verified.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2, verified.stdout
    assert failed[0].startswith(f"FAILED  {a / 'best.ckpt'}: unreadable record: ") and RECORD in failed[0]
    assert failed[1].startswith(f"FAILED  {b / 'best.ckpt'}: missing")
    assert verified.stderr == "verify: 2 of 2 aliases need attention\n"

    repaired = cli("repair", "-r", tmp_path, timeout=60)
    assert repaired.returncode == 1
    assert f"FAILED    {a / 'best.ckpt'}: unreadable record" in repaired.stdout
    assert f"repaired  {b / 'best.ckpt'} -> {BEST}" in repaired.stdout
    assert os.path.samefile(b / "best.ckpt", b / BEST)
    assert repaired.stderr == "repair: 1 of 2 aliases not repaired\n"

    document = json.loads(cli("verify", "--json", "-r", tmp_path, timeout=60).stdout)
    (alias,) = document["folders"][0]["aliases"]
    assert (alias["status"], alias["ok"], alias["target"], alias["score"]) == ("unreadable-record", False, None, None)
    assert RECORD in alias["detail"]

    path = cli("path", a, timeout=60)
    assert (path.returncode, path.stdout) == (1, "")
    assert RECORD in path.stderr and "Traceback" not in path.stderr


@needs_symlinks
def test_a_record_with_repeated_keys_is_named_and_its_alias_left_alone(tmp_path: Path) -> None:
    make_run(tmp_path, link="symlink")
    _repeated_keys(tmp_path / RECORD)  # its second target, epoch=0.ckpt, exists: repair could move the alias there

    verified = cli("verify", tmp_path)
    assert verified.returncode == 1
    assert verified.stdout.startswith(
        f"FAILED  {tmp_path / 'best.ckpt'}: unreadable record: {str(tmp_path / RECORD)!r} is not a readable "
        "lightning-bestlink record: it repeats the key(s) 'score', 'target' in one object"
    )
    repaired = cli("repair", tmp_path)
    assert repaired.returncode == 1 and "repeats the key(s) 'score', 'target'" in repaired.stdout
    assert os.readlink(tmp_path / "best.ckpt") == BEST


def test_a_folder_of_hostile_names_and_fields_cannot_forge_rows(tmp_path: Path) -> None:
    forged = "x\n  epoch=9.ckpt  1 B  best  val_loss=0.0 (min)\n.ckpt"
    (tmp_path / forged).write_bytes(b"w")
    (tmp_path / "epoch=\x1b[2J.ckpt").write_bytes(b"w")  # an escape sequence that would clear the screen
    (tmp_path / "right\u202eto-left.ckpt").write_bytes(b"w")
    target = tmp_path / "a\tb.ckpt"
    target.write_bytes(b"w" * 10)
    BestLinker(tmp_path / "be\nst.ckpt").update(0.5, target, extra={"monitor": "val\nloss"})

    shown = cli("show", tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    # title, header, 4 checkpoints, blank, header, 1 alias: no line more
    assert len(lines) == 9, shown.stdout
    assert not any(line.lstrip().startswith("epoch=9.ckpt") for line in lines)
    assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout
    assert row(shown.stdout, "x\\n  epoch=9.ckpt")
    assert row(shown.stdout, "epoch=\\x1b[2J.ckpt")
    assert row(shown.stdout, "right\\u202eto-left.ckpt")
    assert "val\\nloss=0.5" in row(shown.stdout, "a\\tb.ckpt")
    assert row(shown.stdout, "be\\nst.ckpt").split()[1:4] == ["symlink", "a\\tb.ckpt", "ok"]

    verified = cli("verify", tmp_path)
    assert verified.returncode == 0
    assert verified.stdout.count("\n") == 1 and "be\\nst.ckpt -> a\\tb.ckpt" in verified.stdout

    document = json.loads(cli("show", "--json", tmp_path).stdout)  # JSON keeps the names exact
    names = {c["name"] for c in document["folders"][0]["checkpoints"]}
    assert forged in names and "a\tb.ckpt" in names
    (alias,) = document["folders"][0]["aliases"]
    assert (alias["name"], alias["extra"]["monitor"]) == ("be\nst.ckpt", "val\nloss")


@pytest.mark.skipif(sys.platform != "linux", reason="file names that are not UTF-8 are a POSIX matter")
def test_names_that_are_not_utf8(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.ckpt"
    with open(raw, "wb") as fh:
        fh.write(b"w" * 7)
    BestLinker(tmp_path / "best.ckpt").update(0.5, os.fsdecode(raw))

    shown = cli("show", tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "caf\\xe9.ckpt" in row(shown.stdout, "caf\\xe9.ckpt") and "best" in row(shown.stdout, "caf\\xe9.ckpt")
    assert cli("verify", tmp_path).returncode == 0

    document = json.loads(cli("show", "--json", tmp_path).stdout)
    (alias,) = document["folders"][0]["aliases"]
    assert os.fsencode(alias["target"]) == raw  # surrogate escapes: the exact bytes come back

    path = subprocess.run([sys.executable, "-m", "lightning_bestlink", "path", str(tmp_path)], capture_output=True)
    assert (path.returncode, path.stdout) == (0, raw + b"\n")


# --- wording ------------------------------------------------------------------------------------


def test_a_mismatch_that_names_nothing_else_is_worded_by_the_check(tmp_path: Path) -> None:
    # a copy or hard link names no other checkpoint: the sentence is the check's own, its full paths
    # shortened, never "points at epoch=2.ckpt, but its record names epoch=2.ckpt" nor a guess of why
    alias, target = str(tmp_path / "best.ckpt"), str(tmp_path / BEST)
    detail = f"{alias!r} is a copy of {target!r}, which no longer exists"
    for actual in (None, target):
        report = AliasReport("mismatch", alias, target, actual, detail)
        text = problem(Alias("best.ckpt", alias, report=report), str(tmp_path))
        assert text == f"mismatch: best.ckpt is a copy of {BEST}, which no longer exists"
    other = AliasReport("mismatch", alias, target, str(tmp_path / "epoch=0.ckpt"), "")
    text = problem(Alias("best.ckpt", alias, report=other), str(tmp_path))
    assert text == f"mismatch: best.ckpt points at epoch=0.ckpt, but its record names {BEST}"


def test_a_copy_changed_in_place_is_reported_without_contradiction(tmp_path: Path) -> None:
    make_run(tmp_path, link="copy")
    with open(tmp_path / "best.ckpt", "r+b") as fh:  # same file, other size
        fh.truncate(5)
    verified = cli("verify", tmp_path)
    assert verified.returncode == 1
    line = verified.stdout.splitlines()[0]
    assert line.startswith(f"FAILED  {tmp_path / 'best.ckpt'}: ")
    assert f"points at {BEST}, but its record names {BEST}" not in line


@needs_symlinks
def test_show_lists_a_dangling_last_link(tmp_path: Path) -> None:
    make_run(tmp_path, last=False)
    os.symlink("epoch=9.ckpt", tmp_path / "last.ckpt")  # save_last="link", its target pruned
    os.symlink("../elsewhere/last.ckpt", tmp_path / "last-v1.ckpt")  # out of the folder: a row too
    (tmp_path.parent / "elsewhere").mkdir(exist_ok=True)
    (tmp_path.parent / "elsewhere" / "last.ckpt").write_bytes(b"w")

    out = cli("show", tmp_path).stdout
    assert row(out, "last.ckpt").split() == ["last.ckpt", "->", "epoch=9.ckpt", "(dangling)", "last"]
    assert row(out, "last-v1.ckpt").split() == ["last-v1.ckpt", "->", "../elsewhere/last.ckpt", "last"]
    document = json.loads(cli("show", "--json", tmp_path).stdout)
    last = next(c for c in document["folders"][0]["checkpoints"] if c["name"] == "last.ckpt")
    assert (last["link"], last["dangling"], last["marks"]) == ("epoch=9.ckpt", True, ["last"])


def test_the_escaping_examples_run() -> None:
    import doctest

    from lightning_bestlink._cli import render as _render

    result = doctest.testmod(_render)
    assert (result.failed, result.attempted > 0) == (0, True)
