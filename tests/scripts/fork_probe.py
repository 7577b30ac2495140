"""Run by tests/test_fork.py, fresh and forked: report what a process sees of its start, then end.

    python fork_probe.py REPORT MODULES HOW

Notes which of MODULES (comma-separated) are imported already (in a forked run only), imports
them as the fork server does, writes to REPORT (JSON) what the process sees, then ends as HOW
says: ``exit:N``, ``message``, ``raise``, ``interrupt``, ``kill``, ``sleep`` or ``unclosed``
(leaves a file open with data in its buffer).
"""

import importlib
import json
import os
import random
import signal
import sys
import time


def handler(h):
    return "ignored" if h == signal.SIG_IGN else "default" if h == signal.SIG_DFL else getattr(h, "__name__", str(h))


report, modules, how = sys.argv[1], sys.argv[2], sys.argv[3]
preloaded = sorted(m for m in modules.split(",") if m in sys.modules)
for name in filter(None, modules.split(",")):
    importlib.import_module(name)
print("to stdout")
print("to stderr", file=sys.stderr)
main = sys.modules["__main__"]
seen = {
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "path0": sys.path[0],
    "main": {k: repr(getattr(main, k, None)).split(" object at ")[0] for k in ("__name__", "__file__", "__spec__")},
    "env": dict(os.environ),
    "signals": {getattr(s, "name", str(s)): handler(signal.getsignal(s)) for s in signal.valid_signals()},
    "blocked": sorted(getattr(s, "name", str(s)) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "hash": hash("a string"),  # PYTHONHASHSEED
    "preloaded": preloaded,
    "random": random.random(),
    "torch_seed": sys.modules["torch"].initial_seed() if "torch" in sys.modules else None,
    "pid": os.getpid(),
}
with open(report, "w") as fh:
    json.dump(seen, fh)

if how.startswith("exit:"):
    sys.exit(int(how.split(":")[1]))
if how == "message":
    sys.exit("a message instead of a status")
if how == "raise":
    raise ValueError("raised by the script")
if how == "interrupt":
    raise KeyboardInterrupt
if how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if how == "sleep":
    time.sleep(600)
if how == "unclosed":
    left_open = open(report + ".unclosed", "w")  # noqa: SIM115  # flushed at exit, as the interpreter does
    left_open.write("written, never flushed by the script")
