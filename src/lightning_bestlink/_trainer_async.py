"""Where the Trainer adapter's moves run: on every rank, on rank zero alone, or behind background writes.

Every rank takes part in a move made at a save (rank zero writes, the others mirror its
linker: :func:`on_every_rank`), except in two cases where rank zero acts alone: after
teardown (:class:`Alone`), and behind background checkpoint writes (Lightning's
``AsyncCheckpointIO``), described here.

With ``AsyncCheckpointIO`` the Trainer's save returns before the file is written: one
worker thread (a ``ThreadPoolExecutor`` with a single worker) writes the checkpoints in
the order they were asked for. The Trainer adapter queues each alias move on that same
worker, right behind the write of its checkpoint, so the alias moves as soon as the file
is complete and never names an unwritten one. Lightning removes the previous top-k file
right after asking for the next save: that removal is queued behind the move too, and a
file the alias still names when its turn comes (a move that failed) is kept on disk until
the alias has moved away from it.

All of this runs on global rank zero, the only rank that writes Lightning's checkpoints
and the only one that removes them: the other ranks take no part, so there is nothing
for them to agree on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from lightning_bestlink._ranks import on_rank_zero
from lightning_bestlink._storage import Storage
from lightning_bestlink.linker import BestLinker


def on_every_rank(trainer: Any, linker: BestLinker, action: Callable[[], Any], what: str) -> Any:
    """``action`` on rank zero, its result and the linker's state on every rank (``_ranks.on_rank_zero``);
    a run of one process calls it directly (no state to copy, no broadcast)."""
    if trainer.world_size == 1:
        return action()
    return on_rank_zero(trainer.is_global_zero, trainer.strategy.broadcast, linker, action, what)


def is_link(storage: Storage, path: str) -> bool:
    """Whether ``path`` is a symbolic link (asked only of a storage that has links: no request on a remote one)."""
    return "symlink" in storage.link_kinds and storage.inspect(path).kind == "symlink"


class Alone:
    """A trainer seen by rank zero alone (after teardown): broadcast returns what it is given."""

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer
        self.is_global_zero = True
        self.world_size = 1
        self.strategy = self

    def broadcast(self, obj: Any) -> Any:
        return obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)


def is_async(checkpoint_io: Any, kinds: tuple[type, ...]) -> bool:
    """Whether the checkpoint IO (or one it wraps) writes in the background (an instance of ``kinds``).

    Decided from the classes alone, so every rank answers the same.
    """
    return any(isinstance(io, kinds) for io in _chain(checkpoint_io)) if kinds else False


def worker(checkpoint_io: Any) -> Executor | None:
    """The single worker that writes the checkpoints, or None when there is none to queue behind.

    ``AsyncCheckpointIO._executor`` (a private attribute, the same in Lightning 2.0 to 2.6;
    2.5 creates it at the first save): only a single-worker pool keeps the order of its jobs.
    """
    for io in _chain(checkpoint_io):
        executor = getattr(io, "_executor", None)
        if isinstance(executor, ThreadPoolExecutor) and getattr(executor, "_max_workers", None) == 1:
            return executor
    return None


def _chain(checkpoint_io: Any) -> list[Any]:
    """The checkpoint IO and those it wraps (``_WrappingCheckpointIO.checkpoint_io``), outermost first."""
    chain: list[Any] = []
    while checkpoint_io is not None and all(checkpoint_io is not io for io in chain) and len(chain) < 8:
        chain.append(checkpoint_io)
        checkpoint_io = getattr(checkpoint_io, "checkpoint_io", None)
    return chain


class Background:
    """Moves queued behind writes, removals held until the alias has left their file, and the
    failures of both, reported on the main thread (rank zero)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0  # moves submitted and not finished
        self._held: dict[str, Callable[[], None]] = {}  # file -> how Lightning removes it
        self._failures: list[str] = []
        self.retry = False  # a queued move found no file: the next save on the main thread tries again
        self._io: tuple[Any, bool] | None = None  # the checkpoint IO last asked about, and the answer

    def __getstate__(self) -> dict[str, Any]:
        return {}  # per process and per run: a copy starts empty

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def queues(self, checkpoint_io: Any, kinds: tuple[type, ...]) -> bool:
        """Whether moves queue behind ``checkpoint_io``'s writes (:func:`is_async`): asked at every
        move, answered once per checkpoint IO."""
        known = self._io
        if known is None or known[0] is not checkpoint_io:
            known = self._io = (checkpoint_io, is_async(checkpoint_io, kinds))
        return known[1]

    @property
    def pending(self) -> bool:
        """Whether a queued move has not run yet."""
        return self._pending > 0

    def submit(self, executor: Executor, move: Callable[[], object]) -> None:
        """Run ``move`` on ``executor`` after everything queued before it (the checkpoint's write)."""
        with self._lock:
            self._pending += 1
        try:
            executor.submit(self._run, move)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise

    def _run(self, move: Callable[[], object]) -> None:
        try:
            move()
        except Exception as err:  # reported on the main thread: the old alias is intact
            self.failed(f"{type(err).__name__}: {err}")
        finally:
            with self._lock:
                self._pending -= 1

    def failed(self, message: str) -> None:
        """Keep a failure for :meth:`failures` (thread-safe)."""
        with self._lock:
            self._failures.append(message)

    def failures(self) -> list[str]:
        """The failures since the last call (main thread)."""
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    def remove(
        self, path: str, remove: Callable[[], None], named: Callable[[], bool], executor: Executor | None
    ) -> None:
        """Remove ``path`` as Lightning asked, unless the alias names it: then keep it until it does not.

        ``executor``: queue the removal behind the moves waiting there (decided when its turn comes).
        """
        if executor is not None:
            executor.submit(self._remove, path, remove, named)
        elif not self._hold(path, remove, named):
            remove()  # on the main thread, as Lightning would: its errors are Lightning's

    def _remove(self, path: str, remove: Callable[[], None], named: Callable[[], bool]) -> None:
        if not self._hold(path, remove, named):
            self._call(remove)

    def _hold(self, path: str, remove: Callable[[], None], named: Callable[[], bool]) -> bool:
        if not named():
            return False
        with self._lock:
            self._held[path] = remove
        return True

    def release(self, named: str | None) -> None:
        """Remove the held files the alias no longer names (after a move)."""
        with self._lock:
            free = [path for path in self._held if path != named]
            removals = [self._held.pop(path) for path in free]
        for remove in removals:
            self._call(remove)

    def _call(self, remove: Callable[[], None]) -> None:
        try:
            remove()
        except Exception as err:  # a file left behind is reported, never a reason to stop training
            self.failed(f"removing a checkpoint: {type(err).__name__}: {err}")
