"""The ``lightning-bestlink`` command, driven as a user drives it: in a subprocess.

Checkpoint folders are built from plain files with :class:`BestLinker`, so every test
but the demo runs without torch or Lightning.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from tests._cli import BEST, cli, make_run, needs_symlinks, row

from lightning_bestlink import BestLinker, LatestLinker

# --- healthy folders --------------------------------------------------------------------


@pytest.mark.parametrize("link", ["symlink", "hardlink", "copy"])
def test_healthy_folder(tmp_path: Path, link: str) -> None:
    make_run(tmp_path, link=link)

    shown = cli("show", tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    out = shown.stdout
    assert "(alias healthy)" in out
    best = row(out, BEST)
    assert "best" in best.split()
    assert "val_loss=0.3 (min, epoch 2, step 12)" in best
    assert "last" in row(out, "last.ckpt").split()
    assert "best" not in row(out, "epoch=1.ckpt").split()
    alias = row(out, "best.ckpt")
    assert alias.split()[:4] == ["best.ckpt", link, BEST, "ok"]
    assert "bestlink.json" not in out.split("ALIAS")[0]  # records are not listed as checkpoints

    verified = cli("verify", tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"ok      {tmp_path / 'best.ckpt'} -> {BEST} ({link}, val_loss=0.3, min, epoch 2")
    assert cli("verify", "--quiet", tmp_path).stdout == ""

    repaired = cli("repair", tmp_path)
    assert repaired.returncode == 0
    assert "nothing to do" in repaired.stdout


def test_paths_are_shown_as_typed(tmp_path: Path) -> None:
    make_run(tmp_path / "ckpt")
    result = cli("verify", "ckpt", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"ok      {os.path.join('ckpt', 'best.ckpt')} -> {BEST}")
    assert cli("show", "ckpt", cwd=tmp_path).stdout.startswith("ckpt  (alias healthy)")


@needs_symlinks
def test_show_marks_a_last_link_and_two_aliases(tmp_path: Path) -> None:
    make_run(tmp_path, last=False)
    os.symlink("epoch=3.ckpt", tmp_path / "last.ckpt")  # save_last="link"
    acc = BestLinker(tmp_path / "best-val_acc.ckpt", mode="max")
    acc.update(0.8, tmp_path / "epoch=3.ckpt", extra={"monitor": "val_acc"})

    out = cli("show", tmp_path).stdout
    assert "(2 aliases healthy)" in out
    assert "best-val_acc,last" in row(out, "epoch=3.ckpt").split()
    assert "val_acc=0.8 (max)" in row(out, "epoch=3.ckpt")
    assert "best" in row(out, BEST).split()
    assert "last.ckpt ->" not in out  # a last link marks its target, it is not a row
    assert cli("verify", tmp_path).stdout.count("ok ") == 2


@needs_symlinks
def test_a_folder_reached_through_a_link(tmp_path: Path) -> None:
    make_run(tmp_path / "data" / "a" / "ckpt", last=False)
    os.symlink("epoch=3.ckpt", tmp_path / "data" / "a" / "ckpt" / "last.ckpt")
    os.symlink(tmp_path / "data" / "a" / "ckpt", tmp_path / "ckpt")

    out = cli("show", "ckpt", cwd=tmp_path).stdout
    assert row(out, "epoch=3.ckpt").split()[-1] == "last"  # the link marks its target, it is no row
    assert "last.ckpt" not in out
    assert "best" in row(out, BEST).split()


@needs_symlinks
def test_directory_checkpoints(tmp_path: Path) -> None:
    for epoch in range(2):
        shard = tmp_path / f"epoch={epoch}"  # a sharded checkpoint: a directory, no .ckpt suffix
        shard.mkdir()
        (shard / ".metadata").write_bytes(b"m")
        (shard / "__0_0.distcp").write_bytes(b"x" * 2048)
    BestLinker(tmp_path / "best.ckpt").update(0.1, tmp_path / "epoch=1")

    out = cli("show", "-r", tmp_path).stdout
    assert out.count("(alias healthy)") == 1  # the checkpoint directories are not folders of their own
    assert row(out, "epoch=1/").split()[1:4] == ["2.0", "KiB", "best"]
    assert row(out, "epoch=0/")
    assert cli("verify", tmp_path).returncode == 0


# --- damaged folders ----------------------------------------------------------------------


def _delete_alias(d: Path) -> None:
    (d / "best.ckpt").unlink()


def _dangling(d: Path) -> None:
    (d / "best.ckpt").unlink()
    os.symlink("epoch=9.ckpt", d / "best.ckpt")


def _wrong_file(d: Path) -> None:
    (d / "best.ckpt").unlink()
    os.symlink("epoch=0.ckpt", d / "best.ckpt")


DAMAGE = {
    "alias deleted": (_delete_alias, "missing: best.ckpt does not exist (its record names epoch=2.ckpt)"),
    "dangling": (_dangling, "dangling: best.ckpt points at epoch=9.ckpt, which does not exist"),
    "wrong file": (_wrong_file, "mismatch: best.ckpt points at epoch=0.ckpt, but its record names epoch=2.ckpt"),
}


@needs_symlinks
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_verify_fails_and_repair_fixes(tmp_path: Path, damage: str) -> None:
    make_run(tmp_path, link="symlink")
    record = json.loads((tmp_path / "best.ckpt.bestlink.json").read_text())
    damage_fn, message = DAMAGE[damage]
    damage_fn(tmp_path)

    verified = cli("verify", tmp_path)
    assert verified.returncode == 1
    assert f"FAILED  {tmp_path / 'best.ckpt'}: {message}" in verified.stdout
    assert f"run: lightning-bestlink repair {tmp_path}" in verified.stdout
    assert verified.stderr == "verify: 1 of 1 alias needs attention\n"
    assert message in row(cli("show", tmp_path).stdout, "best.ckpt")

    repaired = cli("repair", tmp_path)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"repaired  {tmp_path / 'best.ckpt'} -> {BEST} (symlink)" in repaired.stdout
    assert f"was {message}" in repaired.stdout
    assert os.readlink(tmp_path / "best.ckpt") == BEST
    after = json.loads((tmp_path / "best.ckpt.bestlink.json").read_text())
    assert (after["score"], after["extra"], after["link"]) == (record["score"], record["extra"], "symlink")
    assert cli("verify", tmp_path).returncode == 0


@pytest.mark.parametrize("link", ["hardlink", "copy"])
def test_repair_rebuilds_the_recorded_kind(tmp_path: Path, link: str) -> None:
    make_run(tmp_path, link=link)
    (tmp_path / "best.ckpt").unlink()
    assert cli("repair", tmp_path).returncode == 0
    alias = tmp_path / "best.ckpt"
    assert not alias.is_symlink()
    assert alias.read_bytes() == (tmp_path / BEST).read_bytes()
    assert os.path.samefile(alias, tmp_path / BEST) == (link == "hardlink")
    assert "ok" in row(cli("show", tmp_path).stdout, "best.ckpt").split()


def test_repair_of_a_healthy_alias_removes_what_a_killed_update_left_next_to_it(tmp_path: Path) -> None:
    make_run(tmp_path, link="copy")
    staged = tmp_path / ".best.ckpt.bestlink-tmp-4242-0000002a"  # a copy a killed update was making
    staged.write_bytes((tmp_path / BEST).read_bytes())
    repaired = cli("repair", tmp_path)
    assert (repaired.returncode, repaired.stdout) == (0, f"ok        {tmp_path / 'best.ckpt'} (nothing to do)\n")
    assert not staged.exists() and BestLinker.from_record(tmp_path / "best.ckpt").verify().ok


def test_repair_of_a_healthy_alias_does_not_wait_for_training_holding_its_lock(tmp_path: Path) -> None:
    make_run(tmp_path)
    lock = os.open(tmp_path / ".best.ckpt.bestlink.lock", os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a writer in the middle of a long update
        repaired = cli("repair", tmp_path, timeout=30)  # the default lock timeout is 60 s
    finally:
        os.close(lock)
    assert (repaired.returncode, repaired.stdout) == (0, f"ok        {tmp_path / 'best.ckpt'} (nothing to do)\n")


def _checkpoint_replaced_same_size(d: Path) -> None:
    size = (d / BEST).stat().st_size
    (d / BEST).unlink()
    (d / BEST).write_bytes(b"n" * size)  # a new file of the same size: the hard link still holds the old one


def _checkpoint_deleted(d: Path) -> None:
    (d / BEST).unlink()


def _checkpoint_rewritten(d: Path) -> None:
    (d / BEST).write_bytes(b"n" * 7)  # in place, after it was copied


def _update_stopped(d: Path) -> None:
    # the record of an update whose writer was killed before it published the copy: the copy at the
    # alias path is the one the record replaced
    path = d / "best.ckpt.bestlink.json"
    record = json.loads(path.read_text())
    record["previous_alias_id"], record["alias_id"] = record["alias_id"], [0, 0, 0, 0]
    path.write_text(json.dumps(record))


def _copy_truncated(d: Path) -> None:
    with open(d / "best.ckpt", "r+b") as fh:
        fh.truncate(5)


#: what verify says of a hard link or copy gone wrong, each true of it (the sizes may be equal, the
#: checkpoint gone): link kind, damage, the sentence
COPIES_DAMAGED = {
    "hard link, checkpoint replaced by a file of the same size": (
        "hardlink",
        _checkpoint_replaced_same_size,
        f"mismatch: best.ckpt is not a hard link to {BEST}, as its record says it is",
    ),
    "copy, checkpoint deleted": (
        "copy",
        _checkpoint_deleted,
        f"mismatch: best.ckpt is a copy of {BEST}, which no longer exists",
    ),
    "copy, checkpoint rewritten": (
        "copy",
        _checkpoint_rewritten,
        f"mismatch: {BEST} changed after it was copied to best.ckpt: the copy holds the old bytes",
    ),
    "copy, update stopped before publishing": (
        "copy",
        _update_stopped,
        f"mismatch: best.ckpt still holds the alias its record replaced: an update to {BEST} stopped after "
        "writing the record and before publishing the alias; repair completes it",
    ),
    "copy changed in place": (
        "copy",
        _copy_truncated,
        "foreign: best.ckpt was not written by lightning-bestlink, or was changed since (it does not match its "
        "record); it is left as it is",
    ),
}


@pytest.mark.parametrize("case", list(COPIES_DAMAGED))
def test_verify_words_a_damaged_hard_link_or_copy_as_it_is(tmp_path: Path, case: str) -> None:
    link, damage, sentence = COPIES_DAMAGED[case]
    make_run(tmp_path, link=link)
    damage(tmp_path)

    verified = cli("verify", tmp_path)
    assert verified.returncode == 1
    assert verified.stdout.splitlines()[0] == f"FAILED  {tmp_path / 'best.ckpt'}: {sentence}"
    assert sentence in row(cli("show", tmp_path).stdout, "best.ckpt")
    (alias,) = json.loads(cli("verify", "--json", tmp_path).stdout)["folders"][0]["aliases"]
    assert alias["status"] == sentence.split(":")[0]  # the text and --json tell the same story


def test_foreign_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    make_run(tmp_path)
    (tmp_path / "best.ckpt").unlink()
    (tmp_path / "best.ckpt").write_bytes(b"my own weights")  # not written by lightning-bestlink

    verified = cli("verify", tmp_path)
    assert verified.returncode == 1
    assert "foreign: best.ckpt was not written by lightning-bestlink" in verified.stdout
    assert "move or delete best.ckpt, then run: lightning-bestlink repair" in verified.stdout

    repaired = cli("repair", tmp_path)
    assert repaired.returncode == 1
    assert f"REFUSED   {tmp_path / 'best.ckpt'}: foreign" in repaired.stdout
    assert repaired.stderr == "repair: 1 of 1 alias not repaired\n"
    assert (tmp_path / "best.ckpt").read_bytes() == b"my own weights"


def test_metadata_deleted(tmp_path: Path) -> None:
    make_run(tmp_path)
    (tmp_path / "best.ckpt.bestlink.json").unlink()
    note = "best.ckpt: no .bestlink.json record"

    verified = cli("verify", tmp_path)
    assert verified.returncode == 0  # it may be the user's own file: nothing to check it against
    assert verified.stdout == ""  # notes are diagnostics: stderr
    assert note in verified.stderr
    assert "no lightning-bestlink alias in" in verified.stderr
    required = cli("verify", "--require", tmp_path)
    assert required.returncode == 1
    assert f"error: no lightning-bestlink alias in {tmp_path}\n" in required.stderr

    repaired = cli("repair", tmp_path)
    assert repaired.returncode == 0
    assert "nothing to repair from" in repaired.stderr
    assert os.path.lexists(tmp_path / "best.ckpt")  # untouched

    out = cli("show", tmp_path).stdout
    assert "(no best alias)" in out
    assert "note: best.ckpt has no .bestlink.json record" in out


@needs_symlinks
def test_best_checkpoint_deleted_cannot_be_repaired(tmp_path: Path) -> None:
    make_run(tmp_path, link="symlink")
    (tmp_path / BEST).unlink()  # the alias dangles, and the record names a file that is gone

    verified = cli("verify", tmp_path)
    assert verified.returncode == 1
    assert "dangling: best.ckpt points at epoch=2.ckpt, which does not exist" in verified.stdout
    assert "the best checkpoint itself is gone; repair cannot bring it back" in verified.stdout

    repaired = cli("repair", tmp_path)
    assert repaired.returncode == 1
    assert "FAILED" in repaired.stdout
    assert os.readlink(tmp_path / "best.ckpt") == BEST  # nothing changed


def test_unreadable_record(tmp_path: Path) -> None:
    make_run(tmp_path)
    (tmp_path / "best.ckpt.bestlink.json").write_text("{not json")
    for command in ("verify", "repair"):
        result = cli(command, tmp_path)
        assert result.returncode == 1
        assert "unreadable record" in result.stdout
        assert "is not a lightning-bestlink record" in result.stdout
    shown = cli("show", tmp_path)
    assert shown.returncode == 0  # show reports, it does not judge
    health = row(shown.stdout, "best.ckpt")
    assert f"unreadable record: {str(tmp_path / 'best.ckpt.bestlink.json')!r}" in health
    assert "is not a lightning-bestlink record" in health
    assert "(1 of 1 alias needs attention)" in shown.stdout


# --- folders without aliases, recursion, usage ------------------------------------------------


def test_folder_without_alias(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"w")
    verified = cli("verify", tmp_path)
    assert (verified.returncode, verified.stdout, verified.stderr) == (
        0,
        "",
        f"no lightning-bestlink alias in {tmp_path}: nothing to check\n",
    )
    assert cli("verify", "--require", tmp_path).returncode == 1
    assert cli("repair", "--require", tmp_path).returncode == 1
    out = cli("show", tmp_path).stdout
    assert "(no best alias)" in out
    assert row(out, "model.ckpt")


def test_recursive(tmp_path: Path) -> None:
    make_run(tmp_path / "lightning_logs" / "version_0" / "checkpoints")
    make_run(tmp_path / "lightning_logs" / "version_1" / "checkpoints")
    (tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "best.ckpt").unlink()

    flat = cli("verify", tmp_path / "lightning_logs")
    assert flat.returncode == 0
    assert "(use -r to look in sub-folders)" in flat.stderr

    deep = cli("verify", "-r", "lightning_logs", cwd=tmp_path)
    assert deep.returncode == 1
    v0, v1 = (os.path.join("lightning_logs", f"version_{i}", "checkpoints") for i in range(2))
    assert f"ok      {os.path.join(v0, 'best.ckpt')}" in deep.stdout
    assert f"FAILED  {os.path.join(v1, 'best.ckpt')}: missing" in deep.stdout
    assert f"run: lightning-bestlink repair {v1}" in deep.stdout
    assert deep.stderr == "verify: 1 of 2 aliases needs attention\n"

    assert cli("repair", "-r", "lightning_logs", cwd=tmp_path).returncode == 0
    assert cli("verify", "-r", "lightning_logs", cwd=tmp_path).returncode == 0
    shown = cli("show", "-r", "lightning_logs", cwd=tmp_path).stdout
    assert shown.count("(alias healthy)") == 2


def test_not_a_directory(tmp_path: Path) -> None:
    for command in ("show", "verify", "repair"):
        result = cli(command, tmp_path / "nope")
        assert result.returncode == 2
        assert "is not a directory" in result.stderr


def test_help_is_useful_on_its_own() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for command in ("show", "verify", "repair", "demo"):
        assert command in top.stdout
        result = cli(command, "--help")
        assert result.returncode == 0
        assert result.stdout.startswith(f"usage: lightning-bestlink {command}")
        assert "examples:" in result.stdout
    assert "exit status:" in cli("verify", "--help").stdout
    assert "--require" in cli("verify", "--help").stdout
    no_command = cli()
    assert no_command.returncode == 2
    assert "usage: lightning-bestlink" in no_command.stderr


def test_version_and_console_script() -> None:
    from lightning_bestlink import __version__

    assert cli("--version").stdout.strip() == f"lightning-bestlink {__version__}"
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("lightning-bestlink") == "lightning_bestlink.cli:main"


@pytest.mark.torch  # also where torch and Lightning are installed: only there can an import of them show
@pytest.mark.parametrize("command", ["show", "verify", "repair"])
def test_no_torch_import(tmp_path: Path, command: str) -> None:
    make_run(tmp_path)
    (tmp_path / "best.ckpt").unlink()  # so repair has work to do
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lightning_bestlink", command, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "lightning_bestlink.cli" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "lightning_fabric")}
    assert not heavy


def test_show_says_latest_save_without_a_mode(tmp_path: Path) -> None:
    make_run(tmp_path, last=False)
    LatestLinker(tmp_path / "last.ckpt").update(3, tmp_path / "epoch=3.ckpt")  # ranked by step: no min or max
    out = cli("show", tmp_path).stdout
    assert row(out, "epoch=3.ckpt").endswith("  last  latest save (step 3)")
    verified = cli("verify", tmp_path).stdout
    assert f"ok      {tmp_path / 'last.ckpt'} -> epoch=3.ckpt (symlink, latest save, step 3)\n" in verified


def test_demo_refuses_a_used_folder(tmp_path: Path) -> None:
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "epoch=0.ckpt").write_bytes(b"w")
    result = cli("demo", "--dir", tmp_path)
    assert result.returncode == 2
    assert "is not empty; choose another --dir or remove it" in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["epoch=0.ckpt", "trainer"]


# --- the demo -------------------------------------------------------------------------------


def can_symlink(folder: Path) -> bool:
    """Whether this process can make a symbolic link (Windows without the privilege cannot)."""
    try:
        os.symlink("target", folder / "probe-link")
    except OSError:
        return False
    os.unlink(folder / "probe-link")
    return True


@pytest.mark.lightning
@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    from tests._compat import _LIGHTNING_GE_2_1, _LIGHTNING_GE_2_2

    result = cli("demo")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no Lightning tips, no warnings
    out = result.stdout
    assert out.count("new best: best.ckpt -> ") >= 2
    trainer, fabric = (out.split(f"{os.sep}{part}  (")[1] for part in ("trainer", "fabric"))
    kind = "symlink" if can_symlink(tmp_path) else "hardlink"  # what link="auto" makes here
    for section in (trainer, fabric):
        assert "best  val_loss=" in section
        assert row(section, "best.ckpt").split()[:2] == ["best.ckpt", kind]
    assert trainer.startswith("alias healthy)")
    # Lightning's own last.ckpt: a file of its own, except on 2.1, where save_last=True makes it a symlink
    # to the latest checkpoint (2.2 made that opt-in), which show marks as the last
    links_last = _LIGHTNING_GE_2_1 and not _LIGHTNING_GE_2_2
    assert "last" in row(trainer, "epoch=7-val_loss=2.2434.ckpt" if links_last else "last.ckpt").split()
    # Fabric: each checkpoint saved once, last.ckpt an alias of the latest (LatestLinker), not a second save
    assert fabric.startswith("2 aliases healthy)")
    latest = row(fabric, "epoch=7-val_loss=2.2434.ckpt")
    assert "last" in latest.split() and "latest save (epoch 7, step 7)" in latest
    assert row(fabric, "last.ckpt").split()[1:4:2] == ["symlink", "ok"]
    first = out.splitlines()[1]
    assert first.startswith("output: ") and "temporary" in first
    temp = first.split()[1]
    assert f"Removed {temp}" in out
    assert not os.path.exists(temp)
