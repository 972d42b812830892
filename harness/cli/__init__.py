"""graph-harness command line: the one place that prints, writes files and chooses exit codes.

Each subcommand lives in a module of its own with a registrar; this module only builds the parser from
them and maps bad input to one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from rich.console import Console

from graph_harness.cli.bugs import add_list, add_reproduce, add_schema
from graph_harness.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, PROG, Subparsers
from graph_harness.cli.report import add_report
from graph_harness.cli.run import add_footprint, add_run
from graph_harness.errors import BadInput, one_line

# A pipe (CI log, pytest capsys) gets rich's 80-column default, which cuts the 109-column footprint table's
# byte figures to "2,09…"; a pipe has no width to respect, so it gets this one.
_PIPE_WIDTH = 120

# A subcommand's body: parsed arguments and the stdout console in, exit code out.
Command = Callable[[argparse.Namespace, Console], int]

# One registrar per subcommand: adding a command is one function in its module plus its entry here.
_SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    add_footprint, add_run, add_reproduce, add_list, add_schema, add_report)


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


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=_PIPE_WIDTH)


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
