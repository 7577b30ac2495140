"""Every `pip install` line of the README, CONTRIBUTING.md and docs/ resolves, as written.

Run from the repository root by `tox -e package`: for each distinct line, `pip install --dry-run
--ignore-installed` with the line's own arguments (pip resolves against the index, installs
nothing). A line whose requirements conflict (as `-e ".[s3]" "moto[server]"` once did) fails here
instead of in a user's terminal. `tests/test_packaging.py` checks what this finds.
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


def main() -> int:
    """Resolve each line; 1 if any does not."""
    failed = []
    for words, where in install_lines().items():
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
