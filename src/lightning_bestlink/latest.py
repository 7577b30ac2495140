"""``LatestLinker``: an alias of the latest checkpoint (``last.ckpt``), with every guarantee of ``best.ckpt``.

The latest checkpoint is the best one when checkpoints are ranked by step: a
:class:`~lightning_bestlink.BestLinker` with ``mode="max"`` and ``ties="last"``, fed with
the step. So the alias is swapped atomically, survives a kill, refuses to replace a
file it did not write, is restored on resume and rebuilt if deleted, and costs no
second save: a checkpoint saved once is both ``epoch=N.ckpt`` and ``last.ckpt``.
"""

from __future__ import annotations

import operator
import os
from typing import Any

from lightning_bestlink._storage import LinkChoice
from lightning_bestlink.linker import BestLinker


def check_step(step: Any) -> int:
    """``step`` as an int, if it is a whole number >= 0 (int, numpy or 0-d tensor integer).

    >>> check_step(7)
    7
    >>> check_step(1.5)
    Traceback (most recent call last):
    ...
    TypeError: step must be a whole number >= 0 (the global step or the epoch), got float 1.5
    """
    if isinstance(step, bool):
        raise TypeError(f"step must be a whole number >= 0 (the global step or the epoch), got bool {step!r}")
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(
            f"step must be a whole number >= 0 (the global step or the epoch), got {type(step).__name__} {step!r}"
        ) from None
    if value < 0:
        raise ValueError(f"step must be a whole number >= 0 (the global step or the epoch), got {value}")
    return value


class LatestLinker(BestLinker):
    """Keep ``link_path`` pointing at the checkpoint with the highest step seen so far.

    Args:
        link_path: where the alias goes, e.g. ``"checkpoints/last.ckpt"`` or an fsspec URL.
        link, durable, storage_options, lock_timeout: as for :class:`BestLinker`.

    :meth:`update` takes the step (the global step or the epoch: any whole number that
    grows) instead of a score; an equal step moves the alias too (a checkpoint saved
    again at the same step is the newer one). Keep :meth:`state_dict` in the checkpoint
    as for the best alias (``lightning_bestlink.fabric.save_and_link`` and
    ``lightning_bestlink.save_and_link`` do), so a resume knows the latest step.

    Example:
        >>> import os, shutil, tempfile
        >>> d = tempfile.mkdtemp()
        >>> for step in (100, 200):
        ...     with open(os.path.join(d, f"step={step}.ckpt"), "w") as fh:
        ...         _ = fh.write("weights")
        >>> last = LatestLinker(os.path.join(d, "last.ckpt"))
        >>> last.update(100, os.path.join(d, "step=100.ckpt")), last.update(200, os.path.join(d, "step=200.ckpt"))
        (True, True)
        >>> os.readlink(last.link_path) if os.path.islink(last.link_path) else "a copy"
        'step=200.ckpt'
        >>> last.latest_step
        200
        >>> shutil.rmtree(d)
    """

    def __init__(
        self,
        link_path: str | os.PathLike[str],
        *,
        link: LinkChoice = "auto",
        durable: bool = False,
        storage_options: dict[str, Any] | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            link_path,
            mode="max",
            ties="last",
            link=link,
            durable=durable,
            storage_options=storage_options,
            lock_timeout=lock_timeout,
        )

    @classmethod
    def _record_kwargs(cls, record: dict[str, Any]) -> dict[str, Any]:
        if record["mode"] != "max":
            raise ValueError(
                f"the record of {record.get('alias')!r} ranks by a score (mode={record['mode']!r}), not by step: "
                f"rebuild it with BestLinker.from_record()"
            )
        return {}

    @property
    def latest_step(self) -> int | None:
        """The step of the checkpoint the alias points at; None before the first update."""
        score = self.best_score
        return None if score is None else int(score)

    def update(self, step: Any, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> bool:
        """Point the alias at ``path``, saved at ``step``, unless a later step is linked already.

        ``extra`` is recorded as for :meth:`BestLinker.update`, with ``"step"`` and
        ``"follows": "latest"`` added (``lightning-bestlink show`` then says "latest save").
        Returns True when the alias now points at ``path``. Raises as
        :meth:`BestLinker.update` does, and ``TypeError``/``ValueError`` for a step that
        is not a whole number >= 0.
        """
        value = check_step(step)
        return super().update(value, path, extra={"step": value, "follows": "latest", **(extra or {})})

    def follow(self, step: Any, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None) -> bool:
        """Point the alias at ``path`` (saved at ``step``) because a decision made elsewhere says so."""
        value = check_step(step)
        return super().follow(value, path, extra={"step": value, "follows": "latest", **(extra or {})})

    def is_better(self, step: Any) -> bool:
        """Whether a checkpoint saved at ``step`` would become the latest. Pure: no I/O."""
        return super().is_better(check_step(step))


__all__ = ["LatestLinker", "check_step"]
