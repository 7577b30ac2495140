"""The Fabric helper: save_and_link and load, in one process and in two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from lightning.fabric import Fabric  # noqa: E402
from tests._helpers import run_script  # noqa: E402

from lightning_bestlink import BestLinker  # noqa: E402
from lightning_bestlink import fabric as bestlink  # noqa: E402

pytestmark = pytest.mark.lightning
ROOT = Path(__file__).parent.parent


@pytest.fixture
def fabric() -> Any:
    f = Fabric(accelerator="cpu", devices=1)
    f.launch()
    return f


def _state(fabric: Any, linker: BestLinker) -> dict[str, Any]:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    return {"model": model, "optimizer": optimizer, "best": linker, "epoch": 0}


@pytest.mark.parametrize("mode", ["min", "max"])
def test_alias_follows_the_best_and_resume_keeps_it(fabric: Any, tmp_path: Path, mode: str) -> None:
    scores = [3.0, 1.0, 2.0, 0.5, 4.0] if mode == "min" else [1.0, 3.0, 2.0, 5.0, 0.0]
    linker = BestLinker(tmp_path / "best.ckpt", mode=mode)  # type: ignore[arg-type]
    state = _state(fabric, linker)
    returned = []
    for epoch, score in enumerate(scores):
        state["epoch"] = epoch
        returned.append(
            bestlink.save_and_link(fabric, tmp_path / f"e{epoch}.ckpt", state, score=torch.tensor(score), linker=linker)
        )
    assert returned == [True, True, False, True, False]
    assert os.readlink(tmp_path / "best.ckpt") == "e3.ckpt"

    # the checkpoint that became the best carries the linker state *with* itself as best
    resumed = BestLinker(tmp_path / "best.ckpt", mode=mode)  # type: ignore[arg-type]
    state2 = _state(fabric, resumed)
    bestlink.load(fabric, tmp_path / "e3.ckpt", state2)
    assert state2["epoch"] == 3
    assert resumed.best_score == scores[3]
    assert resumed.best_path == str(tmp_path / "e3.ckpt")
    worse = 9.0 if mode == "min" else -9.0
    assert not bestlink.save_and_link(fabric, tmp_path / "e5.ckpt", state2, score=worse, linker=resumed)
    assert os.readlink(tmp_path / "best.ckpt") == "e3.ckpt"


def test_resume_repairs_a_deleted_alias(fabric: Any, tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    state = _state(fabric, linker)
    bestlink.save_and_link(fabric, tmp_path / "a.ckpt", state, score=1.0, linker=linker)
    (tmp_path / "best.ckpt").unlink()
    resumed = BestLinker(tmp_path / "best.ckpt")
    bestlink.load(fabric, tmp_path / "a.ckpt", _state(fabric, resumed))
    assert not bestlink.save_and_link(fabric, tmp_path / "b.ckpt", _state(fabric, resumed), score=2.0, linker=resumed)
    assert os.readlink(tmp_path / "best.ckpt") == "a.ckpt"


def test_plain_fabric_save_and_load_handle_a_linker(fabric: Any, tmp_path: Path) -> None:
    from tests._compat import _LIGHTNING_GE_2_1

    if not _LIGHTNING_GE_2_1:
        pytest.skip(
            "Fabric 2.0's save does not call state_dict() on other objects: save_and_link() (or "
            "linker.state_dict()) and lightning_bestlink.fabric.load() cover it, tested above"
        )
    # from 2.1 Fabric saves state_dict() of an object that has one and calls load_state_dict()
    # on it when loading: a single process needs no helper
    linker = BestLinker(tmp_path / "best.ckpt")
    fabric.save(tmp_path / "a.ckpt", {"best": linker})
    linker.update(1.0, tmp_path / "a.ckpt")
    fabric.save(tmp_path / "b.ckpt", {"best": linker})
    resumed = BestLinker(tmp_path / "best.ckpt")
    fabric.load(tmp_path / "b.ckpt", {"best": resumed})
    assert (resumed.best_score, resumed.best_path) == (1.0, str(tmp_path / "a.ckpt"))


def test_directory_checkpoint_single_process(fabric: Any, tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    for i, score in enumerate([2.0, 1.0]):
        d = tmp_path / f"step={i}"
        d.mkdir()
        (d / "shard-0.pt").write_bytes(b"x" * 10)
        linker.update(score, d)
    assert os.path.isdir(tmp_path / "best.ckpt")
    assert os.readlink(tmp_path / "best.ckpt") == "step=1"
    assert (tmp_path / "best.ckpt" / "shard-0.pt").read_bytes() == b"x" * 10


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_two_ranks_with_different_scores_agree(tmp_path: Path, kind: str) -> None:
    run_script("ddp_fabric.py", tmp_path, kind)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert [s["became_best"] for s in rank0] == [True, True, False, True, False]
    assert rank0 == rank1, "both ranks return the same and mirror the same best"
    for s in rank1:  # checked from rank 1 right after each call returned
        assert s["alias_resolves_to"] == s["best_path"]
        assert s["best_score"] in (3.0, 1.0, 0.5), "rank zero's score decides"
    alias = tmp_path / "best.ckpt"
    assert os.readlink(alias) == "epoch=3.ckpt"
    if kind == "dir":
        assert sorted(os.listdir(alias)) == ["shard-0.pt", "shard-1.pt"]


@pytest.mark.slow
def test_example_runs_and_resumes(tmp_path: Path) -> None:
    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "fabric_loop.py"), "--dir", str(tmp_path / "run"), *args],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    first = run("--epochs", "3")
    assert "epoch 3:" in first
    second = run("--epochs", "5")
    assert "resumed at epoch 3" in second and "epoch 5:" in second
    assert os.path.exists(tmp_path / "run" / "best.ckpt")


def test_resume_when_the_best_checkpoint_is_gone_warns_and_starts_over(fabric: Any, tmp_path: Path) -> None:
    from lightning_bestlink import BestLinkWarning

    linker = BestLinker(tmp_path / "best.ckpt")
    bestlink.save_and_link(fabric, tmp_path / "a.ckpt", _state(fabric, linker), score=1.0, linker=linker)
    fabric.save(tmp_path / "last.ckpt", {"best": linker.state_dict()})
    (tmp_path / "a.ckpt").unlink()
    resumed = BestLinker(tmp_path / "best.ckpt")
    with pytest.warns(BestLinkWarning, match="cannot be linked"):
        bestlink.load(fabric, tmp_path / "last.ckpt", {"best": resumed})
    assert resumed.best_score is None
    assert bestlink.save_and_link(fabric, tmp_path / "b.ckpt", _state(fabric, resumed), score=5.0, linker=resumed)
    assert os.readlink(tmp_path / "best.ckpt") == "b.ckpt"
