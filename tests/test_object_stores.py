"""The best alias on an object store: one contract, run on S3, Google Cloud Storage and Azure Blob.

Each store is a real server on 127.0.0.1 (moto, fake-gcs-server, azurite), started for this module
and stopped at its end, every request going through the counting proxy of ``tests/_object_store.py``
(which also injects failures). Nothing reaches a cloud: endpoints and credentials point at the proxy.
What only one store does is tested in ``test_s3.py``, ``test_gcs.py`` and ``test_azure.py``; many
writers on one alias (``shared=True``) in ``test_bucket_sweep.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests._object_store import MiB, Request, Store, check_cli_on, fail, kill_at_copy, make_run, summarize

from lightning_bestlink import AliasConflictError, AliasWriteError, BestLinker, read_record
from lightning_bestlink._storage.base import record_stamp

pytestmark = pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")  # aiohttp, 8 MiB
CKPT_SIZE = 8 * MiB  # the checkpoint size the request/byte counts are stated for


@pytest.fixture
def run(store: Store) -> Iterator[str]:
    """``<scheme>://<a new bucket>/run``."""
    yield f"{store.bucket()}/run"
    store.proxy.reset()


def ops(requests: list[Request]) -> list[str]:
    return [r.op for r in requests]


def record_text(store: Store, alias: str) -> str:
    return str(store.fs().cat_file(alias + ".bestlink.json").decode())


# --- the alias follows the best, by one server-side copy --------------------------------------


def test_alias_follows_the_best_by_one_server_side_copy(store: Store, run: str, record_counts: Any) -> None:
    a, b, c = (store.put(f"{run}/epoch={i}.ckpt", os.urandom(CKPT_SIZE)) for i in range(3))
    linker = store.linker(f"{run}/best.ckpt", mode="min")
    assert linker.link_path == f"{run}/best.ckpt"

    with store.proxy.counting() as first:
        assert linker.update(1.0, a, extra={"epoch": 0})
    with store.proxy.counting() as second:
        assert linker.update(0.5, b, extra={"epoch": 1})
    with store.proxy.counting() as worse:
        assert not linker.update(0.7, c)

    assert worse == [], "a worse score must not touch the store"
    record = f"{run.split('://')[1]}/best.ckpt.bestlink.json"
    for seen in (first, second):
        stats = summarize(seen)
        assert stats["by_op"].get(store.ops.copy) == 1, stats
        copy = next(r for r in seen if r.op == store.ops.copy)
        assert copy.obj == f"{run.split('://')[1]}/best.ckpt" and copy.status == store.ops.copy_status
        assert stats["by_op"].get(store.ops.put) == 1, "the record is written once per update"
        # the only bodies on the wire are the small JSON record and the servers' answers
        assert stats["body_up"] + stats["body_down"] < 16 * 1024, stats
        assert stats["bytes_up"] + stats["bytes_down"] < 64 * 1024 < CKPT_SIZE // 100, stats
        assert all(r.body_up < 64 * 1024 and r.body_down < 64 * 1024 for r in seen)
        assert {r.obj for r in seen if r.op in (store.ops.put, store.ops.get)} == {record}
        assert not [r for r in seen if r.status is None or r.status >= 500]
    record_counts({"store": store.kind, "first update": summarize(first), "later update": summarize(second)})

    assert store.fs().cat_file(f"{run}/best.ckpt") == store.fs().cat_file(b)
    assert linker.best_score == 0.5 and linker.best_path == b and linker.link_kind == "copy"
    assert linker.verify().ok
    saved = read_record(f"{run}/best.ckpt", storage_options=store.options)
    assert saved is not None
    assert saved["target"] == b and saved["score"] == 0.5 and saved["extra"] == {"epoch": 1}
    # the alias is known by its stamp: the digest of the record it was made for
    assert store.stamp(f"{run}/best.ckpt") == record_stamp(record_text(store, f"{run}/best.ckpt"))


def test_missing_target_writes_nothing(store: Store, run: str) -> None:
    linker = store.linker(f"{run}/best.ckpt")
    with store.proxy.counting() as seen, pytest.raises(FileNotFoundError, match="does not exist"):
        linker.update(0.1, f"{run}/not-yet-saved.ckpt")
    assert not store.ops.writes & set(ops(seen))
    assert not store.fs().exists(f"{run}/best.ckpt") and not store.fs().exists(f"{run}/best.ckpt.bestlink.json")
    assert linker.best_score is None and linker.best_path is None


