"""Every difference between Lightning versions that the tests depend on, as named flags.

The package itself needs none (the adapter reads the installed ``ModelCheckpoint``'s
signature instead of listing versions). Each flag is named after exactly what it
checks (``tests/test_compat.py`` compares name and specifier). ``RequirementCache``
(lightning-utilities, installed with every Lightning) is lazy: nothing is imported
until a flag is read.
"""

from __future__ import annotations

from lightning_utilities.core.imports import RequirementCache

# the unified package (``import lightning``) and the standalone one (``import pytorch_lightning``)
_LIGHTNING_AVAILABLE = RequirementCache("lightning>=2.0")
_PYTORCH_LIGHTNING_AVAILABLE = RequirementCache("pytorch_lightning>=2.0")

#: ``ModelCheckpoint(enable_version_counter=...)`` exists, and ``Fabric.save`` calls
#: ``state_dict()`` on objects in ``state`` that have one (2.0 pickles them as they are).
_LIGHTNING_GE_2_1 = RequirementCache("lightning>=2.1")
#: ``ModelCheckpoint(save_last="link")`` exists.
_LIGHTNING_GE_2_2 = RequirementCache("lightning>=2.2")
#: Lightning loads its checkpoints with ``weights_only=False`` itself; before, on torch >= 2.6 a
#: ``ckpt_path=`` resume needs ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (Lightning's limitation).
_LIGHTNING_GE_2_4 = RequirementCache("lightning>=2.4")

_PYTORCH_LIGHTNING_GE_2_1 = RequirementCache("pytorch_lightning>=2.1")
_PYTORCH_LIGHTNING_GE_2_2 = RequirementCache("pytorch_lightning>=2.2")
_PYTORCH_LIGHTNING_GE_2_4 = RequirementCache("pytorch_lightning>=2.4")


def flag(package: str, minor: int) -> bool:
    """``_LIGHTNING_GE_2_<minor>`` for ``lightning.pytorch``, ``_PYTORCH_LIGHTNING_GE_2_<minor>`` otherwise."""
    prefix = "_LIGHTNING" if package.startswith("lightning") else "_PYTORCH_LIGHTNING"
    return bool(globals()[f"{prefix}_GE_2_{minor}"])
