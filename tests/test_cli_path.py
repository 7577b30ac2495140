"""``lightning-bestlink path DIR|ALIAS``: the best checkpoint's path and nothing else, for scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests._cli import BEST, cli, make_run, needs_symlinks

from lightning_bestlink import BestLinker


@pytest.mark.parametrize("link", ["symlink", "hardlink", "copy"])
def test_prints_the_target_of_a_healthy_alias(tmp_path: Path, link: str) -> None:
    make_run(tmp_path / "ckpt", link=link)
    expected = f"{tmp_path / 'ckpt' / BEST}\n"
    for arg in ("ckpt", "ckpt/best.ckpt", "ckpt/best.ckpt.bestlink.json", str(tmp_path / "ckpt")):
        result = cli("path", arg, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (0, expected, ""), arg


@pytest.mark.skipif(os.name == "nt", reason="a POSIX shell")
def test_in_a_command_substitution(tmp_path: Path) -> None:
    make_run(tmp_path / "runs" / "exp")
    (tmp_path / "runs" / "exp" / BEST).write_bytes(b"the best weights")
    script = f'cat "$("{sys.executable}" -m lightning_bestlink path runs/exp)"'
    result = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "the best weights")


def test_an_alias_of_any_name_and_a_directory_checkpoint(tmp_path: Path) -> None:
    shard = tmp_path / "step=100"
    shard.mkdir()
    (shard / ".metadata").write_bytes(b"m")
    BestLinker(tmp_path / "model-best").update(0.1, shard)  # no suffix, a name of the user's choice
    assert cli("path", tmp_path).stdout == f"{shard}\n"
    assert cli("path", tmp_path / "model-best").stdout == f"{shard}\n"


@needs_symlinks
def test_no_healthy_alias_prints_nothing_on_stdout(tmp_path: Path) -> None:
    make_run(tmp_path / "broken")
    (tmp_path / "broken" / "best.ckpt").unlink()
    os.symlink("epoch=0.ckpt", tmp_path / "broken" / "best.ckpt")
    result = cli("path", tmp_path / "broken")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"lightning-bestlink path: {tmp_path / 'broken' / 'best.ckpt'} is not healthy: ")
    assert f"mismatch: best.ckpt points at epoch=0.ckpt, but its record names {BEST}" in result.stderr
    assert f"run: lightning-bestlink repair {tmp_path / 'broken'}" in result.stderr

    (tmp_path / "empty").mkdir()
    result = cli("path", tmp_path / "empty")
    assert (result.returncode, result.stdout) == (1, "")
    message = f"no lightning-bestlink alias in {tmp_path / 'empty'} (no .bestlink.json record)"
    assert result.stderr == f"lightning-bestlink path: {message}\n"


def test_several_aliases_must_be_named(tmp_path: Path) -> None:
    make_run(tmp_path)
    BestLinker(tmp_path / "best-acc.ckpt", mode="max").update(0.9, tmp_path / "epoch=1.ckpt")
    result = cli("path", tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert "holds 2 aliases (best-acc.ckpt, best.ckpt); name one of them" in result.stderr
    assert cli("path", tmp_path / "best-acc.ckpt").stdout == f"{tmp_path / 'epoch=1.ckpt'}\n"


def test_best_checkpoint_deleted(tmp_path: Path) -> None:
    make_run(tmp_path, link="copy")
    (tmp_path / BEST).unlink()  # the copy is still there, but what the record names is gone
    result = cli("path", tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert "is not healthy" in result.stderr


def test_nothing_there_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("path", tmp_path / "nope")
    assert (result.returncode, result.stdout) == (2, "")
    assert "does not exist" in result.stderr
    (tmp_path / "file.ckpt").write_bytes(b"w")
    result = cli("path", tmp_path / "file.ckpt")
    assert (result.returncode, result.stdout) == (1, "")
    assert "is not a folder and has no .bestlink.json record next to it" in result.stderr
