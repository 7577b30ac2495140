"""What only S3 does (the contract every store keeps is ``test_object_stores.py``).

moto's server runs on 127.0.0.1 (started and stopped here); every request goes through a counting
proxy in front of it, which also injects failures. No real AWS endpoint is ever contacted: the
credentials are dummies, the endpoint is set explicitly and in ``AWS_ENDPOINT_URL``, the
instance-metadata lookup is disabled and the user's AWS config files are hidden.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests._object_store import MiB, Store, fail, serve

from lightning_bestlink import BestLinker, read_record
from lightning_bestlink._storage.base import record_stamp

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with serve("s3", tmp_path_factory.mktemp("s3")) as store:
        yield store


@pytest.fixture
def run(s3: Store) -> Iterator[str]:
    yield f"{s3.bucket()}/run"
    s3.proxy.reset()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_reader_never_sees_a_partial_or_missing_alias(s3: Store, run: str) -> None:
    blobs = [os.urandom(MiB + i * 4096) for i in range(4)]
    paths = [s3.put(f"{run}/{i}.ckpt", blob) for i, blob in enumerate(blobs)]
    known = {md5(blob) for blob in blobs}
    alias = f"{run}/best.ckpt"
    linker = s3.linker(alias, mode="min")
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


def _two_bests(s3: Store, run: str, tries: int) -> tuple[BestLinker, str, str, str]:
    old = s3.put(f"{run}/old.ckpt", b"old" * 1000)
    new = s3.put(f"{run}/new.ckpt", b"new" * 2000)
    linker = s3.linker(f"{run}/best.ckpt", mode="min", tries=tries)
    assert linker.update(1.0, old)
    return linker, old, new, f"{run}/best.ckpt"


def test_a_transient_server_error_is_retried(s3: Store, run: str) -> None:
    linker, _old, new, alias = _two_bests(s3, run, tries=3)
    s3.proxy.fault = fail("CopyObject", 503, times=1)
    with s3.proxy.counting() as seen:
        assert linker.update(0.5, new)
    assert [r.status for r in seen if r.op == "CopyObject"] == [503, 200]
    assert s3.fs().cat_file(alias) == b"new" * 2000


def test_server_going_away_right_after_the_copy(s3: Store, run: str) -> None:
    """Once the copy has landed the update is complete: the alias carries the stamp of its record,
    so nothing is left to write (0.1 wrote the record again with the copy's identity, and warned
    when the server was gone by then)."""
    linker, _old, new, alias = _two_bests(s3, run, tries=1)

    def away_after(op: str, path: str) -> None:
        if op == "CopyObject":
            s3.proxy.down = True  # this copy is answered; every request after it is cut
        return None

    s3.proxy.fault = away_after
    try:
        with s3.proxy.counting() as seen:
            assert linker.update(0.5, new)
    finally:
        s3.proxy.reset()
    assert [r.op for r in seen][-1] == "CopyObject", "nothing after the copy"
    assert s3.fs().cat_file(alias) == b"new" * 2000
    assert linker.best_score == 0.5 and linker.verify().ok
    assert s3.stamp(alias) == record_stamp(s3.fs().cat_file(alias + ".bestlink.json").decode())
    assert BestLinker(alias, storage_options=s3.options).update(0.1, new), "a rerun owns the alias"


def test_server_away_before_the_update_is_an_os_error(s3: Store, run: str) -> None:
    linker, old, new, alias = _two_bests(s3, run, tries=1)
    s3.proxy.down = True
    with s3.proxy.counting() as seen, pytest.raises(OSError, match="failed") as info:
        linker.update(0.5, new)
    s3.proxy.down = False
    assert not {"PutObject", "CopyObject"} & {r.op for r in seen if r.status is not None}
    assert "ConnectionClosedError" in str(info.value) or "EndpointConnectionError" in str(info.value)
    assert s3.fs().cat_file(alias) == b"old" * 1000
    assert linker.best_score == 1.0 and linker.best_path == old


def test_a_copy_s3_refuses_as_too_large_is_made_in_parts(s3: Store, run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above 5 GB one CopyObject is refused (InvalidRequest): the parts are copied on the server
    (UploadPartCopy), the stamp given when the upload starts. Shown on 8 MiB, the limit lowered."""
    from lightning_bestlink._storage import _objects

    monkeypatch.setattr(_objects, "S3_COPY_LIMIT", MiB)
    big = s3.put(f"{run}/big.ckpt", os.urandom(8 * MiB))
    linker = s3.linker(f"{run}/best.ckpt", tries=1)
    s3.proxy.fault = fail("CopyObject", 400, times=1)  # what S3 answers above 5 GB
    with s3.proxy.counting() as seen:
        assert linker.update(0.5, big)
    assert [r.op for r in seen if "Upload" in r.op or r.op == "CopyObject"] == [
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPartCopy",
        "CompleteMultipartUpload",
    ]
    assert s3.fs().cat_file(f"{run}/best.ckpt") == s3.fs().cat_file(big)
    assert s3.stamp(f"{run}/best.ckpt") == record_stamp(s3.fs().cat_file(f"{run}/best.ckpt.bestlink.json").decode())
    assert linker.verify().ok


