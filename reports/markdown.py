"""report.md; the builder is pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from graph_harness.core.results import CaseResult
from graph_harness.reports.baseline import BaselineDiff, Summary, diff_headline, diff_rows
from graph_harness.reports.history import HISTORY_HEADERS
from graph_harness.reports.summary import (
    DIAGNOSIS_HEADERS,
    DIFF_HEADERS,
    RESULT_HEADERS,
    diagnosis_rows,
    headline,
    result_rows,
    summary_lines,
)


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return lines


def report_markdown(results: Sequence[CaseResult], summary: Summary, diff: BaselineDiff | None, generated: datetime,
                    images: Sequence[tuple[str, str]] = (), history: Sequence[Sequence[str]] = ()) -> str:
    """The whole report.md: summary first, then the baseline changes, failures, the nights' history, the
    diagnosis of every failed or detecting case, figures and every result."""
    out = ["# graph-harness report", "", f"**{headline(summary, diff)}**", "", "## Summary", ""]
    out.extend(f"- {label}: {text}" for label, text in summary_lines(summary, diff, generated))
    if diff is not None:
        out += ["", "## Against the baseline", "", diff_headline(diff), ""]
        rows = [cells for _, cells in diff_rows(diff)]
        out.extend(_table(DIFF_HEADERS, rows) if rows else ["No change."])
    if summary.failures:
        out += ["", "## Failures", ""]
        for r in summary.failures:
            out.append(f"- {r.scenario} {r.variant} T={r.capture_size}: {r.verdict} (expected {r.expected}): "
                       f"{r.reason}" + (f"; repro: `{r.repro}`" if r.repro else ""))
    if history:
        out += ["", "## History", "", "One row per night, this run last; replay times are GPU graph replays only.",
                ""]
        out.extend(_table(HISTORY_HEADERS, history))
    diagnosis = diagnosis_rows(results)
    if diagnosis:
        out += ["", "## Diagnosis", "", "What wrote or read where, for every failed or detecting case.", ""]
        out.extend(_table(DIAGNOSIS_HEADERS, diagnosis))
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
