"""The best alias on Azure Blob Storage (adlfs), against a real Azure Blob server on 127.0.0.1.

azurite-blob (npm package ``azurite``; .ci/run installs it) is started once for this module and
stopped at its end; every request goes through the counting proxy of ``tests/_object_store.py``,
which also injects failures. Nothing reaches Azure: the account is azurite's development
account, its endpoint the proxy (in ``storage_options`` and ``AZURE_STORAGE_CONNECTION_STRING``
for clients made without options), and azurite runs without telemetry.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests._object_store import (
    AZURE,
    AZURITE_ACCOUNT,
    Azurite,
    CountingProxy,
    azurite_binary,
    azurite_connection_string,
    check_cli_on,
    fail,
    make_run,
    need,
    need_module,
    summarize,
)

adlfs = need_module("adlfs", 'pip install "lightning-bestlink[azure]"')

from lightning_bestlink import AliasConflictError, AliasWriteError, BestLinker, read_record  # noqa: E402

pytestmark = [
    pytest.mark.azure,
    # aiohttp's advice on the test's own 8 MiB uploads (the Azure SDK sends them as bytes)
    pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning"),
]

MiB = 2**20
CKPT_SIZE = 8 * MiB  # the checkpoint size the request/byte counts are stated for (as for S3 and GCS)
_HIDDEN = (
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_ID",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_TENANT_ID",
    "AZURE_STORAGE_ANON",
)


@dataclass
class Blob:
    proxy: CountingProxy
    options: dict[str, Any]  # for linkers made in this process
    env: dict[str, str | None]  # what a user exports for a command run in a subprocess (None: unset)

    def fs(self) -> Any:
        """A client of its own (not the instance the linker shares through fsspec's cache)."""
        return adlfs.AzureBlobFileSystem(skip_instance_cache=True, **self.options)


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Blob]:
    binary = need(azurite_binary(), "azurite-blob", "npm install azurite, or run .ci/run")
    server = Azurite(binary, tmp_path_factory.mktemp("azurite"))
    proxy = CountingProxy(server.port, AZURE)
    connection = azurite_connection_string(proxy.url)
    env: dict[str, str | None] = {name: None for name in _HIDDEN}
    env["AZURE_STORAGE_CONNECTION_STRING"] = connection  # adlfs's account when none is given (Lightning's)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        adlfs.AzureBlobFileSystem.clear_instance_cache()
        try:
            yield Blob(proxy, {"connection_string": connection}, env)
            # every client the linkers (and Lightning) got from fsspec talked to the local proxy only
            clients = [fs.service_client.url for fs in list(adlfs.AzureBlobFileSystem._cache.values())]
            assert all(url.startswith(f"{proxy.url}/{AZURITE_ACCOUNT}") for url in clients), clients
        finally:
            adlfs.AzureBlobFileSystem.clear_instance_cache()
            proxy.stop()
            server.stop()


@pytest.fixture
def container(azure: Blob) -> Iterator[str]:
    name = f"bestlink-{uuid.uuid4().hex[:12]}"
    azure.fs().mkdir(name)
    yield name
    azure.proxy.reset()


def put(azure: Blob, url: str, data: bytes) -> str:
    azure.fs().pipe_file(url, data)
    return url


def etag(azure: Blob, url: str) -> str:
    fs = azure.fs()
    fs.invalidate_cache()
    return str(fs.info(url)["etag"])


def quick_retries(linker: BestLinker, tries: int) -> None:
    """The Azure SDK tries a failed request 4 times, 15 s, 18 s and 24 s apart: ``tries`` tries, no waits."""
    policy = linker.storage.fs.service_client._config.retry_policy  # type: ignore[attr-defined]
    policy.total_retries = policy.status_retries = policy.connect_retries = policy.read_retries = tries - 1
    policy.initial_backoff = policy.increment_base = policy.random_jitter_range = 0


# --- the alias follows the best, by server-side copy -----------------------------------


