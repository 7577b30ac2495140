"""The Fabric helper: save_and_link and load, in one process and in two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from lightning.fabric import Fabric  # noqa: E402
from tests._fork import lightning, run_forked  # noqa: E402
from tests._helpers import SCRIPTS, run_script  # noqa: E402

from lightning_bestlink import BestLinker, LatestLinker, Retention  # noqa: E402
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
@pytest.mark.spawns
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
        proc = run_forked(
            [ROOT / "examples" / "fabric_loop.py", "--dir", tmp_path / "run", *args],
            preload=lightning(),
            timeout=240,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    first = run("--epochs", "3")
    assert "epoch 3:" in first
    second = run("--epochs", "5")
    assert "resumed at epoch 3" in second and "epoch 5:" in second
    run_dir = tmp_path / "run"
    losses = {
        int(line.split(":")[0].split()[1]): float(line.split("val_loss=")[1].split()[0])
        for line in (first + second).splitlines()
        if line.startswith("epoch ")
    }
    assert sorted(losses) == [1, 2, 3, 4, 5]
    best_epoch = min(losses, key=lambda e: losses[e])
    assert os.readlink(run_dir / "best.ckpt") == f"epoch={best_epoch}.ckpt"
    assert os.readlink(run_dir / "last.ckpt") == "epoch=5.ckpt"
    # one save per epoch; kept: the two best (--keep-best 2) and the latest
    two_best = sorted(losses, key=lambda e: losses[e])[:2]
    kept = sorted(p.name for p in run_dir.glob("epoch=*"))
    assert kept == sorted(f"epoch={e}.ckpt" for e in {*two_best, 5})


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


# --- issue 13 item 9: the path is checked before anything is saved ------------------------------


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "copy"])
def test_save_and_link_refuses_the_alias_and_the_aliased_checkpoint_before_saving(
    fabric: Any, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = BestLinker(tmp_path / "best.ckpt", link=kind)  # type: ignore[arg-type]
    last = LatestLinker(tmp_path / "last.ckpt", link=kind)  # type: ignore[arg-type]
    state = _state(fabric, best)
    state["last"] = last
    saves: list[str] = []
    real_save = fabric.save
    monkeypatch.setattr(fabric, "save", lambda path, *a, **k: (saves.append(str(path)), real_save(path, *a, **k)))

    def offer(path: Path, score: float, step: int) -> bool:
        return bestlink.save_and_link(fabric, path, state, score=score, linker=best, latest=last, step=step)

    assert offer(tmp_path / "epoch=0.ckpt", 1.0, 0)
    assert not offer(tmp_path / "epoch=1.ckpt", 2.0, 1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    for path, score, why in [
        (tmp_path / "best.ckpt", 2.0, "is the alias .*best.ckpt' itself"),
        (tmp_path / "last.ckpt", 0.5, "is the alias .*last.ckpt' itself"),
        # the same path every epoch: a worse model would replace the best under the alias...
        (tmp_path / "epoch=0.ckpt", 3.0, "is the checkpoint 'best.ckpt' points at"),
        # ...and a better one would leave the alias on a half-written file while it is saved
        (tmp_path / "epoch=0.ckpt", 0.1, "is the checkpoint 'best.ckpt' points at"),
        (tmp_path / "epoch=1.ckpt", 3.0, "is the checkpoint 'last.ckpt' points at"),
    ]:
        with pytest.raises(ValueError, match=why):
            offer(path, score, 2)
    assert saves == [str(tmp_path / "epoch=0.ckpt"), str(tmp_path / "epoch=1.ckpt")], "nothing else was saved"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert best.verify().ok and last.verify().ok
    assert (best.best_score, last.latest_step) == (1.0, 1)


# --- the latest alias and retention --------------------------------------------------------------


def test_latest_alias_and_retention_in_a_loop_and_on_resume(fabric: Any, tmp_path: Path) -> None:
    scores = [3.0, 1.0, 2.0, 0.5, 4.0]
    best, last = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    keep = Retention(best, last, keep_best=1)
    state = {**_state(fabric, best), "last": last, "keep": keep}
    for epoch, score in enumerate(scores):
        state["epoch"] = epoch
        path = tmp_path / f"epoch={epoch}.ckpt"
        bestlink.save_and_link(fabric, path, state, score=score, step=epoch, retention=keep)
        assert os.readlink(tmp_path / "last.ckpt") == f"epoch={epoch}.ckpt"
    assert sorted(p.name for p in tmp_path.glob("epoch=*")) == ["epoch=3.ckpt", "epoch=4.ckpt"]
    assert os.readlink(tmp_path / "best.ckpt") == "epoch=3.ckpt"

    # a new process: both aliases and the list of what the run saved come back from last.ckpt
    best2, last2 = BestLinker(tmp_path / "best.ckpt"), LatestLinker(tmp_path / "last.ckpt")
    keep2 = Retention(best2, last2, keep_best=1)
    state2 = {**_state(fabric, best2), "last": last2, "keep": keep2}
    bestlink.load(fabric, tmp_path / "last.ckpt", state2)
    assert (state2["epoch"], best2.best_score, last2.latest_step) == (4, 0.5, 4)
    assert [e["path"] for e in keep2.state_dict()["saved"]] == ["epoch=3.ckpt", "epoch=4.ckpt"]
    path = tmp_path / "epoch=5.ckpt"
    assert not bestlink.save_and_link(fabric, path, state2, score=0.7, step=5, retention=keep2)
    assert sorted(p.name for p in tmp_path.glob("epoch=*")) == ["epoch=3.ckpt", "epoch=5.ckpt"]
    assert os.readlink(tmp_path / "last.ckpt") == "epoch=5.ckpt"


def test_a_deleted_alias_is_rebuilt_by_the_first_save_after_load_state_dict(fabric: Any, tmp_path: Path) -> None:
    linker = BestLinker(tmp_path / "best.ckpt")
    bestlink.save_and_link(fabric, tmp_path / "a.ckpt", _state(fabric, linker), score=1.0, linker=linker)
    (tmp_path / "best.ckpt").unlink()
    resumed = BestLinker(tmp_path / "best.ckpt")
    resumed.load_state_dict(linker.state_dict())  # by hand, not through bestlink.load
    assert not bestlink.save_and_link(fabric, tmp_path / "b.ckpt", _state(fabric, resumed), score=2.0, linker=resumed)
    assert os.readlink(tmp_path / "best.ckpt") == "a.ckpt"


def run_keep_script(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """ddp_fabric_keep.py in one process, whatever its exit (run_script requires 0)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PL_DISABLE_FORK": "1"}
    cmd = [SCRIPTS / "ddp_fabric_keep.py", folder, *args]
    return run_forked(cmd, preload=lightning(), cwd=folder, env=env, timeout=240)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_at", "kind"),
    # before the 4th save; between the best alias and the latest at epoch 3 (a new best); after both
    # aliases moved at epoch 5, before anything was deleted (tests/test_retention.py kills at more points)
    [("save:4", "symlink"), ("latest:4", "copy"), ("retention:6", "symlink")],
)
def test_latest_alias_and_retention_across_a_kill_and_a_resume(tmp_path: Path, kill_at: str, kind: str) -> None:
    killed = run_keep_script(tmp_path, "1", kind, kill_at, "7")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run_keep_script(tmp_path, "1", kind, "none:0", "7")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    seen = json.loads((tmp_path / "rank0.json").read_text())
    assert seen[0]["epoch"] > 0, "the second run resumed"
    # as if never killed: the best (epoch 3), the latest (epoch 6), and nothing else
    assert seen[-1]["checkpoints"] == ["epoch=3.ckpt", "epoch=6.ckpt"]
    assert (seen[-1]["best_path"], seen[-1]["latest_step"]) == (str(tmp_path / "epoch=3.ckpt"), 6)
    for alias in ("best.ckpt", "last.ckpt"):
        linker = (LatestLinker if alias == "last.ckpt" else BestLinker).from_record(tmp_path / alias)
        assert linker.verify().ok, linker.verify().detail
    assert not [n for n in os.listdir(tmp_path) if ".bestlink-" in n], "no temporary names left"


