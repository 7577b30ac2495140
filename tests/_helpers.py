"""What several test files share (no torch): fake checkpoints, the link kinds, subprocess runs.

A fake checkpoint file is a header (magic, payload length, fill byte) followed by the
fill byte repeated: any truncated or mixed read fails :func:`fill_of`. A directory
checkpoint holds a few such shards with the same fill byte.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightning_bestlink._storage._files import TMP_MARK

#: every ``link=`` choice of a local linker
KINDS = ("symlink", "hardlink", "copy", "auto")
#: every (link=, checkpoint kind) that makes an alias: directories have no hard links (that error is
#: tested on its own)
KIND_TARGET = [(k, t) for k in KINDS for t in ("file", "dir") if (k, t) != ("hardlink", "dir")]
MAGIC = b"BLCK"
HEADER = struct.Struct("<4sQB")
SHARDS = ("shard-0.bin", "shard-1.bin", "shard-2.bin")
SCRIPTS = Path(__file__).parent / "scripts"


def ckpt_bytes(fill: int, size: int = 4096) -> bytes:
    return HEADER.pack(MAGIC, size, fill) + bytes([fill]) * size


def write_ckpt(path: str | os.PathLike[str], fill: int, size: int = 4096, *, kind: str = "file") -> Path:
    """Write a file (``kind="file"``) or a directory of shards (``kind="dir"``)."""
    path = Path(path)
    if kind == "dir":
        path.mkdir(parents=True, exist_ok=True)
        for name in SHARDS:
            (path / name).write_bytes(ckpt_bytes(fill, size))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ckpt_bytes(fill, size))
    return path


def fill_of_bytes(data: bytes) -> int | None:
    """The fill byte of complete checkpoint bytes, None when they are partial or foreign."""
    if len(data) < HEADER.size:
        return None
    magic, size, fill = HEADER.unpack_from(data)
    if magic != MAGIC or len(data) != HEADER.size + size or data[HEADER.size :] != bytes([fill]) * size:
        return None
    return int(fill)


def fill_of(path: str | os.PathLike[str]) -> int | None:
    """The fill byte of the complete checkpoint at ``path`` (file or directory), else None."""
    path = Path(path)
    if path.is_dir():
        if sorted(os.listdir(path)) != list(SHARDS):
            return None
        fills = {fill_of_bytes((path / name).read_bytes()) for name in SHARDS}
        return fills.pop() if len(fills) == 1 else None
    return fill_of_bytes(path.read_bytes())


def leftovers(directory: str | os.PathLike[str]) -> list[str]:
    """Names of temporary files the library left in ``directory``."""
    return sorted(name for name in os.listdir(directory) if TMP_MARK in name)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_script(name: str, tmp_path: Path, *args: str, ranks: int = 2) -> None:
    """Run ``tests/scripts/<name>`` (a multi-process Lightning run) in ``tmp_path``; every rank must exit 0.

    The ranks are started as a launcher starts them (torchrun, or Lightning's own for the ranks after
    the first): ``LOCAL_RANK``, ``NODE_RANK`` and the address of rank zero in their environment, so
    Lightning starts no process itself. Each is forked from a parent that has imported torch and
    Lightning with that ``LOCAL_RANK`` (tests/_fork.py; Lightning reads the rank at import), which
    spares two imports of Lightning per run.
    """
    import concurrent.futures

    from tests._fork import lightning, run_forked

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env["NODE_RANK"] = "0"
    argv = [SCRIPTS / name, str(tmp_path), *args]
    with concurrent.futures.ThreadPoolExecutor(ranks) as pool:
        started = [
            pool.submit(
                run_forked, argv, preload=lightning(), cwd=tmp_path, env={**env, "LOCAL_RANK": str(rank)}, timeout=240
            )
            for rank in range(ranks)
        ]
        procs = [run.result() for run in started]
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"rank {rank}: " + proc.stdout[-3000:] + proc.stderr[-3000:]


#: marks a test that acts as another user: as root, a child drops to uid/gid 65534 (permission
#: checks do not stop root itself)
as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="acting as another user needs root (a child drops to 65534)"
)


@pytest.fixture
def shared_folder(tmp_path: Path) -> Iterator[Path]:
    """A sticky world-writable folder (mode 1777, as /tmp) that uid 65534 can reach."""
    opened = []
    for folder in [tmp_path, *tmp_path.parents]:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            opened.append((folder, mode))
            folder.chmod(mode | 0o001)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    yield shared
    for folder, mode in opened:
        folder.chmod(mode & 0o7777)


#: what a child runs as root before it drops privileges: the library imports modules on first use,
#: and uid 65534 cannot read the interpreter's own library (it may sit under /root)
_WARM_UP = """
import json, os, sys, tempfile
from pathlib import Path
from lightning_bestlink import BestLinker, LatestLinker, Retention, save_and_link
_scratch = tempfile.mkdtemp()
for _kind in ("symlink", "copy"):
    Path(_scratch, "c").write_text("c")
    _best = BestLinker(Path(_scratch, f"best-{_kind}"), link=_kind, shared=_kind == "copy")
    _best.update(1, Path(_scratch, "c"))
    _best.verify()
LatestLinker(Path(_scratch, "last")).update(1, Path(_scratch, "c"))
os.setgid(65534)
os.setuid(65534)
"""


def as_nobody(code: str, *args: str) -> None:
    """Run ``code`` in a child that drops to uid/gid 65534 once the library is warmed up."""
    proc = subprocess.run(
        [sys.executable, "-c", _WARM_UP + textwrap.dedent(code), *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
