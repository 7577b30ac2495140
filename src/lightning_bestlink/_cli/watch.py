"""``lightning-bestlink watch``: one line per new best while a run trains, and a command for each.

Cheap: once the alias is known, each look is one ``lstat`` of its record (one request on
an object store; the storage's identity of a file); the record is read only when that
changed, and the folder is never listed. A new best is reported once the record names
another checkpoint or score *and* the alias agrees with it, read twice to the same answer:
a record caught between the writer's two renames, or one rewritten for the same best (a
repair, a resumed run), is not an event.

``--exec`` gives its command the checkpoint held (``Storage.hold``: a hard link next to
it, under its own file name), so training deleting it while the command runs takes
nothing away; the hold goes when the command ends, and one a killed watch left goes
with the next hold made in that folder.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any, TextIO

from lightning_bestlink._cli.commands import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEM, shown, usage_error
from lightning_bestlink._cli.render import advice, printable, problem, rel, say, score_parts
from lightning_bestlink._cli.render_json import VERSION, dumps, record_fields
from lightning_bestlink._cli.survey import Alias, Located, load_alias, locate, parent, reason, storage_of
from lightning_bestlink._record import SUFFIX
from lightning_bestlink._storage import Storage

_PLACEHOLDER = re.compile(r"\{(target|score|alias)\}")
_log = logging.getLogger(__name__)


def _key(record: dict[str, Any]) -> tuple[str, str]:
    """What makes a best new: another checkpoint, or another score (NaN-safe)."""
    return str(record.get("target")), repr(record.get("score"))


def _empty(located: Located) -> bool:
    """A readable folder without an alias yet: watch waits for one."""
    return located.folder is not None and located.folder.error is None and not located.folder.aliases


class Follower:
    """Follows the record of one alias (found from ``arg`` on the first look that can)."""

    def __init__(self, arg: str, *, allow_outside: bool = False) -> None:
        self.arg = arg
        self.allow_outside = allow_outside
        self.alias: str | None = None
        self.best: tuple[str, str] | None = None  # the key of the best already reported (or initial)
        self.record: dict[str, Any] | None = None
        self._print: Any = None  # identity of the record last read
        self._pending = False  # a new record seen, not yet agreed by the alias
        self.note: str | None = None  # what was wrong at the first look
        self._storage: Storage | None = None  # where the alias lives, once it is known
        self.said_unheld = False  # the note that this storage holds nothing was given

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = storage_of(str(self.alias))
        return self._storage

    def _identity(self) -> Any:
        """What changes whenever the record is replaced (None: there is none): the storage's identity
        of a file, one ``lstat`` (one request on an object store)."""
        try:
            return self.storage.identity(f"{self.alias}{SUFFIX}")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _load(self) -> Alias:
        return load_alias(str(self.alias), allow_outside=self.allow_outside)

    def names(self, target: str) -> bool:
        """Whether the alias still names ``target`` (its record unchanged since the last look, or
        naming it when read again)."""
        try:
            if self._identity() == self._print:
                return True
        except OSError:
            pass
        return self._load().target == target

    def shown(self) -> str:
        """The alias as the user would type it: under the DIR (or next to the record) they passed."""
        alias = str(self.alias)
        return shown(self.arg, storage_of(alias).normalize(self.arg), alias)

    def start(self) -> str | None:
        """The first look: the initial best is not an event. Returns a fatal problem, or None."""
        located = locate(self.arg, allow_outside=self.allow_outside)
        if not located.exists:
            return None  # nothing at ARG yet (training has not started): later looks search again
        if located.alias is None:
            return None if _empty(located) else located.error
        self.alias = located.alias
        try:
            self._print = self._identity()
        except OSError as err:
            self.note = f"cannot look at {self.alias}{SUFFIX}: {reason(err)}"
        alias = located.loaded or self._load()  # a folder's survey loaded it already
        if alias.record is not None:
            self.best, self.record = _key(alias.record), alias.record
        if alias.error is not None or alias.refused:
            self.note = _problem(alias)
        return None

    def look(self) -> tuple[dict[str, Any] | None, str | None]:
        """One look: ``(record of a new best, None)``, ``(None, problem)`` or ``(None, None)``."""
        if self.alias is None:
            located = locate(self.arg, allow_outside=self.allow_outside)
            if not located.exists or (located.alias is None and _empty(located)):
                return None, None  # still nothing to follow
            if located.alias is None:
                return None, located.error
            self.alias, self._pending = located.alias, True
        try:
            now = self._identity()
        except OSError as err:
            return None, f"cannot look at {self.alias}{SUFFIX}: {reason(err)}"
        if now is None:
            self._print = None
            return None, f"{self.alias}{SUFFIX} does not exist (waiting for it)"
        if now == self._print and not self._pending:
            return None, None
        self._print = now
        first = self._load()
        if first.record is None or first.refused:
            self._pending = False  # a damaged record, or one naming a file outside: read again when it changes
            return None, _problem(first)
        if _key(first.record) == self.best:
            self._pending = False  # the same best, rewritten (a repair, a resumed run)
            return None, None
        second = self._load()  # read twice: a record and alias that differ between the reads are being rewritten
        if not (first.ok and second.ok and first.record == second.record):
            self._pending = True  # between the record and the alias (or being rewritten): look again
            if first.error is not None:
                return None, first.error
            target = rel(first.target, parent(self.alias))
            how = first.status if not first.ok else second.status if not second.ok else "being rewritten"
            return None, f"the record names {target}, the alias does not point at it yet ({how})"
        self._pending = False
        self.best, previous, self.record = _key(first.record), self.record, first.record
        return {"record": first.record, "previous": previous}, None


def _problem(alias: Alias) -> str:
    """What is wrong with an alias whose best cannot be reported, and what to do."""
    if alias.refused:
        return f"{problem(alias, parent(alias.path))}; {advice(alias, parent(alias.path), 'watch')}"
    return str(alias.error)


def _fill(argv: list[str], values: dict[str, str]) -> list[str]:
    return [_PLACEHOLDER.sub(lambda m: values[m[1]], arg) for arg in argv]


def _score_arg(score: Any) -> str:
    if score is None:
        return "null"
    return repr(float(score)) if isinstance(score, (int, float)) and not isinstance(score, bool) else str(score)


def _event_line(follower: Follower, event: dict[str, Any], as_json: bool) -> str:
    record, previous = event["record"], event["previous"]
    alias = str(follower.alias)
    if as_json:
        seen = datetime.datetime.now(datetime.timezone.utc).isoformat()
        before = None if previous is None else {"target": previous.get("target"), "score": previous.get("score")}
        return dumps(
            {
                "version": VERSION,
                "event": "new-best",
                "alias": alias,
                "record": alias + SUFFIX,
                **record_fields(record),
                "previous": before,
                "seen": seen,
            }
        )
    text, details = score_parts(record)
    target = rel(str(record.get("target")), parent(alias))
    return printable(
        f"new best  {follower.shown()} -> {target} ({', '.join([str(record.get('link')), text, *details])})"
    )


def _held(follower: Follower, target: str, err: TextIO) -> tuple[str | None, bool]:
    """Hold ``target`` while the command runs: ``(held path or None, whether to run at all)``."""
    storage = follower.storage
    storage.release_stale(parent(target))  # holds a killed watch left here
    try:
        held = storage.hold(target)
        if held is not None and os.path.isdir(held) and not follower.names(target):
            # a directory is held file by file, and training deletes a checkpoint only once the alias
            # moved on: no longer named, it may be held in part (a file's hold is whole or fails)
            storage.release(held)
            say(
                err,
                f"watch: --exec not run for {rel(target, parent(str(follower.alias)))}: the alias moved on while "
                f"it was held (training may have deleted part of it); still watching",
            )
            return None, False
        if held is None and not follower.said_unheld:
            follower.said_unheld = True
            say(
                err,
                f"watch: note: nothing is held on {target.split('://')[0]}://: a checkpoint may be deleted "
                f"while the command reads it",
            )
        return held, True
    except FileNotFoundError:  # training deleted it already: a better best has replaced it
        say(
            err,
            f"watch: --exec not run for {rel(target, parent(str(follower.alias)))}: it was deleted before it "
            f"could be held (a newer best replaced it); still watching",
        )
        return None, False
    except OSError as exc:
        say(
            err,
            f"watch: cannot hold {target} ({reason(exc)}): --exec gets the checkpoint itself, which training "
            f"may delete while the command runs",
        )
        return None, True


def _run(argv: list[str], record: dict[str, Any], follower: Follower, err: TextIO) -> None:
    """Run the user's command for one new best, the checkpoint held meanwhile; a failure is reported, not raised."""
    target = str(record.get("target"))
    held, run = _held(follower, target, err)
    if not run:
        return
    values = {"target": held or target, "score": _score_arg(record.get("score")), "alias": str(follower.alias)}
    filled = _fill(argv, values)
    sys.stdout.flush()
    err.flush()
    try:
        # stdout of the command goes to stderr: watch's stdout stays one line per new best
        done = subprocess.run(filled, stdin=subprocess.DEVNULL, stdout=err.fileno(), check=False)
    except OSError as exc:
        say(err, f"watch: --exec could not run {shlex.join(filled)}: {reason(exc)}; still watching")
        return
    finally:
        if held is not None:
            follower.storage.release(held)
            _log.debug("released %s", held)
    if done.returncode != 0:
        how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"exited with {done.returncode}"
        say(err, f"watch: --exec {shlex.join(filled)} {how}; still watching")


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that releases a hold


