"""Rich tables of harness results; builders are pure: they return a Table and never print."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from rich.table import Table
from rich.text import Text

from graph_harness.core.results import CaseResult
from graph_harness.moe.footprint import FootprintRow
from graph_harness.moe.scenario import MoEScenario


def scenario_title(scenario_id: str, scenario: MoEScenario) -> str:
    """`id: K=.. N=.. E=.. topk=.. tp=.. dtype/quant cu_num=..`, the dims a footprint depends on."""
    m = scenario.model
    return (f"{scenario_id}: K={m.hidden} N={m.inter_per_rank} E={m.experts} topk={m.topk} tp={m.tp} "
            f"{scenario.dtype}/{scenario.quant.value} cu_num={scenario.cu_num}")


def fmt_count(value: int | None) -> str:
    """`1,966,080`; `-` for None."""
    return "-" if value is None else f"{value:,}"


def fmt_ratio(value: float | None) -> str:
    """`16.0x`; `-` for None."""
    return "-" if value is None else f"{value:.1f}x"


def fmt_error(value: float | None) -> str:
    """`2.5e-03`, `inf`; `-` for None."""
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.1e}"


def fmt_micros(value: float | None) -> str:
    """`80.0`, `1,234`: one decimal below a millisecond; `-` for None."""
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


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
        overflow = Text(fmt_count(row.predicted_overflow_bytes),
                        style="red" if row.predicted_overflow_bytes else "green")
        table.add_row(fmt_count(row.capture_size), row.policy.value, str(row.block_m), str(row.splitk),
                      fmt_count(row.sorted_size), fmt_count(row.alloc_bytes), fmt_count(row.memset_bytes),
                      fmt_count(row.scatter_rows), overflow, fmt_ratio(row.ratio))
    return table


class ResultCells(NamedTuple):
    """The text of one result's cells that the terminal table and the reports share."""

    variant: str
    size: str
    buffer: str  # the worst violation's buffer
    alloc: str  # that buffer's bytes
    outside: str  # the worst violation's extent: bytes from the edge through the farthest corrupted byte ("≥" when
    # the change reached its guard's far end: the guard cannot see past itself)
    ratio: str  # (alloc + outside) / alloc
    error: str
    replay: str


def verdict_text(r: CaseResult) -> str:
    """The verdict, starred when something limited what the case could check."""
    return f"{r.verdict}*" if r.limits else str(r.verdict)


def result_cells(r: CaseResult) -> ResultCells:
    """One result's shared cells; `-` where it has no violation (or no measurement)."""
    worst = r.worst
    if worst is None:
        buffer, alloc, outside, ratio = "-", "-", "-", "-"
    else:
        buffer, alloc = worst.buffer, fmt_count(worst.buffer_bytes)
        outside = ("≥" if worst.at_least else "") + fmt_count(worst.extent)
        ratio = fmt_ratio((worst.buffer_bytes + worst.extent) / worst.buffer_bytes if worst.buffer_bytes else None)
        ratio = f"≥{ratio}" if worst.at_least and ratio != "-" else ratio
    return ResultCells(r.variant, fmt_count(r.capture_size), buffer, alloc, outside, ratio, fmt_error(r.max_rel_err),
                       fmt_micros(r.replay_us))


def run_table(results: Sequence[CaseResult], title: str | None = None) -> Table:
    """One line per (variant, T) of one scenario: verdict, pass, the farthest overrun, error, replay time.

    A verdict the case could not fully check (see `CaseResult.limits`) reads `clean*`, never plain `clean`.
    """
    table = Table(title=title)
    table.add_column("variant", no_wrap=True)
    table.add_column("T", justify="right")
    table.add_column("verdict", no_wrap=True)
    table.add_column("pass", no_wrap=True)
    table.add_column("buffer", no_wrap=True)
    for header in ("alloc\nbytes", "outside\nbytes", "ratio", "max rel\nerr", "replay\nus"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in results:
        c = result_cells(r)
        mark = Text("ok", style="green") if r.passed else Text("FAIL", style="red bold")
        verdict = Text(verdict_text(r), style=r.verdict.style)
        table.add_row(c.variant, c.size, verdict, mark, c.buffer, c.alloc, c.outside, c.ratio, c.error, c.replay)
    return table


def violation_table(result: CaseResult) -> Table:
    """Every violation of one case: the buffer (a view of part of it as `ws[at:end]`), read or write, its figures,
    the op that made it (with the kernel's argument, where known), the other buffers it reached and the call site.
    A figure at a guard's far end reads `≥` (or `≤` before the start): the true extent is at least that."""
    table = Table(title=f"{result.scenario} {result.variant} T={result.capture_size}: {verdict_text(result)}")
    table.add_column("buffer", no_wrap=True)
    table.add_column("side")
    table.add_column("access")
    for header in ("first", "last", "bytes", "rows"):
        table.add_column(header, justify="right")
    table.add_column("op")
    table.add_column("into")
    table.add_column("site")
    for v in result.violations:
        name = v.buffer if v.at is None else f"{v.buffer}[{v.at:,}:{v.at + v.buffer_bytes:,}]"
        first = ("≤" if v.at_least and v.side == "underflow" else "") + fmt_count(v.first_offset)
        last = ("≥" if v.at_least and v.side == "overflow" else "") + fmt_count(v.last_offset)
        op = f"{v.op}({v.arg})" if v.op and v.arg else v.op or "-"
        table.add_row(name, v.side, v.access, first, last, fmt_count(v.bytes), fmt_count(v.rows), op,
                      ", ".join(v.hits) or "-", v.site)
    return table
