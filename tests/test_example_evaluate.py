"""examples/evaluate_on_best.py: an evaluation process per new best, started by ``on_move``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

# an example of the public API (on_move), not of a Lightning line's behaviour: lightning26 runs it
pytestmark = [pytest.mark.torch, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "evaluate_on_best.py"


def test_each_new_best_is_evaluated_even_when_lightning_deleted_it_meanwhile(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (tmp_path / "evaluations.jsonl").read_text().splitlines()
    evaluated = sorted((r["epoch"], r["checkpoint"]) for r in map(json.loads, lines))
    assert evaluated == [(e, f"epoch={e}-step={4 * (e + 1)}.ckpt") for e in (0, 1, 3, 5)]
    # save_top_k=1: only the last best is still on disk; the others were read through their open file
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("epoch=*")) == ["epoch=5-step=24.ckpt"]
