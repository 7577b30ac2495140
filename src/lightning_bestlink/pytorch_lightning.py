"""``ModelCheckpointWithLinkBest`` for the standalone ``pytorch_lightning`` package.

The same adapter as :mod:`lightning_bestlink.callbacks`, on
``pytorch_lightning.callbacks.ModelCheckpoint``::

    from lightning_bestlink.pytorch_lightning import ModelCheckpointWithLinkBest
"""

from __future__ import annotations

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import AsyncCheckpointIO
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lightning_bestlink._trainer import BestLinkMixin, with_model_checkpoint_signature


@with_model_checkpoint_signature
class ModelCheckpointWithLinkBest(BestLinkMixin, ModelCheckpoint):
    """``pytorch_lightning``'s ``ModelCheckpoint`` plus a best alias; see :mod:`lightning_bestlink.callbacks`."""

    ASYNC_CHECKPOINT_IO = (AsyncCheckpointIO,)
    _info = staticmethod(rank_zero_info)
    _warn = staticmethod(rank_zero_warn)
