"""The best alias on an S3-compatible object store, against a real server.

moto's server runs on 127.0.0.1 (started and stopped here); every request goes through
a counting proxy in front of it, which also injects failures. No real AWS endpoint is
ever contacted: the credentials are dummies, the endpoint is set explicitly and in
``AWS_ENDPOINT_URL``, the instance-metadata lookup is disabled and the user's AWS
config files are hidden.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")  # moto[server]: moto with flask and werkzeug

from tests._object_store import CountingProxy, MotoS3, Request, fail, summarize  # noqa: E402

from lightning_bestlink import AliasConflictError, AliasWriteError, BestLinker, read_record  # noqa: E402

pytestmark = pytest.mark.s3

MiB = 2**20
CKPT_SIZE = 8 * MiB  # the checkpoint size the request/byte counts are stated for


@dataclass
class S3:
    proxy: CountingProxy
    options: dict[str, Any]

    def fs(self, **extra: Any) -> Any:
        """A client of its own (not the instance the linker shares through fsspec's cache)."""
        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options, **extra)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    server = MotoS3()
    proxy = CountingProxy(server.port)
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", proxy.url)  # also for clients made without options (Lightning's)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield S3(proxy, {"endpoint_url": proxy.url, "key": "testing", "secret": "testing"})
            # every client the linkers (and Lightning) got from fsspec talked to the local proxy only
            clients = [fs._s3 for fs in list(s3fs.S3FileSystem._cache.values()) if fs._s3 is not None]
            assert clients, "no S3 client was made"
            assert {c.meta.endpoint_url for c in clients} == {proxy.url}
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            proxy.stop()
            server.stop()


@pytest.fixture
def bucket(s3: S3) -> Iterator[str]:
    name = f"bestlink-{uuid.uuid4().hex[:12]}"
    s3.fs().mkdir(name)
    yield name
    s3.proxy.reset()


def put(s3: S3, url: str, data: bytes) -> str:
    s3.fs().pipe_file(url, data)
    return url


def etag(s3: S3, url: str) -> str:
    return str(s3.fs().info(url)["ETag"])


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def ops(requests: list[Request]) -> list[str]:
    return [r.op for r in requests]


# --- the alias follows the best, by server-side copy ---------------------------------


def test_alias_follows_the_best_by_one_server_side_copy(s3: S3, bucket: str) -> None:
    run = f"s3://{bucket}/run"
    a = put(s3, f"{run}/epoch=0.ckpt", os.urandom(CKPT_SIZE))
    b = put(s3, f"{run}/epoch=1.ckpt", os.urandom(CKPT_SIZE))
    c = put(s3, f"{run}/epoch=2.ckpt", os.urandom(CKPT_SIZE))
    linker = BestLinker(f"{run}/best.ckpt", mode="min", storage_options=s3.options)
    assert linker.link_path == f"{run}/best.ckpt"

    with s3.proxy.counting() as first:
        assert linker.update(1.0, a, extra={"epoch": 0})
    with s3.proxy.counting() as second:
        assert linker.update(0.5, b, extra={"epoch": 1})
    with s3.proxy.counting() as worse:
        assert not linker.update(0.7, c)

    assert worse == [], "a worse score must not touch the store"
    for seen in (first, second):
        stats = summarize(seen)
        print(f"alias update, {CKPT_SIZE // MiB} MiB checkpoint: {stats}")
        assert stats["by_op"].get("CopyObject") == 1
        assert not {"UploadPart", "UploadPartCopy", "CreateMultipartUpload"} & set(stats["by_op"])
        # 404s only on the first update (no record and no alias yet); 206: the record is read in a bounded range
        assert {r.status for r in seen} == ({200, 404} if seen is first else {200, 206})
        # the only bodies on the wire are the small JSON record and XML answers
        assert stats["body_up"] + stats["body_down"] < 16 * 1024
        assert stats["bytes_up"] + stats["bytes_down"] < 64 * 1024 < CKPT_SIZE // 100
        # nothing read or written at the checkpoint's size
        assert all(r.body_up < 64 * 1024 and r.body_down < 64 * 1024 for r in seen)
        body_paths = {r.path for r in seen if r.op in ("PutObject", "GetObject")}
        assert body_paths == {f"/{bucket}/run/best.ckpt.bestlink.json"}, "only the record is read or written"
    copy = next(r for r in second if r.op == "CopyObject")
    assert copy.path == f"/{bucket}/run/best.ckpt"

    assert etag(s3, f"{run}/best.ckpt") == etag(s3, b)
    assert s3.fs().cat_file(f"{run}/best.ckpt") == s3.fs().cat_file(b)
    assert linker.best_score == 0.5 and linker.best_path == b
    assert linker.link_kind == "copy"
    assert linker.verify().ok
    record = read_record(f"{run}/best.ckpt", storage_options=s3.options)
    assert record is not None
    assert record["target"] == b and record["score"] == 0.5 and record["extra"] == {"epoch": 1}


