"""The argument parser of ``lightning-bestlink``: every command, its options, its ``--help``.

The help texts are written for a user at a terminal: what the command does, examples,
and the exit status. Each subcommand's ``func`` is the function that runs it.
"""

from __future__ import annotations

import argparse
import os
import textwrap

from lightning_bestlink import __version__
from lightning_bestlink._cli.commands import cmd_repair, cmd_show, cmd_verify
from lightning_bestlink._cli.demo import cmd_demo
from lightning_bestlink._cli.path import cmd_path
from lightning_bestlink._cli.watch import cmd_watch
from lightning_bestlink._storage import is_url

# --- argument parsing ---------------------------------------------------------------

_EXIT_HELP = """exit status:
  0  all is well (also when DIR holds no alias at all, unless --require)
  1  an alias needs attention, could not be repaired, or a folder could not be read
  2  usage error (e.g. DIR is not a directory)
"""
_STREAMS = "Results go to stdout; notes, errors and summaries to stderr."


def _wrap(*paragraphs: str) -> str:
    """Help text for RawDescriptionHelpFormatter: prose is filled, lines with line breaks are kept."""
    return "\n\n".join(p if "\n" in p else textwrap.fill(p, 88) for p in paragraphs)


def _directory(text: str) -> str:
    if not is_url(text) and not os.path.isdir(text):  # a URL is checked when it is read
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return text


def _dir_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir",
        metavar="DIR",
        type=_directory,
        help="a checkpoint folder, e.g. lightning_logs/version_0/checkpoints, or a URL such as s3://bucket/run",
    )
    p.add_argument(
        "-r", "--recursive", action="store_true", help="also every folder below DIR (e.g. DIR=lightning_logs)"
    )


def _allow_outside(p: argparse.ArgumentParser, acts: bool = False) -> None:
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="trust records whose checkpoint lies outside the alias's folder, as a Trainer resumed into a "
        "new folder writes them (by default such an alias fails, unless its checkpoint lies under the DIR "
        "given to show, verify or repair: a record is input, and one planted in a shared folder could name "
        f"any file{' for this command to act on' if acts else ''})",
    )


def _positive_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def _add_show(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "show",
        help="table of the checkpoints in DIR: best, last, scores, alias health",
        description=_wrap(
            "List the checkpoints in DIR (*.ckpt, *.pt, *.pth files and checkpoint directories), "
            "mark the best (the target of every alias with a <alias>.bestlink.json record) and the "
            "last (last*.ckpt, or what a last* symlink names), with the score, link kind and health "
            "of each alias. Reads only; imports no torch. " + _STREAMS
        ),
        epilog="examples:\n"
        "  lightning-bestlink show lightning_logs/version_0/checkpoints\n"
        "  lightning-bestlink show -r runs/\n"
        "  lightning-bestlink show --json s3://bucket/run | jq '.folders[].aliases[].target'\n\n"
        "output (MARK: best = the target of best.ckpt, last = last.ckpt or what a last* link names):\n"
        "  runs/exp/checkpoints  (alias healthy)\n"
        "    CHECKPOINT                    SIZE     MARK  SCORE\n"
        "    epoch=3-val_loss=2.1465.ckpt  5.5 KiB\n"
        "    epoch=4-val_loss=2.1241.ckpt  5.8 KiB  best  val_loss=2.12406 (min, epoch 4, step 25)\n"
        "    last.ckpt                     6.8 KiB  last\n\n"
        "    ALIAS      KIND     TARGET                        HEALTH\n"
        "    best.ckpt  symlink  epoch=4-val_loss=2.1241.ckpt  ok\n\n"
        "exit status: 0, or 1 when a folder could not be read (aliases that need attention are\n"
        "verify's business), 2 for a usage error.",
        formatter_class=fmt,
    )
    _dir_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON document instead (keys: docs/cli.md)")
    _allow_outside(p)
    p.set_defaults(func=cmd_show)


