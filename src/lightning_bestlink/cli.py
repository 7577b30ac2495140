"""The ``lightning-bestlink`` command: look after a checkpoint folder without writing Python.

This module is the entry point only (``lightning-bestlink = lightning_bestlink.cli:main``,
and ``python -m lightning_bestlink``); the command line lives in :mod:`lightning_bestlink._cli`.

Streams: results on stdout, diagnostics (errors, notes, summaries) on stderr.
Exit status: 0 when all is well, 1 when an alias needs attention (or could not be
repaired, or a folder could not be read), 2 for a usage error, 130 after Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

from lightning_bestlink._cli.commands import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from lightning_bestlink._cli.parser import build_parser


def _escaping(stream: TextIO) -> None:
    """Let a stream that cannot encode a character print it escaped instead of failing."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")


def main(argv: Iterable[str] | None = None) -> int:
    """Entry point of ``lightning-bestlink`` and ``python -m lightning_bestlink``."""
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _escaping(sys.stdout)
    _escaping(sys.stderr)
    try:
        code: int = args.func(args, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:  # `lightning-bestlink show DIR | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # e.g. a folder that cannot be read
        print(f"lightning-bestlink {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


__all__ = ["main"]
