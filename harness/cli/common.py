"""What every subcommand shares: argument types, the selection and scenario-folder flags, the progress of a
run, JSON output and a failure's lines. Subcommand modules import this; `graph_harness.cli` imports them."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from graph_harness.core.results import CaseResult
from graph_harness.errors import BadInput, bad_value, display_path
from graph_harness.schema import Profile, profile_of
from graph_harness.suite.plan import Plan, Selection, run_group

PROG = "graph-harness"
EXIT_BAD_INPUT = 2  # argparse's own code for a usage error
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        if text.isdigit() and int(text) >= minimum:
            return int(text)
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: integer >= {minimum}")

    return parse


non_negative_int = _int_at_least(0)
positive_int = _int_at_least(1)
at_least_three = _int_at_least(3)


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
                        help="scenario folder, its bugs.yaml and ledger.yaml included (default: the built-in "
                             "scenarios that ship with graph-harness)")


def device_profile() -> Profile:
    """The profile of the device the kernels run on. It loads torch and triton (1 s on CPU), so `make_plan` asks
    for it only once every id and flag has been checked."""
    from graph_harness.core.triton_env import device

    return profile_of(device())


def add_sizes(parser: argparse.ArgumentParser, what: str) -> None:
    """`--sizes T [T ...]` into `args.sizes`, the one spelling of every subcommand; `--size T` (repeatable, one
    size each, as footprint took it) adds to the same list, so that both spellings work everywhere."""
    parser.add_argument("--sizes", dest="sizes", nargs="+", action="extend", type=positive_int, metavar="T",
                        help=f"{what}; --size T adds one, and may repeat")
    # Its own argument, kept out of the help, so that a bad value's message names the flag as typed.
    parser.add_argument("--size", dest="sizes", action="append", type=positive_int, help=argparse.SUPPRESS)


def add_selection(parser: argparse.ArgumentParser) -> None:
    """The case-selection flags `run` and `report` share; `selection` reads them."""
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario id (default: all)")
    parser.add_argument("--variant", "--policy", dest="variants", action="append", metavar="V",
                        help="variant: an MoE scenario's stage1 allocation policy, or an op scenario's variant "
                             "(repeatable; default: every variant)")
    add_sizes(parser, "capture sizes (default: the scenario's, cpu_sizes on CPU)")
    parser.add_argument("--seed", type=non_negative_int, metavar="N", help="seed (default: the scenario's)")
    parser.add_argument("--replays", type=at_least_three, metavar="N", help="replays per graph (>= 3; default: 3)")
    parser.add_argument("--guard-budget", type=gib, metavar="GIB",
                        help="guard slab size (default: 1 GiB on CPU, 60%% of free GPU memory up to 48 GiB)")
    parser.add_argument("--isolate", action="store_true",
                        help="run each scenario-variant in a child process, killed when a run hangs past its bound "
                             "(a hung GPU kernel cannot be stopped in-process)")
    parser.add_argument("--hang-after", type=seconds, metavar="S",
                        help="the floor of every run's bound, in seconds, past which it is a hang (default: 120; "
                             "also GRAPH_HARNESS_HANG_AFTER)")
    add_scenario_dir(parser)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value > 0 and value != float("inf"):
        return value
    raise argparse.ArgumentTypeError(f"got {text!r}; allowed: seconds, a number > 0")


def selection(args: argparse.Namespace) -> Selection:
    """The selection the flags of `add_selection` ask for. `--hang-after` goes into the environment, where the
    protocol and a quarantined case's child process read it."""
    if getattr(args, "hang_after", None) is not None:
        os.environ["GRAPH_HARNESS_HANG_AFTER"] = repr(args.hang_after)
    return Selection(scenarios=args.scenarios, variants=args.variants or (), sizes=args.sizes or (), seed=args.seed,
                     replays=args.replays, guard_budget=args.guard_budget, scenario_dir=args.scenario_dir,
                     isolate=bool(getattr(args, "isolate", False)))


class DeviceWedged(Exception):
    """A case's kernel hung on the GPU: it cannot be stopped in-process, so the run ends after that case."""


