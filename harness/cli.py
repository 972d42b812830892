"""graph-harness command line: the one place that prints, writes files and chooses exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from harness.bugs_cmd import add_list, add_reproduce, add_schema
from harness.cli_parts import (
    add_scenario_dir,
    at_least_two,
    gib,
    non_negative_int,
    positive_int,
    print_failure,
    write_json,
)
from harness.errors import BadInput, bad_value, display_path, one_line
from harness.footprint import footprint_rows
from harness.guard import GuardBudgetError
from harness.report_cmd import add_report
from harness.results import CaseResult
from harness.scenario import Profile, Scenario, capture_sizes, find_scenario_dir, load_scenarios, scenario_files
from kernels.contracts import Policy
from reports.tables import footprint_table, run_table, scenario_title

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
        write_json(args.json, records)
    return 0


def _plan(args: argparse.Namespace, profile: Profile) -> list[tuple[str, Scenario, Policy, tuple[int, ...]]]:
    """(scenario id, scenario, policy, sizes) groups to run; named ids and flags are checked first."""
    directory = args.scenario_dir or find_scenario_dir()
    picked = _pick(directory, args.scenarios) if args.scenarios else load_scenarios(scenario_files(directory))
    policies = [Policy(p) for p in args.policies] if args.policies else list(Policy)
    plan: list[tuple[str, Scenario, Policy, tuple[int, ...]]] = []
    for scenario_id, scenario in picked.items():
        where = f"{display_path(scenario.source) if scenario.source else display_path(directory)}: {scenario_id}"
        known = capture_sizes(scenario, "gpu")
        if args.sizes:
            if args.scenarios and not set(args.sizes) <= set(known):
                bad = sorted(set(args.sizes) - set(known))
                raise bad_value(where, "--sizes", ", ".join(map(str, bad)),
                                f"its capture_sizes {', '.join(map(str, known))}")
            sizes = tuple(t for t in known if t in args.sizes)
        else:
            sizes = capture_sizes(scenario, profile)
        wanted = [p for p in policies if p in scenario.policies]
        if args.scenarios and args.policies and len(wanted) < len(policies):
            missing = [p.value for p in policies if p not in scenario.policies]
            raise bad_value(where, "--policy", ", ".join(missing), ", ".join(p.value for p in scenario.policies))
        plan.extend((scenario_id, scenario, policy, sizes) for policy in wanted if sizes)
    if not plan:
        raise bad_value("graph-harness run", "", "no case to run", "a scenario, policy and size that exist together")
    return plan


def run_plan(args: argparse.Namespace) -> Iterator[list[CaseResult]]:
    """Run each planned scenario-policy group (see `add_selection`), a progress bar on a terminal's
    stderr; yields each group's results as it finishes, so callers can save them before the next."""
    from harness.run import profile_of
    from kernels._triton import device

    dev = device()
    profile = profile_of(dev)
    plan = _plan(args, profile)  # bad ids and flags fail here, before the caller writes anything
    return _run_groups(args, plan, dev, profile)


def _run_groups(args: argparse.Namespace, plan: list[tuple[str, Scenario, Policy, tuple[int, ...]]],
                dev: Any, profile: Profile) -> Iterator[list[CaseResult]]:
    from harness.run import resolve_cases, run_cases

    replays = {} if args.replays is None else {"replays": args.replays}  # else run_cases' own default
    stderr = Console(stderr=True)
    # Off in a pipe (the nightly job's log): there a stopped live display leaves a blank line before any error.
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=stderr, transient=True, disable=not stderr.is_terminal)
    with progress:
        task = progress.add_task("cases", total=sum(len(sizes) for *_, sizes in plan))
        for scenario_id, scenario, policy, sizes in plan:
            progress.update(task, description=f"{scenario_id} {policy.value} T={','.join(map(str, sizes))}")
            cases = resolve_cases(scenario_id, scenario, policy, sizes, profile, args.seed)
            try:
                yield run_cases(cases, dev, budget=args.guard_budget, **replays)
            except GuardBudgetError as err:
                shown = f"{args.guard_budget / (1 << 30):g} GiB" if args.guard_budget else "the default"
                raise bad_value("--guard-budget", "", shown, "a budget the case fits in and the device holds",
                                str(err)) from err
            progress.advance(task, len(sizes))


def _run(args: argparse.Namespace, console: Console) -> int:
    """Run cases through the protocol; print the table; exit 0 only if every case met its expectation."""
    groups = run_plan(args)
    if args.json is not None:
        write_json(args.json, [])  # a bad path fails now, before minutes of work
    results: list[CaseResult] = []
    for group in groups:
        results.extend(group)
        if args.json is not None:
            write_json(args.json, [r.record() for r in results])
    for scenario_id in dict.fromkeys(r.scenario for r in results):
        rows = [r for r in results if r.scenario == scenario_id]
        console.print(run_table(rows, title=f"{scenario_id} on {rows[0].env.device}, {rows[0].backend}"))
    for r in results:
        if not r.passed:
            print_failure(console, r)
        for note in (n for n in r.notes if n.startswith("not fully guarded")):
            console.print(f"note: {r.scenario} {r.policy} T={r.capture_size}: {note}", markup=False, highlight=False)
    return 0 if all(r.passed for r in results) else 1


def add_selection(parser: argparse.ArgumentParser) -> None:
    """The case-selection flags `run` and `report` share; `run_plan` reads them."""
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario id (default: all)")
    parser.add_argument("--policy", dest="policies", action="append", choices=[p.value for p in Policy],
                        metavar="P", help="stage1 allocation policy (repeatable; default: the scenario's)")
    parser.add_argument("--sizes", nargs="+", type=positive_int, metavar="T",
                        help="capture sizes (default: the scenario's, cpu_sizes on CPU)")
    parser.add_argument("--seed", type=non_negative_int, metavar="N", help="seed (default: the scenario's)")
    parser.add_argument("--replays", type=at_least_two, metavar="N", help="replays per graph (>= 2; default: 2)")
    parser.add_argument("--guard-budget", type=gib, metavar="GIB",
                        help="guard slab size (default: 1 GiB on CPU, 60%% of free GPU memory up to 48 GiB)")
    add_scenario_dir(parser)


def _add_run(sub: Subparsers) -> None:
    parser = sub.add_parser("run", help="run cases eagerly and under graph capture, with guards; judge each")
    add_selection(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as a JSON list")
    parser.set_defaults(command=_run)


def _add_footprint(sub: Subparsers) -> None:
    parser = sub.add_parser("footprint", help="predict stage1 buffer bytes per capture size and policy")
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario id (YAML key)")
    parser.add_argument("--size", dest="sizes", type=positive_int, action="append", metavar="T",
                        help="capture size to predict (repeatable; default: the scenario's capture_sizes)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as a JSON list")
    add_scenario_dir(parser)
    parser.set_defaults(command=_footprint)


# One registrar per subcommand: adding a command is one function here plus its entry below.
_SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    _add_footprint, _add_run, add_reproduce, add_list, add_schema, add_report)


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
