"""Checkpoint file names that mean something to Lightning, in one place."""

from __future__ import annotations

import os


def is_last_name(name: str, last: str = "last") -> bool:
    r"""Whether Lightning's ``ckpt_path="last"`` would take a checkpoint named ``name``.

    Lightning (``ModelCheckpoint._find_last_checkpoints``) matches ``^{CHECKPOINT_NAME_LAST}(-(\d+))?``
    against the stem, which every stem starting with ``CHECKPOINT_NAME_LAST`` passes:
    ``last.ckpt``, ``last-v1.ckpt``, ``last_run.ckpt``, and ``lastly.ckpt`` too.

    >>> is_last_name("last-v1.ckpt"), is_last_name("epoch=3.ckpt"), is_last_name("best", last="best")
    (True, False, True)
    """
    return os.path.basename(name).startswith(last)
