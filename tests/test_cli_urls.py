"""Every command on fsspec URLs (``s3://bucket/run``), against moto's S3 server on 127.0.0.1.

The command runs in a subprocess with credentials and endpoint in its environment only,
as a user sets them (``AWS_*``, or fsspec's ``FSSPEC_S3_*``); every request goes through
the counting proxy. The user's AWS configuration is hidden and no real endpoint is contacted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")  # moto[server]: moto with flask and werkzeug

from tests._cli import cli, watch  # noqa: E402
from tests._object_store import Store, make_run, serve  # noqa: E402

from lightning_bestlink import BestLinker  # noqa: E402

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with serve("s3", tmp_path_factory.mktemp("s3")) as store:
        yield store


@pytest.fixture
def run(s3: Store) -> Iterator[str]:
    """``s3://<new bucket>/run`` with epoch=0..3.ckpt (the best: epoch=2), last.ckpt and best.ckpt."""
    yield make_run(s3.fs(), f"{s3.bucket()}/run", s3.options)
    s3.proxy.reset()


def test_show_verify_path(s3: Store, run: str) -> None:
    shown = s3.cli("show", run)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{run}  (alias healthy)"
    assert "best" in next(line for line in lines if "epoch=2.ckpt " in line).split()
    assert "best.ckpt  copy  epoch=2.ckpt  ok" in shown.stdout
    assert "last" in next(line for line in lines if line.strip().startswith("last.ckpt")).split()

    doc = json.loads(s3.cli("show", "--json", run).stdout)
    (alias,) = doc["folders"][0]["aliases"]
    assert (alias["path"], alias["target"], alias["kind"], alias["status"]) == (
        f"{run}/best.ckpt",
        f"{run}/epoch=2.ckpt",
        "copy",
        "ok",
    )
    sizes = {c["name"]: c["size"] for c in doc["folders"][0]["checkpoints"]}
    assert sizes == {**{f"epoch={i}.ckpt": 100 + i for i in range(4)}, "last.ckpt": 103}

    verified = s3.cli("verify", run)
    assert verified.returncode == 0
    assert verified.stdout == f"ok      {run}/best.ckpt -> epoch=2.ckpt (copy, val_loss=0.3, min, epoch 2)\n"

    for arg in (run, f"{run}/best.ckpt", f"{run}/best.ckpt.bestlink.json"):
        path = s3.cli("path", arg)
        assert (path.returncode, path.stdout, path.stderr) == (0, f"{run}/epoch=2.ckpt\n", ""), arg


def test_verify_and_repair(s3: Store, run: str) -> None:
    s3.fs().rm_file(f"{run}/best.ckpt")
    verified = s3.cli("verify", run)
    assert verified.returncode == 1
    assert f"FAILED  {run}/best.ckpt: missing: best.ckpt does not exist (its record names epoch=2.ckpt)" in (
        verified.stdout
    )
    assert (s3.cli("path", run).returncode, s3.cli("path", run).stdout) == (1, "")

    repaired = s3.cli("repair", run)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"repaired  {run}/best.ckpt -> epoch=2.ckpt (copy)" in repaired.stdout
    assert s3.fs().cat_file(f"{run}/best.ckpt") == bytes([2]) * 102
    assert s3.cli("verify", run).returncode == 0


def test_recursive_and_a_damaged_record(s3: Store, run: str) -> None:
    bucket = run.split("/")[2]
    fs = s3.fs()
    other = f"s3://{bucket}/deep/other"
    fs.pipe_file(f"{other}/epoch=0.ckpt", b"x")
    fs.pipe_file(f"{other}/best.ckpt", b"x")
    fs.pipe_file(f"{other}/best.ckpt.bestlink.json", b"\xff\xfe not UTF-8")

    shown = s3.cli("show", "-r", f"s3://{bucket}")
    assert shown.returncode == 0, shown.stderr
    assert f"s3://{bucket}/deep/other  (1 of 1 alias needs attention)" in shown.stdout
    assert f"{run}  (alias healthy)" in shown.stdout

    verified = s3.cli("verify", "-r", f"s3://{bucket}")
    assert verified.returncode == 1
    assert f"FAILED  {other}/best.ckpt: unreadable record: " in verified.stdout
    assert "best.ckpt.bestlink.json" in verified.stdout.split(f"FAILED  {other}/best.ckpt")[1]
    assert f"ok      {run}/best.ckpt -> epoch=2.ckpt" in verified.stdout
    assert verified.stderr == "verify: 1 of 2 aliases needs attention\n"


