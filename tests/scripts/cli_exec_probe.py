"""What ``watch --exec`` runs in the tests: ``cli_exec_probe.py LOG ARGS...`` appends one JSON line to LOG.

The line holds the arguments it was given; when the first is a file, its name and content
(``{target}``: the checkpoint as the command gets it); and when the last two are a checkpoint
and an alias (``{target} {alias}``), whether the alias had the checkpoint's bytes when the
command ran. With ``PROBE_DELETE`` set and ``{target} ... {alias}`` given, it first deletes the
checkpoint next to the alias that ``{target}`` names, as training does when a better one comes
while the command starts. Exits with the status in ``PROBE_EXIT`` (0 when unset).
"""

from __future__ import annotations

import json
import os
import sys

log, args = sys.argv[1], sys.argv[2:]
entry: dict[str, object] = {"argv": args}
if os.environ.get("PROBE_DELETE") and len(args) >= 2:
    original = os.path.join(os.path.dirname(args[-1]), os.path.basename(args[0]))
    os.unlink(original)
    entry["deleted"] = original
if args and os.path.isfile(args[0]):
    with open(args[0]) as fh:
        entry["name"], entry["content"] = os.path.basename(args[0]), fh.read()
if len(args) >= 2 and os.path.isfile(args[-2]) and os.path.isfile(args[-1]):
    with open(args[-2], "rb") as target, open(args[-1], "rb") as alias:
        entry["alias_is_target"] = target.read() == alias.read()
print(f"probe ran for {args[0] if args else '?'}")  # watch sends this to its stderr, not its stdout
with open(log, "a") as fh:
    fh.write(json.dumps(entry) + "\n")
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
