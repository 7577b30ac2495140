"""README.md's Python blocks run as shown, and every relative link of the documentation leads somewhere.

A Python block of README.md is run in a fresh process, in an empty folder, as a user would paste it.
A block that uses objects of the user's own (``model``, ``optimizer``, ``fabric``,
``train_and_evaluate``, ``lr``, ``trial``) carries an HTML comment on the line before it,
``<!-- runnable: setup=NAME -->``, and runs after the tiny stand-ins of :data:`SETUPS` (nothing
downloaded, seconds on a CPU); ``runs=2`` runs it twice in the same folder (the second run resumes).
A block marked ``<!-- excerpt -->`` is not run; an unmarked block must be a complete program. After
each run, ``lightning-bestlink verify --require -r`` must find the block's aliases healthy.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the pages whose relative links must lead to a file (and a heading) that exists
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]

_TORCH = """
import torch

torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
trial = 3


def train_and_evaluate(model, optimizer):
    x = torch.randn(16, 4)
    loss = torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return torch.rand(()).item()  # a score, read as a loss or an accuracy: here a random one
"""

_FABRIC = """
import torch
from lightning.fabric import Fabric

torch.manual_seed(0)
fabric = Fabric(accelerator="cpu", devices=1)
fabric.launch()
net = torch.nn.Linear(4, 1)
model, optimizer = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))


def train_and_evaluate(model, optimizer):
    x = torch.randn(16, 4)
    loss = torch.nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
    optimizer.zero_grad()
    fabric.backward(loss)
    optimizer.step()
    return torch.rand(()).item()  # a score: here a random one
"""

_LIGHTNING = """
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

lr = 0.1


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def loss(self, batch):
        return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def training_step(self, batch, i):
        return self.loss(batch)

    def validation_step(self, batch, i):
        self.log("val_loss", self.loss(batch))

    def test_step(self, batch, i):
        self.log("test_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=lr)

    def data(self):
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16)

    train_dataloader = val_dataloader = test_dataloader = data


model = Tiny()
"""

#: what a marked block may assume: small stand-ins for the user's own objects
SETUPS = {"torch": _TORCH, "fabric": _FABRIC, "lightning": _LIGHTNING}


class Block(NamedTuple):
    """One fenced code block of a page."""

    line: int  # of its opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # the HTML comment on the line before the fence, if any

    @property
    def options(self) -> dict[str, str]:
        """``setup=NAME, runs=N`` of a ``<!-- runnable: ... -->`` marker."""
        found = re.fullmatch(r"<!--\s*runnable:\s*(.*?)\s*-->", self.marker or "")
        if found is None:
            return {}
        pairs = (item.split("=", 1) for item in found.group(1).split(","))
        return {key.strip(): value.strip() for key, value in pairs}


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text``, with the marker comment right above each."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(```+)(\w*)", lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)))
        before = lines[i - 1].strip() if i else ""
        marker = before if before.startswith("<!--") else None
        found.append(Block(i + 1, fence.group(2), "\n".join(lines[i + 1 : end]) + "\n", marker))
        i = end + 1
    return found


PYTHON = [b for b in blocks(README.read_text(encoding="utf-8")) if b.lang == "python"]
RUN = [b for b in PYTHON if b.marker != "<!-- excerpt -->"]


def test_every_python_block_is_run_or_marked_as_an_excerpt() -> None:
    assert RUN, "README.md has no Python block to run"
    for block in PYTHON:
        where = f"README.md line {block.line}"
        if block.marker is None or block.marker == "<!-- excerpt -->":
            continue
        options = block.options
        use = "use <!-- runnable: setup=NAME --> or <!-- excerpt -->"
        assert options, f"{where}: unknown marker {block.marker!r}; {use}"
        assert set(options) <= {"setup", "runs"}, f"{where}: unknown options in {block.marker!r}"
        assert options.get("setup", "torch") in SETUPS, f"{where}: no setup named {options.get('setup')!r}"
        assert options.get("runs", "1") in ("1", "2"), f"{where}: runs must be 1 or 2"


@pytest.mark.torch  # the blocks use the public API, not a Lightning line's behaviour: lightning26 runs them
@pytest.mark.slow
@pytest.mark.parametrize("block", RUN, ids=[f"line{b.line}" for b in RUN])
def test_a_readme_block_runs_as_shown_and_leaves_healthy_aliases(block: Block, tmp_path: Path) -> None:
    pytest.importorskip("lightning")  # every setup and block needs torch, the Trainer's and Fabric's Lightning
    from tests._cli import cli
    from tests._compat import _LIGHTNING_GE_2_4
    from tests._fork import lightning, run_forked

    setup = SETUPS[block.options["setup"]] if "setup" in block.options else ""
    script = tmp_path / "block.py"
    script.write_text(textwrap.dedent(setup) + "\n# --- README.md, as shown ---\n" + block.code, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if not _LIGHTNING_GE_2_4:  # Lightning < 2.4 next to torch >= 2.6: docs/versions.md
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    for run in range(int(block.options.get("runs", "1"))):
        proc = run_forked([script], preload=lightning(), cwd=work, env=env, timeout=300)
        assert proc.returncode == 0, f"run {run + 1}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        verify = cli("verify", "--require", "-r", ".", cwd=work, env=env)
        assert verify.returncode == 0, f"run {run + 1}:\n{verify.stdout}\n{verify.stderr}"
        assert verify.stdout.startswith("ok "), verify.stdout


# --- links ------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: ``A sweep: `sweep_best=` `` becomes ``a-sweep-sweep_best``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", prose, flags=re.M)}


def links(page: Path) -> list[str]:
    """The relative link targets of ``page``, outside code."""
    text = page.read_text(encoding="utf-8")
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
    targets = re.findall(r"\]\(([^)\s]+)\)", prose)
    return [t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    found = links(page)
    broken = []
    for target in found:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    assert broken == [], f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_links_to_every_page_of_the_docs() -> None:
    named = {(ROOT / t.partition("#")[0]).resolve() for t in links(README)}
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in named] == []
