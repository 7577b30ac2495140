"""One best for a sweep that shares only a bucket: ``shared=True`` on S3, GCS and Azure Blob.

The writers agree on the record by conditional writes and the alias, a copy stamped with the
record it was made for, catches up (``src/lightning_bestlink/_swap.py``). Shown here on each store
(a real server on 127.0.0.1 behind the counting proxy of ``tests/_object_store.py``):

- what a shared update costs, in requests;
- each race a writer can lose, and copies finishing in either order, step by step;
- writers interleaved at random, request by request, in one process (every store), and racing
  processes (GCS and Azure: moto checks S3's conditions and writes in two steps without a lock,
  so two racing writes can both pass it there; the real S3 does not);
- a failed, cut or killed writer between its record and its copy: verify says so, the next
  update or ``repair`` completes it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests._object_store import STORES, Store, fail, kill_at_copy, summarize

from lightning_bestlink import AliasConflictError, AliasWriteError, BestLinker, read_record
from lightning_bestlink._storage.base import LostRace, record_stamp

pytestmark = pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")


@pytest.fixture
def sweep(store: Store) -> Iterator[str]:
    """``<scheme>://<a new bucket>/sweep``: the shared alias is ``sweep/best.ckpt``."""
    yield f"{store.bucket()}/sweep"
    store.proxy.reset()


def ckpt(store: Store, sweep: str, trial: int, k: int) -> str:
    """A checkpoint of trial ``trial``; its bytes (fill byte and size) tell which one a read returns."""
    return store.put(f"{sweep}/trial-{trial}/c{k}.ckpt", bytes([10 * trial + k]) * (1000 + 10 * trial + k))


def shared(store: Store, sweep: str, **kwargs: Any) -> BestLinker:
    return store.linker(f"{sweep}/best.ckpt", shared=True, **kwargs)


def agree(store: Store, sweep: str, best: str, score: float) -> None:
    """The end state every run must reach: record, alias bytes and stamp all name ``best``."""
    alias = f"{sweep}/best.ckpt"
    record = read_record(alias, storage_options=store.options)
    assert record is not None and (record["target"], record["score"]) == (best, score)
    assert store.fs().cat_file(alias) == store.fs().cat_file(best), "the alias holds the record's checkpoint"
    text = store.fs().cat_file(alias + ".bestlink.json").decode()
    assert store.stamp(alias) == record_stamp(text), "the alias was made for the record as it is"
    report = shared(store, sweep).verify()
    assert report.ok and report.expected == best, report


# --- what an update costs -------------------------------------------------------------------


def test_request_counts_of_a_shared_alias(store: Store, sweep: str, record_counts: Any) -> None:
    a, b, c = ckpt(store, sweep, 0, 0), ckpt(store, sweep, 1, 0), ckpt(store, sweep, 2, 0)
    one, two = shared(store, sweep), shared(store, sweep)
    with store.proxy.counting() as first:
        assert one.update(0.5, a)
    with store.proxy.counting() as improving:
        assert two.update(0.3, b)
    with store.proxy.counting() as beaten_on_disk:
        assert not one.update(0.4, c)  # better than 0.5, which it knew; worse than 0.3 on disk
    with store.proxy.counting() as known:
        assert not one.update(0.35, c)  # it knows of 0.3 now
    counts = {n: summarize(s) for n, s in [("first", first), ("improving", improving), ("beaten", beaten_on_disk)]}
    record_counts({"store": store.kind, **counts})
    assert [r.op for r in beaten_on_disk] == [store.ops.get], "one small read of the record, nothing else"
    assert known == []
    for seen in (first, improving):
        by_op = summarize(seen)["by_op"]
        assert (by_op[store.ops.put], by_op[store.ops.copy], by_op[store.ops.get]) == (1, 1, 2), by_op
    agree(store, sweep, b, 0.3)


# --- each race, step by step -------------------------------------------------------------------


def written(seen: list[Any], store: Store) -> list[bool]:
    """For each write of the record, whether the store took it (a refused one: 412, or Azure's 409
    BlobAlreadyExists for a record that was to be the first)."""
    return [r.status is not None and r.status < 300 for r in seen if r.op == store.ops.put]


def before(linker: BestLinker, method: str, action: Callable[[], object]) -> list[object]:
    """Run ``action`` (another writer's whole update) just before ``linker``'s storage first calls ``method``."""
    storage = linker.storage
    real = getattr(storage, method)
    done: list[object] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not done:
            done.append(action())
        return real(*args, **kwargs)

    setattr(storage, method, wrapped)
    return done


