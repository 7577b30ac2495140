"""The commands that survey folders: ``show``, ``verify`` and ``repair``.

Each takes the parsed arguments and two streams: results go to ``out`` (stdout),
diagnostics to ``err`` (stderr). They read through :mod:`.survey` and word what it
found with :mod:`.render` (text) or :mod:`.render_json`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import TextIO

from lightning_bestlink._cli.render import advice, attention, count, problem, rel, render, say, score_parts
from lightning_bestlink._cli.render_json import dumps, survey_json
from lightning_bestlink._cli.survey import Alias, Folder, folders, reason, storage_of
from lightning_bestlink._errors import AliasConflictError, BestLinkError, OutsideFolderError
from lightning_bestlink._record import SUFFIX
from lightning_bestlink._storage import is_url
from lightning_bestlink.linker import BestLinker, read_record

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: how long repair waits for the lock of a healthy alias, to remove what a killed update left
_GLANCE = 0.2
#: what a repair can raise besides the errors it is documented to raise (a damaged record)
_REPAIR_ERRORS = (BestLinkError, OSError, ValueError, TypeError, KeyError, RecursionError, OverflowError)


def usage_error(err: TextIO, command: str, message: str) -> int:
    say(err, f"lightning-bestlink {command}: error: {message}")
    return EXIT_USAGE


def shown(root_arg: str, root: str, path: str) -> str:
    """``path`` as the user would type it: under the DIR they passed."""
    if is_url(root):
        base = root.rstrip("/") + "/"
        if path == root:
            return root_arg
        return root_arg.rstrip("/") + "/" + path[len(base) :] if path.startswith(base) else path
    rel_path = os.path.relpath(path, root)
    return root_arg if rel_path == os.curdir else os.path.normpath(os.path.join(root_arg, rel_path))


def survey_root(args: argparse.Namespace, err: TextIO) -> tuple[str, list[Folder]] | int:
    """The folders under ``args.dir``, or the exit status of a usage error."""
    try:
        storage = storage_of(args.dir)
        root = storage.normalize(args.dir)
        if is_url(root):  # local folders were checked by the parser
            item = storage.lookup(root)
            if item is None or item.kind != "dir":
                return usage_error(err, args.command, f"{args.dir!r} is not a directory")
    except OSError as exc:
        say(err, f"lightning-bestlink {args.command}: error: cannot look at {args.dir}: {reason(exc)}")
        return EXIT_PROBLEM
    deep = getattr(args, "deep", False)  # verify's option
    return root, folders(root, args.recursive, allow_outside=args.allow_outside, deep=deep)


def _unreadable(found: list[Folder], shown_of: dict[str, str], out: TextIO, width: int) -> int:
    """Report the folders that could not be read (a result of verify and repair); how many."""
    bad = [f for f in found if f.error is not None]
    for folder in bad:
        say(out, f"{'FAILED':<{width}}{shown_of[folder.path]}: {folder.error}; its aliases were not checked")
    return len(bad)


def _no_alias(found: list[Folder], args: argparse.Namespace, err: TextIO) -> int:
    where = "under" if args.recursive else "in"
    hint = " (use -r to look in sub-folders)" if not args.recursive and any(f.subdirs for f in found) else ""
    if args.require:
        say(err, f"error: no lightning-bestlink alias {where} {args.dir}{hint}")
        return EXIT_PROBLEM
    say(err, f"no lightning-bestlink alias {where} {args.dir}{hint}: nothing to check")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    surveyed = survey_root(args, err)
    if isinstance(surveyed, int):
        return surveyed
    root, found = surveyed
    unreadable = [f for f in found if f.error is not None]
    for folder in unreadable:
        say(err, f"show: {shown(args.dir, root, folder.path)}: {folder.error}")
    if args.json:
        print(dumps(survey_json("show", root, found)), file=out)
        return EXIT_PROBLEM if unreadable else EXIT_OK
    if not found:
        say(out, f"no checkpoints under {args.dir}")
        return EXIT_OK
    for i, folder in enumerate(found):
        if i:
            print(file=out)
        render(folder, out, title=shown(args.dir, root, folder.path))
        if folder.empty and folder.subdirs and not args.recursive:
            say(out, "  (use -r to look in sub-folders)")
    return EXIT_PROBLEM if unreadable else EXIT_OK


def _notes(args: argparse.Namespace, root: str, found: list[Folder], err: TextIO, unrecorded: str) -> None:
    for folder in found:
        for name in folder.unrecorded:
            say(
                err, f"note: {shown(args.dir, root, os.path.join(folder.path, name))}: no {SUFFIX} record, {unrecorded}"
            )


def cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    surveyed = survey_root(args, err)
    if isinstance(surveyed, int):
        return surveyed
    root, found = surveyed
    aliases = [(f, a) for f in found for a in f.aliases]
    if not args.quiet:
        _notes(args, root, found, err, "not verified")
    shown_of = {f.path: shown(args.dir, root, f.path) for f in found}
    if args.json:  # --json changes what goes to stdout, nothing else
        print(dumps(survey_json("verify", root, found)), file=out)
        unreadable = sum(f.error is not None for f in found)
    else:
        unreadable = _unreadable(found, shown_of, out, 8)
    if not aliases and not unreadable:
        return _no_alias(found, args, err)
    bad = 0
    for folder, alias in aliases:
        bad += not alias.ok
        if args.json or (alias.ok and args.quiet):
            continue
        where = shown(args.dir, root, alias.path)
        if alias.ok:
            record = alias.record or {}
            text, details = score_parts(record)
            target = rel(alias.target, folder.path)
            say(out, f"ok      {where} -> {target} ({', '.join([str(record.get('link')), text, *details])})")
        else:
            say(out, f"FAILED  {where}: {problem(alias, folder.path)}")
            say(out, f"        {advice(alias, shown_of[folder.path], 'verify')}")
    if bad or unreadable:
        say(err, f"verify: {attention(bad, len(aliases), unreadable)}")
        return EXIT_PROBLEM
    return EXIT_OK


def _repair_one(alias: Alias, folder: Folder, shown_dir: str, where: str, out: TextIO, allow_outside: bool) -> bool:
    """Repair one alias and say how it went; whether it is healthy now."""
    if alias.ok:
        # under the alias's lock, what a killed update left next to it goes (the look's cleanup); not
        # waited for: training holding the lock is updating the alias, and cleans up itself
        trusted = allow_outside or alias.trusted_outside
        with contextlib.suppress(*_REPAIR_ERRORS):
            BestLinker.from_record(alias.path, allow_outside=trusted, lock_timeout=_GLANCE).repair()
        say(out, f"ok        {where} (nothing to do)")
        return True
    before = problem(alias, folder.path)
    if alias.error is not None or alias.refused:
        say(out, f"{'REFUSED' if alias.refused else 'FAILED':<10}{where}: {before}")
        say(out, f"          {advice(alias, shown_dir)}")
        return False
    try:
        report = BestLinker.from_record(alias.path, allow_outside=allow_outside or alias.trusted_outside).repair()
    except OutsideFolderError:  # the record changed since the survey read it
        say(out, f"REFUSED   {where}: its record now names a checkpoint outside {shown_dir}")
        say(out, f"          if you trust it: lightning-bestlink repair --allow-outside {shown_dir}")
        return False
    except AliasConflictError:
        say(out, f"REFUSED   {where}: {before}")
        say(out, f"          {advice(alias, shown_dir)}")
        return False
    except _REPAIR_ERRORS as exc:
        say(out, f"FAILED    {where}: {exc}")
        return False
    if not report.ok:
        say(out, f"FAILED    {where}: {before}")
        say(out, f"          {advice(alias, shown_dir)}")
        return False
    try:
        kind = str((read_record(alias.path) or {}).get("link", "?"))
    except _REPAIR_ERRORS:
        kind = "?"
    say(out, f"repaired  {where} -> {rel(report.expected, folder.path)} ({kind})")
    say(out, f"          was {before}")
    return True


def cmd_repair(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    surveyed = survey_root(args, err)
    if isinstance(surveyed, int):
        return surveyed
    root, found = surveyed
    _notes(args, root, found, err, "nothing to repair from")
    shown_of = {f.path: shown(args.dir, root, f.path) for f in found}
    unreadable = _unreadable(found, shown_of, out, 10)
    aliases = [(f, a) for f in found for a in f.aliases]
    if not aliases and not unreadable:
        return _no_alias(found, args, err)
    failed = sum(
        not _repair_one(
            alias, folder, shown_of[folder.path], shown(args.dir, root, alias.path), out, args.allow_outside
        )
        for folder, alias in aliases
    )
    if failed or unreadable:
        parts = [count(failed, len(aliases), "not repaired")] if failed else []
        if unreadable:
            parts.append(f"{unreadable} folder{'s' if unreadable > 1 else ''} could not be read")
        say(err, f"repair: {'; '.join(parts)}")
        return EXIT_PROBLEM
    return EXIT_OK
