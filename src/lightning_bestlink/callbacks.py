"""``ModelCheckpointWithLinkBest`` for ``lightning.pytorch``: a ``best.ckpt`` next to ``last.ckpt``.

Example::

    from lightning.pytorch import Trainer
    from lightning_bestlink import ModelCheckpointWithLinkBest

    ckpt = ModelCheckpointWithLinkBest(save_best=True, monitor="val_loss", save_last=True)
    Trainer(callbacks=[ckpt]).fit(model)
    # checkpoints/best.ckpt -> epoch=6-step=28.ckpt, always the current best_model_path
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_bestlink._trainer import BestLinkMixin


class ModelCheckpointWithLinkBest(BestLinkMixin, ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` plus a best alias (seed-compatible).

    Args:
        save_best: ``None``/``False`` (off), ``True`` (``"auto"``: symlink, else hardlink,
            else copy), or a link kind: ``"symlink"``, ``"hardlink"``, ``"copy"``. On a
            non-local ``dirpath`` (fsspec) the alias is a copy made by the filesystem.
        *args, **kwargs: everything ``ModelCheckpoint`` takes, unchanged.

    ``format_checkpoint_name({}, CHECKPOINT_NAME_BEST)`` (normally ``dirpath/best.ckpt``)
    always points at ``best_model_path``; a JSON record ``best.ckpt.bestlink.json``
    next to it holds the monitor, score, epoch and step. Set ``CHECKPOINT_NAME_BEST``
    on the instance to rename the alias (e.g. two callbacks in one folder).
    """
