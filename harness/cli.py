"""graph-harness command line: the one place that prints, writes files and chooses exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeAlias

from rich.console import Console

from harness.errors import BadInput, bad_value, display_path, one_line
from harness.footprint import footprint_rows
from harness.scenario import Scenario, find_scenario_dir, load_scenarios, scenario_files
from reports.tables import footprint_table, scenario_title

PROG = "graph-harness"
EXIT_BAD_INPUT = 2  # argparse's own code for a usage error
# A pipe (CI log, pytest capsys) gets rich's 80-column default, which cuts the 109-column footprint table's
# byte figures to "2,09…"; a pipe has no width to respect, so it gets this one.
_PIPE_WIDTH = 120

# A subcommand's body: parsed arguments and the stdout console in, exit code out.
Command = Callable[[argparse.Namespace, Console], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[_Parser]"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors become BadInput: one stderr line from main(), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing usage and exiting."""
        raise BadInput(message)


def _positive_int(text: str) -> int:
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"got {text!r}; allowed: integer >= 1")


def _pick(directory: Path | None, ids: Sequence[str]) -> dict[str, Scenario]:
    """The requested scenarios of a folder in the order asked, each once; unknown ids list the known."""
    directory = directory or find_scenario_dir()
    known = load_scenarios(scenario_files(directory))
    for scenario_id in ids:
        if scenario_id not in known:
            raise bad_value(display_path(directory), "", f"unknown scenario {scenario_id!r}",
                            ", ".join(known))
    return {scenario_id: known[scenario_id] for scenario_id in ids}


def _footprint(args: argparse.Namespace, console: Console) -> int:
    """Print one footprint table per scenario; with --json also write every row's record."""
    picked = _pick(args.scenario_dir, args.scenarios)
    sizes = sorted(set(args.sizes)) if args.sizes else None
    rows = {sid: footprint_rows(sid, scenario, sizes) for sid, scenario in picked.items()}
    for scenario_id, scenario in picked.items():
        console.print(footprint_table(rows[scenario_id], title=scenario_title(scenario_id, scenario)))
    if args.json is not None:
        records = [row.record() for scenario_rows in rows.values() for row in scenario_rows]
        try:
            args.json.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            raise bad_value("--json", "", display_path(args.json), "a writable file path",
                            err.strerror or "") from err
    return 0


def _add_footprint(sub: Subparsers) -> None:
    parser = sub.add_parser("footprint", help="predict stage1 buffer bytes per capture size and policy")
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario id (YAML key)")
    parser.add_argument("--size", dest="sizes", type=_positive_int, action="append", metavar="T",
                        help="capture size to predict (repeatable; default: the scenario's capture_sizes)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as a JSON list")
    parser.add_argument("--scenarios", dest="scenario_dir", type=Path, metavar="DIR",
                        help="scenario folder (default: ./scenarios, else the repository's)")
    parser.set_defaults(command=_footprint)


# One registrar per subcommand: adding a command is one function here plus its entry below.
_SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (_add_footprint,)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = _Parser(prog=PROG, description="CUDA-graph capture regression harness for split-K MoE kernels")
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


if __name__ == "__main__":
    raise SystemExit(main())