def run_with_progress(plan: Plan, chosen: Selection) -> Iterator[list[CaseResult]]:
    """Run the plan's groups with a progress bar on a terminal's stderr; yields each group's results as it
    finishes, so that callers can save them before the next."""
    from graph_harness.core.guard import GuardBudgetError, keeping_slabs  # here: they load torch and triton, 1 s

    stderr = Console(stderr=True)
    # Off in a pipe (the nightly job's log): there a stopped live display leaves a blank line before any error.
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=stderr, transient=True, disable=not stderr.is_terminal)
    with progress, keeping_slabs():  # the slab of one group's cases serves the next group's
        task = progress.add_task("cases", total=plan.total)
        for group in plan.groups:
            progress.update(task, description=f"{group.scenario_id} {group.variant} "
                                              f"T={','.join(map(str, group.sizes))}")
            try:
                results = run_group(group, chosen)
            except GuardBudgetError as err:
                raise budget_error(chosen.guard_budget, err) from err
            yield results
            progress.advance(task, len(group.sizes))
            from graph_harness.core.capture import wedged  # loaded by the run

            if wedged():  # a kernel hung on the GPU and holds it: every later case would wait on it
                raise DeviceWedged


def budget_error(budget: int | None, err: Exception) -> BadInput:
    """A slab that would not hold even one size, as bad input naming --guard-budget."""
    shown = f"{budget / (1 << 30):g} GiB" if budget else "the default"
    return bad_value("--guard-budget", "", shown, "a budget the case fits in and the device holds", str(err))


def write_whole(path: Path, data: bytes | str, flag: str, allowed: str) -> None:
    """Write whole or not at all: the bytes go to `path.partial`, which then replaces `path` in one rename, so an
    interrupt mid-write leaves the previous file, never half of one. Unwritable is bad input naming `flag`."""
    partial = path.with_name(path.name + ".partial")
    try:
        if isinstance(data, str):
            partial.write_text(data, encoding="utf-8")
        else:
            partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as err:
        raise bad_value(flag, "", display_path(path), allowed, err.strerror or "") from err


def check_writable(path: Path, flag: str) -> None:
    """Fail now, as bad input, where `path` cannot be written later; an existing file there stays untouched."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text("", encoding="utf-8")
        partial.unlink()
    except OSError as err:
        raise bad_value(flag, "", display_path(path), "a writable file path", err.strerror or "") from err


def write_json(path: Path, data: Any) -> None:
    """Replace `path` whole with `data` as JSON (NaN refused); an unwritable path is bad input naming --json.
    The rule for a run's `--json FILE`: it is replaced after each finished group, never emptied before."""
    write_whole(path, json.dumps(data, indent=2, allow_nan=False) + "\n", "--json", "a writable file path")


def interrupted_line(done: int, plan: Plan) -> str:
    """`interrupted: 3 of 10 cases ran; not run: a pr2551 T=1,2, b original T=1 and 2 more groups`."""
    left, seen = [], 0
    for group in plan.groups:
        if seen >= done:
            left.append(f"{group.scenario_id} {group.variant} T={','.join(map(str, group.sizes))}")
        seen += len(group.sizes)
    shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more groups" if len(left) > 3 else "")
    return f"interrupted: {done:,} of {plan.total:,} cases ran" + (f"; not run: {shown}" if left else "")


def print_failure(console: Console, result: CaseResult, side: str = "") -> None:
    """`FAIL [side] scenario variant T=n: reason` and the command that reruns the case, never as markup."""
    head = f" {side}" if side else ""
    console.print(Text.assemble(("FAIL", "red"), f"{head} {result.scenario} {result.variant} "
                                                 f"T={result.capture_size}: {result.reason}"), highlight=False)
    if result.repro:
        console.print(f"  repro: {result.repro}", markup=False, highlight=False)


def print_limits(console: Console, results: list[CaseResult]) -> None:
    """One `limit:` line per thing a case could not check, so that no verdict reads as more than it is."""
    for r in results:
        for limit in r.limits:
            console.print(f"limit: {r.scenario} {r.variant} T={r.capture_size}: {limit}", markup=False,
                          highlight=False)