# --- failures ------------------------------------------------------------------------------------


def _two_bests(store: Store, run: str, tries: int | None = None) -> tuple[BestLinker, str, str, str]:
    old = store.put(f"{run}/old.ckpt", b"old" * 1000)
    new = store.put(f"{run}/new.ckpt", b"new" * 2000)
    linker = store.linker(f"{run}/best.ckpt", mode="min", tries=tries)
    assert linker.update(1.0, old)
    return linker, old, new, f"{run}/best.ckpt"


def _assert_unchanged(store: Store, linker: BestLinker, old: str, alias: str, version: str) -> None:
    assert store.info(alias)["version"] == version, "the alias object was not written"
    assert store.fs().cat_file(alias) == store.fs().cat_file(old)
    assert linker.best_score == 1.0 and linker.best_path == old


def test_server_error_on_the_copy_keeps_the_old_alias_and_record(store: Store, run: str) -> None:
    linker, old, new, alias = _two_bests(store, run, tries=2)
    before = store.info(alias)["version"]
    store.proxy.fault = fail(store.ops.copy, 500)
    with store.proxy.counting() as seen, pytest.raises(AliasWriteError) as raised:
        linker.update(0.5, new)
    store.proxy.reset()
    assert isinstance(raised.value, OSError)
    assert "unchanged" in str(raised.value) and alias in str(raised.value)
    assert [r.status for r in seen if r.op == store.ops.copy] == [500] * store.tries(2), "the client's tries"
    assert ops(seen)[-1] == store.ops.put, "the record is put back after the failed copy"
    _assert_unchanged(store, linker, old, alias, before)
    record = read_record(alias, storage_options=store.options)
    assert record is not None and record["target"] == old and record["score"] == 1.0
    assert linker.verify().ok, "the record put back is the one the alias was stamped for"
    assert linker.update(0.5, new), "the store recovers: the next update goes through"
    assert store.fs().cat_file(alias) == b"new" * 2000


def test_server_going_away_mid_update_keeps_the_old_alias(store: Store, run: str) -> None:
    linker, old, new, alias = _two_bests(store, run, tries=2)
    before = store.info(alias)["version"]

    def going_away(op: str, path: str) -> str | None:
        if op != store.ops.copy:
            return None
        store.proxy.down = True  # from the copy on, every connection is cut unanswered
        return "drop"

    store.proxy.fault = going_away
    with store.proxy.counting() as seen, pytest.raises(AliasWriteError) as raised:
        linker.update(0.5, new)
    store.proxy.reset()  # the server is back
    # the copy is the first request left unanswered (whether the client tries it again depends on how the
    # cut reaches it: gcsfs on a loaded machine sometimes gives up at once, which is not this library's doing)
    assert ops([r for r in seen if r.status is None])[0] == store.ops.copy
    assert "unchanged" in str(raised.value)
    _assert_unchanged(store, linker, old, alias, before)
    # the record could not be put back while the server was away: it names the new target, and
    # the alias is stamped for the record before it, which verify reports
    record = read_record(alias, storage_options=store.options)
    assert record is not None and record["target"] == new
    report = BestLinker.from_record(alias, storage_options=store.options).verify()
    assert report.status == "mismatch" and "the copy never made" in report.detail, report
    assert linker.update(0.5, new), "the alias is still ours: the next update goes through"
    assert store.fs().cat_file(alias) == b"new" * 2000
    assert linker.verify().ok


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_writer_killed_between_the_record_and_the_copy_is_reported_and_repaired(store: Store, run: str) -> None:
    """The record is written first, then the copy: killed in between, the alias is still the old
    checkpoint's copy (here of the same size as the new one), and verify must not call it ok."""
    old = store.put(f"{run}/old.ckpt", b"o" * 3000)
    new = store.put(f"{run}/new.ckpt", b"n" * 3000)
    alias = f"{run}/best.ckpt"
    assert store.linker(alias, mode="min").update(1.0, old)
    kill_at_copy(store, alias, new, 0.5, mode="min")  # between the record's write and the alias's copy
    record = read_record(alias, storage_options=store.options)
    assert record is not None and record["target"] == new, "the child was killed after the record's write"
    assert store.fs().cat_file(alias) == b"o" * 3000

    checked = BestLinker.from_record(alias, storage_options=store.options)
    report = checked.verify()
    assert report.status == "mismatch", report
    assert "the record was written and the copy never made" in report.detail
    assert checked.repair().ok
    assert store.fs().cat_file(alias) == b"n" * 3000
    assert store.stamp(alias) == record_stamp(record_text(store, alias))


