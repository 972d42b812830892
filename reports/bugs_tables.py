"""Rich tables of the bug registry and of a reproduction; builders are pure: they return a Table and never print."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text

from graph_harness.core.results import CaseResult, Param
from graph_harness.reports.tables import FitTable, fmt_count, fmt_error, fmt_op, fmt_ratio
from graph_harness.suite.bugs import Bug, BugSide, Figures, Reproduction
from graph_harness.suite.files import Scenario


def _range(found: Figures) -> str:
    if found.first is None or found.last is None:
        return "-"
    return f"{found.first:,} .. {found.last:,}"


def _variant(variant: BugSide) -> str:
    return f"{variant.scenario} {variant.variant}"


def _param(value: Param | None) -> str:
    """`2`, `1,966,080`, `true`, `bf16`; `-` where a side has no such parameter."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return fmt_count(value) if isinstance(value, int) else str(value)


def reproduce_table(rep: Reproduction, scenarios: Mapping[str, Scenario]) -> FitTable:
    """The buggy and the fixed variant side by side: what each runs (the scenario's shape and the case's
    parameters), verdicts, the op that wrote, the buffer's bytes allocated and written, ratio, range."""
    bug = rep.bug
    table = FitTable(title=f"{rep.bug_id}: {bug.title} ({bug.source}), T={rep.buggy.capture_size}")
    table.add_column("", no_wrap=True)
    table.add_column("buggy", no_wrap=True)
    table.add_column("fixed", no_wrap=True)
    sides: list[tuple[BugSide, CaseResult, Figures]] = [
        (bug.buggy, rep.buggy, rep.figures("buggy")), (bug.fixed, rep.fixed, rep.figures("fixed"))]
    params = list(dict.fromkeys(key for _, result, _ in sides for key in result.params))

    table.add_row("variant", *(_variant(side) for side, _, _ in sides))
    table.add_row("runs", *(scenarios[side.scenario].summary() for side, _, _ in sides))
    for key in params:  # whatever else determines the case (MoE: block_m, splitk), by the names it records
        table.add_row(key, *(_param(result.params.get(key)) for _, result, _ in sides))
    table.add_row("verdict", *(found.verdict for _, _, found in sides))
    table.add_row("expected", *(side.verdict for side, _, _ in sides))
    table.add_row("op", *(fmt_op(found.op, found.arg) for _, _, found in sides))
    table.add_row("buffer", *(found.buffer or "-" for _, _, found in sides))
    table.add_row("bytes allocated", *(fmt_count(found.allocated) for _, _, found in sides))
    table.add_row("bytes written", *(fmt_count(found.written) for _, _, found in sides))
    table.add_row("overflow ratio", *(fmt_ratio(found.ratio) for _, _, found in sides))
    table.add_row("corrupted range", *(_range(found) for _, _, found in sides))
    table.add_row("max rel err", *(fmt_error(result.max_rel_err) for _, result, _ in sides))
    table.add_row("result", Text("detected", style="green") if rep.detected else Text("NOT DETECTED", style="red bold"),
        Text("clean", style="green") if rep.clean else Text("NOT CLEAN", style="red bold"))
    return table


def _verdicts(scenario: Scenario) -> str:
    return "\n".join(f"{variant}: {scenario.expected(variant)}" for variant in scenario.variant_names())


def scenarios_table(scenarios: Mapping[str, Scenario]) -> FitTable:
    """One line per scenario: what it runs and at which sizes, the verdict each variant must get, and why."""
    table = FitTable(title="scenarios (graph-harness run SCENARIO)", stack="rows")
    table.add_column("id", no_wrap=True)
    table.add_column("runs\nsizes", no_wrap=True)
    table.add_column("variants", no_wrap=True)
    table.add_column("why")
    for scenario_id, s in scenarios.items():
        sizes = s.capture_sizes
        shown = ",".join(map(str, sizes)) if len(sizes) <= 4 else f"{len(sizes)} sizes"
        table.add_row(scenario_id, f"{s.summary()}\nT {shown}", _verdicts(s), s.why)
    return table


def _side(label: str, variant: BugSide) -> str:
    figures_ = (f" {variant.buffer} {fmt_count(variant.allocated)} -> {fmt_count(variant.written)} B"
                if variant.buffer else "")
    return f"{label} {_variant(variant)}\n  {variant.verdict}{figures_}"


def bugs_table(bugs: Mapping[str, Bug]) -> FitTable:
    """One line per registered bug: both variants with the verdict and bytes each must show; title, source, why."""
    table = FitTable(title="bugs (graph-harness reproduce BUG)", stack="rows")
    table.add_column("id", no_wrap=True)
    table.add_column("T", justify="right", no_wrap=True)
    table.add_column("variants", no_wrap=True)
    table.add_column("what")
    for bug_id, bug in bugs.items():
        table.add_row(bug_id, str(bug.size), f"{_side('buggy', bug.buggy)}\n{_side('fixed', bug.fixed)}",
                      f"{bug.title} ({bug.source}). {bug.why}")
    return table