def test_a_writer_that_loses_the_race_adopts_the_better_best(store: Store, sweep: str) -> None:
    a, b = ckpt(store, sweep, 0, 0), ckpt(store, sweep, 1, 0)
    one, two = shared(store, sweep), shared(store, sweep)
    done = before(one, "swap_text", lambda: two.update(0.2, b))  # two writes first, and better
    with store.proxy.counting() as seen:
        assert not one.update(0.5, a)
    assert done == [True]
    assert written(seen, store) == [True, False], "two's write, then one's refused one"
    assert (one.best_score, one.best_path) == (0.2, b), "one read the record again and adopted two's best"
    agree(store, sweep, b, 0.2)


def test_a_writer_that_loses_the_race_but_is_still_better_writes_again(store: Store, sweep: str) -> None:
    a, b = ckpt(store, sweep, 0, 0), ckpt(store, sweep, 1, 0)
    one, two = shared(store, sweep), shared(store, sweep)
    before(one, "swap_text", lambda: two.update(0.5, b))  # two writes first, but worse
    with store.proxy.counting() as seen:
        assert one.update(0.2, a)
    assert written(seen, store) == [True, False, True]
    agree(store, sweep, a, 0.2)
    assert (two.best_score, two.best_path) == (0.5, b), "two learns of 0.2 when it next offers a better score"


def test_copies_that_finish_in_either_order_converge(store: Store, sweep: str) -> None:
    """one wins the record, then two wins it with a better score and copies; one's copy lands
    last, stale: one reads the record after its copy and copies two's checkpoint."""
    a, b = ckpt(store, sweep, 0, 0), ckpt(store, sweep, 1, 0)
    one, two = shared(store, sweep), shared(store, sweep)
    before(one, "commit_stamped", lambda: two.update(0.2, b))
    with store.proxy.counting() as seen:
        assert one.update(0.5, a), "one's update went through: the alias was its for a moment"
    copies = [r.obj for r in seen if r.op == store.ops.copy]
    alias = f"{sweep.split('://')[1]}/best.ckpt"
    assert copies == [alias] * 3, "two's copy, one's stale copy, one's copy of two's checkpoint"
    assert (one.best_score, one.best_path) == (0.2, b), "one saw two's record after its copy"
    agree(store, sweep, b, 0.2)


def test_a_write_that_landed_although_the_client_was_refused_counts_as_won(store: Store, sweep: str) -> None:
    """The store wrote the record, the answer was lost and the client's retry was refused (412):
    reading the record again shows it is this writer's own."""
    a = ckpt(store, sweep, 0, 0)
    one = shared(store, sweep)
    real = one.storage.swap_text

    def landed_then_refused(path: str, text: str, expect: str | None) -> None:
        real(path, text, expect)
        raise LostRace(17, "the retry of a write that landed")

    one.storage.swap_text = landed_then_refused  # type: ignore[method-assign]
    assert one.update(0.5, a)
    agree(store, sweep, a, 0.5)


# --- writers interleaved at random, in one process -------------------------------------------------


class Baton:
    """Lets one of several threads make a storage call at a time, and picks which one at random
    (seeded) once all are waiting: the same seed gives the same interleaving, whatever the timing."""

    def __init__(self, names: list[str], seed: int) -> None:
        self._cv = threading.Condition()
        self._rng = random.Random(seed)
        self._live, self._waiting = set(names), set[str]()
        self._turn: str | None = None
        self.steps = 0

    def _pick(self) -> None:
        if self._turn is None and self._waiting and self._waiting == self._live:
            self._turn = self._rng.choice(sorted(self._waiting))
            self.steps += 1
            self._cv.notify_all()

    def step(self, me: str) -> None:
        with self._cv:
            self._waiting.add(me)
            self._pick()
            assert self._cv.wait_for(lambda: self._turn == me, timeout=120), "a writer never got its turn"
            self._waiting.discard(me)
            self._turn = None

    def done(self, me: str) -> None:
        with self._cv:
            self._live.discard(me)
            self._pick()


_CALLS = ("read_versioned", "read_text", "swap_text", "inspect", "commit_stamped", "target_type")


