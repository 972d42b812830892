"""graph-harness CLI: footprint output, its JSON record, exit codes and the one-line error contract."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from graph_harness.cli import main
from graph_harness.moe.footprint import RECORD_FIELDS, footprint_rows
from graph_harness.reports.tables import footprint_table, scenario_title
from graph_harness.suite.files import builtin_scenario_dir, load_scenarios, scenario_files


def _bad_input_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The whole stderr of a bad-input run: one line, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("graph-harness: error: ")
    return lines[0]


def test_footprint_json_has_the_eight_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fp.json"
    assert main(["footprint", "deepseek-v3-ep-decode", "--size", "1", "--json", str(out)]) == 0
    assert "1,966,080" in capsys.readouterr().out
    records = {r["policy"]: r for r in json.loads(out.read_text())}
    assert all(tuple(r) == RECORD_FIELDS for r in records.values())
    assert records["original"] == {
        "scenario": "deepseek-v3-ep-decode", "capture_size": 1, "policy": "original", "sorted_size": 128,
        "alloc_bytes": 131_072, "memset_bytes": 2_097_152, "scatter_rows": 8,
        "predicted_overflow_bytes": 1_966_080,
    }
    assert records["pr2551"]["predicted_overflow_bytes"] == 0


def test_footprint_defaults_to_capture_sizes_and_takes_several_scenarios(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fp.json"
    assert main(["footprint", "deepseek-v3-tp8-decode", "kimi-k2-tp8", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "deepseek-v3-tp8-decode: K=7168 N=256 E=257 topk=9 tp=8" in printed
    assert "kimi-k2-tp8: K=7168 N=256 E=385 topk=9 tp=8" in printed
    records = json.loads(out.read_text())
    assert {(r["scenario"], r["capture_size"]) for r in records} == {
        (s, t) for s in ("deepseek-v3-tp8-decode", "kimi-k2-tp8") for t in (1, 2, 4, 8)}


def test_unknown_scenario_lists_known_ids(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["footprint", "no-such-model"]) == 2
    line = _bad_input_line(capsys)
    assert "got unknown scenario 'no-such-model'; allowed: " in line
    assert "deepseek-v3-ep-decode" in line


@pytest.mark.parametrize("size", ["0", "-1", "x", "1.5"])
def test_bad_size(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["footprint", "deepseek-v3-ep-decode", "--size", size]) == 2
    expected = f"graph-harness: error: argument --size: got {size!r}; allowed: integer >= 1"
    assert _bad_input_line(capsys) == expected


@pytest.mark.parametrize("argv", [
    pytest.param(["footprint", "deepseek-v3-ep-decode", "--bogus"], id="unknown-flag"),
    pytest.param(["footprint"], id="no-scenario"),
    pytest.param(["bogus"], id="unknown-command"),
    pytest.param([], id="no-command"),
])
def test_bad_flag(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    _bad_input_line(capsys)


def test_bad_yaml_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.yaml").write_text("graph-harness: scenarios\ns1:\n  why: a\n   model: 3\n")
    assert main(["footprint", "s1", "--scenarios", str(tmp_path)]) == 2
    line = _bad_input_line(capsys)
    assert line.endswith("broken.yaml:4: invalid YAML: mapping values are not allowed here")


def test_missing_scenario_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["footprint", "s1", "--scenarios", str(tmp_path / "nowhere")]) == 2
    assert _bad_input_line(capsys).endswith("nowhere: got no YAML file; allowed: a folder of scenario files, each with "
                                            "the top-level line `graph-harness: scenarios`")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["footprint", "--help"]) == 0
    assert "--sizes T [T ...]" in capsys.readouterr().out


GOLDEN_DSV3_EP_T1 = """\
              deepseek-v3-ep-decode: K=7168 N=2048 E=256 topk=8 tp=1 bf16/per_1x128 cu_num=256
┏━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━┓
┃   ┃                ┃         ┃        ┃             ┃     alloc ┃    memset ┃ scatter ┃  overflow ┃       ┃
┃ T ┃ policy         ┃ block_m ┃ splitk ┃ sorted_size ┃     bytes ┃     bytes ┃    rows ┃     bytes ┃ ratio ┃
┡━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━┩
│ 1 │ original       │      16 │      2 │         128 │   131,072 │ 2,097,152 │       8 │ 1,966,080 │ 16.0x │
│ 1 │ pr2551         │      16 │      2 │         128 │ 2,097,152 │ 2,097,152 │       8 │         0 │  1.0x │
│ 1 │ rows_plus_topk │      16 │      2 │         128 │   278,528 │ 2,097,152 │       8 │ 1,818,624 │  7.5x │
│ 1 │ cktile         │      16 │      2 │         128 │    65,536 │         0 │       8 │         0 │     - │
└───┴────────────────┴─────────┴────────┴─────────────┴───────────┴───────────┴─────────┴───────────┴───────┘
"""


def test_footprint_table_golden() -> None:
    scenario = load_scenarios(scenario_files(builtin_scenario_dir()))["deepseek-v3-ep-decode"]
    table = footprint_table(footprint_rows("deepseek-v3-ep-decode", scenario, [1]),
                            title=scenario_title("deepseek-v3-ep-decode", scenario))
    console = Console(width=120, color_system=None, force_terminal=False, record=True, file=io.StringIO())
    console.print(table)
    # Trailing blanks of the centred title are not part of the contract (editors strip them).
    text = "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())
    assert text == GOLDEN_DSV3_EP_T1
