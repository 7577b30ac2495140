"""``lightning-bestlink path``: the best checkpoint's path, and nothing else, for scripts.

It prints the checkpoint, not the alias, after checking the alias against its record.
While a run trains, a script that opens it may find it deleted (training deletes checkpoints
that are no longer among the best, once the alias has moved on), even at once. ``--hold SECONDS``
prints instead a second name of the checkpoint that stays readable that long (see
:mod:`.hold`). A path that a line of output would carry changed (a line break in it:
``"$(...)"`` drops those at its end) is refused unless ``--null`` or ``--json`` asks for
a form that carries any name.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
from typing import TextIO

from lightning_bestlink._cli.commands import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, usage_error
from lightning_bestlink._cli.hold import hold_detached
from lightning_bestlink._cli.render import advice, printable, problem, say
from lightning_bestlink._cli.render_json import VERSION, dumps, record_fields
from lightning_bestlink._cli.survey import Alias, load_alias, locate, parent, reason
from lightning_bestlink._storage import is_url


def _name(path: str) -> bytes:
    """The exact bytes of a name (a name that is not UTF-8 still names the file)."""
    return path.encode("utf-8") if is_url(path) else os.fsencode(path)


def _write(out: TextIO, data: bytes) -> None:
    out.flush()
    buffer = getattr(out, "buffer", None)
    if buffer is None:  # a text stream without bytes underneath (tests): the path as text
        out.write(os.fsdecode(data))
    else:
        buffer.write(data)
        buffer.flush()


def _document(alias: Alias, held: str | None, until: float | None) -> str:
    stamp = None if until is None else datetime.datetime.fromtimestamp(until, datetime.timezone.utc).isoformat()
    return dumps(
        {
            "version": VERSION,
            "alias": alias.path,
            "record": alias.record_path,
            **record_fields(alias.record),
            "held": held,
            "held_until": stamp,
        }
    )


def cmd_path(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print the best checkpoint's path (or URL), nothing else; exit 1 without a healthy alias."""
    if args.hold is not None and not (0 < args.hold < float("inf")):
        return usage_error(err, "path", f"--hold must be a positive number of seconds, got {args.hold}")
    located = locate(args.target, allow_outside=args.allow_outside)
    if located.alias is None or located.error is not None:
        say(err, f"lightning-bestlink path: {located.error}")
        return EXIT_USAGE if not located.exists else EXIT_PROBLEM
    alias = located.loaded or load_alias(located.alias, allow_outside=args.allow_outside)
    for _ in range(_TRIES):
        if not alias.ok or alias.target is None:
            folder = parent(alias.path)
            say(err, f"lightning-bestlink path: {printable(alias.path)} is not healthy: {problem(alias, folder)}")
            say(err, f"  {advice(alias, folder, 'path')}")
            return EXIT_PROBLEM
        target = alias.target
        if "\n" in target and not (args.null or args.json):
            say(
                err,
                f"lightning-bestlink path: the checkpoint's path {printable(target)} holds a line break, which a "
                f'line of output cannot carry unchanged ("$(...)" drops those at its end, a line-by-line reader '
                f"splits it); nothing printed. Use --null (the path ends with a NUL byte: xargs -0, read -d '') or "
                f"--json",
            )
            return EXIT_PROBLEM
        if args.hold is None:
            return _print(args, out, alias, None, None)
        try:
            held, keeper = hold_detached(target, args.hold)
        except FileNotFoundError:  # deleted before it could be held: the alias has moved on
            alias = load_alias(alias.path, allow_outside=args.allow_outside)
            continue
        except OSError as exc:
            say(err, f"lightning-bestlink path: {reason(exc)}; without --hold, path prints the checkpoint itself")
            return EXIT_PROBLEM
        if held is None:
            say(
                err, f"lightning-bestlink path: note: nothing is held on {target.split('://')[0]}://: it may be deleted"
            )
            return _print(args, out, alias, None, None)
        # a directory is held file by file, and training deletes a checkpoint only once the alias moved
        # on: still named now, it was whole when held (a file's hold is whole or fails)
        again = load_alias(alias.path, allow_outside=args.allow_outside) if os.path.isdir(held) else alias
        if again.ok and again.target == target:
            return _print(args, out, alias, held, datetime.datetime.now(datetime.timezone.utc).timestamp() + args.hold)
        os.kill(keeper, signal.SIGTERM)  # perhaps held in part: released, and the new best held instead
        alias = again
    say(err, f"lightning-bestlink path: the alias moved on at each of {_TRIES} holds (training updates it); try again")
    return EXIT_PROBLEM


_TRIES = 3


def _print(args: argparse.Namespace, out: TextIO, alias: Alias, held: str | None, until: float | None) -> int:
    if args.json:
        _write(out, _document(alias, held, until).encode("ascii") + b"\n")  # ASCII: json escapes the rest
    else:
        _write(out, _name(held or str(alias.target)) + (b"\0" if args.null else b"\n"))
    return EXIT_OK
