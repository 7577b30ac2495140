"""A training run as ``watch`` sees it: a process that saves checkpoints and updates an alias (tests only).

Usage: ``cli_writer.py ALIAS LINK [--resume] [--pause]``. Reads commands from stdin, one per line,
and answers each on stdout:

- ``update SCORE NAME``: write the checkpoint NAME next to the alias (its bytes name it and the
  score), offer it to the linker; answers ``True`` or ``False``.
- with ``--pause``, each alias swap stops between writing the record and publishing the alias:
  the writer prints ``paused`` and waits for a line ``go`` on stdin.

``--resume`` starts as a restarted run does: the best restored from the record, the alias
checked and rebuilt if needed.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from lightning_bestlink import BestLinker, read_record
from lightning_bestlink._storage.local import LocalStorage

alias, link = sys.argv[1], sys.argv[2]
linker = BestLinker(alias, mode="min", link=link)  # type: ignore[arg-type]
if "--resume" in sys.argv:
    record = read_record(alias)
    assert record is not None, alias
    linker.load_state_dict({"best_score": record["score"], "best_path": record["target"]})
    linker.repair()

if "--pause" in sys.argv:
    commit = LocalStorage.commit

    def paused(self: LocalStorage, staged: Any, expected: Any, *, durable: bool) -> None:
        print("paused", flush=True)
        assert sys.stdin.readline().strip() == "go"
        commit(self, staged, expected, durable=durable)

    LocalStorage.commit = paused  # type: ignore[method-assign]

print("ready", flush=True)
for line in sys.stdin:
    command, score, name = line.rstrip("\n").split(" ", 2)  # the name may hold spaces
    assert command == "update", line
    path = os.path.join(os.path.dirname(os.path.abspath(alias)), name)
    with open(path, "w") as fh:
        fh.write(f"{name} {score}")
    epoch = int(re.match(r"epoch=(\d+)", name)[1])  # type: ignore[index]
    print(linker.update(float(score), path, extra={"monitor": "val_loss", "epoch": epoch}), flush=True)
