"""Rich tables of harness results; builders are pure: they return a Table and never print."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Column, Table
from rich.text import Text

from graph_harness.core.results import CaseResult
from graph_harness.core.violation import Violation
from graph_harness.moe.footprint import FootprintRow
from graph_harness.moe.scenario import MoEScenario
from graph_harness.reports.timing import fmt_replay

# How a table narrower than its whole width prints: "panels" repeats the key columns beside as many of the
# others as fit, one table under the other (figures read across a row); "rows" prints one block per row,
# its keys as the heading and `label  value` lines under it (prose reads down).
Stack = Literal["panels", "rows"]

_UNBOUNDED = 10_000  # a width no table reaches: measured there, a table reports the width it needs whole


def _plain(cell: RenderableType) -> str | None:
    """A cell's text; None for a renderable that is not text (it measures itself)."""
    if isinstance(cell, Text):
        return cell.plain
    return cell if isinstance(cell, str) else None


# A prose column (one that wraps) narrower than this reads a few words a line: the table stacks instead. A word
# longer than it (a file name such as a8w8_blockscale_tuned_fmoe_glm5.csv, 35) folds; figures (11 at most,
# "301,989,888") and ids in prose stay whole.
_PROSE_MIN = 30


def _whole_width(column: Column) -> int:
    """The narrowest the column can be without cutting a cell: its longest line if it never wraps (figures, ids),
    else that or `_PROSE_MIN`, whichever is less (prose wraps between words)."""
    texts = [t for t in (_plain(c) for c in (column.header, *column.cells)) if t is not None]
    longest = max((cell_len(line) for t in texts for line in t.splitlines()), default=1)
    return longest if column.no_wrap else min(longest, _PROSE_MIN)


def _needs(console: Console, options: ConsoleOptions, table: Table) -> int:
    return Measurement.get(console, options.update_width(_UNBOUNDED), table).minimum


