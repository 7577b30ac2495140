"""What only Azure Blob does (the contract every store keeps is ``test_object_stores.py``).

azurite-blob (npm package ``azurite``; .ci/run installs it) runs on 127.0.0.1 for this module,
behind the counting proxy of ``tests/_object_store.py``. Nothing reaches Azure: the account is
azurite's development account, its endpoint the proxy, and azurite runs without telemetry.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests._object_store import Store, serve

from lightning_bestlink import AliasWriteError, BestLinker, read_record

pytestmark = pytest.mark.azure


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with serve("azure", tmp_path_factory.mktemp("azure")) as store:
        yield store


@pytest.fixture
def run(azure: Store) -> Iterator[str]:
    yield f"{azure.bucket()}/run"
    azure.proxy.reset()


def test_az_and_abfs_urls_name_one_alias(azure: Store, run: str) -> None:
    a = azure.put(f"{run}/a.ckpt", b"a" * 100)
    linker = BestLinker(f"az://{run.split('://')[1]}/best.ckpt", storage_options=azure.options)
    assert linker.link_path == f"{run}/best.ckpt", "az:// and abfs:// are one store; the alias is named abfs://"
    assert linker.update(0.5, a)


def _copy_status(status: str) -> object:
    """A proxy rewrite: Copy Blob answers ``x-ms-copy-status: <status>`` (azurite copies at once)."""

    def rewrite(op: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if op != "CopyBlob":
            return headers
        return [(k, status if k.lower() == "x-ms-copy-status" else v) for k, v in headers]

    return rewrite


def test_a_copy_azure_runs_in_the_background_is_waited_for(azure: Store, run: str) -> None:
    """Copy Blob may answer 202 with ``x-ms-copy-status: pending``; the alias is complete only once
    the blob's properties say ``success``: the update returns after that, not before."""
    a = azure.put(f"{run}/a.ckpt", b"a" * 5000)
    linker = BestLinker(f"{run}/best.ckpt", storage_options=azure.options)
    azure.proxy.rewrite = _copy_status("pending")  # type: ignore[assignment]
    with azure.proxy.counting() as seen:
        assert linker.update(0.5, a)
    after = [r.op for r in seen][[r.op for r in seen].index("CopyBlob") :]
    assert after == ["CopyBlob", "GetBlobProperties"], "one look at the copy's status, which azurite says is done"
    assert azure.fs().cat_file(f"{run}/best.ckpt") == b"a" * 5000
    assert linker.verify().ok


def test_a_copy_azure_reports_failed_keeps_the_old_alias_and_record(azure: Store, run: str) -> None:
    old = azure.put(f"{run}/old.ckpt", b"o" * 1000)
    new = azure.put(f"{run}/new.ckpt", b"n" * 2000)
    linker = BestLinker(f"{run}/best.ckpt", storage_options=azure.options)
    assert linker.update(1.0, old)
    azure.proxy.rewrite = _copy_status("failed")  # type: ignore[assignment]
    with pytest.raises(AliasWriteError, match="Azure did not complete the copy") as raised:
        linker.update(0.5, new)
    azure.proxy.reset()
    assert "unchanged" in str(raised.value)
    record = read_record(f"{run}/best.ckpt", storage_options=azure.options)
    assert record is not None and record["target"] == old, "the record was put back"
    assert linker.best_path == old