def test_missing_target_writes_nothing(s3: S3, bucket: str) -> None:
    run = f"s3://{bucket}/run"
    linker = BestLinker(f"{run}/best.ckpt", storage_options=s3.options)
    with s3.proxy.counting() as seen, pytest.raises(FileNotFoundError, match="does not exist"):
        linker.update(0.1, f"{run}/not-yet-saved.ckpt")
    assert not {"PutObject", "CopyObject", "DeleteObject"} & set(ops(seen))
    assert not s3.fs().exists(f"{run}/best.ckpt")
    assert not s3.fs().exists(f"{run}/best.ckpt.bestlink.json")
    assert linker.best_score is None and linker.best_path is None


def test_reader_never_sees_a_partial_or_missing_alias(s3: S3, bucket: str) -> None:
    run = f"s3://{bucket}/run"
    blobs = [os.urandom(MiB + i * 4096) for i in range(4)]
    paths = [put(s3, f"{run}/{i}.ckpt", blob) for i, blob in enumerate(blobs)]
    known = {md5(blob) for blob in blobs}
    alias = f"{run}/best.ckpt"
    linker = BestLinker(alias, mode="min", storage_options=s3.options)
    assert linker.update(100.0, paths[0])

    reader_fs = s3.fs()
    stop = threading.Event()
    seen: list[str] = []
    bad: list[str] = []

    def read() -> None:
        while not stop.is_set():
            try:
                data = reader_fs.cat_file(alias)
            except FileNotFoundError:
                bad.append("missing")
                continue
            digest = md5(data)
            seen.append(digest)
            if digest not in known:
                bad.append(f"{len(data)} bytes matching no checkpoint")

    thread = threading.Thread(target=read)
    thread.start()
    try:
        # bounded by counts, not by time: a loaded machine must not make the test pass vacuously
        deadline = time.monotonic() + 60.0
        score = 99.0
        updates = 0
        while time.monotonic() < deadline and (updates < 10 or len(seen) < 10 or len(set(seen)) < 2):
            assert linker.update(score, paths[updates % len(paths)])  # always improving (mode="min")
            score -= 1
            updates += 1
            if updates > 400:
                break
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not bad, bad[:5]
    assert updates >= 10 and len(seen) >= 10
    assert len(set(seen)) >= 2, "the reader should have seen the alias change"


# --- failures ------------------------------------------------------------------------


def _two_bests(s3: S3, bucket: str, options: dict[str, Any]) -> tuple[BestLinker, str, str, str]:
    run = f"s3://{bucket}/run"
    old = put(s3, f"{run}/old.ckpt", b"old" * 1000)
    new = put(s3, f"{run}/new.ckpt", b"new" * 2000)
    linker = BestLinker(f"{run}/best.ckpt", mode="min", storage_options=options)
    assert linker.update(1.0, old)
    return linker, old, new, f"{run}/best.ckpt"


def _assert_unchanged(s3: S3, linker: BestLinker, old: str, alias: str) -> None:
    assert etag(s3, alias) == etag(s3, old)
    assert s3.fs().cat_file(alias) == s3.fs().cat_file(old)
    assert linker.best_score == 1.0 and linker.best_path == old


