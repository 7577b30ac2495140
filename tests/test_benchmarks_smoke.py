"""The benchmark runner keeps working: a --smoke run writes its table and plot. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("matplotlib")

RUNNER = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.mark.lightning
@pytest.mark.slow
def test_smoke_run_writes_table_and_plot(tmp_path: Path) -> None:
    if not RUNNER.is_file():
        pytest.skip(f"{RUNNER} is not part of this checkout")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--smoke", "--out", str(out), "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"

    table = (out / "results.md").read_text(encoding="utf-8")
    for heading in ("## Targets", "## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6."):
        assert heading in table
    assert "| BestLinker symlink |" in table
    assert "| stock ModelCheckpoint |" in table
    assert table.count("|---|") >= 7  # one Markdown table per section

    png = (out / "benchmarks.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert {"alias", "noop", "trainer", "imports", "churn", "targets"} <= set(results)
    assert len(results["targets"]) == 5
    # the scratch checkpoints are gone; only the runner's own output is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["benchmarks.png", "results.json", "results.md"]
