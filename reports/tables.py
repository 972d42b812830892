"""Rich tables of harness results; builders are pure: they return a Table and never print."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from harness.footprint import FootprintRow
from harness.results import CaseResult
from harness.scenario import Scenario


def scenario_title(scenario_id: str, scenario: Scenario) -> str:
    """`id: K=.. N=.. E=.. topk=.. tp=.. dtype/quant cu_num=..`, the dims a footprint depends on."""
    m = scenario.model
    return (f"{scenario_id}: K={m.hidden} N={m.inter_per_rank} E={m.experts} topk={m.topk} tp={m.tp} "
            f"{scenario.dtype}/{scenario.quant.value} cu_num={scenario.cu_num}")


def _count(value: int) -> str:
    return f"{value:,}"


def footprint_table(rows: Sequence[FootprintRow], title: str | None = None) -> Table:
    """One line per (T, policy): dispatch, buffer bytes, overflow (red when > 0, green at 0) and ratio."""
    table = Table(title=title)
    table.add_column("T", justify="right")
    table.add_column("policy", no_wrap=True)
    # Two-line headers keep the table 109 columns wide: it fits 120 without cutting "rows_plus_topk".
    for header in ("block_m", "splitk", "sorted_size", "alloc\nbytes", "memset\nbytes", "scatter\nrows",
                   "overflow\nbytes", "ratio"):
        table.add_column(header, justify="right")
    for row in rows:
        overflow = Text(_count(row.predicted_overflow_bytes),
                        style="red" if row.predicted_overflow_bytes else "green")
        ratio = "-" if row.ratio is None else f"{row.ratio:.1f}x"
        table.add_row(_count(row.capture_size), row.policy.value, str(row.block_m), str(row.splitk),
                      _count(row.sorted_size), _count(row.alloc_bytes), _count(row.memset_bytes),
                      _count(row.scatter_rows), overflow, ratio)
    return table


_VERDICT_STYLE = {"clean": "green", "oob-write": "red", "oob-read": "red", "uninit-read": "magenta",
                  "mismatch": "yellow", "capture-error": "red bold", "crash": "red bold"}


def _error(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.1e}"


def _micros(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def run_table(results: Sequence[CaseResult], title: str | None = None) -> Table:
    """One line per (policy, T) of one scenario: verdict, pass, the farthest overrun, error, replay time."""
    table = Table(title=title)
    table.add_column("policy", no_wrap=True)
    table.add_column("T", justify="right")
    table.add_column("verdict", no_wrap=True)
    table.add_column("pass", no_wrap=True)
    table.add_column("buffer", no_wrap=True)
    for header in ("alloc\nbytes", "outside\nbytes", "ratio", "max rel\nerr", "replay\nus"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in results:
        worst = r.worst
        mark = Text("ok", style="green") if r.passed else Text("FAIL", style="red bold")
        verdict = Text(r.verdict, style=_VERDICT_STYLE.get(r.verdict, ""))
        if worst is None:
            buffer, alloc, outside, ratio = "-", "-", "-", "-"
        else:
            buffer, alloc, outside = worst.buffer, _count(worst.buffer_bytes), _count(worst.extent)
            ratio = f"{(worst.buffer_bytes + worst.extent) / worst.buffer_bytes:.1f}x" if worst.buffer_bytes else "-"
        table.add_row(r.policy, _count(r.capture_size), verdict, mark, buffer, alloc, outside, ratio,
                      _error(r.max_rel_err), _micros(r.replay_us))
    return table


def violation_table(result: CaseResult) -> Table:
    """Every violation of one case, with its call site and the op that wrote it."""
    table = Table(title=f"{result.scenario} {result.policy} T={result.capture_size}: {result.verdict}")
    table.add_column("buffer", no_wrap=True)
    table.add_column("side")
    for header in ("first", "last", "bytes", "rows"):
        table.add_column(header, justify="right")
    table.add_column("op")
    table.add_column("site")
    for v in result.violations:
        table.add_row(v.buffer, v.side, _count(v.first_offset), _count(v.last_offset), _count(v.bytes),
                      "-" if v.rows is None else _count(v.rows), v.op or "-", v.site)
    return table