# --- reruns, foreign objects, caches ------------------------------------------------------------


def test_a_new_linker_recognises_its_own_alias(store: Store, run: str) -> None:
    a = store.put(f"{run}/a.ckpt", b"a" * 5000)
    b = store.put(f"{run}/b.ckpt", b"b" * 7000)
    assert store.linker(f"{run}/best.ckpt", mode="max").update(0.8, a)

    rebuilt = BestLinker.from_record(f"{run}/best.ckpt", storage_options=store.options)
    assert rebuilt.best_score == 0.8 and rebuilt.best_path == a and rebuilt.mode == "max"
    assert rebuilt.verify().ok

    rerun = store.linker(f"{run}/best.ckpt", mode="max")
    assert rerun.update(0.1, b), "a fresh linker starts with no best and may replace its own alias"
    assert store.fs().cat_file(f"{run}/best.ckpt") == b"b" * 7000
    record = read_record(f"{run}/best.ckpt", storage_options=store.options)
    assert record is not None and record["target"] == b


def test_a_foreign_object_at_the_alias_is_left_alone(store: Store, run: str) -> None:
    a = store.put(f"{run}/a.ckpt", b"a" * 5000)
    store.put(f"{run}/best.ckpt", b"someone else's model")
    before = store.info(f"{run}/best.ckpt")["version"]
    linker = store.linker(f"{run}/best.ckpt")
    with store.proxy.counting() as seen, pytest.raises(AliasConflictError):
        linker.update(0.1, a)
    assert not store.ops.writes & set(ops(seen))
    assert store.fs().cat_file(f"{run}/best.ckpt") == b"someone else's model"
    assert store.info(f"{run}/best.ckpt")["version"] == before
    assert not store.fs().exists(f"{run}/best.ckpt.bestlink.json")


def test_a_copy_of_another_runs_alias_is_left_alone(store: Store, run: str) -> None:
    """A user seeds a run with another run's alias, copied with its metadata (the store's own copy
    keeps it, as ``aws s3 cp`` does): a stamp counts only on the key it was made for."""
    store.linker(f"{run}/a/best.ckpt").update(0.5, store.put(f"{run}/a/x.ckpt", b"a" * 5000))
    store.fs().cp_file(f"{run}/a/best.ckpt", f"{run}/b/best.ckpt")
    assert store.stamp(f"{run}/b/best.ckpt") == store.stamp(f"{run}/a/best.ckpt") is not None
    with pytest.raises(AliasConflictError):
        store.linker(f"{run}/b/best.ckpt").update(0.1, store.put(f"{run}/b/y.ckpt", b"b" * 6000))
    assert store.fs().cat_file(f"{run}/b/best.ckpt") == b"a" * 5000


@pytest.mark.parametrize("shared", [False, True])
def test_an_empty_record_is_refused_as_no_record(store: Store, run: str, shared: bool) -> None:
    """A range read of an empty object fails on every store (416): it is read as empty, not as an error."""
    _linker, _old, new, alias = _two_bests(store, run)
    store.put(f"{alias}.bestlink.json", b"")
    with pytest.raises(AliasConflictError, match=r"best\.ckpt\.bestlink\.json.* not a lightning-bestlink record"):
        store.linker(alias, mode="min", shared=shared).update(0.1, new)
    assert store.fs().cat_file(f"{alias}.bestlink.json") == b""


def test_new_bytes_of_the_same_size_at_the_alias_make_it_foreign(store: Store, run: str) -> None:
    linker, _old, new, alias = _two_bests(store, run)
    assert linker.verify().ok
    store.put(alias, b"N" * 3000)  # the size of the alias (old.ckpt), someone else's bytes, no stamp
    assert linker.verify().status == "foreign"
    with pytest.raises(AliasConflictError):
        store.linker(alias, mode="min").update(0.1, new)
    assert store.fs().cat_file(alias) == b"N" * 3000


