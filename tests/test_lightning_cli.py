"""LightningCLI: the callback configured from the command line and from a YAML file, each in a process of its own."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from tests._fork import lightning, run_forked

pytest.importorskip("torch")
pytest.importorskip("jsonargparse")

pytestmark = pytest.mark.lightning

PACKAGE = "lightning.pytorch" if importlib.util.find_spec("lightning") else "pytorch_lightning"
if not importlib.util.find_spec(PACKAGE.split(".")[0]):
    pytest.skip("neither Lightning package is installed", allow_module_level=True)
CLASS = "lightning_bestlink.ModelCheckpointWithLinkBest"
if PACKAGE == "pytorch_lightning":
    CLASS = "lightning_bestlink.pytorch_lightning.ModelCheckpointWithLinkBest"
SCRIPT = Path(__file__).parent / "scripts" / "cli_fit.py"


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python cli_fit.py PACKAGE ARGS`` in a process of its own (forked, tests/_fork.py)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return run_forked([SCRIPT, PACKAGE, *args], preload=lightning(PACKAGE), cwd=tmp_path, env=env, timeout=240)


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run_cli(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def fit_args(tmp_path: Path) -> list[str]:
    return [
        "fit",
        "--trainer.max_epochs=3",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.default_root_dir={tmp_path}",
        "--seed_everything=1",
    ]


def test_help_lists_save_best_choices_best_name_and_every_model_checkpoint_option(tmp_path: Path) -> None:
    out = cli(tmp_path, "fit", f"--trainer.callbacks+={CLASS}", "--trainer.callbacks.help", CLASS).stdout
    flat = " ".join(out.split())
    # jsonargparse before 4.25 (Lightning 2.0's range) spells the options --trainer.callbacks.init_args.X
    options = set(re.findall(r"--trainer\.callbacks\.(?:init_args\.)?(\w+)", out))
    assert "Literal['auto', 'symlink', 'hardlink', 'copy']" in flat and "bool" in flat
    assert "default: best" in flat
    model_checkpoint = ("dirpath", "monitor", "save_last", "save_top_k", "every_n_epochs", "save_on_train_epoch_end")
    assert {"save_best", "best_name", *model_checkpoint} <= options


def test_flags(tmp_path: Path) -> None:
    cli(
        tmp_path,
        *fit_args(tmp_path),
        f"--trainer.callbacks+={CLASS}",
        "--trainer.callbacks.save_best=true",
        "--trainer.callbacks.monitor=val_loss",
        f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}",
    )
    assert os.readlink(tmp_path / "ckpt" / "best.ckpt") == "epoch=1-step=4.ckpt"


def test_a_bad_save_best_is_refused_when_parsing(tmp_path: Path) -> None:
    bad = [f"--trainer.callbacks+={CLASS}", "--trainer.callbacks.save_best=hardlinks"]
    proc = run_cli(tmp_path, *fit_args(tmp_path), *bad)
    assert proc.returncode != 0 and "save_best" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_yaml_two_callbacks_two_aliases_in_one_folder(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    config = tmp_path / "input.yaml"
    config.write_text(
        "trainer:\n"
        "  callbacks:\n"
        f"    - class_path: {CLASS}\n"
        "      init_args:\n"
        "        save_best: symlink\n"
        "        monitor: val_loss\n"
        "        filename: loss-{epoch}\n"
        "        save_last: true\n"
        f"        dirpath: {ckpt}\n"
        f"    - class_path: {CLASS}\n"
        "      init_args:\n"
        "        save_best: true\n"
        "        best_name: best-val_acc\n"
        "        monitor: val_acc\n"
        "        mode: max\n"
        "        filename: acc-{epoch}\n"
        f"        dirpath: {ckpt}\n"
    )
    cli(tmp_path, *fit_args(tmp_path), f"--config={config}")
    assert os.readlink(ckpt / "best.ckpt") == "loss-epoch=1.ckpt"
    assert os.readlink(ckpt / "best-val_acc.ckpt") == "acc-epoch=2.ckpt"
    assert json.loads((ckpt / "best-val_acc.ckpt.bestlink.json").read_text())["score"] == pytest.approx(0.9)
    assert (ckpt / "last.ckpt").exists()
