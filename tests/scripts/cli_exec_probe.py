"""What ``watch --exec`` runs in the tests: ``cli_exec_probe.py LOG ARGS...`` appends one JSON line to LOG.

The line holds the arguments it was given and, when the last two are a checkpoint and an
alias (``{target} {alias}``), whether the alias had the checkpoint's bytes when the command ran.
Exits with the status in ``PROBE_EXIT`` (0 when unset).
"""

from __future__ import annotations

import json
import os
import sys

log, args = sys.argv[1], sys.argv[2:]
entry: dict[str, object] = {"argv": args}
if len(args) >= 2 and os.path.isfile(args[-2]) and os.path.isfile(args[-1]):
    with open(args[-2], "rb") as target, open(args[-1], "rb") as alias:
        entry["alias_is_target"] = target.read() == alias.read()
print(f"probe ran for {args[0] if args else '?'}")  # watch sends this to its stderr, not its stdout
with open(log, "a") as fh:
    fh.write(json.dumps(entry) + "\n")
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
