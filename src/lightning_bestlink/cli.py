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
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from lightning_bestlink import METADATA_SUFFIX as SUFFIX
from lightning_bestlink import __version__
from lightning_bestlink._errors import AliasConflictError, BestLinkError
from lightning_bestlink.linker import AliasReport, BestLinker, read_metadata

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

#: file names taken for checkpoints (besides the targets of aliases, whatever their name)
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
#: what marks a directory as one sharded checkpoint (torch.distributed.checkpoint, Lightning FSDP/DeepSpeed)
_SHARDED_MARKERS = (".metadata", "meta.pt", "latest", "zero_to_fp32.py")
_LAST = re.compile(r"^last(?![a-zA-Z0-9])")  # last.ckpt, last-v1.ckpt, last_run.ckpt; not lastly.ckpt


# --- what is in a folder ------------------------------------------------------------


@dataclass
class Alias:
    """One alias with a record in the folder, and its health."""

    name: str
    path: str
    record: dict[str, Any] | None = None
    report: AliasReport | None = None
    error: str | None = None  # the record could not be read

    @property
    def ok(self) -> bool:
        return self.error is None and self.report is not None and self.report.ok

    @property
    def status(self) -> str:
        if self.error is not None:
            return "bad-record"
        assert self.report is not None
        return self.report.status

    @property
    def target(self) -> str | None:
        return None if self.record is None else str(self.record["target"])

    @property
    def label(self) -> str:
        """The mark on the checkpoint row: ``best`` for ``best.ckpt``, ``best-acc`` for ``best-acc.ckpt``."""
        stem, ext = os.path.splitext(self.name)
        return stem if ext and stem else self.name


@dataclass
class Entry:
    """A checkpoint (file or directory) in the folder."""

    name: str
    path: str
    is_dir: bool
    size: int | None
    marks: list[str] = field(default_factory=list)
    scores: list[str] = field(default_factory=list)
    link_to: str | None = None  # a symlink that is neither a recorded alias nor a last link


@dataclass
class Folder:
    """What ``show``, ``verify`` and ``repair`` know about one directory."""

    path: str
    entries: list[Entry]
    aliases: list[Alias]
    unrecorded: list[str]  # names that look like a best alias but have no record
    subdirs: bool  # has sub-directories that are not checkpoints (for the "-r" hint)

    @property
    def empty(self) -> bool:
        return not (self.entries or self.aliases or self.unrecorded)


