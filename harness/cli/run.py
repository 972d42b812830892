"""`graph-harness run` and `footprint`: run cases and judge each; predict the MoE stage1 footprint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from graph_harness.cli.common import (
    EXIT_INTERRUPTED,
    DeviceWedged,
    Subparsers,
    add_scenario_dir,
    add_selection,
    add_sizes,
    check_writable,
    device_profile,
    interrupted_line,
    print_failure,
    print_limits,
    run_with_progress,
    selection,
    write_json,
)
from graph_harness.core.results import CaseResult
from graph_harness.errors import bad_value
from graph_harness.moe.footprint import footprint_rows
from graph_harness.moe.scenario import MoEScenario
from graph_harness.reports.tables import footprint_table, run_table, scenario_title
from graph_harness.suite.plan import check_sizes, make_plan, pick


def _run(args: argparse.Namespace, console: Console) -> int:
    """Run cases through the protocol; print the table; exit 0 only if every case met its expectation."""
    chosen = selection(args)
    plan = make_plan(chosen, device_profile)  # bad ids and flags fail here, before anything is written
    if args.json is not None:
        check_writable(args.json, "--json")  # a bad path fails now, before minutes of work; FILE stays as it is
    results: list[CaseResult] = []
    interrupted = wedged = False
    try:
        for group in run_with_progress(plan, chosen):
            results.extend(group)
            if args.json is not None:
                write_json(args.json, [r.record() for r in results])
    except KeyboardInterrupt:
        interrupted = True
    except DeviceWedged:
        wedged = True
    for scenario_id in dict.fromkeys(r.scenario for r in results):
        rows = [r for r in results if r.scenario == scenario_id]
        console.print(run_table(rows, title=f"{scenario_id} on {rows[0].env.device}, {rows[0].backend}"))
    for r in results:
        if not r.passed:
            print_failure(console, r)
    print_limits(console, results)
    if interrupted:
        console.print(interrupted_line(len(results), plan), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    if wedged:
        console.print(f"a kernel hung on the GPU and still holds it: {plan.total - len(results)} of {plan.total} cases "
                      "not run (quarantine the case in the ledger to run it in a child process)",
                      markup=False, highlight=False, soft_wrap=True)
        console.file.flush()
        os._exit(1)  # exiting normally would wait on the hung kernel at teardown
    return 0 if all(r.passed for r in results) else 1


def _footprint(args: argparse.Namespace, console: Console) -> int:
    """Print one footprint table per MoE scenario; with --json also write every row's record."""
    picked = pick(args.scenario_dir, args.scenarios)
    sizes = sorted(set(args.sizes)) if args.sizes else None
    moe: dict[str, MoEScenario] = {}
    for scenario_id, scenario in picked.items():  # every one checked before the first table prints
        if not isinstance(scenario, MoEScenario):
            raise bad_value(scenario.where(scenario_id), "", "an op scenario", "an MoE scenario",
                            "the footprint model predicts the MoE stage1 buffer")
        check_sizes(scenario_id, scenario, sizes or ())
        moe[scenario_id] = scenario
    rows = {}
    for scenario_id, scenario in moe.items():
        rows[scenario_id] = footprint_rows(scenario_id, scenario, sizes)
        console.print(footprint_table(rows[scenario_id], title=scenario_title(scenario_id, scenario)))
    if args.json is not None:
        write_json(args.json, [row.record() for scenario_rows in rows.values() for row in scenario_rows])
    return 0


def add_run(sub: Subparsers) -> None:
    parser = sub.add_parser("run", help="run cases eagerly and under graph capture, with guards; judge each")
    add_selection(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as a JSON list")
    parser.set_defaults(command=_run)


def add_footprint(sub: Subparsers) -> None:
    parser = sub.add_parser("footprint", help="predict MoE stage1 buffer bytes per capture size and policy")
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario id (YAML key)")
    add_sizes(parser, "capture sizes to predict, among the scenario's capture_sizes (default: all of them)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as a JSON list")
    add_scenario_dir(parser)
    parser.set_defaults(command=_footprint)
