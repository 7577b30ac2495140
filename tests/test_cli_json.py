"""``show --json`` and ``verify --json``: one JSON document on stdout, stable keys, exit codes unchanged.

The key sets below are the documented contract (docs/cli.md): a key may be added, never
removed or renamed without a new ``version``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests._cli import BEST, cli, make_run, needs_symlinks

from lightning_bestlink import BestLinker

DOCUMENT_KEYS = {"version", "command", "root", "ok", "summary", "folders"}
SUMMARY_KEYS = {"folders", "unreadable_folders", "aliases", "healthy", "need_attention"}
FOLDER_KEYS = {"path", "error", "checkpoints", "aliases", "unrecorded"}
CHECKPOINT_KEYS = {"name", "path", "type", "size", "marks", "link", "dangling"}
ALIAS_KEYS = {
    "name", "path", "record", "status", "ok", "detail", "target", "kind", "score", "mode", "extra", "time", "points_at",
}  # fmt: skip


def document(*args: str | Path, code: int = 0) -> dict[str, Any]:
    result = cli(*args)
    assert result.returncode == code, result.stdout + result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)  # the whole of stdout is one document
    assert result.stdout.count("\n") == 1
    assert set(parsed) == DOCUMENT_KEYS and set(parsed["summary"]) == SUMMARY_KEYS
    for folder in parsed["folders"]:
        assert set(folder) == FOLDER_KEYS
        assert all(set(c) == CHECKPOINT_KEYS for c in folder["checkpoints"])
        assert all(set(a) == ALIAS_KEYS for a in folder["aliases"])
    return parsed


@pytest.mark.parametrize("command", ["show", "verify"])
@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_healthy_folder(tmp_path: Path, command: str, link: str) -> None:
    make_run(tmp_path, link=link)
    doc = document(command, "--json", tmp_path)
    assert (doc["version"], doc["command"], doc["root"], doc["ok"]) == (1, command, str(tmp_path), True)
    assert doc["summary"] == {"folders": 1, "unreadable_folders": 0, "aliases": 1, "healthy": 1, "need_attention": 0}
    (folder,) = doc["folders"]
    assert (folder["path"], folder["error"], folder["unrecorded"]) == (str(tmp_path), None, [])
    (alias,) = folder["aliases"]
    assert alias == {
        "name": "best.ckpt",
        "path": str(tmp_path / "best.ckpt"),
        "record": str(tmp_path / "best.ckpt.bestlink.json"),
        "status": "ok",
        "ok": True,
        "detail": alias["detail"],  # the library's own sentence
        "target": str(tmp_path / BEST),
        "kind": link,
        "score": 0.3,
        "mode": "min",
        "extra": {"monitor": "val_loss", "epoch": 2, "step": 12},
        "time": alias["time"],
        "points_at": str(tmp_path / BEST),
    }
    assert isinstance(alias["detail"], str) and alias["time"].endswith("+00:00")
    rows = {c["name"]: c for c in folder["checkpoints"]}
    assert list(rows) == ["epoch=0.ckpt", "epoch=1.ckpt", BEST, "epoch=3.ckpt", "last.ckpt"]
    assert rows[BEST] == {
        "name": BEST,
        "path": str(tmp_path / BEST),
        "type": "file",
        "size": 102,
        "marks": ["best"],
        "link": None,
        "dangling": False,
    }
    assert rows["last.ckpt"]["marks"] == ["last"] and rows["epoch=0.ckpt"]["marks"] == []


@needs_symlinks
def test_verify_json_of_a_broken_alias_keeps_the_exit_code(tmp_path: Path) -> None:
    make_run(tmp_path / "a")
    make_run(tmp_path / "b")
    (tmp_path / "b" / "best.ckpt").unlink()
    os.symlink("epoch=0.ckpt", tmp_path / "b" / "best.ckpt")

    result = cli("verify", "--json", "-r", tmp_path)
    assert result.returncode == 1
    assert result.stderr == "verify: 1 of 2 aliases needs attention\n"  # diagnostics stay on stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["summary"]["need_attention"] == 1
    bad = doc["folders"][1]["aliases"][0]
    assert (bad["status"], bad["ok"], bad["points_at"], bad["target"]) == (
        "mismatch",
        False,
        str(tmp_path / "b" / "epoch=0.ckpt"),
        str(tmp_path / "b" / BEST),
    )
    assert document("show", "--json", "-r", tmp_path)["ok"] is False  # show exits 0 all the same


def test_no_alias(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"w")
    result = cli("verify", "--json", tmp_path)
    assert result.returncode == 0
    assert result.stderr == f"no lightning-bestlink alias in {tmp_path}: nothing to check\n"
    doc = json.loads(result.stdout)
    assert doc["folders"][0]["aliases"] == [] and doc["summary"]["aliases"] == 0
    assert cli("verify", "--json", "--require", tmp_path).returncode == 1


def test_scores_json_cannot_hold_and_a_record_without_a_score(tmp_path: Path) -> None:
    for name in ("a.ckpt", "b.ckpt"):
        (tmp_path / name).write_bytes(b"w")
    BestLinker(tmp_path / "best-inf.ckpt", mode="max").update(float("inf"), tmp_path / "a.ckpt")
    BestLinker(tmp_path / "latest.ckpt").follow(None, tmp_path / "b.ckpt")  # monitor=None: no score

    doc = document("show", "--json", tmp_path)
    scores = {a["name"]: a["score"] for a in doc["folders"][0]["aliases"]}
    assert scores == {"best-inf.ckpt": "inf", "latest.ckpt": None}
    out = cli("show", tmp_path).stdout
    assert "inf (max)" in out and "no score (min)" in out
    verified = cli("verify", tmp_path).stdout
    assert f"ok      {tmp_path / 'latest.ckpt'} -> b.ckpt (symlink, no score, min)\n" in verified
    assert f"ok      {tmp_path / 'best-inf.ckpt'} -> a.ckpt (symlink, inf, max)\n" in verified


def test_unrecorded_and_usage(tmp_path: Path) -> None:
    make_run(tmp_path)
    (tmp_path / "best-old.ckpt").write_bytes(b"mine")
    doc = document("show", "--json", tmp_path)
    assert doc["folders"][0]["unrecorded"] == ["best-old.ckpt"]

    both = cli("verify", "--json", "-q", tmp_path)
    assert both.returncode == 2 and both.stdout == ""
    assert "not allowed with argument" in both.stderr
    missing = cli("show", "--json", tmp_path / "nope")
    assert (missing.returncode, missing.stdout) == (2, "")
