"""The ``lightning-bestlink`` command: look after a checkpoint folder without writing Python.

``show``, ``verify`` and ``repair`` read the JSON records (``<alias>.bestlink.json``)
and use :class:`~lightning_bestlink.BestLinker`; they import neither torch nor
Lightning. ``demo`` trains a tiny model and is the only command that imports them.

Exit status: 0 when all is well, 1 when an alias needs attention (or could not be
repaired), 2 for a usage error (including a DIR that is not a directory).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterable
from typing import TextIO

from lightning_bestlink import __version__
from lightning_bestlink._errors import AliasConflictError, BestLinkError
from lightning_bestlink._metadata import SUFFIX
from lightning_bestlink._render import advice, attention, count, problem, rel, render, score_parts
from lightning_bestlink._survey import Alias, Folder, folders, scan
from lightning_bestlink.linker import BestLinker, read_metadata

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

# --- commands -----------------------------------------------------------------------


def _shown(root_arg: str, root: str, path: str) -> str:
    """``path`` as the user would type it: under the DIR they passed."""
    rel = os.path.relpath(path, root)
    return root_arg if rel == os.curdir else os.path.normpath(os.path.join(root_arg, rel))


def _no_alias(found: list[Folder], args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    where = "under" if args.recursive else "in"
    hint = " (use -r to look in sub-folders)" if not args.recursive and any(f.subdirs for f in found) else ""
    if args.require:
        print(f"error: no lightning-bestlink alias {where} {args.dir}{hint}", file=err)
        return EXIT_PROBLEM
    print(f"no lightning-bestlink alias {where} {args.dir}{hint}: nothing to check", file=out)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    root = os.path.abspath(args.dir)
    found = folders(root, args.recursive)
    if not found:
        print(f"no checkpoints under {args.dir}", file=out)
        return EXIT_OK
    for i, folder in enumerate(found):
        if i:
            print(file=out)
        render(folder, out, title=_shown(args.dir, root, folder.path))
        if folder.empty and folder.subdirs and not args.recursive:
            print("  (use -r to look in sub-folders)", file=out)
    return EXIT_OK


def _survey(
    args: argparse.Namespace, out: TextIO, *, width: int, unrecorded: str, quiet: bool = False
) -> tuple[str, list[Folder], list[tuple[Folder, Alias]]]:
    """The folders and aliases ``verify`` and ``repair`` work on; notes the aliases without a record."""
    root = os.path.abspath(args.dir)
    found = folders(root, args.recursive)
    for folder in found:
        for name in folder.unrecorded:
            if not quiet:
                shown = _shown(args.dir, root, os.path.join(folder.path, name))
                print(f"{'note':<{width}}{shown}: no {SUFFIX} record, {unrecorded}", file=out)
    return root, found, [(f, a) for f in found for a in f.aliases]


def cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    root, found, aliases = _survey(args, out, width=8, unrecorded="not verified", quiet=args.quiet)
    if not aliases:
        return _no_alias(found, args, out, err)
    bad = 0
    for folder, alias in aliases:
        shown = _shown(args.dir, root, alias.path)
        if alias.ok:
            if not args.quiet:
                record = alias.record or {}
                text, details = score_parts(record)
                target = rel(alias.target, folder.path)
                print(f"ok      {shown} -> {target} ({', '.join([str(record.get('link')), text, *details])})", file=out)
            continue
        bad += 1
        print(f"FAILED  {shown}: {problem(alias, folder.path)}", file=out)
        print(f"        {advice(alias, _shown(args.dir, root, folder.path))}", file=out)
    if bad:
        print(f"verify: {attention(bad, len(aliases))}", file=err)
        return EXIT_PROBLEM
    return EXIT_OK


def cmd_repair(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    root, found, aliases = _survey(args, out, width=10, unrecorded="nothing to repair from")
    if not aliases:
        return _no_alias(found, args, out, err)
    failed = 0
    for folder, alias in aliases:
        shown = _shown(args.dir, root, alias.path)
        if alias.ok:
            print(f"ok        {shown} (nothing to do)", file=out)
            continue
        before = problem(alias, folder.path)
        if alias.error is not None:
            failed += 1
            print(f"FAILED    {shown}: {before}", file=out)
            continue
        try:
            report = BestLinker.from_metadata(alias.path).repair()
        except AliasConflictError:
            failed += 1
            print(f"REFUSED   {shown}: {before}", file=out)
            print(f"          {advice(alias, _shown(args.dir, root, folder.path))}", file=out)
            continue
        except (BestLinkError, OSError) as exc:
            failed += 1
            print(f"FAILED    {shown}: {exc}", file=out)
            continue
        if report.ok:
            fixed = read_metadata(alias.path) or {}
            target = rel(report.expected, folder.path)
            print(f"repaired  {shown} -> {target} ({fixed.get('link', '?')})", file=out)
            print(f"          was {before}", file=out)
        else:
            failed += 1
            print(f"FAILED    {shown}: {before}", file=out)
            print(f"          {advice(alias, _shown(args.dir, root, folder.path))}", file=out)
    if failed:
        print(f"repair: {count(failed, len(aliases), 'not repaired')}", file=err)
        return EXIT_PROBLEM
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.epochs < 1:
        print(f"error: --epochs must be at least 1, got {args.epochs}", file=err)
        return EXIT_USAGE
    keep = args.dir is not None
    if keep:
        if os.path.exists(args.dir) and not os.path.isdir(args.dir):
            print(f"error: --dir {args.dir!r} is not a directory", file=err)
            return EXIT_USAGE
        for sub in ("trainer", "fabric"):
            path = os.path.join(args.dir, sub)
            if os.path.isdir(path) and os.listdir(path):
                print(f"error: {path} is not empty; choose another --dir or remove it", file=err)
                return EXIT_USAGE
    if importlib.util.find_spec("lightning") is None or importlib.util.find_spec("torch") is None:
        print("error: the demo needs torch and lightning: pip install 'lightning-bestlink[lightning]'", file=err)
        return EXIT_PROBLEM
    root = os.path.abspath(args.dir) if keep else tempfile.mkdtemp(prefix="lightning-bestlink-demo-")
    from lightning_bestlink import _demo  # torch and Lightning are imported here, and only here

    shown = args.dir if keep else root
    print(
        f"lightning-bestlink demo: a tiny regression model on synthetic data (nothing downloaded), "
        f"{args.epochs} epochs, trained twice",
        file=out,
    )
    print(f"output: {shown}{'' if keep else '  (temporary; pass --dir DIR to keep it)'}", file=out)
    print(file=out)
    try:
        done = _demo.run(root, epochs=args.epochs, verbose=args.verbose, out=out)
        print(file=out)
        print("Result (the same table as `lightning-bestlink show DIR`):", file=out)
        for i, path in enumerate(done):
            if i:
                print(file=out)
            render(scan(path), out, title=os.path.join(shown, os.path.basename(path)))
        print(file=out)
        if keep:
            print(f"Kept in {shown}. Try:  lightning-bestlink verify -r {shown}", file=out)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if not keep:
        print(f"Removed {root} (pass --dir DIR to keep the checkpoints).", file=out)
    return EXIT_OK


# --- argument parsing ---------------------------------------------------------------

_EXIT_HELP = """exit status:
  0  all is well (also when DIR holds no alias at all, unless --require)
  1  an alias needs attention, or could not be repaired
  2  usage error (e.g. DIR is not a directory)
