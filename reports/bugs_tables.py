"""Rich tables of the bug registry and of a reproduction; builders are pure: they return a Table and never print."""

from __future__ import annotations

from collections.abc import Mapping

from rich.table import Table
from rich.text import Text

from graph_harness.core.results import CaseResult
from graph_harness.reports.tables import fmt_count, fmt_error, fmt_ratio
from graph_harness.suite.bugs import Bug, BugSide, Figures, Reproduction, figures
from graph_harness.suite.files import Scenario


def _range(found: Figures) -> str:
    if found.first is None or found.last is None:
        return "-"
    return f"{found.first:,} .. {found.last:,}"


def _variant(variant: BugSide) -> str:
    return f"{variant.scenario} {variant.variant}"


def _column(variant: BugSide, result: CaseResult, ok: bool, good: str, bad: str) -> list[str | Text]:
    found = figures(variant, result)
    return [_variant(variant), found.verdict, variant.verdict, found.buffer or "-", fmt_count(found.allocated),
            fmt_count(found.written), fmt_ratio(found.ratio), _range(found), fmt_error(result.max_rel_err),
            Text(good, style="green") if ok else Text(bad, style="red bold")]


_ROWS = ("variant", "verdict", "expected", "buffer", "bytes allocated", "bytes written", "overflow ratio",
         "corrupted range", "max rel err", "result")


def reproduce_table(rep: Reproduction) -> Table:
    """The buggy and the fixed variant side by side: verdicts, bytes allocated and written, ratio, range."""
    bug = rep.bug
    table = Table(title=f"{rep.bug_id}: {bug.title} ({bug.source}), T={rep.buggy.capture_size}")
    table.add_column("", no_wrap=True)
    table.add_column("buggy", no_wrap=True)
    table.add_column("fixed", no_wrap=True)
    buggy = _column(bug.buggy, rep.buggy, rep.detected, "detected", "NOT DETECTED")
    fixed = _column(bug.fixed, rep.fixed, rep.clean, "clean", "NOT CLEAN")
    for label, left, right in zip(_ROWS, buggy, fixed, strict=True):
        table.add_row(label, left, right)
    return table


def _verdicts(scenario: Scenario) -> str:
    return "\n".join(f"{variant}: {scenario.expected(variant)}" for variant in scenario.variant_names())


def scenarios_table(scenarios: Mapping[str, Scenario]) -> Table:
    """One line per scenario: what it runs and at which sizes, the verdict each variant must get, and why."""
    table = Table(title="scenarios (graph-harness run SCENARIO)")
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


def bugs_table(bugs: Mapping[str, Bug]) -> Table:
    """One line per registered bug: both variants with the verdict and bytes each must show; title, source, why."""
    table = Table(title="bugs (graph-harness reproduce BUG)")
    table.add_column("id", no_wrap=True)
    table.add_column("T", justify="right")
    table.add_column("variants", no_wrap=True)
    table.add_column("what")
    for bug_id, bug in bugs.items():
        table.add_row(bug_id, str(bug.size), f"{_side('buggy', bug.buggy)}\n{_side('fixed', bug.fixed)}",
                      f"{bug.title} ({bug.source}). {bug.why}")
    return table
