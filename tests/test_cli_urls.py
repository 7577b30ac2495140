"""Every command on fsspec URLs (``s3://bucket/run``), against moto's S3 server on 127.0.0.1.

The command runs in a subprocess with credentials and endpoint in its environment only,
as a user sets them (``AWS_*``, or fsspec's ``FSSPEC_S3_*``); every request goes through
the counting proxy. The user's AWS configuration is hidden and no real endpoint is contacted.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")  # moto[server]: moto with flask and werkzeug

from tests._cli import cli, watch  # noqa: E402
from tests._object_store import CountingProxy, MotoS3  # noqa: E402

from lightning_bestlink import BestLinker  # noqa: E402

pytestmark = pytest.mark.s3

_HIDDEN = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


@dataclass
class S3:
    proxy: CountingProxy
    env: dict[str, str | None]  # what the user exports for the command
    options: dict[str, Any]  # the same, for linkers made in this process

    def fs(self) -> Any:
        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = MotoS3()
    proxy = CountingProxy(server.port)
    empty = str(tmp_path_factory.mktemp("aws") / "none")
    env: dict[str, str | None] = {name: None for name in _HIDDEN if not name.startswith("FSSPEC")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=proxy.url,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=empty,
        AWS_SHARED_CREDENTIALS_FILE=empty,
    )
    try:
        yield S3(proxy, env, {"endpoint_url": proxy.url, "key": "testing", "secret": "testing"})
    finally:
        proxy.stop()
        server.stop()


@pytest.fixture
def run(s3: S3) -> str:
    """``s3://<new bucket>/run`` with epoch=0..3.ckpt (the best: epoch=2) and its best.ckpt."""
    bucket = f"bestlink-{uuid.uuid4().hex[:12]}"
    fs = s3.fs()
    fs.mkdir(bucket)
    url = f"s3://{bucket}/run"
    linker = BestLinker(f"{url}/best.ckpt", mode="min", storage_options=s3.options)
    for epoch, score in enumerate([0.9, 0.5, 0.3, 0.4]):
        fs.pipe_file(f"{url}/epoch={epoch}.ckpt", bytes([epoch]) * (100 + epoch))
        linker.update(score, f"{url}/epoch={epoch}.ckpt", extra={"monitor": "val_loss", "epoch": epoch})
    fs.pipe_file(f"{url}/last.ckpt", b"l" * 103)
    return url


def test_show_verify_path(s3: S3, run: str) -> None:
    shown = cli("show", run, env=s3.env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{run}  (alias healthy)"
    assert "best" in next(line for line in lines if "epoch=2.ckpt " in line).split()
    assert "best.ckpt  copy  epoch=2.ckpt  ok" in shown.stdout
    assert "last" in next(line for line in lines if line.strip().startswith("last.ckpt")).split()

    doc = json.loads(cli("show", "--json", run, env=s3.env).stdout)
    (alias,) = doc["folders"][0]["aliases"]
    assert (alias["path"], alias["target"], alias["kind"], alias["status"]) == (
        f"{run}/best.ckpt",
        f"{run}/epoch=2.ckpt",
        "copy",
        "ok",
    )
    sizes = {c["name"]: c["size"] for c in doc["folders"][0]["checkpoints"]}
    assert sizes == {**{f"epoch={i}.ckpt": 100 + i for i in range(4)}, "last.ckpt": 103}

    verified = cli("verify", run, env=s3.env)
    assert verified.returncode == 0
    assert verified.stdout == f"ok      {run}/best.ckpt -> epoch=2.ckpt (copy, val_loss=0.3, min, epoch 2)\n"

    for arg in (run, f"{run}/best.ckpt", f"{run}/best.ckpt.bestlink.json"):
        path = cli("path", arg, env=s3.env)
        assert (path.returncode, path.stdout, path.stderr) == (0, f"{run}/epoch=2.ckpt\n", ""), arg


def test_verify_and_repair(s3: S3, run: str) -> None:
    s3.fs().rm_file(f"{run}/best.ckpt")
    verified = cli("verify", run, env=s3.env)
    assert verified.returncode == 1
    assert f"FAILED  {run}/best.ckpt: missing: best.ckpt does not exist (its record names epoch=2.ckpt)" in (
        verified.stdout
    )
    assert (cli("path", run, env=s3.env).returncode, cli("path", run, env=s3.env).stdout) == (1, "")

    repaired = cli("repair", run, env=s3.env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"repaired  {run}/best.ckpt -> epoch=2.ckpt (copy)" in repaired.stdout
    assert s3.fs().cat_file(f"{run}/best.ckpt") == bytes([2]) * 102
    assert cli("verify", run, env=s3.env).returncode == 0


def test_recursive_and_a_damaged_record(s3: S3, run: str) -> None:
    bucket = run.split("/")[2]
    fs = s3.fs()
    other = f"s3://{bucket}/deep/other"
    fs.pipe_file(f"{other}/epoch=0.ckpt", b"x")
    fs.pipe_file(f"{other}/best.ckpt", b"x")
    fs.pipe_file(f"{other}/best.ckpt.bestlink.json", b"\xff\xfe not UTF-8")

    shown = cli("show", "-r", f"s3://{bucket}", env=s3.env)
    assert shown.returncode == 0, shown.stderr
    assert f"s3://{bucket}/deep/other  (1 of 1 alias needs attention)" in shown.stdout
    assert f"{run}  (alias healthy)" in shown.stdout

    verified = cli("verify", "-r", f"s3://{bucket}", env=s3.env)
    assert verified.returncode == 1
    assert f"FAILED  {other}/best.ckpt: unreadable record: " in verified.stdout
    assert "best.ckpt.bestlink.json" in verified.stdout.split(f"FAILED  {other}/best.ckpt")[1]
    assert f"ok      {run}/best.ckpt -> epoch=2.ckpt" in verified.stdout
    assert verified.stderr == "verify: 1 of 2 aliases needs attention\n"


def test_credentials_from_fsspec_configuration(s3: S3, run: str) -> None:
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


def test_not_a_folder(s3: S3, run: str) -> None:
    for command in ("show", "verify", "repair"):
        result = cli(command, f"{run}/nothing-here", env=s3.env)
        assert (result.returncode, result.stdout) == (2, ""), command
        assert "is not a directory" in result.stderr


def test_watch(s3: S3, run: str) -> None:
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