"""


def _wrap(*paragraphs: str) -> str:
    """Help text for RawDescriptionHelpFormatter: prose is filled, lines with line breaks are kept."""
    return "\n\n".join(p if "\n" in p else textwrap.fill(p, 88) for p in paragraphs)


def _directory(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return text


def _dir_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir", metavar="DIR", type=_directory, help="a checkpoint folder, e.g. lightning_logs/version_0/checkpoints"
    )
    p.add_argument(
        "-r", "--recursive", action="store_true", help="also every folder below DIR (e.g. DIR=lightning_logs)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (for ``--help`` and for the tests)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="lightning-bestlink",
        description="Look after the best.ckpt alias of PyTorch Lightning checkpoint folders, or watch it work.",
        epilog="examples:\n"
        "  lightning-bestlink demo                     # train a tiny model twice, show the result\n"
        "  lightning-bestlink show checkpoints/        # which checkpoint is best, which is last\n"
        "  lightning-bestlink verify -r lightning_logs # for CI: exit 1 if an alias is broken\n"
        "  lightning-bestlink repair checkpoints/      # rebuild broken aliases from their records\n\n"
        "Run 'lightning-bestlink COMMAND --help' for each command.",
        formatter_class=fmt,
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "show",
        help="table of the checkpoints in DIR: best, last, scores, alias health",
        description=_wrap(
            "List the checkpoints in DIR (*.ckpt, *.pt, *.pth files and checkpoint directories), "
            "mark the best (the target of every alias with a <alias>.bestlink.json record) and the "
            "last (last*.ckpt, or what a last* symlink names), with the score, link kind and health "
            "of each alias. Reads only; imports no torch."
        ),
        epilog="examples:\n"
        "  lightning-bestlink show lightning_logs/version_0/checkpoints\n"
        "  lightning-bestlink show -r runs/\n\n"
        "output (MARK: best = the target of best.ckpt, last = last.ckpt or what a last* link names):\n"
        "  runs/exp/checkpoints  (alias healthy)\n"
        "    CHECKPOINT                    SIZE     MARK  SCORE\n"
        "    epoch=3-val_loss=2.1465.ckpt  5.5 KiB\n"
        "    epoch=4-val_loss=2.1241.ckpt  5.8 KiB  best  val_loss=2.12406 (min, epoch 4, step 25)\n"
        "    last.ckpt                     6.8 KiB  last\n\n"
        "    ALIAS      KIND     TARGET                        HEALTH\n"
        "    best.ckpt  symlink  epoch=4-val_loss=2.1241.ckpt  ok",
        formatter_class=fmt,
    )
    _dir_args(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "verify",
        help="exit 1 if an alias is missing, dangling, mismatched or foreign",
        description=_wrap(
            "Check every alias in DIR against its record: it must exist and point at the checkpoint "
            "the record names. Prints one line per alias; a failing one says what is wrong and what "
            "to do. Changes nothing. For scripts and CI. A failure is one of:",
            "  missing            the record names a best checkpoint but the alias is gone\n"
            "  dangling           the alias is a symlink to a file that does not exist\n"
            "  mismatch           the alias points at another checkpoint than its record names\n"
            "  foreign            a file lightning-bestlink did not write sits at the alias path\n"
            "  unreadable record  <alias>.bestlink.json is not a lightning-bestlink record",
            "A folder with no record at all passes, with a note (an alias without its record cannot "
            "be checked: it may be a file of your own); use --require to make that a failure.",
        ),
        epilog="examples:\n"
        "  lightning-bestlink verify checkpoints/ && echo healthy\n"
        "  lightning-bestlink verify --require -r lightning_logs   # fail if no alias was written at all\n\n"
        + _EXIT_HELP,
        formatter_class=fmt,
    )
    _dir_args(p)
    p.add_argument("--require", action="store_true", help="fail (exit 1) when there is no alias record at all")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the aliases that fail")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "repair",
        help="rebuild broken aliases from their records",
        description=_wrap(
            "Rebuild every alias in DIR that is missing, dangling or points at the wrong checkpoint, "
            "from its <alias>.bestlink.json record, with the same atomic swap as during training and "
            "the link kind the record names. Healthy aliases are left alone. Never replaces a file "
            "that lightning-bestlink did not write (reported as REFUSED, exit 1), and cannot help "
            "when the best checkpoint itself was deleted (FAILED, exit 1)."
        ),
        epilog="examples:\n  lightning-bestlink repair checkpoints/\n  lightning-bestlink repair -r lightning_logs\n\n"
        + _EXIT_HELP,
        formatter_class=fmt,
    )
    _dir_args(p)
    p.add_argument("--require", action="store_true", help="fail (exit 1) when there is no alias record at all")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser(
        "demo",
        help="train a tiny model with the Trainer and with Fabric, then show the folders",
        description=_wrap(
            "Train a tiny linear model on synthetic data (nothing is downloaded) twice: with the "
            "Lightning Trainer and ModelCheckpointWithLinkBest(save_best=True, save_last=True, "
            "monitor='val_loss'), and with a Fabric loop and lightning_bestlink.fabric.save_and_link. "
            "Prints a line per epoch, then each checkpoint folder with best and last marked, as "
            "'show' does. Needs torch and lightning (pip install 'lightning-bestlink[lightning]'); "
            "takes a few seconds on a CPU."
        ),
        epilog="examples:\n"
        "  lightning-bestlink demo                 # in a temporary folder, removed at the end\n"
        "  lightning-bestlink demo --dir runs/demo # keep the checkpoints, then:\n"
        "  lightning-bestlink show -r runs/demo",
        formatter_class=fmt,
    )
    p.add_argument("--dir", metavar="DIR", help="keep the output in DIR (DIR/trainer and DIR/fabric)")
    p.add_argument("--epochs", type=int, default=8, help="epochs per run (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="let Lightning print its logs and warnings")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Iterable[str] | None = None) -> int:
    """Entry point of ``lightning-bestlink`` and ``python -m lightning_bestlink``."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.func(args, sys.stdout, sys.stderr)
    except BrokenPipeError:  # `lightning-bestlink show DIR | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # e.g. a folder that cannot be read
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


__all__ = ["build_parser", "main"]
