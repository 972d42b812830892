"""Rich tables of harness results; builders are pure: they return a Table and never print."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from harness.footprint import FootprintRow
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
