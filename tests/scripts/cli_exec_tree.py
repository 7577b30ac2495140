"""A ``watch --exec`` command for a directory checkpoint (tests only): ``cli_exec_tree.py LOG {target}``.

It first deletes the checkpoint directory that ``{target}`` names next to the alias, as training
does when a better one comes while the command starts, then reads every shard through
``{target}`` and writes to LOG the name it was given and the fill byte of the complete checkpoint
(``tests/_helpers.fill_of``: None if any shard is missing or partial).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from tests._helpers import fill_of

log, target = sys.argv[1], sys.argv[2]
original = os.path.join(os.path.dirname(os.path.dirname(target)), os.path.basename(target))
shutil.rmtree(original)
with open(log, "w") as fh:
    json.dump({"deleted": original, "name": os.path.basename(target), "fill": fill_of(target)}, fh)