def test_cached_listings_never_describe_a_replaced_alias(store: Store, run: str) -> None:
    """s3fs, gcsfs and adlfs answer ``info()`` from cached listings of the folder (adlfs forgets
    only the entry itself when told to forget a path): the storage asks the server."""
    small = store.put(f"{run}/small.ckpt", b"s" * 1000)
    large = store.put(f"{run}/large.ckpt", b"L" * 3000)
    linker = store.linker(f"{run}/best.ckpt")
    fs = linker.storage.fs  # type: ignore[attr-defined]  # the instance fsspec hands to everyone
    folder = run.split("://", 1)[1]
    fs.ls(folder, detail=True)  # listed (by Lightning, the command line, ...) before the alias exists
    assert linker.update(1.0, small)
    fs.ls(folder, detail=True)  # a listing cached with the old alias in it
    assert linker.update(0.5, large)
    assert fs.info(f"{run}/best.ckpt")["size"] == 3000, "the copy invalidated the cached listing"
    assert linker.verify().ok

    fs.ls(folder, detail=True)  # listed with our alias in it ...
    store.put(f"{run}/best.ckpt", b"x" * 10)  # ... which someone else then replaces
    assert fs.info(f"{run}/best.ckpt")["size"] == 3000, "the cached listing still describes our alias"
    assert not linker.storage.looks_like_copy(linker.link_path, large)
    assert linker.verify().status == "foreign"


# --- the Trainer adapter, the command line -------------------------------------------------------


@pytest.mark.lightning
def test_trainer_adapter(store: Store, run: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from tests._lit import make_module, trainer

    from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest

    ckpt = ModelCheckpointWithLinkBest(dirpath=run, monitor="val_loss", save_top_k=1, save_best=True)
    t = trainer(pl, tmp_path, [ckpt], max_epochs=4)
    with store.proxy.counting() as seen:
        t.fit(make_module(pl, [3.0, 1.0, 2.0, 0.5]))
    alias = f"{run}/best.ckpt"
    assert ckpt.best_linker is not None and ckpt.best_linker.link_path == alias
    assert ckpt.best_model_path.startswith(f"{run}/epoch=3")
    assert store.fs().cat_file(alias) == store.fs().cat_file(ckpt.best_model_path)
    copies = [r.obj for r in seen if r.op == store.ops.copy]
    assert copies == [f"{run.split('://')[1]}/best.ckpt"] * 3  # epochs 0, 1 and 3 were best
    assert not [r for r in seen if r.op == store.ops.get and r.obj and r.obj.endswith(".ckpt")]
    assert ckpt.best_linker.verify().ok


@pytest.mark.lightning
def test_trials_in_a_bucket_share_one_sweep_best_that_names_each_run_by_its_folder(
    store: Store, run: str, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from tests._lit import make_module, trainer

    from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest

    for trial, losses in (("lr=0.1", [3.0, 2.0]), ("lr=0.01", [4.0, 1.0]), ("lr=0.001", [5.0, 1.5])):
        ckpt = ModelCheckpointWithLinkBest(
            dirpath=f"{run}/{trial}", monitor="val_loss", save_best=True, sweep_best=f"{run}/best.ckpt"
        )
        trainer(pl, tmp_path / trial, [ckpt], max_epochs=len(losses)).fit(make_module(pl, losses))
    record = read_record(f"{run}/best.ckpt", storage_options=store.options)
    assert record is not None and record["score"] == 1.0
    assert record["target"] == f"{run}/lr=0.01/epoch=1-step=4.ckpt" and record["extra"]["run"] == "lr=0.01"
    assert store.linker(f"{run}/best.ckpt", shared=True).verify().ok


def test_command_line(store: Store, run: str) -> None:
    """``show``, ``verify``, ``path``, ``repair`` in subprocesses, the endpoint and credentials from
    the environment only, as a user exports them."""
    made = make_run(store.fs(), run, store.options)
    with store.proxy.counting() as seen:
        check_cli_on(store, made)
    assert {store.ops.head, store.ops.copy} <= set(ops(seen)), "the commands went through the proxy"
