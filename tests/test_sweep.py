"""A sweep on the Trainer: every trial's callback feeds one shared alias (``sweep_best=``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

from lightning_bestlink import BestLinker, ModelCheckpointWithLinkBest, read_record

pytestmark = [pytest.mark.lightning, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep.py"


@pytest.mark.spawns  # each trial a fresh interpreter (multiprocessing's spawn)
def test_the_example_sweep_ends_at_the_best_of_all_trials(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "sweep")], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = sorted((tmp_path / "sweep").glob("lr=*/best.ckpt"))
    assert len(trials) == 3
    bests = {read_record(t)["score"]: read_record(t)["target"] for t in trials}  # type: ignore[index]
    record = read_record(tmp_path / "sweep" / "best.ckpt")
    assert record is not None
    assert (record["score"], record["target"]) == (min(bests), bests[min(bests)])
    assert record["extra"]["run"] == os.path.basename(os.path.dirname(record["target"]))
    assert os.path.samefile(tmp_path / "sweep" / "best.ckpt", record["target"])
    assert BestLinker(tmp_path / "sweep" / "best.ckpt", shared=True).verify().ok


@pytest.mark.parametrize(("kwargs", "match"), [({"monitor": None}, "monitor"), ({"save_best": None}, "save_best")])
def test_sweep_best_needs_a_score_and_a_best(kwargs: dict[str, Any], match: str) -> None:
    options = {"save_best": True, "monitor": "val_loss", **kwargs}
    with pytest.raises(ValueError, match=match):
        ModelCheckpointWithLinkBest(sweep_best="sweep/best.ckpt", **options)