def _check(args: argparse.Namespace, err: TextIO) -> list[str] | int | None:
    """The --exec argv (None without --exec), or the exit status of a usage error."""
    if not (math.isfinite(args.interval) and args.interval > 0):
        return usage_error(err, "watch", f"--interval must be a positive number of seconds, got {args.interval}")
    if args.count is not None and args.count < 1:
        return usage_error(err, "watch", f"--count must be at least 1, got {args.count}")
    if args.exec is None:
        return None
    try:
        argv = shlex.split(args.exec)
    except ValueError as exc:
        return usage_error(err, "watch", f"--exec {args.exec!r} cannot be split into arguments: {exc}")
    if not argv:
        return usage_error(err, "watch", "--exec needs a command, got an empty string")
    if not _PLACEHOLDER.search(argv[0]) and shutil.which(argv[0]) is None:
        return usage_error(err, "watch", f"--exec: command {argv[0]!r} not found (is it on PATH?)")
    return argv


def cmd_watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    argv = _check(args, err)
    if isinstance(argv, int):
        return argv
    follower = Follower(args.target, allow_outside=args.allow_outside)
    if argv is not None:
        for polite in (signal.SIGTERM, signal.SIGHUP):  # a polite kill, or a closed terminal, leaves no hold behind
            signal.signal(polite, _terminated)
    fatal = follower.start()
    if fatal is not None:
        say(err, f"lightning-bestlink watch: {fatal}")
        return EXIT_PROBLEM
    if follower.alias is None:
        say(err, f"watch: no alias at {args.target} yet; waiting for one to appear")
    else:
        now = (
            "no best yet"
            if follower.record is None
            else rel(str(follower.record.get("target")), parent(follower.alias))
        )
        say(
            err,
            f"watch: following {follower.shown()} (best now: {now}); a look every {args.interval:g} s, Ctrl-C to stop",
        )
    if follower.note is not None:
        say(err, f"watch: {follower.note}")
    seen, last_problem = 0, follower.note
    try:
        while True:
            time.sleep(args.interval)
            event, problem = follower.look()
            if problem is not None and problem != last_problem:
                say(err, f"watch: {problem}")
            last_problem = problem
            if event is None:
                continue
            seen += 1  # counted first: a Ctrl-C once the line is out must count it
            print(_event_line(follower, event, args.json), file=out, flush=True)
            if argv is not None:
                _run(argv, event["record"], follower, err)
            if args.count is not None and seen >= args.count:
                return EXIT_OK
    except KeyboardInterrupt:
        say(err, f"watch: interrupted after {seen} new best{'s' if seen != 1 else ''}")
        return EXIT_INTERRUPTED