def _natural(name: str) -> list[Any]:
    """Sort key: ``epoch=9`` before ``epoch=10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_sharded(path: str) -> bool:
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return any(n in _SHARDED_MARKERS or n.endswith(".distcp") for n in names)


def _tree_size(path: str) -> int | None:
    total = 0
    try:
        for top, _, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(top, name)).st_size
                except OSError:
                    pass
    except OSError:
        return None
    return total


def _load_alias(folder: str, name: str) -> Alias:
    alias = Alias(name, os.path.join(folder, name))
    try:
        alias.record = read_metadata(alias.path)
        alias.report = BestLinker.from_metadata(alias.path).verify()
    except AliasConflictError:  # not JSON, or not our format
        alias.error = f"{name}{SUFFIX} is not a lightning-bestlink record"
    except (KeyError, TypeError, ValueError) as err:  # our format, but a field is missing or wrong
        alias.error = f"{name}{SUFFIX} is damaged ({type(err).__name__}: {err})"
    except OSError as err:
        alias.error = f"cannot read {name}{SUFFIX}: {err.strerror or err}"
    return alias


def scan(folder: str) -> Folder:
    """Read one directory: checkpoints, aliases with records, last checkpoints. Changes nothing."""
    folder = os.path.abspath(folder)
    with os.scandir(folder) as it:
        listing = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: _natural(e.name))
    alias_names = {e.name[: -len(SUFFIX)] for e in listing if e.name.endswith(SUFFIX) and len(e.name) > len(SUFFIX)}
    aliases = [_load_alias(folder, name) for name in sorted(alias_names, key=_natural)]
    targets = {a.target for a in aliases if a.target is not None}

    entries: dict[str, Entry] = {}
    last_targets: list[str] = []
    unrecorded: list[str] = []
    subdirs = False
    for e in listing:
        if e.name.endswith(SUFFIX) or e.name in alias_names:
            continue
        is_link = e.is_symlink()
        if is_link and _LAST.match(e.name):
            last_targets.append(os.path.realpath(e.path))  # save_last="link": marks the checkpoint it names
            continue
        try:
            is_dir = e.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        looks_like = e.name.endswith(CHECKPOINT_SUFFIXES) or e.path in targets or bool(_LAST.match(e.name))
        if is_dir and not is_link and not looks_like and not _is_sharded(e.path):
            subdirs = True
            continue
        if not (looks_like or is_link or is_dir):
            continue
        if e.name.startswith("best") or (is_link and not looks_like):
            unrecorded.append(e.name)
        if is_link:
            size = None
            link_to = os.readlink(e.path)
        else:
            size = _tree_size(e.path) if is_dir else e.stat(follow_symlinks=False).st_size
            link_to = None
        entries[e.path] = Entry(e.name, e.path, is_dir, size, link_to=link_to)
        if _LAST.match(e.name) and not is_link:
            entries[e.path].marks.append("last")

    for alias in aliases:
        if alias.target in entries:
            entries[alias.target].marks.append(alias.label)
            if alias.record is not None:
                entries[alias.target].scores.append(_score_text(alias.record))
    for target in last_targets:
        if target in entries and "last" not in entries[target].marks:
            entries[target].marks.append("last")
    return Folder(folder, list(entries.values()), aliases, unrecorded, subdirs)


def folders(root: str, recursive: bool) -> list[Folder]:
    """``root`` alone, or with ``recursive`` every folder under it holding checkpoints or aliases."""
    if not recursive:
        return [scan(root)]
    found: list[Folder] = []
    for top, dirs, _ in os.walk(root):
        try:
            folder = scan(top)
        except PermissionError:
            dirs[:] = []
            continue
        inside = {e.name for e in folder.entries if e.is_dir}
        dirs[:] = sorted((d for d in dirs if not d.startswith(".") and d not in inside), key=_natural)
        if not folder.empty:
            found.append(folder)
    return found


# --- rendering ----------------------------------------------------------------------


def _size_text(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _score_parts(record: dict[str, Any]) -> tuple[str, list[str]]:
    """``("val_loss=0.0312", ["min", "epoch 6", "step 28"])`` from a record."""
    extra = record.get("extra") or {}
    score = record.get("score")
    value = format(score, ".6g") if isinstance(score, (int, float)) else str(score)
    monitor = extra.get("monitor")
    details = [str(record.get("mode"))]
    for key in ("epoch", "step"):
        if extra.get(key) is not None:
            details.append(f"{key} {extra[key]}")
    return (f"{monitor}={value}" if monitor else value), details


def _score_text(record: dict[str, Any]) -> str:
    text, details = _score_parts(record)
    return f"{text} ({', '.join(details)})"


def _count(n: int, total: int, verb: str) -> str:
    """``"1 of 2 aliases needs attention"`` with the right plural."""
    return f"{n} of {total} alias{'es' if total > 1 else ''} {verb}"


def _attention(bad: int, total: int) -> str:
    """``"1 of 2 aliases needs attention"``."""
    return _count(bad, total, "need attention" if bad > 1 else "needs attention")


def _rel(path: str | None, folder: str) -> str:
    if path is None:
        return "?"
    if "://" in path:
        return path
    rel = os.path.relpath(path, folder)
    return path if rel.startswith(os.pardir + os.sep + os.pardir) else rel


def problem(alias: Alias, folder: str) -> str:
    """One sentence on what is wrong with ``alias`` (empty when nothing is)."""
    if alias.error is not None:
        return f"unreadable record: {alias.error}"
    report = alias.report
    assert report is not None
    expected, actual = _rel(report.expected, folder), _rel(report.actual, folder)
    if report.status == "missing":
        return f"missing: {alias.name} does not exist (its record names {expected})"
    if report.status == "dangling":
        return f"dangling: {alias.name} points at {actual}, which does not exist"
    if report.status == "mismatch":
        return f"mismatch: {alias.name} points at {actual}, but its record names {expected}"
    if report.status == "foreign":
        return f"foreign: {alias.name} was not written by lightning-bestlink; it is left as it is"
    return ""


def advice(alias: Alias, shown_dir: str) -> str:
    """What the user can do about a bad alias."""
    if alias.error is not None:
        return f"restore {alias.name}{SUFFIX} or move it away; repair needs a readable record"
    report = alias.report
    assert report is not None
    if report.status == "foreign":
        return f"move or delete {alias.name}, then run: lightning-bestlink repair {shown_dir}"
    if report.expected is not None and not os.path.lexists(report.expected) and "://" not in report.expected:
        return "the best checkpoint itself is gone; repair cannot bring it back"
    return f"run: lightning-bestlink repair {shown_dir}"


def _table(rows: Sequence[Sequence[str]], out: TextIO, indent: str = "  ") -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print((indent + "  ".join(cells)).rstrip(), file=out)


def _health(alias: Alias, folder: str) -> str:
    return "ok" if alias.ok else problem(alias, folder)


def render(folder: Folder, out: TextIO, *, title: str | None = None) -> None:
    """The table ``show`` prints (and the demo ends with)."""
    bad = sum(not a.ok for a in folder.aliases)
    if not folder.aliases:
        summary = "no best alias"
    elif bad:
        summary = _attention(bad, len(folder.aliases))
    else:
        summary = "alias healthy" if len(folder.aliases) == 1 else f"{len(folder.aliases)} aliases healthy"
    print(f"{title or folder.path}  ({summary})", file=out)
    if folder.entries:
        rows = [["CHECKPOINT", "SIZE", "MARK", "SCORE"]]
        for e in folder.entries:
            name = e.name + ("/" if e.is_dir and e.link_to is None else "")
            if e.link_to is not None:
                name += f" -> {e.link_to}"
            rows.append([name, _size_text(e.size), ",".join(e.marks), "; ".join(e.scores)])
        _table(rows, out)
    else:
        print("  no checkpoints", file=out)
    if folder.aliases:
        rows = [["ALIAS", "KIND", "TARGET", "HEALTH"]]
        for a in folder.aliases:
            kind = str(a.record.get("link", "?")) if a.record else "?"
            rows.append([a.name, kind, _rel(a.target, folder.path) if a.target else "?", _health(a, folder.path)])
        print(file=out)
        _table(rows, out)
    for name in folder.unrecorded:
        print(f"  note: {name} has no {SUFFIX} record; lightning-bestlink cannot vouch for it", file=out)


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
                text, details = _score_parts(record)
                target = _rel(alias.target, folder.path)
                print(f"ok      {shown} -> {target} ({', '.join([str(record.get('link')), text, *details])})", file=out)
            continue
        bad += 1
        print(f"FAILED  {shown}: {problem(alias, folder.path)}", file=out)
        print(f"        {advice(alias, _shown(args.dir, root, folder.path))}", file=out)
    if bad:
        print(f"verify: {_attention(bad, len(aliases))}", file=err)
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
            target = _rel(report.expected, folder.path)
            print(f"repaired  {shown} -> {target} ({fixed.get('link', '?')})", file=out)
            print(f"          was {before}", file=out)
        else:
            failed += 1
            print(f"FAILED    {shown}: {before}", file=out)
            print(f"          {advice(alias, _shown(args.dir, root, folder.path))}", file=out)
    if failed:
        print(f"repair: {_count(failed, len(aliases), 'not repaired')}", file=err)
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


__all__ = ["build_parser", "main", "render", "scan"]
