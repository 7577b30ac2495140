"""Run by tests/test_fabric.py: save_and_link in 2 DDP processes (gloo, CPU) whose scores differ.

Rank 1 offers the opposite order of scores, so only a decision taken from rank
zero's score keeps the ranks in agreement. Right after each call, every rank
checks the alias itself and writes what it saw to rank<N>.json.
"""

import json
import os
import sys

import torch
from _ddp_exit import finish
from lightning.fabric import Fabric

from lightning_bestlink import BestLinker
from lightning_bestlink.fabric import save_and_link

out = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "file"
RANK0 = [3.0, 1.0, 2.0, 0.5, 4.0]

fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
fabric.launch()
model = fabric.setup(torch.nn.Linear(2, 1))
linker = BestLinker(os.path.join(out, "best.ckpt"))
state = {"model": model, "best": linker}
scores = RANK0 if fabric.global_rank == 0 else [10.0 - s for s in RANK0]
seen = []
for epoch, score in enumerate(scores):
    path = os.path.join(out, f"epoch={epoch}.ckpt")
    if kind == "dir":
        # what a sharded strategy leaves: a directory written by every rank
        def save(p, s, **kw):
            os.makedirs(p, exist_ok=True)
            torch.save({"rank": fabric.global_rank}, os.path.join(p, f"shard-{fabric.global_rank}.pt"))
            fabric.barrier()

        fabric.save = save
    became = save_and_link(fabric, path, state, score=score, linker=linker, extra={"epoch": epoch})
    alias = os.path.join(out, "best.ckpt")
    seen.append(
        {
            "epoch": epoch,
            "became_best": became,
            "alias_resolves_to": os.path.realpath(alias) if os.path.exists(alias) else None,
            "best_path": linker.best_path,
            "best_score": linker.best_score,
        }
    )
with open(os.path.join(out, f"rank{fabric.global_rank}.json"), "w") as fh:
    json.dump(seen, fh)
finish()
