# ruff: noqa: F811  (the pkg and cls fixtures come from tests/_lit.py; pytest passes them by name)
"""AsyncCheckpointIO: ``best.ckpt`` follows the best as soon as its background write has finished,
and never names an unwritten or deleted file (every Lightning version has AsyncCheckpointIO).

The checkpoint IO under test writes each file in two halves with a pause between, so a reader
that looks at the wrong moment finds a partial file; a probe callback looks at the alias at
every batch and, at the end of each epoch, waits for the writes asked for so far.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from tests._lit import _available, cls, make_module, pkg, trainer  # noqa: E402,F401

from lightning_bestlink import read_record  # noqa: E402

pytestmark = pytest.mark.lightning

IMPROVING = [5.0, 4.0, 3.0, 2.0, 1.0]  # every epoch a new best: with save_top_k=1 every save evicts
MIXED = [3.0, 1.0, 2.0, 0.5, 4.0]


def slow_io(pkg: Any) -> Any:
    class SlowIO(pkg.plugins.io.TorchCheckpointIO):  # type: ignore[misc,name-defined]
        """Writes each checkpoint in two halves, 20 ms apart; ``complete`` holds the files written whole."""

        def __init__(self) -> None:
            super().__init__()
            self.complete: set[str] = set()
            self.lock = threading.Lock()

        def save_checkpoint(self, checkpoint: Any, path: Any, storage_options: Any = None) -> None:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            data = buffer.getvalue()
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(0.02)  # a reader now finds half a checkpoint
                fh.write(data[len(data) // 2 :])
            with self.lock:
                self.complete.add(os.path.realpath(path))

    return SlowIO()


def drain(async_io: Any) -> None:
    """Wait until the background worker has run everything queued so far (writes, and what follows them)."""
    executor = getattr(async_io, "_executor", None)  # Lightning's single worker (2.5+: made at the first save)
    if executor is not None:
        executor.submit(lambda: None).result(timeout=60)


def probe(pkg: Any, ckpt: Any, writer: Any, async_io: Any) -> Any:
    class Probe(pkg.Callback):  # type: ignore[misc,name-defined]
        """At every batch: the alias names a complete, existing file. After each epoch's save (at the
        next epoch's start, and when training ends), once the writes asked for so far are done:
        the alias names Lightning's best."""

        def __init__(self) -> None:
            self.looks = 0
            self.at_epoch_end: list[tuple[str | None, str]] = []

        def look(self) -> None:
            alias = ckpt.best_link_path
            if alias is None or not os.path.lexists(alias):
                return
            target = os.path.realpath(alias)
            assert os.path.exists(target), f"best.ckpt names a deleted file: {target}"
            with writer.lock:
                assert target in writer.complete, f"best.ckpt names a file not yet written: {target}"
            self.looks += 1

        def on_train_batch_start(self, *args: Any) -> None:
            self.look()

        def on_train_batch_end(self, *args: Any) -> None:
            self.look()

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.current_epoch > 0:
                self.after_save()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.after_save()

        def after_save(self) -> None:
            self.look()
            drain(async_io)  # the previous epoch's checkpoints are written now
            self.look()
            alias = ckpt.best_link_path
            named = os.path.realpath(alias) if os.path.lexists(alias) else None
            self.at_epoch_end.append((named, ckpt.best_model_path))

    return Probe()


