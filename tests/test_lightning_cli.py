"""LightningCLI: the callback configured from the command line and from a YAML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")

from lightning.pytorch.cli import LightningCLI
from tests._lit import make_module

pytestmark = [
    pytest.mark.lightning,
    # jsonargparse deprecations triggered by LightningCLI itself, not by this package
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def _model_class() -> Any:
    import lightning.pytorch as pl

    return type(make_module(pl, [3.0, 1.0, 2.0]))


def _common(tmp_path: Path) -> list[str]:
    return [
        "fit",
        "--trainer.max_epochs=3",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.default_root_dir={tmp_path}",
    ]


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["prog"])  # LightningCLI warns when pytest's own argv is there too


def test_cli_flags(tmp_path: Path) -> None:
    args = [
        *_common(tmp_path),
        "--trainer.callbacks+=lightning_bestlink.ModelCheckpointWithLinkBest",
        "--trainer.callbacks.save_best=true",
        "--trainer.callbacks.monitor=val_loss",
        f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}",
    ]
    cli = LightningCLI(_model_class(), args=[*args, "--seed_everything=1"], save_config_kwargs={"overwrite": True})
    (ckpt,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "ModelCheckpointWithLinkBest"]
    assert ckpt.save_best is True
    assert os.readlink(tmp_path / "ckpt" / "best.ckpt") == "epoch=1-step=4.ckpt"


def test_cli_yaml_config(tmp_path: Path) -> None:
    config = tmp_path / "input.yaml"
    config.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lightning_bestlink.ModelCheckpointWithLinkBest\n"
        "      init_args:\n"
        "        save_best: symlink\n"
        "        monitor: val_loss\n"
        "        save_last: true\n"
        f"        dirpath: {tmp_path / 'ckpt'}\n"
    )
    cli = LightningCLI(_model_class(), args=[*_common(tmp_path), f"--config={config}", "--seed_everything=1"])
    (ckpt,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "ModelCheckpointWithLinkBest"]
    assert ckpt.save_best == "symlink"
    assert os.readlink(tmp_path / "ckpt" / "best.ckpt") == "epoch=1-step=4.ckpt"
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