def test_alias_follows_the_best_by_one_server_side_copy(azure: Blob, container: str, record_counts: Any) -> None:
    run = f"abfs://{container}/run"
    a = put(azure, f"{run}/epoch=0.ckpt", os.urandom(CKPT_SIZE))
    b = put(azure, f"{run}/epoch=1.ckpt", os.urandom(CKPT_SIZE))
    c = put(azure, f"{run}/epoch=2.ckpt", os.urandom(CKPT_SIZE))
    linker = BestLinker(f"az://{container}/run/best.ckpt", mode="min", storage_options=azure.options)
    assert linker.link_path == f"{run}/best.ckpt", "az:// and abfs:// are one store; the alias is named abfs://"

    with azure.proxy.counting() as first:
        assert linker.update(1.0, a, extra={"epoch": 0})
    with azure.proxy.counting() as second:
        assert linker.update(0.5, b, extra={"epoch": 1})
    with azure.proxy.counting() as worse:
        assert not linker.update(0.7, c)

    assert worse == [], "a worse score must not touch the store"
    record = f"{container}/run/best.ckpt.bestlink.json"
    for seen in (first, second):
        stats = summarize(seen)
        assert stats["by_op"].get("CopyBlob") == 1, stats
        copy = next(r for r in seen if r.op == "CopyBlob")
        assert copy.obj == f"{container}/run/best.ckpt" and copy.status == 202
        # the only bodies on the wire are the small JSON record and XML answers
        assert stats["body_up"] + stats["body_down"] < 16 * 1024, stats
        assert stats["bytes_up"] + stats["bytes_down"] < 64 * 1024 < CKPT_SIZE // 100, stats
        assert all(r.body_up < 64 * 1024 and r.body_down < 64 * 1024 for r in seen)
        assert {r.obj for r in seen if r.op in ("PutBlob", "PutBlock", "GetBlob")} == {record}
        assert not [r for r in seen if r.status is None or r.status >= 500]
    record_counts({"first update": summarize(first), "later update": summarize(second)})

    assert azure.fs().cat_file(f"{run}/best.ckpt") == azure.fs().cat_file(b)
    assert linker.best_score == 0.5 and linker.best_path == b
    assert linker.link_kind == "copy"
    assert linker.verify().ok
    saved = read_record(f"{run}/best.ckpt", storage_options=azure.options)
    assert saved is not None
    assert saved["target"] == b and saved["score"] == 0.5 and saved["extra"] == {"epoch": 1}
    assert saved["alias_id"] == f"{CKPT_SIZE};etag={etag(azure, f'{run}/best.ckpt')}"


# --- failures, reruns, foreign blobs ---------------------------------------------------


def _two_bests(azure: Blob, container: str) -> tuple[BestLinker, str, str, str]:
    run = f"abfs://{container}/run"
    old = put(azure, f"{run}/old.ckpt", b"old" * 1000)
    new = put(azure, f"{run}/new.ckpt", b"new" * 2000)
    linker = BestLinker(f"{run}/best.ckpt", mode="min", storage_options=azure.options)
    assert linker.update(1.0, old)
    return linker, old, new, f"{run}/best.ckpt"


def test_server_error_on_the_copy_keeps_the_old_alias_and_record(azure: Blob, container: str) -> None:
    linker, old, new, alias = _two_bests(azure, container)
    before = etag(azure, alias)
    quick_retries(linker, 2)
    azure.proxy.fault = fail("CopyBlob", 500)
    with azure.proxy.counting() as seen, pytest.raises(AliasWriteError) as raised:
        linker.update(0.5, new)
    azure.proxy.reset()
    assert isinstance(raised.value, OSError)
    assert "unchanged" in str(raised.value) and alias in str(raised.value)
    assert [r.status for r in seen if r.op == "CopyBlob"] == [500, 500], "two tries, both refused"
    assert [r.op for r in seen][-1] == "PutBlob", "the record is put back after the failed copy"

    assert etag(azure, alias) == before
    assert azure.fs().cat_file(alias) == b"old" * 1000
    assert linker.best_score == 1.0 and linker.best_path == old
    record = read_record(alias, storage_options=azure.options)
    assert record is not None and record["target"] == old and record["score"] == 1.0
    assert linker.verify().ok
    assert linker.update(0.5, new), "the store recovers: the next update goes through"
    assert azure.fs().cat_file(alias) == b"new" * 2000


def test_server_going_away_mid_update_keeps_the_old_alias(azure: Blob, container: str) -> None:
    linker, _old, new, alias = _two_bests(azure, container)
    before = etag(azure, alias)
    quick_retries(linker, 2)

    def going_away(op: str, path: str) -> str | None:
        if op != "CopyBlob":
            return None
        azure.proxy.down = True  # from the copy on, every connection is cut unanswered
        return "drop"

    azure.proxy.fault = going_away
    with azure.proxy.counting() as seen, pytest.raises(AliasWriteError) as raised:
        linker.update(0.5, new)
    azure.proxy.reset()  # the server is back
    assert [r.op for r in seen if r.status is None][:2] == ["CopyBlob", "CopyBlob"], "the SDK retried the cut"
    assert "unchanged" in str(raised.value)
    assert etag(azure, alias) == before
    assert azure.fs().cat_file(alias) == b"old" * 1000
    # the record could not be put back while the server was away: it names the new target and
    # lists the old alias as the one it replaced, so the alias is still ours
    record = read_record(alias, storage_options=azure.options)
    assert record is not None and record["target"] == new
    assert linker.update(0.5, new)
    assert azure.fs().cat_file(alias) == b"new" * 2000
    assert linker.verify().ok


def test_a_new_linker_recognises_its_own_alias(azure: Blob, container: str) -> None:
    run = f"abfs://{container}/run"
    a = put(azure, f"{run}/a.ckpt", b"a" * 5000)
    b = put(azure, f"{run}/b.ckpt", b"b" * 7000)
    assert BestLinker(f"{run}/best.ckpt", mode="max", storage_options=azure.options).update(0.8, a)

    rebuilt = BestLinker.from_record(f"{run}/best.ckpt", storage_options=azure.options)
    assert rebuilt.best_score == 0.8 and rebuilt.best_path == a and rebuilt.mode == "max"
    assert rebuilt.verify().ok

    rerun = BestLinker(f"{run}/best.ckpt", mode="max", storage_options=azure.options)
    assert rerun.update(0.1, b), "a fresh linker starts with no best and may replace its own alias"
    assert azure.fs().cat_file(f"{run}/best.ckpt") == b"b" * 7000