@pytest.mark.slow
@pytest.mark.spawns
@pytest.mark.parametrize("kind", ["symlink", "copy"])
def test_two_ranks_agree_on_best_latest_and_what_to_delete(tmp_path: Path, kind: str) -> None:
    run_script("ddp_fabric_keep.py", tmp_path, "2", kind, "none:0", "7")
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0[0]["refused"] and "is the alias" in rank0[0]["refused"], "refused before saving..."
    assert rank1[0]["refused"] == rank0[0]["refused"], "...on every rank, with rank zero's reason"
    assert rank0[0]["files"] == [], "nothing was saved"
    steps = rank0[1:]
    assert [s["became_best"] for s in steps] == [True, True, False, True, False, False, False]
    assert [s["latest_step"] for s in steps] == list(range(7))
    for s0, s1 in zip(steps, rank1[1:], strict=True):
        assert {k: v for k, v in s0.items() if k != "checkpoints"} == {
            k: v for k, v in s1.items() if k != "checkpoints"
        }, "both ranks mirror rank zero's aliases and list of saved checkpoints"
        assert s0["best"] == s0["best_path"] and s0["last"] == s0["latest_path"], "the aliases resolve"
    assert steps[-1]["checkpoints"] == ["epoch=3.ckpt", "epoch=6.ckpt"]
    assert steps[-1]["listed"] == ["epoch=3.ckpt", "epoch=6.ckpt"]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("epoch=")) == ["epoch=3.ckpt", "epoch=6.ckpt"]
