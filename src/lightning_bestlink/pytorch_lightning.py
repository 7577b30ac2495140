"""``ModelCheckpointWithLinkBest`` for the standalone ``pytorch_lightning`` package.

The same adapter as :mod:`lightning_bestlink.callbacks`, on
``pytorch_lightning.callbacks.ModelCheckpoint``::

    from lightning_bestlink.pytorch_lightning import ModelCheckpointWithLinkBest
"""

from __future__ import annotations

from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_bestlink._trainer import BestLinkMixin


class ModelCheckpointWithLinkBest(BestLinkMixin, ModelCheckpoint):
    """``pytorch_lightning``'s ``ModelCheckpoint`` plus a best alias; see :mod:`lightning_bestlink.callbacks`."""
