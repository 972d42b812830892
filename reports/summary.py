"""What every report format says the same way: the headline, the summary lines, and the rows of its tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from graph_harness.core.results import CaseResult
from graph_harness.reports.baseline import BaselineDiff, Summary, diff_headline, job_failed, plural, splitk_of
from graph_harness.reports.tables import result_cells, verdict_text

RESULT_HEADERS: tuple[str, ...] = ("variant", "T", "splitk", "verdict", "expected", "pass", "buffer", "outside bytes",
                                   "max rel err", "replay us")
DIFF_HEADERS: tuple[str, ...] = ("change", "scenario", "variant", "T", "baseline", "now")  # the cells of diff_rows


def headline(summary: Summary, diff: BaselineDiff | None) -> str:
    """`PASS` or `FAIL` and why, in one line: the first thing a report says."""
    status = "FAIL" if job_failed(summary, diff) else "PASS"
    counts = f"{summary.failed} of {plural(summary.cases, 'case')} failed its scenario's expectation"
    if summary.incomplete:
        planned = f"{summary.planned:,}" if summary.planned is not None else "the planned"
        status = f"INCOMPLETE ({summary.cases:,} of {planned} cases run, interrupted)"
        counts = f"{summary.failed} of those {plural(summary.cases, 'case')} failed its scenario's expectation"
    if diff is None:
        return f"{status}: {counts}; no baseline"
    return (f"{status}: {counts}; against the baseline {plural(len(diff.new_failures), 'new failure')}, "
            f"{plural(len(diff.detection_regressions), 'detection regression')}")


def summary_lines(summary: Summary, diff: BaselineDiff | None, generated: datetime) -> list[tuple[str, str]]:
    """(label, text) lines of the summary: counts, verdicts, coverage, environments, the baseline's headline."""
    lines = [
        ("generated", generated.isoformat(timespec="seconds")),
        ("cases", f"{summary.cases}: {summary.passed} passed, {summary.failed} failed"
                  + (f"; INCOMPLETE: {summary.cases} of {summary.planned if summary.planned is not None else '?'} "
                     "planned ran, the run was interrupted" if summary.incomplete else "")),
        ("verdicts", ", ".join(f"{v} {n}" for v, n in summary.verdicts) or "-"),
        ("scenarios", f"{len(summary.scenarios)}: {', '.join(summary.scenarios)}" if summary.scenarios else "0"),
        ("variants", ", ".join(summary.variants) or "-"),
    ]
    for env in summary.environments:
        lines.append(("environment", f"{env.device}; {env.driver}; torch {env.torch}; triton {env.triton}; "
                                     f"python {env.python}; commit {env.commit}"))
    lines.append(("baseline", "none given" if diff is None else diff_headline(diff)))
    return lines


def result_rows(results: Sequence[CaseResult]) -> list[tuple[str, ...]]:
    """One row per case of one scenario, under RESULT_HEADERS."""
    rows: list[tuple[str, ...]] = []
    for r in results:
        c = result_cells(r)
        rows.append((c.variant, c.size, str(splitk_of(r)), verdict_text(r), r.expected.value,
                     "ok" if r.passed else "FAIL", c.buffer, c.outside, c.error, c.replay))
    return rows