def test_server_error_on_the_copy_keeps_the_old_alias(s3: S3, bucket: str) -> None:
    options = {**s3.options, "config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 2}}}
    linker, old, new, alias = _two_bests(s3, bucket, options)
    s3.proxy.fault = fail("CopyObject", 500)
    with s3.proxy.counting() as seen, pytest.raises(AliasWriteError) as info:
        linker.update(0.5, new)
    s3.proxy.fault = None
    err = info.value
    assert isinstance(err, OSError)
    assert "failed" in str(err) and "unchanged" in str(err) and alias in str(err)
    copies = [r.status for r in seen if r.op == "CopyObject"]
    assert copies == [500, 500], "botocore tries twice (total_max_attempts=2), then gives up"
    assert ops(seen)[-1] == "PutObject", "the record is put back after the failed copy"
    _assert_unchanged(s3, linker, old, alias)
    # the record was put back: it still names the old target, and verify agrees
    record = read_record(alias, storage_options=s3.options)
    assert record is not None and record["target"] == old
    assert linker.verify().ok
    # the store recovers: the next update goes through
    assert linker.update(0.5, new)
    assert etag(s3, alias) == etag(s3, new)


def test_a_transient_server_error_is_retried(s3: S3, bucket: str) -> None:
    linker, _old, new, alias = _two_bests(s3, bucket, s3.options)
    s3.proxy.fault = fail("CopyObject", 503, times=1)
    with s3.proxy.counting() as seen:
        assert linker.update(0.5, new)
    assert [r.status for r in seen if r.op == "CopyObject"] == [503, 200]
    assert etag(s3, alias) == etag(s3, new)


_NO_RETRIES = {"config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 1}}}


def _going_away(s3: S3, *, copy_lands: bool) -> Any:
    def fault(op: str, path: str) -> str | None:
        if op != "CopyObject":
            return None
        s3.proxy.down = True  # from the copy request on, every connection is cut unanswered
        return None if copy_lands else "drop"

    return fault


def test_server_going_away_mid_update_keeps_the_old_alias(s3: S3, bucket: str) -> None:
    linker, old, new, alias = _two_bests(s3, bucket, {**s3.options, **_NO_RETRIES})
    linker.storage.fs.retries = 2  # type: ignore[attr-defined]  # s3fs's own retries: keep the test short
    s3.proxy.fault = _going_away(s3, copy_lands=False)
    with s3.proxy.counting() as seen, pytest.raises(AliasWriteError) as info:
        linker.update(0.5, new)
    s3.proxy.fault, s3.proxy.down = None, False  # the server is back
    after = seen[ops(seen).index("CopyObject") :]
    assert [r.op for r in after][:2] == ["CopyObject", "CopyObject"], "s3fs retried the cut connection"
    assert all(r.status is None for r in after)
    assert "failed" in str(info.value) and "unchanged" in str(info.value)
    assert "ConnectionClosedError" in str(info.value)
    _assert_unchanged(s3, linker, old, alias)
    # the record could not be put back while the server was away: it names the new
    # target (complete: it was checked) and lists the old alias as the one it replaced,
    # so the alias is still recognised as ours and the next update goes through
    record = read_record(alias, storage_options=s3.options)
    assert record is not None and record["target"] == new
    assert linker.update(0.5, new)
    assert etag(s3, alias) == etag(s3, new)
    assert linker.verify().ok


def test_server_going_away_after_the_copy_landed(s3: S3, bucket: str) -> None:
    linker, _old, new, alias = _two_bests(s3, bucket, {**s3.options, **_NO_RETRIES})
    linker.storage.fs.retries = 1  # type: ignore[attr-defined]
    s3.proxy.fault = _going_away(s3, copy_lands=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert linker.update(0.5, new)
    finally:
        s3.proxy.fault, s3.proxy.down = None, False
    assert [w for w in caught if "could not" in str(w.message)], "the record's weaker ownership is reported"
    # the copy made it: the alias is the new best, and the linker says so
    assert etag(s3, alias) == etag(s3, new)
    assert linker.best_score == 0.5 and linker.best_path == new
    assert BestLinker(alias, storage_options=s3.options).update(0.1, new), "a rerun still owns the alias"


def test_server_away_before_the_update_is_an_os_error(s3: S3, bucket: str) -> None:
    linker, old, new, alias = _two_bests(s3, bucket, {**s3.options, **_NO_RETRIES})
    linker.storage.fs.retries = 1  # type: ignore[attr-defined]
    s3.proxy.down = True
    with s3.proxy.counting() as seen, pytest.raises(OSError, match="failed") as info:
        linker.update(0.5, new)
    s3.proxy.down = False
    assert not {"PutObject", "CopyObject"} & {r.op for r in seen if r.status is not None}
    assert info.type is not AliasConflictError
    _assert_unchanged(s3, linker, old, alias)


# --- a rerun, a foreign object, caches -------------------------------------------------


def test_a_new_linker_recognises_its_own_alias(s3: S3, bucket: str) -> None:
    run = f"s3://{bucket}/run"
    a = put(s3, f"{run}/a.ckpt", b"a" * 5000)
    b = put(s3, f"{run}/b.ckpt", b"b" * 7000)
    first = BestLinker(f"{run}/best.ckpt", mode="max", storage_options=s3.options)
    assert first.update(0.8, a)
    del first

    rebuilt = BestLinker.from_record(f"{run}/best.ckpt", storage_options=s3.options)
    assert rebuilt.best_score == 0.8 and rebuilt.best_path == a and rebuilt.mode == "max"
    assert rebuilt.verify().ok

    rerun = BestLinker(f"{run}/best.ckpt", mode="max", storage_options=s3.options)
    assert rerun.update(0.1, b), "a fresh linker starts with no best and may replace its own alias"
    assert etag(s3, f"{run}/best.ckpt") == etag(s3, b)
    record = read_record(f"{run}/best.ckpt", storage_options=s3.options)
    assert record is not None and record["target"] == b


def test_a_foreign_object_at_the_alias_is_left_alone(s3: S3, bucket: str) -> None:
    run = f"s3://{bucket}/run"
    a = put(s3, f"{run}/a.ckpt", b"a" * 5000)
    put(s3, f"{run}/best.ckpt", b"someone else's model")
    linker = BestLinker(f"{run}/best.ckpt", storage_options=s3.options)
    with s3.proxy.counting() as seen, pytest.raises(AliasConflictError):
        linker.update(0.1, a)
    assert not {"PutObject", "CopyObject", "DeleteObject"} & set(ops(seen))
    assert s3.fs().cat_file(f"{run}/best.ckpt") == b"someone else's model"


def test_listing_caches_never_describe_a_replaced_alias(s3: S3, bucket: str) -> None:
    run = f"s3://{bucket}/run"
    small = put(s3, f"{run}/small.ckpt", b"s" * 1000)
    large = put(s3, f"{run}/large.ckpt", b"L" * 3000)
    linker = BestLinker(f"{run}/best.ckpt", storage_options=s3.options)
    fs = linker.storage.fs  # type: ignore[attr-defined]  # the instance fsspec hands to everyone
    assert linker.update(1.0, small)
    fs.ls(f"{bucket}/run", detail=True)  # a listing cached with the old alias in it
    assert linker.update(0.5, large)
    assert fs.info(f"{run}/best.ckpt")["size"] == 3000, "the copy invalidated the cached listing"

    # someone else replaces the alias; our cached listing still says 3000 bytes ...
    fs.ls(f"{bucket}/run", detail=True)
    s3.fs().pipe_file(f"{run}/best.ckpt", b"x" * 10)
    assert fs.info(f"{run}/best.ckpt")["size"] == 3000
    # ... but the storage asks the server, so the change is noticed
    assert not linker.storage.looks_like_copy(linker.link_path, large)
    report = linker.verify()
    assert report.status == "foreign", report


# --- the Trainer adapter ---------------------------------------------------------------


@pytest.mark.lightning
def test_trainer_adapter_on_s3(s3: S3, bucket: str, tmp_path: Any) -> None:
    pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from tests._lit import make_module, trainer

    from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest

    ckpt = ModelCheckpointWithLinkBest(dirpath=f"s3://{bucket}/ckpts", monitor="val_loss", save_top_k=1, save_best=True)
    t = trainer(pl, tmp_path, [ckpt], max_epochs=4)
    with s3.proxy.counting() as seen:
        t.fit(make_module(pl, [3.0, 1.0, 2.0, 0.5]))
    alias = f"s3://{bucket}/ckpts/best.ckpt"
    assert ckpt.best_linker is not None and ckpt.best_linker.link_path == alias
    assert etag(s3, alias) == etag(s3, ckpt.best_model_path)
    copies = [r for r in seen if r.op == "CopyObject"]
    assert [r.path for r in copies] == [f"/{bucket}/ckpts/best.ckpt"] * 3  # epochs 0, 1 and 3 were best
    assert not [r for r in seen if r.op == "GetObject" and r.path.endswith(".ckpt")]
    assert ckpt.best_linker.verify().ok