@pytest.mark.parametrize("seed", range(2))
def test_writers_interleaved_at_random_end_at_the_best_of_all(store: Store, sweep: str, seed: int) -> None:
    writers, updates = 3, 6
    rng = random.Random(seed)
    paths = {w: [ckpt(store, sweep, w, k) for k in range(3)] for w in range(writers)}
    offers = {
        w: [((updates - i + rng.random()) / updates, rng.choice(paths[w])) for i in range(updates)] for w in paths
    }
    baton = Baton([str(w) for w in range(writers)], seed)
    lost: list[str] = []
    copies: list[str] = []
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        linker, me = shared(store, sweep), str(w)
        storage = linker.storage
        for name in _CALLS:
            real = getattr(storage, name)

            def call(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
                baton.step(me)
                if _name == "commit_stamped":
                    copies.append(me)
                try:
                    return _real(*args, **kwargs)
                except LostRace:
                    lost.append(me)
                    raise

            setattr(storage, name, call)
        try:
            for score, path in offers[w]:
                linker.update(score, path, extra={"trial": w})
        except BaseException as err:
            errors.append(err)
        finally:
            baton.done(me)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    best_score, best = min(offer for w in offers for offer in offers[w])
    agree(store, sweep, best, best_score)
    if seed == 0:  # the interleaving of seed 0 is one where writers lose races and copy others' checkpoints
        assert lost and len(copies) > len(set(copies)), (lost, copies)


# --- racing processes ----------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, logging, os, random, sys, time
    from lightning_bestlink import BestLinker
    alias, options, trial, updates, go = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:6]
    trial, updates, paths = int(trial), int(updates), sys.argv[6:]
    lost = []
    class Count(logging.Handler):
        def emit(self, record):
            if "wrote the record first" in record.getMessage():
                lost.append(1)
    log = logging.getLogger("lightning_bestlink")
    log.setLevel(logging.DEBUG)
    log.addHandler(Count())
    rng = random.Random(trial)
    linker = BestLinker(alias, mode="min", shared=True, storage_options=options)
    print("ready", flush=True)
    while not os.path.exists(go):  # all writers start together
        time.sleep(0.001)
    offered, moved = [], 0
    for i in range(updates):
        score, path = (updates - i + rng.random()) / updates, rng.choice(paths)
        offered.append((score, path))
        moved += linker.update(score, path, extra={"trial": trial, "i": i})
    print(json.dumps({"offered": offered, "moved": moved, "lost": len(lost)}))
    """
)

#: moto checks a conditional write and writes in two steps, without a lock: racing processes can
#: both pass the check (a lost update the real S3 does not allow), so S3 races in one process above
RACING = [p for p in STORES if p.values[0] != "s3"]


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="processes started together through a file")
@pytest.mark.parametrize("store", RACING, indirect=True)
@pytest.mark.parametrize("attempt", range(3))
def test_racing_processes_end_at_the_best_of_all(
    store: Store, sweep: str, attempt: int, tmp_path: Any, record_counts: Any
) -> None:
    writers, updates = 4, 12
    go = tmp_path / "go"
    procs = []
    for trial in range(writers):
        paths = [ckpt(store, sweep, trial, k) for k in range(3)]
        argv = [f"{sweep}/best.ckpt", json.dumps(store.options), str(trial), str(updates), str(go), *paths]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WRITER, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
        )
    for proc in procs:  # every writer has imported everything and waits at the gate
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
    go.touch()
    offered: list[tuple[float, str]] = []
    moved = lost = 0
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        offered += [(score, path) for score, path in result["offered"]]
        moved, lost = moved + result["moved"], lost + result["lost"]
    best_score, best = min(offered)
    agree(store, sweep, best, best_score)
    assert moved > writers, "the writers hardly competed: the test proved little"
    record_counts(
        {"store": store.kind, "writers": writers, "updates_each": updates, "moves": moved, "lost_races": lost}
    )


# --- a writer stopped between its record and its copy ----------------------------------------------


@pytest.mark.parametrize("fault", [500, "drop"], ids=["server-error", "connection-cut"])
def test_a_failed_copy_after_a_won_record_is_completed_by_the_next_update(
    store: Store, sweep: str, fault: int | str
) -> None:
    a, b = ckpt(store, sweep, 0, 0), ckpt(store, sweep, 1, 0)
    assert shared(store, sweep).update(0.5, a)
    one = shared(store, sweep, tries=2)
    store.proxy.fault = fail(store.ops.copy, fault)
    with pytest.raises(AliasWriteError, match=r"names it already \(this update won it\), but the copy failed"):
        one.update(0.2, b)
    store.proxy.reset()
    alias = f"{sweep}/best.ckpt"
    assert store.fs().cat_file(alias) == store.fs().cat_file(a), "the alias is still the previous best"
    report = shared(store, sweep).verify()  # any writer, or the command line, sees what it is
    assert report.status == "mismatch" and "the record was written and the copy never made" in report.detail
    c = ckpt(store, sweep, 0, 1)
    assert not one.update(0.3, c), "not better than its own 0.2 ..."
    agree(store, sweep, b, 0.2)  # ... but the update completed the alias first


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("then", ["repair", "next-writer"])
def test_a_writer_killed_between_its_record_and_its_copy(store: Store, sweep: str, then: str) -> None:
    a, b, c = ckpt(store, sweep, 0, 0), ckpt(store, sweep, 1, 0), ckpt(store, sweep, 2, 0)
    alias = f"{sweep}/best.ckpt"
    assert shared(store, sweep).update(0.5, a)
    kill_at_copy(store, alias, b, 0.2, shared=True)
    record = read_record(alias, storage_options=store.options)
    assert record is not None and record["target"] == b, "killed after winning the record"
    assert store.fs().cat_file(alias) == store.fs().cat_file(a)

    report = shared(store, sweep).verify()
    assert report.status == "mismatch" and "the copy never made" in report.detail, report
    if then == "repair":
        assert BestLinker.from_record(alias, storage_options=store.options).repair().ok
        agree(store, sweep, b, 0.2)
    else:
        assert shared(store, sweep).update(0.1, c)
        agree(store, sweep, c, 0.1)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_repair_never_puts_back_a_worse_best_a_writer_recorded_meanwhile(
    store: Store, sweep: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_bestlink._storage.fsspec import FsspecStorage

    a, b, c = ckpt(store, sweep, 0, 0), ckpt(store, sweep, 1, 0), ckpt(store, sweep, 2, 0)
    alias = f"{sweep}/best.ckpt"
    assert shared(store, sweep).update(0.5, a)
    kill_at_copy(store, alias, b, 0.4, shared=True)  # the record says b, the alias holds a
    repairing = BestLinker.from_record(alias, storage_options=store.options)  # lightning-bestlink repair
    met: list[str] = []

    def and_a_trial_meanwhile(name: str) -> Any:
        real = getattr(FsspecStorage, name)

        def read(self: FsspecStorage, path: str, limit: int) -> Any:
            found = real(self, path, limit)
            if self is repairing.storage and not met:  # the repair has read the record: a trial finds 0.3
                met.append(path)
                assert shared(store, sweep).update(0.3, c)
            return found

        return read

    for name in ("read_text", "read_versioned"):
        monkeypatch.setattr(FsspecStorage, name, and_a_trial_meanwhile(name))
    repairing.repair()
    monkeypatch.undo()
    assert met == [f"{alias}.bestlink.json"]
    agree(store, sweep, c, 0.3)


@pytest.mark.parametrize("its_copy", ["lands last", "fails"])
def test_a_repair_whose_copy_races_a_writer_leaves_that_writers_better_best(
    store: Store, sweep: str, monkeypatch: pytest.MonkeyPatch, its_copy: str
) -> None:
    """Between the repair's record and its copy a trial records 0.3 and copies it: the alias then
    follows the record as it is (a copy landing last is made again), and a failed copy leaves the
    trial's record as it is (nothing put back over it)."""
    from lightning_bestlink._storage.fsspec import FsspecStorage

    a, c = ckpt(store, sweep, 0, 0), ckpt(store, sweep, 2, 0)
    alias = f"{sweep}/best.ckpt"
    assert shared(store, sweep).update(0.5, a)
    store.fs().rm_file(alias)  # the alias lost: a repair is needed
    repairing = BestLinker.from_record(alias, storage_options=store.options)
    real = FsspecStorage.commit_stamped

    def copy_with_a_trial_meanwhile(self: FsspecStorage, *args: Any, **kwargs: Any) -> None:
        if self is repairing.storage:
            monkeypatch.setattr(FsspecStorage, "commit_stamped", real)
            assert shared(store, sweep).update(0.3, c)
            if its_copy == "fails":
                raise OSError(errno.EIO, "injected: the copy failed")
        real(self, *args, **kwargs)

    monkeypatch.setattr(FsspecStorage, "commit_stamped", copy_with_a_trial_meanwhile)
    if its_copy == "fails":
        with pytest.raises(AliasWriteError, match="the record was written first"):
            repairing.repair()
    else:
        assert repairing.repair().ok
    agree(store, sweep, c, 0.3)


