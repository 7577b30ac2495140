"""Two CPU processes (DDP, gloo): rank zero decides and writes, every rank sees the alias."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests._helpers import run_script

pytest.importorskip("torch")
pytest.importorskip("lightning")

pytestmark = [pytest.mark.lightning, pytest.mark.spawns, pytest.mark.slow]


def test_trainer_ddp_two_ranks_agree_and_see_the_alias(tmp_path: Path) -> None:
    run_script("ddp_trainer.py", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    alias = tmp_path / "ckpt" / "best.ckpt"
    assert ranks[0]["best_model_path"] == ranks[1]["best_model_path"]
    assert os.path.realpath(alias) == ranks[0]["best_model_path"]
    seen0, seen1 = ranks[0]["seen"], ranks[1]["seen"]
    assert len(seen0) == len(seen1) > 0
    for a, b in zip(seen0, seen1, strict=True):
        # after every call of the callback, on both ranks: the alias is the best, and rank 1's
        # linker mirrors rank zero's (score included, although rank 1 logged other values)
        assert (a["linker_best"], a["linker_score"]) == (b["linker_best"], b["linker_score"])
        if a["best_model_path"]:
            for s in (a, b):
                assert s["alias_exists"], s
                assert s["alias_resolves_to"] == s["best_model_path"], s
    assert seen0[-1]["linker_score"] == 0.5  # rank zero's value; rank 1 logged 0.75
    record = json.loads((tmp_path / "ckpt" / "best.ckpt.bestlink.json").read_text())
    assert record["score"] == 0.5
