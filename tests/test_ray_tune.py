"""A real sweep engine: Ray Tune runs three Lightning trials on a local Ray cluster, and their
``sweep_best=`` alias ends at the best checkpoint of all, on a folder and on an S3 bucket (moto on
127.0.0.1). The example itself is run, as a user runs it: ``examples/ray_tune_sweep.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("ray.tune", reason="ray[tune] is not installed (pip install 'ray[tune]')")

from tests._object_store import Store, serve

from lightning_bestlink import BestLinker, read_record

pytestmark = [pytest.mark.ray, pytest.mark.lightning, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ray_tune_sweep.py"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with serve("s3", tmp_path_factory.mktemp("s3")) as store:
        yield store


def _location(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    if where == "folder":
        return str(tmp_path / "sweep"), {}
    store: Store = request.getfixturevalue("s3")
    return f"{store.bucket()}/sweep", store.options


@pytest.mark.timeout(900)
@pytest.mark.parametrize("where", ["folder", pytest.param("bucket", marks=pytest.mark.s3)])
def test_a_ray_tune_sweep_ends_at_the_best_of_all_trials(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sweep, options = _location(where, tmp_path, request)
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    try:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE), sweep], capture_output=True, text=True, timeout=840, env=env, cwd=tmp_path
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = [f"{sweep}/lr={lr}/best.ckpt" for lr in (0.3, 0.03, 0.003)]
    bests = {}
    for alias in trials:  # each trial's own best
        record = read_record(alias, storage_options=options)  # type: ignore[arg-type]
        assert record is not None, alias
        bests[record["score"]] = record["target"]
    record = read_record(f"{sweep}/best.ckpt", storage_options=options)  # type: ignore[arg-type]
    assert record is not None
    assert (record["score"], record["target"]) == (min(bests), bests[min(bests)])
    assert record["extra"]["run"] == record["target"].rsplit("/", 2)[1]
    assert f"best of 3 trials: {record['target']}" in proc.stdout
    linker = BestLinker(f"{sweep}/best.ckpt", shared=True, storage_options=options)  # type: ignore[arg-type]
    report = linker.verify()
    assert report.ok and report.expected == record["target"], report
