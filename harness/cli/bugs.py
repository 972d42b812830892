"""`graph-harness reproduce`, `list` and `schema`: the bug registry's commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from graph_harness.cli.common import (
    EXIT_INTERRUPTED,
    Subparsers,
    add_scenario_dir,
    check_writable,
    non_negative_int,
    print_failure,
    write_json,
)
from graph_harness.core.results import CaseResult, result_schema
from graph_harness.core.verdict import Verdict
from graph_harness.errors import bad_value
from graph_harness.moe.scenario import MoEScenario
from graph_harness.reports.bugs_tables import bugs_table, reproduce_table, scenarios_table
from graph_harness.suite.bugs import Bug, BugSide, Reproduction, load_registry, pick_bug, registry_path, registry_schema
from graph_harness.suite.files import Scenario, builtin_scenario_dir, scenario_file_schema


def _reproduce(args: argparse.Namespace, console: Console) -> int:
    """Run a bug's buggy and fixed side; exit 0 only when it is detected in one and the other is clean."""
    directory = args.scenario_dir or builtin_scenario_dir()
    scenarios, bugs = load_registry(directory)
    bug = pick_bug(bugs, args.bug, registry_path(directory))
    if args.json is not None:
        check_writable(args.json, "--json")  # a bad path fails now, before a minute of work
    # Here, once the input is known good: the guards load torch and triton (1 s on CPU), so a bad id fails fast.
    from graph_harness.core.guard import GuardBudgetError

    ran: dict[str, CaseResult] = {}
    for side, variant in (("buggy", bug.buggy), ("fixed", bug.fixed)):
        try:
            ran[side] = _run_side(scenarios[variant.scenario], variant, bug.size, args.seed)
        except KeyboardInterrupt:
            for done, result in ran.items():
                console.print(f"{done}: {result.scenario} {result.variant} T={result.capture_size}: "
                              f"{result.verdict} ({result.reason})", markup=False, highlight=False)
            console.print(f"interrupted: {args.bug}'s {side} side did not finish"
                          + (f"; {', '.join(ran)} kept in {args.json}" if ran and args.json else ""),
                          markup=False, highlight=False, soft_wrap=True)
            return EXIT_INTERRUPTED
        except GuardBudgetError as err:
            raise bad_value(f"{args.bug} {side}", "", "a case the default guard budget cannot hold",
                            "a device with more memory", str(err)) from err
        if args.json is not None:  # what finished is kept, should the other variant fail
            write_json(args.json, {"bug": args.bug, **{s: r.record() for s, r in ran.items()}})
    rep = Reproduction(args.bug, bug, ran["buggy"], ran["fixed"])
    console.print(reproduce_table(rep, scenarios))
    for note in rep.findings():
        console.print(f"buggy: {note}", markup=False, highlight=False, soft_wrap=True)
    if args.json is not None:
        write_json(args.json, rep.record())
    for side, result, ok in (("buggy", rep.buggy, rep.detected), ("fixed", rep.fixed, rep.clean)):
        if not ok:
            print_failure(console, result, side)
    return 0 if rep.reproduced else 1


def _run_side(scenario: Scenario, side: BugSide, size: int, seed: int | None) -> CaseResult:
    """One side's case; in a child process when it must hang (a hung GPU kernel cannot be stopped in-process)."""
    if side.verdict is not Verdict.HANG:
        return scenario.run(side.scenario, side.variant, [size], seed=seed)[0]
    from graph_harness.core.capture import hang_floor
    from graph_harness.suite.isolate import run_isolated
    from graph_harness.suite.plan import Group, Selection

    (result,) = run_isolated(Group(side.scenario, scenario, side.variant, (size,)), Selection(seed=seed),
                             scenario.hang_floor() or hang_floor())
    return result


def _list_record(scenarios: Mapping[str, Scenario], bugs: Mapping[str, Bug]) -> dict[str, Any]:
    """What `list` prints, for tools and the report: each scenario's id, kind, why, sizes and the verdict
    each variant must get; each bug's id, title, source, why, size and sides."""
    return {
        "scenarios": [{"id": scenario_id, "kind": "moe" if isinstance(s, MoEScenario) else "op", "runs": s.summary(),
                       "why": s.why, "capture_sizes": list(s.capture_sizes),
                       "cpu_sizes": list(s.sizes("cpu")), "seed": s.seed,
                       "verdicts": {v: str(s.expected(v)) for v in s.variant_names()}}
                      for scenario_id, s in scenarios.items()],
        "bugs": [{"id": bug_id, **bug.model_dump(mode="json", exclude_none=True)} for bug_id, bug in bugs.items()],
    }


def _list(args: argparse.Namespace, console: Console) -> int:
    """Print the scenarios (with their why) and the registered bugs; with --json also write them."""
    scenarios, bugs = load_registry(args.scenario_dir or builtin_scenario_dir())
    if args.json is not None:
        check_writable(args.json, "--json")
    console.print(scenarios_table(scenarios))
    console.print(bugs_table(bugs))
    if args.json is not None:
        write_json(args.json, _list_record(scenarios, bugs))
    return 0


def _schema(args: argparse.Namespace, console: Console) -> int:
    """Print the JSON Schema of a scenario file (or, with --bugs, of the registry; --results, of a result)."""
    schema = registry_schema() if args.bugs else result_schema() if args.results else scenario_file_schema()
    print(json.dumps(schema, indent=2))  # plain: rich would wrap and colour what editors must parse
    return 0


def add_reproduce(sub: Subparsers) -> None:
    """Register `reproduce BUG [--seed N] [--json FILE]`."""
    parser = sub.add_parser("reproduce", help="run a registered bug's buggy and fixed variant side by side")
    parser.add_argument("bug", metavar="BUG", help="bug id (a key of scenarios/bugs.yaml; see `list`)")
    parser.add_argument("--seed", type=non_negative_int, metavar="N", help="seed (default: each scenario's)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write both variants' results as one JSON object")
    add_scenario_dir(parser)
    parser.set_defaults(command=_reproduce)


def add_list(sub: Subparsers) -> None:
    """Register `list`."""
    parser = sub.add_parser("list", help="print the scenarios, with why each exists, and the registered bugs")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write them as one JSON object: scenarios (id, kind, why, sizes, verdicts) and "
                             "bugs (id, title, source, why, size, buggy and fixed side)")
    add_scenario_dir(parser)
    parser.set_defaults(command=_list)


def add_schema(sub: Subparsers) -> None:
    """Register `schema [--bugs]`."""
    parser = sub.add_parser("schema", help="print the JSON Schema of the scenario YAML, for editors")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--bugs", action="store_true", help="the schema of scenarios/bugs.yaml instead")
    which.add_argument("--results", action="store_true",
                       help="the schema of one result record (run --json, --harness-json) instead")
    parser.set_defaults(command=_schema)
