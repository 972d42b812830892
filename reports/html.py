"""report.html: one self-contained page (inline CSS, PNGs as data URIs), the summary first; the builder is pure."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from html import escape

from graph_harness.core.results import CaseResult
from graph_harness.reports.baseline import (
    BaselineDiff,
    ChangeKind,
    Summary,
    diff_headline,
    diff_rows,
    job_failed,
)
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

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0.2em; }
.status { font-size: 1.2em; font-weight: bold; padding: 0.4em 0.8em; display: inline-block; }
.status.pass { background: #dff0d8; color: #1d5e1d; }
.status.fail { background: #f8d7da; color: #8a1f1f; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.FAIL, td.regression { color: #b00; font-weight: bold; }
td.ok, td.fixed { color: #170; }
td.latency { color: #a60; }
td.failed, td.detection-regression { color: #b00; font-weight: bold; }
td.passed { color: #170; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.summary dt { font-weight: bold; }
dl.summary dd { margin: 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""
# Counts images that decoded, on the body, so a headless browser's --dump-dom shows whether the figures render.
_SCRIPT = """
window.addEventListener("load", function () {
  var shown = 0;
  for (var i = 0; i < document.images.length; i++) {
    if (document.images[i].complete && document.images[i].naturalWidth > 0) { shown++; }
  }
  document.body.setAttribute("data-images-rendered", String(shown));
});
"""
# The CSS class of a baseline change's first cell.
_CHANGE_CLASS: dict[ChangeKind, str] = {"detection regression": "regression", "new failure": "regression",
                                        "fixed": "fixed", "latency": "latency"}


def _row(cells: Sequence[str], tag: str = "td", classes: Sequence[str] = ()) -> str:
    parts = []
    for i, cell in enumerate(cells):
        cls = f' class="{escape(classes[i])}"' if i < len(classes) and classes[i] else ""
        parts.append(f"<{tag}{cls}>{escape(cell)}</{tag}>")
    return "<tr>" + "".join(parts) + "</tr>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[Sequence[str]] = ()) -> str:
    body = [_row(row, classes=classes[i] if i < len(classes) else ()) for i, row in enumerate(rows)]
    return "<table><thead>" + _row(headers, "th") + "</thead><tbody>" + "".join(body) + "</tbody></table>"


def data_uri(png: bytes) -> str:
    """A PNG as a `data:image/png;base64,...` URI, so the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def report_html(results: Sequence[CaseResult], summary: Summary, diff: BaselineDiff | None, generated: datetime,
                images: Sequence[tuple[str, bytes]] = (),
                history: Sequence[Sequence[str]] = ()) -> str:
    """The whole report.html: status and summary first, then baseline changes, failures, the nights' history,
    the diagnosis of every failed or detecting case, figures and every result."""
    failed = job_failed(summary, diff)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>graph-harness report</title>", f"<style>{_CSS}</style>", f"<script>{_SCRIPT}</script>",
           "</head><body>", '<section id="summary">', "<h1>graph-harness report</h1>",
           f'<p class="status {"fail" if failed else "pass"}">{escape(headline(summary, diff))}</p>',
           '<dl class="summary">']
    out.extend(f"<dt>{escape(label)}</dt><dd>{escape(text)}</dd>" for label, text in
               summary_lines(summary, diff, generated))
    out += ["</dl>", "</section>"]
    if diff is not None:
        changes = diff_rows(diff)
        rows = [cells for _, cells in changes]
        classes = [(_CHANGE_CLASS[kind],) for kind, _ in changes]
        out += ['<section id="baseline">', "<h2>Against the baseline</h2>", f"<p>{escape(diff_headline(diff))}</p>",
                _table(DIFF_HEADERS, rows, classes) if rows else "<p>No change.</p>", "</section>"]
    if summary.failures:
        out += ['<section id="failures">', "<h2>Failures</h2>", "<ul>"]
        for r in summary.failures:
            repro = f"<br>repro: <code>{escape(r.repro)}</code>" if r.repro else ""
            out.append(f"<li>{escape(f'{r.scenario} {r.variant} T={r.capture_size}')}: {escape(r.verdict)} "
                       f"(expected {escape(r.expected)}): {escape(r.reason)}{repro}</li>")
        out += ["</ul>", "</section>"]
    if history:
        out += ['<section id="history">', "<h2>History</h2>",
                "<p>One row per night, this run last; replay times are GPU graph replays only.</p>",
                _table(HISTORY_HEADERS, history), "</section>"]
    diagnosis = diagnosis_rows(results)
    if diagnosis:
        marks: list[tuple[str, ...]] = [("", row[1].replace(" ", "-")) for row in diagnosis]
        out += ['<section id="diagnosis">', "<h2>Diagnosis</h2>",
                "<p>What wrote or read where, for every failed or detecting case.</p>",
                _table(DIAGNOSIS_HEADERS, diagnosis, marks), "</section>"]
    if images:
        out += ['<section id="figures">', "<h2>Figures</h2>"]
        out.extend(f'<figure><img src="{data_uri(png)}" alt="{escape(caption)}">'
                   f"<figcaption>{escape(caption)}</figcaption></figure>" for caption, png in images)
        out.append("</section>")
    out += ['<section id="results">', "<h2>Results</h2>"]
    pass_column = RESULT_HEADERS.index("pass")
    for scenario in summary.scenarios:
        cases = result_rows([r for r in results if r.scenario == scenario])
        marks = [tuple(row[pass_column] if i == pass_column else "" for i in range(len(row))) for row in cases]
        out += [f"<h3>{escape(scenario)}</h3>", _table(RESULT_HEADERS, cases, marks)]
    out += ["</section>", "</body></html>"]
    return "\n".join(out) + "\n"
