"""The benchmark runner keeps working: a --smoke run writes its tables, its targets and its plot,
rendered from its results alone, and --publish rewrites only the generated blocks of the docs.
No timing is asserted."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("matplotlib")

pytestmark = [pytest.mark.lightning, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RUNNER = BENCH / "run.py"
PUBLISHED = ("docs/benchmarks.md",)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True, timeout=180)


def bench_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # how run.py finds its modules
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if not RUNNER.is_file():
        pytest.skip(f"{RUNNER} is not part of this checkout")
    scratch = tmp_path_factory.mktemp("smoke")
    proc = run("--smoke", "--out", scratch / "out", "--tmp", scratch)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    # the scratch checkpoints are gone; only the runner's own output is left
    assert sorted(p.name for p in scratch.iterdir()) == ["out"]
    return proc, scratch / "out"


def test_smoke_run_writes_tables_targets_and_plot(
    smoke: tuple[subprocess.CompletedProcess[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, out = smoke
    assert sorted(p.name for p in out.iterdir()) == ["benchmarks.png", "results.json", "results.md"]
    table = (out / "results.md").read_text(encoding="utf-8")
    headings = [line for line in table.splitlines() if line.startswith("## ")]
    # a section's tables stay together: the alias section's hot loop (8) and bytes written (4) follow its 1
    assert [h.split(".")[0] for h in headings] == [
        "## Targets",
        "## 1",
        "## 8",
        "## 4",
        "## 2",
        "## 3",
        "## 5",
        "## 6",
        "## 7",
    ]
    assert "| BestLinker symlink |" in table
    assert "| stock ModelCheckpoint |" in table
    assert table.count("|---|") >= 7  # one Markdown table per section

    png = (out / "benchmarks.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert {"alias", "noop", "trainer", "imports", "churn", "clone", "targets"} <= set(results)
    # every target of benchmarks/targets.py is judged once, in results.json, results.md and on the console
    defined = bench_module("targets", monkeypatch).TARGETS
    assert [t["key"] for t in results["targets"]] == [t.key for t in defined]
    for t in results["targets"]:
        assert isinstance(t["met"], bool)
        assert t["met"] == (t["value"] is not None and t["value"] <= t["limit"])
        assert f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" in table
        assert f"[{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']}" in proc.stdout


def test_outputs_are_rendered_from_results_json_alone(
    smoke: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    _, out = smoke
    proc = run("--report-from", out / "results.json", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results.md").read_text(encoding="utf-8") == (out / "results.md").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads((out / "results.json").read_text())


def test_smoke_figures_are_never_published(
    smoke: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    before = {rel: (REPO / rel).read_bytes() for rel in (*PUBLISHED, "docs/benchmarks.png")}
    refused = run("--smoke", "--publish", "--out", tmp_path)
    assert refused.returncode == 2
    assert "--publish needs a full run" in refused.stderr
    refused = run("--report-from", smoke[1] / "results.json", "--publish", "--out", tmp_path)
    assert refused.returncode == 2
    assert "--smoke run" in refused.stderr
    assert {rel: (REPO / rel).read_bytes() for rel in before} == before


def outside_blocks(text: str) -> str:
    """``text`` with the body of every generated block cut out, the markers left."""
    cut, n = re.subn(r"(<!-- BEGIN ([\w-]+)[^\n]*-->\n).*?(<!-- END \2 -->)", r"\1\3", text, flags=re.S)
    assert n >= 1
    return cut


def copy_published(repo: Path) -> None:
    for rel in PUBLISHED:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, repo / rel)


def test_publish_rewrites_only_the_generated_blocks(
    smoke: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = smoke
    report = bench_module("_report", monkeypatch)
    sections = bench_module("sections", monkeypatch).SECTIONS
    results: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results["env"]["smoke"] = False  # stands in for a full run
    copy_published(tmp_path)

    written = report.publish(results, sections, out / "benchmarks.png", repo=tmp_path)

    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted([*PUBLISHED, "docs/benchmarks.png"])
    assert (tmp_path / "docs/benchmarks.png").read_bytes() == (out / "benchmarks.png").read_bytes()
    table = (out / "results.md").read_text(encoding="utf-8")
    for rel in PUBLISHED:
        old, new = (REPO / rel).read_text(encoding="utf-8"), (tmp_path / rel).read_text(encoding="utf-8")
        for t in results["targets"]:  # the docs' target table is results.md's
            row = f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
            assert row in table
            assert row in new
        # the generated blocks changed (another run), the hand-written text around them did not
        assert new != old
        assert outside_blocks(new) == outside_blocks(old)
    docs = (tmp_path / "docs/benchmarks.md").read_text(encoding="utf-8")
    assert "### 1. One improving alias update" in docs
    assert "| BestLinker symlink |" in docs

    # publishing again changes nothing: the blocks are found again by their markers
    again = {rel: (tmp_path / rel).read_text(encoding="utf-8") for rel in PUBLISHED}
    report.publish(results, sections, out / "benchmarks.png", repo=tmp_path)
    assert {rel: (tmp_path / rel).read_text(encoding="utf-8") for rel in PUBLISHED} == again


def test_publish_without_markers_names_the_file_and_writes_nothing(
    smoke: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = smoke
    report = bench_module("_report", monkeypatch)
    sections = bench_module("sections", monkeypatch).SECTIONS
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results["env"]["smoke"] = False
    copy_published(tmp_path)
    docs = tmp_path / "docs/benchmarks.md"
    docs.write_text(docs.read_text(encoding="utf-8").replace("<!-- END benchmark-results -->", ""), encoding="utf-8")
    before = {rel: (tmp_path / rel).read_bytes() for rel in PUBLISHED}

    with pytest.raises(ValueError, match=r"docs/benchmarks\.md: expected one block .*benchmark-results.*found 0"):
        report.publish(results, sections, out / "benchmarks.png", repo=tmp_path)
    assert {rel: (tmp_path / rel).read_bytes() for rel in PUBLISHED} == before
    assert not (tmp_path / "docs/benchmarks.png").exists()