def test_a_conflicting_conditional_write_is_tried_again(s3: Store, run: str) -> None:
    """409 ConditionalRequestConflict: another conditional write of the record was in flight; AWS
    says to send it again (412 would mean it lost)."""
    a = s3.put(f"{run}/a.ckpt", b"a" * 100)
    linker = s3.linker(f"{run}/best.ckpt", shared=True)
    s3.proxy.fault = fail("PutObject", 409, times=2)
    with s3.proxy.counting() as seen:
        assert linker.update(0.5, a)
    assert [r.status for r in seen if r.op == "PutObject"] == [409, 409, 200]
    assert linker.verify().ok


def test_botocore_without_conditional_puts_refuses_a_shared_alias(run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_bestlink._storage import _objects

    monkeypatch.setattr(_objects, "_S3_PUT_CONDITIONS", False)  # what botocore before 1.35.69 is
    with pytest.raises(ValueError, match=r"needs conditional writes: botocore .* cannot send If-Match") as raised:
        BestLinker(f"{run}/best.ckpt", shared=True)
    assert "1.35.69 or later" in str(raised.value)
    assert BestLinker(f"{run}/best.ckpt").storage.stamps, "one writer per alias needs no conditional write"


def test_the_record_written_by_the_update_is_the_one_read_back(s3: Store, run: str) -> None:
    """The stamp is a digest of the record's text as written; read_record parses the same text."""
    a = s3.put(f"{run}/a.ckpt", b"a" * 100)
    assert s3.linker(f"{run}/best.ckpt").update(0.25, a, extra={"epoch": 3})
    record: dict[str, Any] | None = read_record(f"{run}/best.ckpt", storage_options=s3.options)
    assert record is not None and record["extra"] == {"epoch": 3} and record["alias_id"] is None


def test_the_same_checkpoint_copied_again_within_a_second_is_not_mistaken_for_the_old_alias(
    s3: Store, run: str
) -> None:
    """An S3 identity is size, ETag (the bytes' MD5) and LastModified (to the second): a second
    copy of the same checkpoint within that second has the identity of the copy it replaced, the
    record's ``previous_alias_id``, which alone would read as an update killed before its copy.
    The stamp says which record the copy was made for."""
    a = s3.put(f"{run}/a.ckpt", b"a" * 1000)
    linker = s3.linker(f"{run}/best.ckpt", mode="min")
    for score in (0.5, 0.4, 0.3):  # the same checkpoint, scored better each time (a re-evaluation)
        assert linker.update(score, a)
    record = read_record(f"{run}/best.ckpt", storage_options=s3.options)
    assert record is not None and record["score"] == 0.3
    assert linker.verify().ok
    assert BestLinker.from_record(f"{run}/best.ckpt", storage_options=s3.options).verify().ok
