"""What the command-line tests share: running the command as a user does, and run folders.

Checkpoint folders are built from plain files with :class:`BestLinker`, so the tests
run without torch or Lightning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from lightning_bestlink import BestLinker

SCORES = [0.9, 0.5, 0.3, 0.4]  # mode="min": epoch=2 is the best
BEST = "epoch=2.ckpt"

needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="the damage is made with symlinks")


def cli(
    *args: str | Path, cwd: Path | None = None, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``lightning-bestlink ARGS`` in a subprocess; a hang fails the test at ``timeout``."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_bestlink", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        timeout=timeout,
        check=False,
    )


def make_run(d: Path, *, link: str = "auto", last: bool = True, scores: list[float] = SCORES) -> BestLinker:
    """A folder as a training run leaves it: epoch=N.ckpt, last.ckpt, best.ckpt and its record."""
    d.mkdir(parents=True, exist_ok=True)
    linker = BestLinker(d / "best.ckpt", mode="min", link=link)  # type: ignore[arg-type]
    for epoch, score in enumerate(scores):
        path = d / f"epoch={epoch}.ckpt"
        path.write_bytes(b"w" * (100 + epoch))  # distinct sizes: a wrong copy is detectable
        linker.update(score, path, extra={"monitor": "val_loss", "epoch": epoch, "step": 4 * (epoch + 1)})
    if last:
        (d / "last.ckpt").write_bytes(b"w" * (100 + len(scores) - 1))
    return linker


def row(output: str, name: str) -> str:
    """The line of ``show``'s table that starts with ``name``."""
    lines = [line for line in output.splitlines() if line.strip().startswith(name + " ") or line.strip() == name]
    assert lines, f"no row {name!r} in:\n{output}"
    return lines[0]
