"""Run by tests/test_fabric.py: best.ckpt, last.ckpt and a retention policy in a Fabric loop (1 or 2 processes).

    python ddp_fabric_keep.py OUT DEVICES KIND KILL_AT EPOCHS

Saves one checkpoint per epoch with save_and_link (best, latest, retention keep_best=1, all
three in the saved state), resuming from last.ckpt when it exists. Rank 1 offers other scores than rank zero, so only
rank zero's decision keeps the ranks in agreement. Before its first epoch, a fresh run tries
to save to the alias itself and records the refusal on every rank. ``KILL_AT`` =
``point:n`` kills the process (SIGKILL) at the n-th call of ``point`` (one process only).
Every rank writes what it saw after each save to rank<N>.json.
"""

import json
import os
import signal
import sys

import torch
from _ddp_exit import finish
from lightning.fabric import Fabric

from lightning_bestlink import BestLinker, LatestLinker, Retention, latest, retention
from lightning_bestlink import fabric as bestlink

out, devices, kind, kill_at, epochs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
RANK0 = [3.0, 1.0, 2.0, 0.5, 4.0, 0.7, 5.0]  # the best is epoch 3

point, _, when = kill_at.partition(":")
counts = {}


def hook(owner, attr, name):
    real = getattr(owner, attr)

    def wrapped(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        if name == point and counts[name] == int(when):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(owner, attr, wrapped)


fabric = Fabric(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto")
fabric.launch()
hook(fabric, "save", "save")  # before the checkpoint is written
hook(latest.LatestLinker, "follow", "latest")  # the best alias moved, the latest not yet
hook(retention.Retention, "prune", "retention")  # both aliases moved, nothing deleted yet

model = fabric.setup(torch.nn.Linear(2, 1))
best = BestLinker(os.path.join(out, "best.ckpt"), link=kind)
last = LatestLinker(os.path.join(out, "last.ckpt"), link=kind)
keep = Retention(best, last, keep_best=1)
state = {"model": model, "best": best, "last": last, "keep": keep, "epoch": -1}
seen = []
if os.path.lexists(last.link_path):
    bestlink.load(fabric, last.link_path, state)
else:
    try:  # the alias itself: refused on every rank, before anything is saved
        bestlink.save_and_link(fabric, best.link_path, state, score=0.0, step=0, retention=keep)
        seen.append({"refused": None})
    except ValueError as err:
        seen.append({"refused": str(err), "files": sorted(os.listdir(out))})
for epoch in range(state["epoch"] + 1, epochs):
    state["epoch"] = epoch
    score = RANK0[epoch] if fabric.global_rank == 0 else 10.0 - RANK0[epoch]
    path = os.path.join(out, f"epoch={epoch}.ckpt")
    became = bestlink.save_and_link(fabric, path, state, score=score, step=epoch, retention=keep)
    seen.append(
        {
            "epoch": epoch,
            "became_best": became,
            "best": os.path.realpath(best.link_path) if kind == "symlink" else best.best_path,
            "last": os.path.realpath(last.link_path) if kind == "symlink" else last.best_path,
            "best_path": best.best_path,
            "latest_path": last.best_path,
            "latest_step": last.latest_step,
            "checkpoints": sorted(n for n in os.listdir(out) if n.startswith("epoch=")),
            "listed": [e["path"] for e in keep.state_dict()["saved"]],
        }
    )
with open(os.path.join(out, f"rank{fabric.global_rank}.json"), "w") as fh:
    json.dump(seen, fh)
finish()
