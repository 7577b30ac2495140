"""A record that names a checkpoint outside its alias's folder is trusted by no command unless asked.

A record is input, not authority: someone who can write a run folder can plant one that
names any file (``/etc/passwd``, another user's checkpoint). ``verify``, ``path``, ``watch``
and ``repair`` apply one rule, the one ``repair`` applied alone before: the checkpoint, links
followed, must lie inside the alias's folder (or below it), unless ``--allow-outside``. The
Trainer writes such a record after a resume into a new folder: the message says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests._cli import BEST, Writer, cli, log_lines, make_run, needs_symlinks, probe, row, watch

from lightning_bestlink import BestLinker


def plant(run: Path, target: Path) -> None:
    """Rewrite the record of ``run/best.ckpt`` to name ``target``, and point the alias there too."""
    record = json.loads((run / "best.ckpt.bestlink.json").read_text())
    record["target"] = os.path.relpath(target, run)
    (run / "best.ckpt.bestlink.json").write_text(json.dumps(record))
    (run / "best.ckpt").unlink()
    os.symlink(os.path.relpath(target, run), run / "best.ckpt")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "private" / "secret.ckpt"
    path.parent.mkdir()
    path.write_bytes(b"s" * 100)
    return path


@needs_symlinks
def test_verify_and_path_refuse_a_planted_record(tmp_path: Path, secret: Path) -> None:
    run = tmp_path / "run"
    make_run(run, link="symlink")
    plant(run, secret)  # the alias agrees with the record: only where it points is wrong

    verified = cli("verify", run)
    assert verified.returncode == 1
    assert verified.stdout.splitlines() == [
        f"FAILED  {run / 'best.ckpt'}: outside: its record names {secret}, outside the alias's folder",
        "        a record is input, not authority; a Trainer resumed into a new folder writes such records. "
        f"If you trust it: lightning-bestlink verify --allow-outside {run}",
    ]
    document = json.loads(cli("verify", "--json", run).stdout)
    (alias,) = document["folders"][0]["aliases"]
    assert (document["ok"], alias["status"], alias["ok"], alias["target"]) == (False, "outside", False, str(secret))
    assert alias["detail"] == (
        f"the record names {secret}, outside the alias's folder: trusted only with --allow-outside"
    )
    assert "outside: its record names" in row(cli("show", run).stdout, "best.ckpt")

    path = cli("path", run)
    assert (path.returncode, path.stdout) == (1, "")
    assert "outside the alias's folder" in path.stderr and "lightning-bestlink path --allow-outside" in path.stderr

    assert cli("verify", "--allow-outside", run).returncode == 0  # trusted: checked like any other
    assert cli("path", "--allow-outside", run).stdout == f"{secret}\n"


def test_repair_refuses_a_record_that_names_a_file_outside_the_folder(tmp_path: Path, secret: Path) -> None:
    run = tmp_path / "run"
    make_run(run, link="copy")
    record = json.loads((run / "best.ckpt.bestlink.json").read_text())
    record["target"] = os.path.relpath(secret, run)  # planted by someone who can write the run folder
    (run / "best.ckpt.bestlink.json").write_text(json.dumps(record))
    (run / "best.ckpt").unlink()
    proc = cli("repair", run)
    assert proc.returncode == 1, proc
    assert f"REFUSED   {run / 'best.ckpt'}: outside: its record names {secret}" in proc.stdout
    assert f"lightning-bestlink repair --allow-outside {run}" in proc.stdout
    assert not (run / "best.ckpt").exists()
    proc = cli("repair", "--allow-outside", run)
    assert proc.returncode == 0, proc
    assert (run / "best.ckpt").read_bytes() == secret.read_bytes()


@needs_symlinks
def test_a_link_inside_the_folder_that_leads_out_is_shown_where_it_leads(tmp_path: Path, secret: Path) -> None:
    run = tmp_path / "run"
    make_run(run, link="copy")
    os.symlink(secret, run / "inner.ckpt")  # inside by its name, outside where it leads
    record = json.loads((run / "best.ckpt.bestlink.json").read_text())
    record["target"] = "inner.ckpt"
    (run / "best.ckpt.bestlink.json").write_text(json.dumps(record))
    (run / "best.ckpt").unlink()

    expected = f"outside: its record names inner.ckpt, which leads to {secret}, outside the alias's folder"
    repaired = cli("repair", run)
    assert repaired.returncode == 1
    assert f"REFUSED   {run / 'best.ckpt'}: {expected}" in repaired.stdout
    assert f"FAILED  {run / 'best.ckpt'}: {expected}" in cli("verify", run).stdout
    assert not (run / "best.ckpt").exists()


def test_a_trainer_resumed_into_a_new_folder_says_so_and_how_to_accept_it(tmp_path: Path) -> None:
    old, new = tmp_path / "version_0" / "checkpoints", tmp_path / "version_1" / "checkpoints"
    first = make_run(old)
    # what the Trainer adapter does on a resume into a new folder: the best restored from the
    # checkpoint the user passed as ckpt_path, trusted wherever it is, and the alias rebuilt
    second = BestLinker(new / "best.ckpt", mode="min")
    new.mkdir(parents=True)
    second.load_state_dict(first.state_dict(), allow_outside=True)
    assert second.repair().ok

    verified = cli("verify", "-r", "version_1", cwd=tmp_path)
    assert verified.returncode == 1
    alias = os.path.join("version_1", "checkpoints", "best.ckpt")
    target = old / BEST
    assert verified.stdout.splitlines() == [
        f"FAILED  {alias}: outside: its record names {target}, outside the alias's folder",
        "        a record is input, not authority; a Trainer resumed into a new folder writes such records. "
        f"If you trust it: lightning-bestlink verify --allow-outside {os.path.join('version_1', 'checkpoints')}",
    ]
    trusted = cli("verify", "-r", "--allow-outside", "version_1", cwd=tmp_path)
    assert trusted.returncode == 0 and trusted.stdout.startswith(f"ok      {alias} -> {target} (")


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals and symlinks")
def test_watch_does_not_report_nor_run_a_command_for_a_planted_record(tmp_path: Path, secret: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    log = tmp_path / "exec.log"
    writer = Writer(run / "best.ckpt")
    assert writer.update(0.9, "epoch=0.ckpt")
    w = watch(run, "--count", "1", "--interval", "0.02", "--exec", probe(log, "{target}"))
    try:
        w.err.until("watch: following")
        plant(run, secret)
        line = w.err.until("outside")
        assert f"its record names {secret}, outside the alias's folder" in line
        assert "lightning-bestlink watch --allow-outside" in line
        assert writer.update(0.5, "epoch=1.ckpt")  # a real new best: reported, and the command runs
        assert "epoch=1.ckpt" in (w.out.next() or "")
        assert w.wait() == 0
    finally:
        writer.stop()
        w.stop()
    (ran,) = log_lines(log)
    assert ran["name"] == "epoch=1.ckpt"


@needs_symlinks
def test_a_record_naming_a_checkpoint_elsewhere_under_the_folder_asked_about_is_trusted(
    tmp_path: Path, secret: Path
) -> None:
    # what a Trainer resumed into a new logger folder writes: version_1's alias names version_0's best
    logs = tmp_path / "lightning_logs"
    old, new = logs / "version_0" / "checkpoints", logs / "version_1" / "checkpoints"
    make_run(old, link="symlink")
    make_run(new, link="symlink")
    plant(new, old / "epoch=2.ckpt")

    assert cli("verify", "-r", logs).returncode == 0  # the user asked about the whole tree
    strict = cli("verify", new)  # asked about version_1 alone: its best lies outside it
    assert strict.returncode == 1 and "outside: its record names" in strict.stdout
    (new / "best.ckpt").unlink()
    repaired = cli("repair", "-r", logs)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert os.readlink(new / "best.ckpt") == os.path.relpath(old / "epoch=2.ckpt", new)

    plant(new, secret)  # outside the tree asked about: refused all the same
    refused = cli("verify", "-r", logs)
    assert refused.returncode == 1 and f"outside: its record names {secret}" in refused.stdout
