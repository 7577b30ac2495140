"""Every difference between Lightning versions that this package depends on, as named flags.

Each flag is named after exactly what it checks (a unit test compares name and
specifier). ``RequirementCache`` is lazy: nothing is imported until a flag is read.
No other module compares Lightning versions.
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
