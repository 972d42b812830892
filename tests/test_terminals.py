"""Every table the CLI prints shows each figure and id whole at any width, and the CLI's width follows COLUMNS."""

from __future__ import annotations

import io
import os
import re
import shutil

import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text

from graph_harness.cli import main
from graph_harness.core.guard import Violation
from graph_harness.core.results import CaseResult, Environment
from graph_harness.core.verdict import Verdict
from graph_harness.moe.footprint import footprint_rows
from graph_harness.reports.bugs_tables import bugs_table, reproduce_table, scenarios_table
from graph_harness.reports.tables import footprint_table, run_table, scenario_title, violation_table
from graph_harness.suite.bugs import Reproduction, load_registry
from graph_harness.suite.files import builtin_scenario_dir

WIDTHS = (60, 80, 120, 200)
SCENARIOS, BUGS = load_registry(builtin_scenario_dir())
_ENV = Environment("cpu (x86_64, triton interpreter)", "none", "2.13.0", "3.9.0", "3.11.9", "abc")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _render(table: Table, width: int) -> str:
    console = Console(width=width, color_system=None, record=True, file=io.StringIO())
    console.print(table)
    return "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())


def _whole(table: Table) -> list[str]:
    """Every line of every cell of the columns that never wrap (figures, ids, names), and every word of the prose
    columns up to the width at which prose may fold (30): what a rendering must show unbroken."""
    found = []
    for column in table.columns:
        for cell in column.cells:
            text = cell.plain if isinstance(cell, Text) else str(cell)
            found += [line.strip() for line in text.splitlines()] if column.no_wrap else [
                w for w in text.split() if len(w) <= 30]
    return [f for f in found if f]


