"""What every report format says the same way: the headline, the summary lines, and the rows of its tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from graph_harness.core.results import CaseResult
from graph_harness.core.violation import Violation
from graph_harness.reports.baseline import (
    BaselineDiff,
    Summary,
    diff_headline,
    job_failed,
    outcome,
    plural,
    splitk_of,
)
from graph_harness.reports.tables import fmt_buffer, fmt_count, fmt_op, result_cells, verdict_text

RESULT_HEADERS: tuple[str, ...] = ("variant", "T", "splitk", "verdict", "expected", "pass", "buffer", "outside bytes",
                                   "max rel err", "replay")
DIFF_HEADERS: tuple[str, ...] = ("change", "scenario", "variant", "T", "baseline", "now")  # the cells of diff_rows
DIAGNOSIS_HEADERS: tuple[str, ...] = ("case", "outcome", "verdict", "op", "buffer", "call site", "bytes allocated",
                                      "bytes reached", "corrupted range", "error")
# Violations listed per case; the rest are counted on one more row (a case can corrupt dozens of buffers).
_DIAGNOSED = 4


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


def _range(v: Violation) -> str:
    """The bytes reached, from the buffer's start: `131,072 .. 2,097,151 (write past the end)`."""
    base = v.buffer_bytes if v.side == "overflow" else 0
    first, last = fmt_count(base + v.first_offset), fmt_count(base + v.last_offset)
    if v.at_least:
        first, last = (f"≤{first}", last) if v.side == "underflow" else (first, f"≥{last}")
    where = "past the end" if v.side == "overflow" else "before the start"
    return f"{first} .. {last} ({v.access} {where})"


def _violation_cells(v: Violation) -> tuple[str, str, str, str, str, str]:
    """(op, buffer, call site, bytes allocated, bytes reached, corrupted range) of one violation."""
    name = fmt_buffer(v) + (f" (into {', '.join(v.hits)})" if v.hits else "")
    op = fmt_op(v.op, v.arg, missing="unnamed")
    reached = ("≥" if v.at_least else "") + fmt_count(v.buffer_bytes + v.extent)
    return op, name, v.site, fmt_count(v.buffer_bytes), reached, _range(v)


def diagnosis_rows(results: Sequence[CaseResult]) -> list[tuple[str, ...]]:
    """One row per violation of every failed or detecting case, under DIAGNOSIS_HEADERS: the op that made it,
    the buffer's call site, bytes allocated and reached, the corrupted range, and the crash or capture error.
    A failed case with no violation (a crash, a missed detection) gets one row with its error or reason."""
    rows: list[tuple[str, ...]] = []
    for r in results:
        if r.passed and not r.violations and r.error is None:
            continue
        head = (f"{r.scenario} {r.variant} T={r.capture_size}", outcome(r), f"{verdict_text(r)} (expected "
                f"{r.expected})")
        error = r.error or ("-" if r.violations else r.reason)
        if not r.violations:
            rows.append((*head, "-", "-", "-", "-", "-", "-", error))
            continue
        for v in r.violations[:_DIAGNOSED]:
            rows.append((*head, *_violation_cells(v), error))
        if len(r.violations) > _DIAGNOSED:
            more = r.violations[_DIAGNOSED:]
            named = ", ".join(dict.fromkeys(v.buffer for v in more))
            rows.append((*head, "-", f"and {plural(len(more), 'more violation')}: {named}", "-", "-", "-", "-",
                         error))
    return rows
