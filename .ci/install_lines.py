"""Every `pip install` line of the README, CONTRIBUTING.md and docs/ resolves, as written.

Run from the repository root by `tox -e package`: for each distinct line, `pip install --dry-run
--ignore-installed` with the line's own arguments (pip resolves against the index, installs
nothing). A line whose requirements conflict (as `-e ".[s3]" "moto[server]"` once did) fails here
instead of in a user's terminal. `tests/test_packaging.py` checks what this finds.

A line whose every requirement is also in another line is not resolved on its own: whatever set of
packages satisfies the larger line satisfies each of its requirements, so the smaller line resolves
when the larger one does (`-e ".[s3]"` is within `-e ".[lightning,s3,gcs,azure]" "moto[server]>=5"`).
Ten lines take two resolutions, not ten (a minute of CI).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "CONTRIBUTING.md", "docs/*.md")
# `pip install ARGS`, in a code block or in backticks; ARGS end at `&&`, `;`, a comment or the quote
PIP = re.compile(r"(?:^|[\s/`])pip install ((?:\\\n|[^`#&;\n\\])+)")


def pages() -> list[Path]:
    """The pages users install from."""
    return sorted({path for pattern in PAGES for path in ROOT.glob(pattern)})


def install_lines() -> dict[tuple[str, ...], str]:
    """Each distinct argument list of a documented `pip install`, and the first place it appears."""
    found: dict[tuple[str, ...], str] = {}
    for page in pages():
        text = page.read_text()
        for match in PIP.finditer(text):
            words = tuple(shlex.split(match.group(1).replace("\\\n", " ")))
            line = text.count("\n", 0, match.start(1)) + 1
            if words and words[0] != "outside":  # prose: "refuse `pip install` outside one"
                found.setdefault(words, f"{page.relative_to(ROOT)}:{line}")
    return found


def requirements(words: tuple[str, ...]) -> frozenset[str] | None:
    """What a line asks for, one item per requirement: ``-e .[a,b]`` asks for ``-e .``, ``-e .[a]`` and
    ``-e .[b]``. None for a line with any other option (``--pre``, ``-c``: it changes what satisfies
    a requirement), which is then resolved on its own and covers no other line."""
    asked: set[str] = set()
    items = iter(words)
    for word in items:
        if word in ("-e", "--editable"):
            word = f"-e {next(items, '')}"
        elif word.startswith("-"):
            return None
        path = re.fullmatch(r"(-e )?(\.[^\[]*)\[([^\]]*)\]", word)  # a local project with extras
        if path:
            base = (path.group(1) or "") + path.group(2)
            asked |= {base, *(f"{base}[{extra.strip()}]" for extra in path.group(3).split(","))}
        else:
            asked.add(word)
    return frozenset(asked)


def within(words: tuple[str, ...], other: tuple[str, ...]) -> bool:
    """Whether every requirement of ``words`` is one of ``other`` (so ``other`` resolving is enough)."""
    mine, theirs = requirements(words), requirements(other)
    return mine is not None and theirs is not None and mine <= theirs


def to_resolve(lines: dict[tuple[str, ...], str]) -> dict[tuple[str, ...], str]:
    """The lines within no other: resolving these resolves every line (see the module docstring);
    of lines that ask for the same, the first."""
    kept: dict[tuple[str, ...], str] = {}
    for words, where in lines.items():
        inside = any(within(words, o) and not within(o, words) for o in lines)
        if not inside and not any(within(words, o) for o in kept):
            kept[words] = where
    return kept


def main() -> int:
    """Resolve each line that is within no other; 1 if any does not."""
    failed = []
    lines = install_lines()
    resolved = to_resolve(lines)
    for words, where in lines.items():
        if words not in resolved:
            covering = next(lines[o] for o in resolved if within(words, o))
            print(f"{where}: pip install {shlex.join(words)}: within {covering}", flush=True)
    for words, where in resolved.items():
        # --no-build-isolation: this project's metadata is built with the hatchling installed here,
        # not in a new environment per line; what the line asks for is resolved all the same
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        command += ["--no-build-isolation", *words]
        print(f"{where}: pip install {shlex.join(words)}", flush=True)
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            failed.append(where)
    if failed:
        print(f"these install lines do not resolve: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