def _add_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "verify",
        help="exit 1 if an alias is missing, dangling, mismatched or foreign",
        description=_wrap(
            "Check every alias in DIR against its record: it must exist and point at the checkpoint "
            "the record names. Prints one line per alias; a failing one says what is wrong and what "
            "to do. Changes nothing. For scripts and CI. A failure is one of:",
            "  missing                the record names a best checkpoint but the alias is gone\n"
            "  dangling               the alias is a symlink to a file that does not exist\n"
            "  mismatch               the alias points at another checkpoint than its record names\n"
            "  foreign                a file lightning-bestlink did not write sits at the alias path\n"
            "  unreadable record      <alias>.bestlink.json cannot be read, or is not a lightning-bestlink record\n"
            "  unreadable checkpoint  the checkpoint the record names cannot be looked at (permissions)\n"
            "  outside                the record names a checkpoint outside the alias's folder (--allow-outside)\n"
            "  unreadable folder      a folder that cannot be listed, or entered, or whose path is too long",
            "A folder with no record at all passes, with a note (an alias without its record cannot "
            "be checked: it may be a file of your own); use --require to make that a failure. " + _STREAMS,
        ),
        epilog="examples:\n"
        "  lightning-bestlink verify checkpoints/ && echo healthy\n"
        "  lightning-bestlink verify --require -r lightning_logs   # fail if no alias was written at all\n"
        "  lightning-bestlink verify --deep checkpoints/            # a copy alias: its bytes compared too\n"
        "  lightning-bestlink verify --json s3://bucket/run        # one JSON document (keys: docs/cli.md)\n\n"
        + _EXIT_HELP,
        formatter_class=fmt,
    )
    _dir_args(p)
    p.add_argument("--require", action="store_true", help="fail (exit 1) when there is no alias record at all")
    p.add_argument(
        "--deep",
        action="store_true",
        help="also compare a copy alias's bytes with the checkpoint's (reads both whole): finds a checkpoint "
        "rewritten in place with its size and modification time put back, which the quick check cannot see",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("-q", "--quiet", action="store_true", help="print only the aliases that fail")
    how.add_argument("--json", action="store_true", help="print one JSON document instead (same as show --json)")
    _allow_outside(p)
    p.set_defaults(func=cmd_verify)


def _add_repair(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "repair",
        help="rebuild broken aliases from their records",
        description=_wrap(
            "Rebuild every alias in DIR that is missing, dangling or points at the wrong checkpoint, "
            "from its <alias>.bestlink.json record, with the same atomic swap as during training and "
            "the link kind the record names. Healthy aliases are left alone (what a killed update left "
            "next to them is removed). Never replaces a file "
            "that lightning-bestlink did not write (reported as REFUSED, exit 1), and cannot help "
            "when the best checkpoint itself was deleted (FAILED, exit 1). " + _STREAMS
        ),
        epilog="examples:\n  lightning-bestlink repair checkpoints/\n  lightning-bestlink repair -r lightning_logs\n\n"
        + _EXIT_HELP,
        formatter_class=fmt,
    )
    _dir_args(p)
    p.add_argument("--require", action="store_true", help="fail (exit 1) when there is no alias record at all")
    _allow_outside(p, acts=True)
    p.set_defaults(func=cmd_repair)


def _add_path(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "path",
        help="print the best checkpoint's path (for scripts)",
        description=_wrap(
            "Print the absolute path (or URL) of the checkpoint an alias points at, and nothing "
            "else, after checking the alias against its record. ALIAS is the alias (best.ckpt) or "
            "its record; DIR is a folder holding one best alias (aliases that follow the latest "
            "save, such as a LatestLinker's last.pt, do not count). When there is no healthy "
            "alias, stdout stays empty and stderr says why (exit 1).",
            "The path names the checkpoint itself: open it at once. Training deletes checkpoints "
            "that are no longer among the best, so a job that starts reading later may find it "
            "gone. --hold SECONDS prints instead a second name of the checkpoint, with the same "
            "file name, in a hidden folder next to it (a hard link, or a copy where links are not "
            "possible), readable for SECONDS whatever training deletes, then removed by a detached "
            "process. Opening the alias itself (best.ckpt) is safe too for a file alias: it is "
            "swapped in one step, and a file once opened stays readable. On an object store "
            "nothing is held: the object may be deleted.",
            'A path with a line break in it is refused (exit 1): "$(...)" would change it. --null '
            "ends the path with a NUL byte instead of a line break (xargs -0, read -d ''); --json "
            "prints one JSON document (keys: docs/cli.md).",
        ),
        epilog="examples:\n"
        '  python evaluate.py "$(lightning-bestlink path runs/exp/checkpoints)"\n'
        '  sbatch eval.sh "$(lightning-bestlink path --hold 86400 runs/exp/checkpoints)"   # read later\n'
        "  lightning-bestlink path --null runs/exp/checkpoints | xargs -0 python evaluate.py\n"
        "  lightning-bestlink path runs/exp/checkpoints/best-val_acc.ckpt\n"
        "  lightning-bestlink path --json s3://bucket/run/best.ckpt\n\n"
        "exit status:\n"
        "  0  printed\n"
        "  1  no healthy alias (none in DIR, several best aliases: name one, or it is broken), a\n"
        "     path with a line break without --null or --json, or no hold could be made\n"
        "  2  usage error: nothing exists at DIR|ALIAS",
        formatter_class=fmt,
    )
    p.add_argument("target", metavar="DIR|ALIAS", help="a checkpoint folder, or an alias such as best.ckpt")
    p.add_argument(
        "--hold",
        type=_positive_float,
        metavar="SECONDS",
        help="print a name of the checkpoint that stays readable for SECONDS, even if training deletes it",
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument("--null", action="store_true", help="end the path with a NUL byte, not a line break")
    form.add_argument("--json", action="store_true", help="print one JSON document instead (keys: docs/cli.md)")
    _allow_outside(p)
    p.set_defaults(func=cmd_path)


def _add_watch(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "watch",
        help="print a line (or run a command) for each new best while training runs",
        description=_wrap(
            "Follow an alias while a run trains: one line on stdout for each new best (the best at "
            "start is not one), one JSON object per line with --json. Each look is one stat of the "
            "alias's record (one request on an object store); the folder is not listed once the "
            "alias is known. A new best is reported once the alias points at it. Keeps watching "
            "across a restart of training, and while the record is missing or damaged (said on stderr).",
            "--exec runs CMD for each new best, one at a time, with {target}, {score} and {alias} "
            "filled in. CMD is split like a shell would split it but no shell runs it (write one, "
            "sh -c '...', if you need one; pass {target} to it as an argument, not inside the "
            "script). CMD's output goes to stderr; a CMD that fails is reported and the watch goes "
            "on. New bests that come while CMD runs are reported together as the latest one.",
            "{target} is the checkpoint held for CMD: a second name of it, with its own file name, in "
            "a hidden folder next to it (.bestlink-hold-*/epoch=3.ckpt: a hard link, or a copy "
            "where links are refused), readable until CMD exits whatever training deletes "
            "meanwhile, then removed; one left by a killed watch is removed by the next. On an "
            "object store nothing is held: the object may be deleted while CMD reads it.",
        ),
        epilog="examples:\n"
        "  lightning-bestlink watch runs/exp/checkpoints\n"
        "  lightning-bestlink watch runs/exp/checkpoints/best.ckpt --exec 'python evaluate.py {target}'\n"
        "  lightning-bestlink watch --json --count 1 s3://bucket/run/best.ckpt\n"
        '  lightning-bestlink watch ckpt --exec \'sh -c "python eval.py \\"$1\\" >> eval.log" sh {target}\'\n\n'
        "exit status:\n"
        "  0    --count N new bests seen\n"
        "  1    DIR cannot be read, or holds several best aliases (name one)\n"
        "  2    usage error\n"
        "  130  interrupted (Ctrl-C)",
        formatter_class=fmt,
    )
    p.add_argument(
        "target",
        metavar="DIR|ALIAS",
        help="a folder holding one best alias, or the alias; it may not exist yet (watch waits for it)",
    )
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        metavar="S",
        help="seconds between looks (default: %(default)s)",
    )
    p.add_argument("--count", type=int, metavar="N", help="exit 0 after N new bests (default: never)")
    p.add_argument("--json", action="store_true", help="one JSON object per new best (keys: docs/cli.md)")
    p.add_argument("--exec", metavar="CMD", help="run CMD for each new best, e.g. 'python evaluate.py {target}'")
    _allow_outside(p)
    p.set_defaults(func=cmd_watch)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "demo",
        help="train a tiny model with the Trainer and with Fabric, then show the folders",
        description=_wrap(
            "Train a tiny linear model on synthetic data (nothing is downloaded) twice: with the "
            "Lightning Trainer and ModelCheckpointWithLinkBest(save_best=True, save_last=True, "
            "monitor='val_loss'), and with a Fabric loop and lightning_bestlink.fabric.save_and_link. "
            "Prints a line per epoch, then each checkpoint folder with best and last marked, as "
            "'show' does. Needs torch and lightning (pip install torch lightning); "
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
        "  lightning-bestlink repair checkpoints/      # rebuild broken aliases from their records\n"
        "  lightning-bestlink path checkpoints/        # the best checkpoint's path, for scripts\n"
        "  lightning-bestlink watch checkpoints/ --exec 'python evaluate.py {target}'\n\n"
        "DIR may be an fsspec URL (s3://bucket/run): credentials and endpoint come from the\n"
        "environment (AWS_*) or fsspec's configuration (FSSPEC_S3_ENDPOINT_URL, ...).\n"
        "Run 'lightning-bestlink COMMAND --help' for each command.",
        formatter_class=fmt,
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_show, _add_verify, _add_repair, _add_path, _add_watch, _add_demo):
        add(sub, fmt)
    return parser


__all__ = ["build_parser"]
