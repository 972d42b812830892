"""What every subcommand shares: argument types, the scenario-folder flag, JSON output, a failure's lines.

Apart from `harness.cli`, which imports the subcommand modules to register them, so that they can
import these without a cycle.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from harness.errors import bad_value, display_path
from harness.results import CaseResult, repro_command


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        if text.isdigit() and int(text) >= minimum:
            return int(text)
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: integer >= {minimum}")

    return parse


non_negative_int = _int_at_least(0)
positive_int = _int_at_least(1)
at_least_two = _int_at_least(2)


def gib(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value > 0:
        return int(value * (1 << 30))
    raise argparse.ArgumentTypeError(f"got {text!r}; allowed: GiB > 0")


def add_scenario_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenarios", dest="scenario_dir", type=Path, metavar="DIR",
                        help="scenario folder, bugs.yaml and ledger.yaml included "
                             "(default: ./scenarios, else the repository's)")


def write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON (NaN refused); an unwritable path is bad input naming --json."""
    try:
        path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as err:
        raise bad_value("--json", "", display_path(path), "a writable file path", err.strerror or "") from err


def print_failure(console: Console, result: CaseResult, side: str = "") -> None:
    """`FAIL [side] scenario policy T=n: reason` and the command that reruns the case, never as markup."""
    head = f" {side}" if side else ""
    console.print(Text.assemble(("FAIL", "red"), f"{head} {result.scenario} {result.policy} "
                                                 f"T={result.capture_size}: {result.reason}"), highlight=False)
    console.print(f"  repro: {repro_command(result)}", markup=False, highlight=False)
