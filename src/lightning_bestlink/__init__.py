"""lightning-bestlink: a ``best.ckpt`` that always points at the best checkpoint.

The core (:class:`BestLinker`) imports neither torch nor Lightning. The Trainer
callback is resolved lazily, so ``import lightning_bestlink`` stays light::

    from lightning_bestlink import BestLinker                   # any loop
    from lightning_bestlink import LatestLinker, Retention      # last.ckpt, and deleting the rest
    from lightning_bestlink import ModelCheckpointWithLinkBest  # imports lightning here
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_bestlink._errors import (
    AliasBusyError,
    AliasConflictError,
    AliasWriteError,
    BestLinkError,
    BestLinkWarning,
    OutsideFolderError,
    RecordError,
)
from lightning_bestlink._health import AliasReport
from lightning_bestlink._record import SUFFIX as RECORD_SUFFIX
from lightning_bestlink.linker import BestLinker, read_record

if TYPE_CHECKING:
    from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest
    from lightning_bestlink.latest import LatestLinker
    from lightning_bestlink.loop import save_and_link
    from lightning_bestlink.retention import Retention

__version__ = "0.1.0"

__all__ = [
    "AliasBusyError",
    "AliasConflictError",
    "AliasReport",
    "AliasWriteError",
    "BestLinkError",
    "BestLinkWarning",
    "BestLinker",
    "LatestLinker",
    "ModelCheckpointWithLinkBest",
    "OutsideFolderError",
    "RECORD_SUFFIX",
    "RecordError",
    "Retention",
    "read_record",
    "save_and_link",
]

#: names of 0.1 kept for one release, with a DeprecationWarning: old name -> new name
_DEPRECATED = {"read_metadata": "read_record", "METADATA_SUFFIX": "RECORD_SUFFIX"}


#: loaded on first use (PEP 562): the latest alias, retention and the plain-loop helper cost
#: nothing to a run that does not use them
_LAZY = {
    "LatestLinker": "lightning_bestlink.latest",
    "Retention": "lightning_bestlink.retention",
    "save_and_link": "lightning_bestlink.loop",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the Trainer callback pulls in lightning, so only on first use
    if name == "ModelCheckpointWithLinkBest":
        try:
            from lightning_bestlink.callbacks import ModelCheckpointWithLinkBest
        except ModuleNotFoundError as err:
            if (err.name or "").partition(".")[0] != "lightning":
                raise
            # an AttributeError, so getattr(module, name, default) and hasattr work (jsonargparse uses them)
            raise AttributeError(
                f"lightning_bestlink.ModelCheckpointWithLinkBest needs the lightning package ({err}); with "
                f"the standalone pytorch_lightning use lightning_bestlink.pytorch_lightning.ModelCheckpointWithLinkBest"
            ) from err
        return ModelCheckpointWithLinkBest
    if name in _DEPRECATED:
        from lightning_bestlink._errors import warn

        new = _DEPRECATED[name]
        warn(
            f"lightning_bestlink.{name} is deprecated, use lightning_bestlink.{new}; it will be removed in 0.3",
            DeprecationWarning,
        )
        return globals()[new]
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