@pytest.mark.parametrize("losses", [IMPROVING, MIXED], ids=["improving", "mixed"])
def test_the_alias_follows_each_background_write_and_never_names_a_missing_file(
    pkg: Any, cls: Any, tmp_path: Path, losses: list[float]
) -> None:
    writer = slow_io(pkg)
    async_io = pkg.plugins.io.AsyncCheckpointIO(writer)
    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", save_top_k=1, save_last=True)
    seen = probe(pkg, ckpt, writer, async_io)
    logger = pkg.loggers.CSVLogger(tmp_path, name="logs")
    t = trainer(pkg, tmp_path, [seen, ckpt], max_epochs=len(losses), plugins=[async_io], logger=logger)
    t.fit(make_module(pkg, losses))
    # as soon as each epoch's write was done, the alias named the best (not only at teardown)
    assert len(seen.at_epoch_end) == len(losses)
    assert [named for named, _ in seen.at_epoch_end] == [best for _, best in seen.at_epoch_end]
    assert all(named is not None for named, _ in seen.at_epoch_end)
    assert seen.looks > 2 * len(losses)
    # Lightning's evictions happened (behind the moves): one top-k file, last.ckpt, the alias
    top_k = sorted(p.name for p in tmp_path.glob("epoch=*.ckpt"))
    assert top_k == [os.path.basename(ckpt.best_model_path)]
    assert os.path.realpath(tmp_path / "best.ckpt") == ckpt.best_model_path
    # the record describes the checkpoint's own save, although the move came later, on another thread
    record = read_record(tmp_path / "best.ckpt")
    assert record is not None
    epoch, step = (int(part.split("=")[1]) for part in Path(record["target"]).stem.split("-"))
    assert (record["extra"]["epoch"], record["extra"]["step"]) == (epoch, step)
    # log_best: the moves reach the logger from the main thread, the last one being the best
    with open(os.path.join(logger.log_dir, "metrics.csv"), newline="") as fh:
        logged = [float(row["best/val_loss"]) for row in csv.DictReader(fh) if row.get("best/val_loss")]
    assert logged[-1] == min(losses) and logged == sorted(logged, reverse=True)


def test_a_background_move_that_fails_keeps_the_alias_and_its_file(pkg: Any, cls: Any, tmp_path: Path) -> None:
    from lightning_bestlink import BestLinkWarning

    writer = slow_io(pkg)
    async_io = pkg.plugins.io.AsyncCheckpointIO(writer)
    ckpt = cls(save_best=True, dirpath=tmp_path, monitor="val_loss", save_top_k=1)

    class Plant(pkg.Callback):  # type: ignore[misc,name-defined]
        """After the first move, a file of someone else's takes the alias's place: moves must fail."""

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.current_epoch == 1:
                drain(async_io)
                os.replace(tmp_path / "best.ckpt", tmp_path / "moved-away.ckpt")
                (tmp_path / "best.ckpt").write_bytes(b"not ours")

    t = trainer(pkg, tmp_path, [Plant(), ckpt], max_epochs=3, plugins=[async_io])
    with pytest.warns(BestLinkWarning, match=r"the best alias was left where it was: AliasConflictError"):
        t.fit(make_module(pkg, [3.0, 2.0, 1.0]))
    assert (tmp_path / "best.ckpt").read_bytes() == b"not ours", "what is not ours is left alone"
    # Lightning removed epoch 1's file behind the failed move; epoch 0's, which the linker still
    # names as the best, is kept: the alias (once repaired) never names a deleted file
    assert sorted(p.name for p in tmp_path.glob("epoch=*.ckpt")) == ["epoch=0-step=2.ckpt", "epoch=2-step=6.ckpt"]
    assert ckpt.best_linker.best_path == str(tmp_path / "epoch=0-step=2.ckpt")


@pytest.mark.slow
@pytest.mark.spawns
def test_two_ranks_with_async_checkpoint_io_agree_and_rank_zero_moves_the_alias_behind_each_write(
    tmp_path: Path,
) -> None:
    pytest.importorskip("lightning")
    from tests._helpers import run_script

    run_script("trainer_async_ddp.py", tmp_path)  # a hang (a collective on one rank) fails by its timeout
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert [s["best_model_path"] for s in zero["seen"]] == [s["best_model_path"] for s in one["seen"]]
    looks = [(s["alias"], s["best_model_path"]) for s in zero["seen"] if s["best_model_path"]]
    assert len(looks) == 5 and all(alias == best for alias, best in looks), looks
    assert os.path.realpath(tmp_path / "ckpt" / "best.ckpt") == zero["best_model_path"]
    assert zero["best_model_path"].endswith("epoch=4-step=10.ckpt")
