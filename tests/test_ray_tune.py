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
from dataclasses import dataclass
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


@dataclass
class Sweep:
    """One run of the example, started in the background."""

    location: str
    options: dict[str, object]
    proc: subprocess.Popen[str]
    ray_tmp: str

    def result(self) -> tuple[int, str, str]:
        """Wait for the run; its exit status, standard output and standard error."""
        try:
            out, err = self.proc.communicate(timeout=840)
        finally:
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def sweeps(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Sweep]]:
    """Each selected sweep (folder, bucket) started at once, in a process and a Ray cluster of its own:
    a run spends most of its minute waiting for Ray (its cluster, its workers), so the two wait together."""
    wanted = [
        item.callspec.params["where"]  # type: ignore[attr-defined]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    started: dict[str, Sweep] = {}
    for where in dict.fromkeys(wanted):
        folder = tmp_path_factory.mktemp(where)
        if where == "folder":
            location, options = str(folder / "sweep"), {}
        else:
            store: Store = request.getfixturevalue("s3")
            location, options = f"{store.bucket()}/sweep", store.options
        ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), location],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=folder,
        )
        started[where] = Sweep(location, options, proc, ray_tmp)
    yield started
    for sweep in started.values():  # a test that failed early leaves its run behind
        if sweep.proc.poll() is None:
            sweep.proc.kill()
            sweep.result()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("where", ["folder", pytest.param("bucket", marks=pytest.mark.s3)])
def test_a_ray_tune_sweep_ends_at_the_best_of_all_trials(where: str, sweeps: dict[str, Sweep]) -> None:
    run = sweeps[where]
    sweep, options = run.location, run.options
    returncode, stdout, stderr = run.result()
    assert returncode == 0, stdout[-3000:] + stderr[-3000:]
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
    assert f"best of 3 trials: {record['target']}" in stdout
    linker = BestLinker(f"{sweep}/best.ckpt", shared=True, storage_options=options)  # type: ignore[arg-type]
    report = linker.verify()
    assert report.ok and report.expected == record["target"], report
