"""report.md, and the summary and result rows that the HTML report shows too; builders are pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from harness.results import CaseResult
from reports.baseline import BaselineDiff, Summary, diff_headline, diff_rows, job_failed, plural, repro_command
from reports.tables import result_cells

RESULT_HEADERS: tuple[str, ...] = ("policy", "T", "splitk", "verdict", "expected", "pass", "buffer", "outside bytes",
                                   "max rel err", "replay us")
DIFF_HEADERS: tuple[str, ...] = ("change", "scenario", "policy", "T", "baseline", "now")


def headline(summary: Summary, diff: BaselineDiff | None) -> str:
    """`PASS` or `FAIL` and why, in one line: the first thing a report says."""
    status = "FAIL" if job_failed(summary, diff) else "PASS"
    counts = f"{summary.failed} of {plural(summary.cases, 'case')} failed its scenario's expectation"
    if diff is None:
        return f"{status}: {counts}; no baseline"
    return (f"{status}: {counts}; against the baseline {plural(len(diff.new_failures), 'new failure')}, "
            f"{plural(len(diff.detection_regressions), 'detection regression')}")


def summary_lines(summary: Summary, diff: BaselineDiff | None, generated: datetime) -> list[tuple[str, str]]:
    """(label, text) lines of the summary: counts, verdicts, coverage, environments, the baseline's headline."""
    lines = [
        ("generated", generated.isoformat(timespec="seconds")),
        ("cases", f"{summary.cases}: {summary.passed} passed, {summary.failed} failed"),
        ("verdicts", ", ".join(f"{v} {n}" for v, n in summary.verdicts) or "-"),
        ("scenarios", f"{len(summary.scenarios)}: {', '.join(summary.scenarios)}" if summary.scenarios else "0"),
        ("policies", ", ".join(summary.policies) or "-"),
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
        rows.append((c.policy, c.size, str(r.splitk), r.verdict, r.expected, "ok" if r.passed else "FAIL", c.buffer,
                     c.outside, c.error, c.replay))
    return rows


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def report_markdown(results: Sequence[CaseResult], summary: Summary, diff: BaselineDiff | None, generated: datetime,
                    images: Sequence[tuple[str, str]] = ()) -> str:
    """The whole report.md: summary first, then the baseline changes, failures, figures and every result."""
    out = ["# graph-harness report", "", f"**{headline(summary, diff)}**", "", "## Summary", ""]
    out.extend(f"- {label}: {text}" for label, text in summary_lines(summary, diff, generated))
    if diff is not None:
        out += ["", "## Against the baseline", "", diff_headline(diff), ""]
        rows = diff_rows(diff)
        out.extend(_table(DIFF_HEADERS, rows) if rows else ["No change."])
    if summary.failures:
        out += ["", "## Failures", ""]
        for r in summary.failures:
            out.append(f"- {r.scenario} {r.policy} T={r.capture_size}: {r.verdict} (expected {r.expected}): "
                       f"{r.reason}; repro: `{repro_command(r)}`")
    if images:
        out += ["", "## Figures", ""]
        for alt, path in images:
            out += [f"![{alt}]({path})", ""]
        out.pop()
    out += ["", "## Results"]
    for scenario in summary.scenarios:
        out += ["", f"### {scenario}", ""]
        out.extend(_table(RESULT_HEADERS, result_rows([r for r in results if r.scenario == scenario])))
    return "\n".join(out) + "\n"