class FitTable(Table):
    """A Table that never cuts a cell's figure or id: whole where the console holds it, prose wrapped, else
    stacked (see `Stack`); the layout is picked from the width it is rendered at, so builders stay pure."""

    def __init__(self, title: str | None = None, *, keys: int = 1, stack: Stack = "panels") -> None:
        super().__init__(title=title)
        self.keys = keys  # the leading columns that name a row: repeated in each panel, a block's heading
        self.stack: Stack = stack

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The whole table where it fits `options.max_width`, else panels, else one block per row."""
        for column in self.columns:
            column.min_width = _whole_width(column)  # rich would shrink a column below its cells; this bars it
            if not column.no_wrap:
                column.overflow = "fold"  # a prose word wider than its column breaks, never ends in "…"
        if _needs(console, options, self) <= options.max_width:
            yield from super().__rich_console__(console, options)
            return
        panels = self._panels(console, options) if self.stack == "panels" else None
        yield from panels if panels is not None else self._blocks()

    def _panel(self, columns: Sequence[Column], title: str | None) -> Table:
        panel = Table(*(c.copy() for c in columns), title=title, box=self.box, show_lines=self.show_lines)
        cells = [list(c.cells) for c in columns]
        for index, row in enumerate(self.rows):
            panel.add_row(*(column[index] for column in cells), style=row.style, end_section=row.end_section)
        return panel

    def _panels(self, console: Console, options: ConsoleOptions) -> list[Table] | None:
        """The keys beside consecutive runs of the other columns, each as wide as fits; None if one column
        beside the keys is already too wide."""
        keys = self.columns[: self.keys]
        groups: list[list[Column]] = [[]]
        for column in self.columns[self.keys:]:
            trial = [*groups[-1], column]
            if groups[-1] and _needs(console, options, self._panel([*keys, *trial], None)) > options.max_width:
                groups.append([column])
            else:
                groups[-1] = trial
        title = str(self.title) if self.title is not None else None
        panels = [self._panel([*keys, *group], title if i == 0 else None) for i, group in enumerate(groups)]
        if any(_needs(console, options, p) > options.max_width for p in panels):
            return None
        return panels

    def _blocks(self) -> Iterator[RenderableType]:
        """One block per row: the key cells as a heading, each other column as an indented `label  value`."""
        if self.title is not None:
            yield Text(str(self.title), style="table.title")
        columns = [list(c.cells) for c in self.columns]
        labels = [" ".join((_plain(c.header) or "").split()) for c in self.columns]
        for index in range(self.row_count):
            heading = Text(" ").join(_as_text(cells[index]) for cells in columns[: self.keys])
            heading.stylize("bold")
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold")  # only a word wider than the whole console is folded
            for label, cells in zip(labels[self.keys:], columns[self.keys:], strict=True):
                grid.add_row(label, cells[index])
            if index:
                yield Text("")
            yield heading
            yield Padding(grid, (0, 0, 0, 2), expand=False)


def _as_text(cell: RenderableType) -> Text:
    return cell if isinstance(cell, Text) else Text(_plain(cell) or "")


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


def footprint_table(rows: Sequence[FootprintRow], title: str | None = None) -> FitTable:
    """One line per (T, policy): dispatch, buffer bytes, overflow (red when > 0, green at 0) and ratio."""
    table = FitTable(title=title, keys=2)
    table.add_column("T", justify="right", no_wrap=True)
    table.add_column("policy", no_wrap=True)
    # Two-line headers keep the whole table 109 columns wide, inside 120; narrower, (T, policy) repeat in panels.
    for header in ("block_m", "splitk", "sorted_size", "alloc\nbytes", "memset\nbytes", "scatter\nrows",
                   "overflow\nbytes", "ratio"):
        table.add_column(header, justify="right", no_wrap=True)
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
    replay: str  # `37.2 us` on a GPU, `22.3 s (cpu)` under the interpreter (see timing)


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
                       fmt_replay(r))


def run_table(results: Sequence[CaseResult], title: str | None = None) -> FitTable:
    """One line per (variant, T) of one scenario: verdict, pass, the farthest overrun, error, replay time.

    A verdict the case could not fully check (see `CaseResult.limits`) reads `clean*`, never plain `clean`.
    """
    table = FitTable(title=title, keys=2)
    table.add_column("variant", no_wrap=True)
    table.add_column("T", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("pass", no_wrap=True)
    table.add_column("buffer", no_wrap=True)
    for header in ("alloc\nbytes", "outside\nbytes", "ratio", "max rel\nerr", "replay"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in results:
        c = result_cells(r)
        mark = Text("ok", style="green") if r.passed else Text("FAIL", style="red bold")
        verdict = Text(verdict_text(r), style=r.verdict.style)
        table.add_row(c.variant, c.size, verdict, mark, c.buffer, c.alloc, c.outside, c.ratio, c.error, c.replay)
    return table


def fmt_op(op: str | None, arg: str | None, missing: str = "-") -> str:
    """`moe_stage1`, `moe_stage1(out_ptr)` where the kernel's argument is known; `missing` for no op."""
    return f"{op}({arg})" if op and arg else op or missing


def fmt_buffer(v: Violation) -> str:
    """The violated buffer's name; a view of part of one as `ws[at:end]`."""
    return v.buffer if v.at is None else f"{v.buffer}[{v.at:,}:{v.at + v.buffer_bytes:,}]"


def violation_table(result: CaseResult) -> FitTable:
    """Every violation of one case: the buffer (a view of part of it as `ws[at:end]`), read or write, its figures,
    the op that made it (with the kernel's argument, where known), the other buffers it reached and the call site.
    A figure at a guard's far end reads `≥` (or `≤` before the start): the true extent is at least that."""
    table = FitTable(title=f"{result.scenario} {result.variant} T={result.capture_size}: {verdict_text(result)}")
    table.add_column("buffer", no_wrap=True)
    table.add_column("side", no_wrap=True)
    table.add_column("access", no_wrap=True)
    for header in ("first", "last", "bytes", "rows"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("op", no_wrap=True)
    table.add_column("into", no_wrap=True)
    table.add_column("site")  # `path:line in function`: wraps between its words
    for v in result.violations:
        first = ("≤" if v.at_least and v.side == "underflow" else "") + fmt_count(v.first_offset)
        last = ("≥" if v.at_least and v.side == "overflow" else "") + fmt_count(v.last_offset)
        table.add_row(fmt_buffer(v), v.side, v.access, first, last, fmt_count(v.bytes), fmt_count(v.rows),
                      fmt_op(v.op, v.arg), ", ".join(v.hits) or "-", v.site)
    return table