# --- what a shared alias refuses ---------------------------------------------------------------------


def test_a_foreign_object_at_the_shared_alias_is_left_alone(store: Store, sweep: str) -> None:
    a = ckpt(store, sweep, 0, 0)
    store.put(f"{sweep}/best.ckpt", b"someone else's model")
    with store.proxy.counting() as seen, pytest.raises(AliasConflictError):
        shared(store, sweep).update(0.5, a)
    assert not store.ops.writes & {r.op for r in seen}, "refused before the record was written"
    assert store.fs().cat_file(f"{sweep}/best.ckpt") == b"someone else's model"


def test_writers_with_another_mode_are_refused(store: Store, sweep: str) -> None:
    a = ckpt(store, sweep, 0, 0)
    assert shared(store, sweep).update(0.5, a)
    with pytest.raises(ValueError, match="mode='min'"):
        shared(store, sweep, mode="max").update(0.9, a)


def test_a_record_naming_a_checkpoint_outside_the_folder_is_not_copied(
    store: Store, sweep: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer's record is input, not authority: the alias never becomes a copy of an
    object outside the sweep's folder, whatever the record says."""
    a = ckpt(store, sweep, 0, 0)
    outside = store.put(f"{sweep.rsplit('/', 1)[0]}/secret.ckpt", b"not a checkpoint of this sweep")
    one, two = shared(store, sweep), shared(store, sweep)

    def hostile() -> None:  # a record written by hand, naming an object outside the folder
        text = store.fs().cat_file(f"{sweep}/best.ckpt.bestlink.json").decode()
        record = json.loads(text) | {"target": outside, "score": 0.01}
        store.put(f"{sweep}/best.ckpt.bestlink.json", json.dumps(record).encode())

    assert two.update(0.6, a)
    before(one, "commit_stamped", hostile)
    with caplog.at_level(logging.WARNING, logger="lightning_bestlink"):
        assert one.update(0.5, a)
    assert "outside the alias's folder: not copied" in caplog.text
    assert store.fs().cat_file(f"{sweep}/best.ckpt") == store.fs().cat_file(a)


# --- the sweep's alias next to the rest of the library ----------------------------------------------


def _saved(store: Store, run: str, k: int) -> str:
    return store.put(f"{run}/c{k}.ckpt", bytes([k]) * (500 + k))


@pytest.mark.parametrize("resumed", [False, True], ids=["same-process", "resumed-trial"])
def test_retention_keeps_what_the_bucket_alias_names(store: Store, sweep: str, resumed: bool) -> None:
    """A trial ranks its own checkpoints by accuracy, the sweep by loss (two metrics): what the
    sweep's alias names is kept by ``Retention(protect=[sweep])`` though the trial's policy would
    delete it, also in a resumed trial whose sweep linker learns the sweep's best from the record."""
    from lightning_bestlink import Retention

    run = f"{sweep}/trial-0"
    own = store.linker(f"{run}/best.ckpt", mode="max")
    sweep_alias = shared(store, sweep)
    retention = Retention(own, keep_best=0, protect=[sweep_alias])
    for k, (loss, acc) in enumerate([(0.5, 0.6), (0.3, 0.5), (0.4, 0.7)]):
        path = _saved(store, run, k)
        own.update(acc, path)
        sweep_alias.update(loss, path)
        retention.saved(path, acc)
    assert not store.fs().exists(f"{run}/c0.ckpt"), "neither alias names c0: deleted"
    if resumed:  # a new process: the trial's linker from its record, the sweep's knows nothing yet
        own = BestLinker.from_record(f"{run}/best.ckpt", storage_options=store.options)
        sweep_alias = shared(store, sweep)
        retention = Retention(own, keep_best=0, protect=[sweep_alias])
    path = _saved(store, run, 3)
    own.update(0.65, path)
    sweep_alias.update(0.45, path)  # not better than the sweep's 0.3 (c1): the resumed linker adopts it
    deleted = retention.saved(path, 0.65)
    assert deleted == [], "c1 (the sweep's), c2 (the trial's) and c3 (the newest) all stay"
    assert store.fs().exists(f"{run}/c1.ckpt")
    agree(store, sweep, f"{run}/c1.ckpt", 0.3)


def test_show_on_a_bucket_sweep_names_the_best_trial(store: Store, sweep: str) -> None:
    from tests._cli import row

    for trial, score in ((0, 0.5), (1, 0.3), (0, 0.4)):
        path = store.put(f"{sweep}/trial-{trial}/epoch={int(score * 10)}.ckpt", bytes([trial]) * 100)
        shared(store, sweep).update(score, path, extra={"run": f"trial-{trial}"})
    proc = store.cli("show", sweep)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == f"{sweep}  (alias healthy)"
    assert row(proc.stdout, "best.ckpt").split() == [
        "best.ckpt",
        "copy",
        "trial-1/epoch=3.ckpt",
        "0.3",
        "(min,",
        "run",
        "trial-1)",
        "ok",
    ]