def _assert_whole(table: Table, width: int) -> str:
    text = _render(table, width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    missing = [f for f in _whole(table) if f not in text]
    assert not missing, f"at {width} columns, cut: {missing[:5]}"
    return text


def _result(variant: str, size: int, verdict: Verdict, violations: tuple[Violation, ...]) -> CaseResult:
    return CaseResult(scenario="deepseek-v3-ep-split2-all-sizes", variant=variant, capture_size=size, seed=1,
                      backend="reexec", verdict=verdict, expected=verdict, expectation=str(verdict), passed=True,
                      reason="", violations=violations, max_rel_err=3.8e-3, tolerance=0.03, eager_us=3_626_474.4,
                      replay_us=2_956_263.0, error=None, notes=(), limits=(), params={"block_m": 16, "splitk": 2},
                      repro=None, env=_ENV, buffers={"tmp_out": 2_097_152})


_MEMSET = Violation("tmp_out", "kernels/fused_moe.py:141 in fused_moe", "overflow", 0, 1_966_079, 1_966_080, 120,
                    131_072, "moe_stage1", ("eager T=1 #1",), arg="out_ptr", hits=("sorted_ids", "moe_buf"))


@pytest.mark.parametrize("width", WIDTHS)
def test_footprint_table_is_whole(width: int) -> None:
    scenario = SCENARIOS["deepseek-v3-tp8-decode"]
    rows = footprint_rows("deepseek-v3-tp8-decode", scenario, [1, 2, 4, 8])
    text = _assert_whole(footprint_table(rows, title=scenario_title("deepseek-v3-tp8-decode", scenario)),
                         width)
    assert "2,359,296" in text
    assert "2,211,840" in text
    assert "rows_plus_topk" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_run_and_violation_tables_are_whole(width: int) -> None:
    results = [_result(v, t, Verdict.OOB_WRITE if v == "original" else Verdict.CLEAN,
                       (_MEMSET,) if v == "original" else ())
               for v in ("original", "pr2551", "rows_plus_topk") for t in (1, 8192)]
    text = _assert_whole(run_table(results, title="deepseek-v3-ep-split2-all-sizes on cpu, reexec"), width)
    assert "1,966,080" in text
    assert "8,192" in text
    text = _assert_whole(violation_table(results[0]), width)
    assert "moe_stage1(out_ptr)" in text
    assert "sorted_ids, moe_buf" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_list_tables_are_whole(width: int) -> None:
    text = _assert_whole(scenarios_table(SCENARIOS), width)
    assert all(scenario_id in text for scenario_id in SCENARIOS)
    text = _assert_whole(bugs_table(BUGS), width)
    assert all(bug_id in text for bug_id in BUGS)
    assert "tmp_out 131,072 -> 2,097,152 B" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_reproduce_table_is_whole(width: int) -> None:
    bug = BUGS["aiter-2508"]
    rep = Reproduction("aiter-2508", bug, _result("original", 1, Verdict.OOB_WRITE, (_MEMSET,)),
                       _result("pr2551", 1, Verdict.CLEAN, ()))
    text = _assert_whole(reproduce_table(rep, SCENARIOS), width)
    assert "131,072 .. 2,097,151" in text
    assert "moe_stage1(out_ptr)" in text


FOOTPRINT_80 = """\
     deepseek-v3-ep-decode: K=7168 N=2048 E=256 topk=8 tp=1 bf16/per_1x128
                                  cu_num=256
┏━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━┓
┃   ┃                ┃         ┃        ┃             ┃     alloc ┃    memset ┃
┃ T ┃ policy         ┃ block_m ┃ splitk ┃ sorted_size ┃     bytes ┃     bytes ┃
┡━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━┩
│ 1 │ original       │      16 │      2 │         128 │   131,072 │ 2,097,152 │
│ 1 │ pr2551         │      16 │      2 │         128 │ 2,097,152 │ 2,097,152 │
│ 1 │ rows_plus_topk │      16 │      2 │         128 │   278,528 │ 2,097,152 │
│ 1 │ cktile         │      16 │      2 │         128 │    65,536 │         0 │
└───┴────────────────┴─────────┴────────┴─────────────┴───────────┴───────────┘
┏━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━┓
┃   ┃                ┃ scatter ┃  overflow ┃       ┃
┃ T ┃ policy         ┃    rows ┃     bytes ┃ ratio ┃
┡━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━┩
│ 1 │ original       │       8 │ 1,966,080 │ 16.0x │
│ 1 │ pr2551         │       8 │         0 │  1.0x │
│ 1 │ rows_plus_topk │       8 │ 1,818,624 │  7.5x │
│ 1 │ cktile         │       8 │         0 │     - │
└───┴────────────────┴─────────┴───────────┴───────┘
"""


def test_footprint_table_at_80_columns_golden() -> None:
    # Narrower than its 109 columns, the table repeats (T, policy) beside what fits, rather than cut a figure.
    scenario = SCENARIOS["deepseek-v3-ep-decode"]
    table = footprint_table(footprint_rows("deepseek-v3-ep-decode", scenario, [1]),
                            title=scenario_title("deepseek-v3-ep-decode", scenario))
    assert _render(table, 80) == FOOTPRINT_80


# The CLI's width ---------------------------------------------------------------------------------------------

def _widest(capsys: pytest.CaptureFixture[str], argv: list[str]) -> int:
    assert main(argv) == 0
    out = _ANSI.sub("", capsys.readouterr().out)
    assert "…" not in out
    return max(len(line.rstrip()) for line in out.splitlines())


def test_a_pipe_honours_columns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for width in ("60", "80", " 100 "):
        monkeypatch.setenv("COLUMNS", width)
        widest = _widest(capsys, ["footprint", "deepseek-v3-tp8-decode"])
        assert int(width) - 30 < widest <= int(width)


@pytest.mark.parametrize("columns", [None, "", "0", "-5", "wide", "80x", "²"])
def test_a_pipe_without_good_columns_is_120_wide(columns: str | None, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    # The footprint table is 109 columns whole: at 120 it prints as one table, its title centred over 120.
    assert _widest(capsys, ["footprint", "deepseek-v3-tp8-decode"]) == 109


def test_a_terminal_without_columns_takes_its_width(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: stdout is a terminal
    monkeypatch.setenv("COLUMNS", "0")  # a bad value: the terminal's own width counts
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *_: os.terminal_size((70, 24)))
    assert 40 < _widest(capsys, ["list"]) <= 70


# The founding bug, reproduced ---------------------------------------------------------------------------------

def test_reproduce_names_the_op_the_shape_and_both_buffers_at_80(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["reproduce", "aiter-2508"]) == 0
    text = capsys.readouterr().out
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    rows: dict[str, list[str]] = {}  # label -> its value in each side's panel (buggy, then fixed)
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if line.startswith("│") and len(cells) == 2:
            rows.setdefault(cells[0], []).append(cells[1])
    # deepseek-v3-ep-decode at T=1, as `footprint --size 1` gives it: original allocates 131,072 B and the
    # split-K memset writes 2,097,152 B; pr2551 allocates those 2,097,152 B, so the memset fits.
    footprint = {r.policy.value: r for r in footprint_rows("deepseek-v3-ep-decode",
                                                           SCENARIOS["deepseek-v3-ep-decode"], [1])}
    bug = BUGS["aiter-2508"]
    assert (bug.buggy.allocated, bug.buggy.written) == (footprint["original"].alloc_bytes,
                                                        footprint["original"].memset_bytes) == (131_072, 2_097_152)
    assert footprint["pr2551"].alloc_bytes == 2_097_152
    assert rows["op"] == ["moe_stage1", "-"]
    assert rows["runs"] == ["MoE K/N/E/topk 7168/2048/256/8"] * 2
    assert rows["block_m"] == ["16", "16"]
    assert rows["splitk"] == ["2", "2"]
    assert rows["buffer"] == ["tmp_out", "tmp_out"]
    assert rows["bytes allocated"] == ["131,072", "2,097,152"]
    assert rows["bytes written"] == ["2,097,152", "-"]
    assert rows["result"] == ["detected", "clean"]
