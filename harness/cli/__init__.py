"""graph-harness command line: the one place that prints, writes files and chooses exit codes.

Each subcommand lives in a module of its own with a registrar; this module only builds the parser from
them and maps bad input to one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from rich.console import Console

from graph_harness.cli.bugs import add_list, add_reproduce, add_schema
from graph_harness.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, PROG, Subparsers
from graph_harness.cli.fuzz import add_fuzz
from graph_harness.cli.report import add_report
from graph_harness.cli.run import add_footprint, add_run
from graph_harness.errors import BadInput, one_line

# A pipe (CI log, pytest capsys) without COLUMNS gets this, not rich's 80: wide enough that the 109-column
# footprint table prints whole rather than in panels. COLUMNS, when set, is what the reader asked for.
_PIPE_WIDTH = 120

# A subcommand's body: parsed arguments and the stdout console in, exit code out.
Command = Callable[[argparse.Namespace, Console], int]

# One registrar per subcommand: adding a command is one function in its module plus its entry here.
_SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    add_footprint, add_run, add_fuzz, add_reproduce, add_list, add_schema, add_report)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become BadInput: one stderr line from main(), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing usage and exiting."""
        raise BadInput(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = _Parser(prog=PROG, description="CUDA/HIP-graph capture regression harness for GPU kernels")
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    for register in _SUBCOMMANDS:
        register(sub)
    return parser


def _columns() -> int | None:
    """COLUMNS as a width when it is a positive integer; None when unset or not one (`0`, `-5`, `wide`)."""
    text = os.environ.get("COLUMNS", "").strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def _console() -> Console:
    """stdout's console: COLUMNS wide when set, else the terminal's width, else (a pipe) `_PIPE_WIDTH`."""
    # Both sizes given, rich never reads COLUMNS itself: it takes 0 as a width, and "²" (a digit to str.isdigit)
    # raises. shutil skips a bad value and asks the terminal.
    size = shutil.get_terminal_size()
    width = _columns()
    if width is None:
        width = size.columns if Console(width=_PIPE_WIDTH, height=size.lines).is_terminal else _PIPE_WIDTH
    return Console(width=width, height=size.lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input prints one `graph-harness: error: ...` line and returns 2."""
    try:
        args = build_parser().parse_args(argv)
        command: Command = args.command
        return command(args, _console())
    except BadInput as err:
        print(f"{PROG}: error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as done:  # --help: argparse has printed it and exits 0
        return done.code if isinstance(done.code, int) else 0
    except KeyboardInterrupt:  # before a command's own handler (planning, imports): one line, no traceback
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