def test_a_foreign_blob_at_the_alias_is_left_alone(azure: Blob, container: str) -> None:
    run = f"abfs://{container}/run"
    a = put(azure, f"{run}/a.ckpt", b"a" * 5000)
    put(azure, f"{run}/best.ckpt", b"someone else's model")
    before = etag(azure, f"{run}/best.ckpt")
    linker = BestLinker(f"{run}/best.ckpt", storage_options=azure.options)
    with azure.proxy.counting() as seen, pytest.raises(AliasConflictError):
        linker.update(0.1, a)
    assert not {"PutBlob", "PutBlock", "PutBlockList", "CopyBlob", "DeleteBlob"} & {r.op for r in seen}
    assert azure.fs().cat_file(f"{run}/best.ckpt") == b"someone else's model"
    assert etag(azure, f"{run}/best.ckpt") == before
    assert not azure.fs().exists(f"{run}/best.ckpt.bestlink.json")


def test_the_alias_is_known_by_its_etag(azure: Blob, container: str) -> None:
    """New bytes of the same size at the alias, written by anyone else, make it foreign."""
    linker, _old, new, alias = _two_bests(azure, container)
    assert linker.verify().ok
    azure.fs().pipe_file(alias, b"N" * 3000)  # the same size as the alias (old.ckpt), someone else's bytes
    assert linker.verify().status == "foreign"
    with pytest.raises(AliasConflictError):
        BestLinker(alias, mode="min", storage_options=azure.options).update(0.1, new)
    assert azure.fs().cat_file(alias) == b"N" * 3000


def test_a_cached_listing_never_hides_the_alias(azure: Blob, container: str) -> None:
    """adlfs answers ``info()`` from a cached listing of the folder, and drops only the entry
    itself when told to forget a path: the storage drops the folder's listing too."""
    run = f"abfs://{container}/run"
    a = put(azure, f"{run}/a.ckpt", b"a" * 5000)
    linker = BestLinker(f"{run}/best.ckpt", storage_options=azure.options)
    fs = linker.storage.fs  # type: ignore[attr-defined]  # the instance fsspec hands to everyone
    fs.ls(f"{container}/run", detail=True)  # listed (by Lightning, the command line, ...) before the alias exists
    assert linker.update(1.0, a)
    record = read_record(f"{run}/best.ckpt", storage_options=azure.options)
    assert record is not None and record["alias_id"] == f"5000;etag={etag(azure, f'{run}/best.ckpt')}"
    assert linker.verify().ok

    fs.ls(f"{container}/run", detail=True)  # listed with our alias in it ...
    azure.fs().pipe_file(f"{run}/best.ckpt", b"x" * 5000)  # ... which someone else then replaces
    assert linker.verify().status == "foreign"


def test_many_writers_on_one_alias_are_refused_here(azure: Blob, container: str) -> None:
    """``shared=True`` needs writers that exclude each other: an object store has no such lock."""
    with pytest.raises(ValueError, match="shared=True needs a filesystem with file locks"):
        BestLinker(f"abfs://{container}/run/best.ckpt", shared=True, storage_options=azure.options)


# --- the Trainer adapter ---------------------------------------------------------------


@pytest.mark.lightning
def test_trainer_adapter_on_azure(azure: Blob, container: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from tests._lit import make_module, trainer

    from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest

    dirpath = f"abfs://{container}/ckpts"
    ckpt = ModelCheckpointWithLinkBest(dirpath=dirpath, monitor="val_loss", save_top_k=1, save_best=True)
    t = trainer(pl, tmp_path, [ckpt], max_epochs=4)
    with azure.proxy.counting() as seen:
        t.fit(make_module(pl, [3.0, 1.0, 2.0, 0.5]))
    alias = f"{dirpath}/best.ckpt"
    assert ckpt.best_linker is not None and ckpt.best_linker.link_path == alias
    assert ckpt.best_model_path.startswith(f"{dirpath}/epoch=3")
    assert azure.fs().cat_file(alias) == azure.fs().cat_file(ckpt.best_model_path)
    copies = [r for r in seen if r.op == "CopyBlob"]
    assert [r.obj for r in copies] == [f"{container}/ckpts/best.ckpt"] * 3  # epochs 0, 1 and 3 were best
    assert not [r for r in seen if r.op == "GetBlob" and r.obj and r.obj.endswith(".ckpt")]
    assert ckpt.best_linker.verify().ok


# --- the command line ------------------------------------------------------------------


def test_command_line_on_abfs_urls(azure: Blob, container: str) -> None:
    """The account from the environment only (``AZURE_STORAGE_CONNECTION_STRING``), as a user exports it."""
    run = make_run(azure.fs(), f"abfs://{container}/run", azure.options)
    with azure.proxy.counting() as seen:
        check_cli_on(run, azure.env, azure.fs())
    assert {r.op for r in seen} >= {"GetBlobProperties", "CopyBlob"}, "the commands went through the proxy"
