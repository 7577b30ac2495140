"""``ModelCheckpointWithLinkBest`` for ``lightning.pytorch``: a ``best.ckpt`` next to ``last.ckpt``.

Example::

    from lightning.pytorch import Trainer
    from lightning_bestlink import ModelCheckpointWithLinkBest

    ckpt = ModelCheckpointWithLinkBest(save_best=True, monitor="val_loss", save_last=True, dirpath="ckpt")
    trainer = Trainer(callbacks=[ckpt])
    trainer.fit(model)  # ckpt/best.ckpt -> epoch=6-step=28.ckpt, always the best checkpoint
    trainer.test(model, ckpt_path="best")  # also in a new process: the alias's record answers
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_bestlink._trainer import BestLinkMixin, with_model_checkpoint_signature


@with_model_checkpoint_signature
class ModelCheckpointWithLinkBest(BestLinkMixin, ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` plus a best alias (seed-compatible).

    Args:
        save_best: ``None``/``False`` (off), ``True`` (``"auto"``: symlink, else hardlink,
            else copy), or a link kind: ``"symlink"``, ``"hardlink"``, ``"copy"``. On a
            non-local ``dirpath`` (fsspec) the alias is a copy made by the filesystem.
        best_name: the alias's name (default ``"best"``: ``dirpath/best.ckpt``; ``"best.ckpt"``
            means the same); give each callback its own to keep several aliases in one folder.
        sweep_best: the path of an alias shared by every run of a sweep (``"sweep/best.ckpt"``):
            it ends at the best checkpoint of all runs. Needs ``monitor``.
        log_best: log the score as ``<best_name>/<monitor>`` and the path as text to the
            Trainer's loggers each time the alias moves (default ``True``).
        on_move: ``on_move(record)``, called on global rank zero after each move of the alias.
        **kwargs: every ``ModelCheckpoint`` argument, unchanged.

    ``dirpath/best.ckpt`` always points at the best checkpoint; a JSON record
    ``best.ckpt.bestlink.json`` next to it holds the monitor, score, epoch and step of that
    checkpoint. With ``verbose=True`` it says on rank zero when the alias moves. The callback
    state is the stock ``ModelCheckpoint``'s (same key), so runs switch between the two
    classes freely. ``best_name``, ``sweep_best`` and ``on_move`` need ``save_best``. More in
    ``docs/trainer.md``.
    """

    ASYNC_CHECKPOINT_IO = (AsyncCheckpointIO,)
    _info = staticmethod(rank_zero_info)
    _warn = staticmethod(rank_zero_warn)