def test_credentials_from_fsspec_configuration(s3: Store, run: str) -> None:
    env = {k: None for k in s3.env}
    env.update(
        FSSPEC_S3_ENDPOINT_URL=s3.proxy.url,
        FSSPEC_S3_KEY="testing",
        FSSPEC_S3_SECRET="testing",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=s3.env["AWS_CONFIG_FILE"],
        AWS_SHARED_CREDENTIALS_FILE=s3.env["AWS_SHARED_CREDENTIALS_FILE"],
        AWS_DEFAULT_REGION="us-east-1",
    )
    with s3.proxy.counting() as requests:
        result = cli("path", run, env=env)
    assert (result.returncode, result.stdout) == (0, f"{run}/epoch=2.ckpt\n"), result.stderr
    assert requests  # through the proxy: the endpoint came from FSSPEC_S3_ENDPOINT_URL


def test_not_a_folder(s3: Store, run: str) -> None:
    for command in ("show", "verify", "repair"):
        result = s3.cli(command, f"{run}/nothing-here")
        assert (result.returncode, result.stdout) == (2, ""), command
        assert "is not a directory" in result.stderr


def test_watch(s3: Store, run: str) -> None:
    with s3.proxy.counting() as requests:
        w = watch(f"{run}/best.ckpt", "--json", "--count", "1", "--interval", "0.05", env=s3.env)
        w.err.until("watch: following")
        with s3.proxy.counting() as idle:
            while sum(r.op == "HeadObject" for r in s3.proxy.requests()[-20:]) < 20:
                assert w.proc.poll() is None, w.err.pending()
                time.sleep(0.01)  # a pause, not a measure: the watch shares the CPU
        s3.fs().pipe_file(f"{run}/epoch=4.ckpt", b"new")
        linker = BestLinker(f"{run}/best.ckpt", mode="min", storage_options=s3.options)
        linker.load_state_dict({"best_score": 0.3, "best_path": f"{run}/epoch=2.ckpt"}, mirror=True)
        assert linker.update(0.1, f"{run}/epoch=4.ckpt")
        event = json.loads(w.out.next() or "")
        assert w.wait() == 0
    w.stop()
    assert (event["target"], event["score"], event["kind"]) == (f"{run}/epoch=4.ckpt", 0.1, "copy")
    ops = [r.op for r in requests]
    assert "ListObjectsV2" not in ops and not any(op.startswith("GetBucket") for op in ops)  # never lists
    assert {r.op for r in idle} <= {"HeadObject"}  # between bests: one HEAD of the record per look


def test_a_record_naming_a_relative_target_is_refused_and_the_message_shows_it_as_recorded(
    s3: Store, run: str, tmp_path: Path
) -> None:
    fs = s3.fs()
    record = json.loads(fs.cat_file(f"{run}/best.ckpt.bestlink.json"))
    fs.pipe_file(
        f"{run}/best.ckpt.bestlink.json", json.dumps({**record, "target": "../elsewhere/epoch=2.ckpt"}).encode()
    )
    verified = s3.cli("verify", run, cwd=tmp_path)  # a relative name: in a bucket, no folder of this machine's
    assert verified.returncode == 1
    said = verified.stdout + verified.stderr
    assert "its record names ../elsewhere/epoch=2.ckpt, outside the alias's folder" in said, said
    assert str(tmp_path) not in said
