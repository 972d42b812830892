"""The bug registry, `reproduce`, `list` and `schema`: exact figures, golden tables, one-line bad input."""

from __future__ import annotations

import dataclasses
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from rich.table import Table

from graph_harness.cli import main
from graph_harness.core.guard import Violation
from graph_harness.core.results import CaseResult, Environment
from graph_harness.core.verdict import Verdict
from graph_harness.errors import BadInput
from graph_harness.moe.scenario import MoEScenario
from graph_harness.reports.bugs_tables import bugs_table, reproduce_table, scenarios_table
from graph_harness.suite.bugs import Bug, Reproduction, figures, load_bugs, registry_path
from graph_harness.suite.files import builtin_scenario_dir, load_scenarios, scenario_files
from tests.test_cli import _bad_input_line as one_error_line

SCENARIO_DIR = builtin_scenario_dir()
SCENARIOS = load_scenarios(scenario_files(SCENARIO_DIR))
BUGS = load_bugs(registry_path(SCENARIO_DIR), SCENARIOS)

SCENARIOS_FOR_GOLDEN = {"s1": MoEScenario.model_validate({
    "why": "The founding shape: split-K 2 at T=1, 16x memset overrun.",
    "model": {"hidden": 7168, "inter": 2048, "experts": 256, "topk": 8}, "dtype": "bf16", "quant": "per_1x128",
    "block_m": "auto", "splitk": "auto", "cu_num": 256, "capture_sizes": [1],
    "policies": {"original": "oob-write", "pr2551": "clean"}})}


def _bad_input_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a bad-input run, without its `graph-harness: error: ` prefix."""
    return one_error_line(capsys).removeprefix("graph-harness: error: ")


def _render(table: Table, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(table)
    out = console.file.getvalue()
    assert isinstance(out, str)
    return "\n".join(line.rstrip() for line in out.splitlines())


# The registry ------------------------------------------------------------------------------------------------

def test_registry_holds_the_expressible_bugs_of_the_contracts() -> None:
    assert list(BUGS) == ["aiter-2508", "aiter-2551-padding", "aiter-3050", "aiter-3997", "aiter-sort-tail",
                          "cktile-split", "stage2-padding-nan", "rocm-6242", "aiter-4494", "aiter-5393", "vllm-53818",
                          "flashinfer-4553", "aiter-3208", "aiter-4375", "sglang-19787", "aiter-2651-sort-block"]
    founding = BUGS["aiter-2508"]
    assert (founding.buggy.scenario, founding.buggy.variant, founding.size) == (
        "deepseek-v3-ep-decode", "original", 1)
    assert (founding.buggy.buffer, founding.buggy.allocated, founding.buggy.written) == ("tmp_out", 131_072,
                                                                                       2_097_152)
    assert (founding.fixed.scenario, founding.fixed.variant, founding.fixed.verdict) == (
        "deepseek-v3-ep-decode", "pr2551", "clean")


@pytest.mark.parametrize("bug_id", list(BUGS))
def test_every_bug_agrees_with_its_scenarios(bug_id: str) -> None:
    bug = BUGS[bug_id]
    for variant in (bug.buggy, bug.fixed):
        scenario = SCENARIOS[variant.scenario]
        assert scenario.expected(variant.variant, bug.size) == variant.verdict
        assert bug.size in scenario.capture_sizes
        stated = scenario.stated_bytes(variant.scenario, variant.variant, bug.size)
        if variant.verdict == "oob-write" and stated is not None:
            buffer, allocated, extent = stated
            assert (buffer or variant.buffer, allocated or variant.allocated, extent) == (
                variant.buffer, variant.allocated, variant.extent)
    assert bug.buggy.verdict != "clean"
    assert bug.fixed.verdict == "clean"


def _registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug: dict[str, Any] | None = None,
              text: str | None = None) -> Path:
    """A scenario folder with one DSV3 EP scenario `s1` and a bugs.yaml of one bug `b1` (or raw text)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "sc"
    folder.mkdir()
    scenario = {"why": "founding shape", "model": {"hidden": 7168, "inter": 2048, "experts": 256, "topk": 8},
                "dtype": "bf16", "quant": "per_1x128", "block_m": "auto", "splitk": "auto", "cu_num": 256,
                "capture_sizes": [1], "policies": {"original": "oob-write", "pr2551": "clean"}}
    (folder / "x.yaml").write_text(yaml.safe_dump({"graph-harness": "scenarios", "s1": scenario}))
    (folder / "bugs.yaml").write_text(yaml.safe_dump({"b1": bug}) if text is None else text)
    return folder


def _bug(**fields: Any) -> dict[str, Any]:
    """A valid bug on s1; fields override, or as None delete, keys."""
    body: dict[str, Any] = {
        "title": "memset overrun", "source": "aiter #2508", "why": "test", "size": 1,
        "buggy": {"scenario": "s1", "variant": "original", "verdict": "oob-write", "buffer": "tmp_out",
                  "allocated": 131072, "written": 2097152},
        "fixed": {"scenario": "s1", "variant": "pr2551", "verdict": "clean"},
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def _buggy(**fields: Any) -> dict[str, Any]:
    return {**_bug()["buggy"], **fields}


BAD_BUGS = [  # (id, bug body, the whole message)
    ("missing-why", _bug(why=None), "sc/bugs.yaml: b1: why: got nothing; allowed: required field"),
    ("unknown-field", _bug(colour="red"),
     "sc/bugs.yaml: b1: colour: got unknown field; allowed: title, source, why, size, buggy, fixed"),
    ("unknown-variant-field", _bug(buggy=_buggy(rows=3)),
     "sc/bugs.yaml: b1: buggy.rows: got unknown field; "
     "allowed: scenario, variant, verdict, buffer, allocated, written"),
    ("unknown-scenario", _bug(fixed={"scenario": "s2", "variant": "pr2551", "verdict": "clean"}),
     "sc/bugs.yaml: b1: fixed.scenario: got 's2'; allowed: s1"),
    ("policy-not-in-scenario", _bug(fixed={"scenario": "s1", "variant": "cktile", "verdict": "clean"}),
     "sc/bugs.yaml: b1: fixed.variant: got cktile; allowed: original, pr2551; the variants of s1"),
    ("bad-policy", _bug(fixed={"scenario": "s1", "variant": "fixed", "verdict": "clean"}),
     "sc/bugs.yaml: b1: fixed.variant: got fixed; allowed: original, pr2551; the variants of s1"),
    ("verdict-disagrees", _bug(buggy={"scenario": "s1", "variant": "original", "verdict": "mismatch"}),
     "sc/bugs.yaml: b1: buggy.verdict: got mismatch; allowed: oob-write, as s1 expects of original"),
    ("fixed-not-clean", _bug(fixed=_buggy()),
     "sc/bugs.yaml: b1: fixed.verdict: got oob-write; allowed: clean"),
    ("buggy-clean", _bug(buggy={"scenario": "s1", "variant": "pr2551", "verdict": "clean"}),
     "sc/bugs.yaml: b1: buggy.verdict: got clean; allowed: a verdict other than clean"),
    ("oob-write-without-bytes", _bug(buggy=_buggy(written=None, allocated=None, buffer=None)),
     "sc/bugs.yaml: b1: buggy.buffer: got nothing; allowed: buffer, allocated and written with verdict oob-write"),
    ("bytes-without-oob-write", _bug(fixed={"scenario": "s1", "variant": "pr2551", "verdict": "clean",
                                            "allocated": 5}),
     "sc/bugs.yaml: b1: fixed.allocated: got 5; allowed: no byte figures with verdict clean"),
    ("written-not-above-allocated", _bug(buggy=_buggy(written=131072)),
     "sc/bugs.yaml: b1: buggy.written: got 131072; allowed: integer > allocated (131,072)"),
    ("bytes-disagree-with-the-footprint", _bug(buggy=_buggy(written=2097160)),
     "sc/bugs.yaml: b1: buggy.written: got tmp_out allocated 131072, written 2097160; allowed: allocated 131,072, "
     "written 2,097,152, as s1 original states at T=1"),
    ("size-not-captured", _bug(size=2), "sc/bugs.yaml: b1: size: got 2; allowed: a capture size of s1 (1)"),
    ("zero-bytes", _bug(buggy=_buggy(allocated=0)),
     "sc/bugs.yaml: b1: buggy.allocated: got 0; allowed: integer >= 1"),
]


@pytest.mark.parametrize(("bug", "message"), [pytest.param(b, m, id=i) for i, b, m in BAD_BUGS])
def test_bad_bug_is_one_exact_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug: dict[str, Any],
                                   message: str) -> None:
    folder = _registry(tmp_path, monkeypatch, bug)
    with pytest.raises(BadInput) as err:
        load_bugs(registry_path(Path("sc")), load_scenarios(scenario_files(folder)))
    assert str(err.value) == message


def test_registry_bytes_must_match_the_scenarios_expect_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shipped = yaml.safe_load((SCENARIO_DIR / "regressions.yaml").read_text())
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"graph-harness": "scenarios",
                                                     "s8": shipped["rocm-6242-idle-batch"],
                                                     "s8f": shipped["rocm-6242-idle-batch-filtered"]}))
    bug = {"title": "t", "source": "s", "why": "w", "size": 1,
           "buggy": {"scenario": "s8", "variant": "pr2551", "verdict": "oob-write", "buffer": "counts",
                     "allocated": 512, "written": 520},
           "fixed": {"scenario": "s8f", "variant": "pr2551", "verdict": "clean"}}
    (tmp_path / "bugs.yaml").write_text(yaml.safe_dump({"b8": bug}))
    with pytest.raises(BadInput) as err:
        load_bugs(Path("bugs.yaml"), load_scenarios(scenario_files(Path("."))))
    assert str(err.value) == ("bugs.yaml: b8: buggy.written: got counts allocated 512, written 520; allowed: buffer "
                              "counts, written = allocated + 4, as s8 pr2551 states at T=1")


# reproduce: bad input ----------------------------------------------------------------------------------------

def test_unknown_bug_lists_the_known(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "no-such-bug"]) == 2
    assert _bad_input_line(capsys) == ("scenarios/bugs.yaml: got unknown bug 'no-such-bug'; allowed: "
                                       + ", ".join(BUGS))


@pytest.mark.parametrize(("argv", "message"), [
    (["reproduce", "aiter-2508", "--seed", "-1"], "argument --seed: got '-1'; allowed: integer >= 0"),
    (["reproduce"], "the following arguments are required: BUG"),
    (["reproduce", "aiter-2508", "--colour"], "unrecognized arguments: --colour"),
    (["list", "extra"], "unrecognized arguments: extra"),
    (["schema", "--yaml"], "unrecognized arguments: --yaml"),
])
def test_bad_flag_is_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert _bad_input_line(capsys) == message


def test_malformed_registry_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _registry(tmp_path, monkeypatch, text="b1:\n  title: a\n   why: b\n")
    assert main(["reproduce", "b1", "--scenarios", "sc"]) == 2
    assert _bad_input_line(capsys) == "sc/bugs.yaml:3: invalid YAML: mapping values are not allowed here"
    assert main(["list", "--scenarios", "sc"]) == 2
    assert _bad_input_line(capsys) == "sc/bugs.yaml:3: invalid YAML: mapping values are not allowed here"


def test_missing_registry_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (_registry(tmp_path, monkeypatch, _bug()) / "bugs.yaml").unlink()
    assert main(["list", "--scenarios", "sc"]) == 2
    assert _bad_input_line(capsys) == "sc/bugs.yaml: got no such file; allowed: a bug registry YAML file"


def test_reproduce_json_to_an_unwritable_path_fails_before_running(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "no-dir" / "r.json"
    assert main(["reproduce", "aiter-2508", "--json", str(target)]) == 2
    assert _bad_input_line(capsys).startswith(f"--json: got {target}; allowed: a writable file path")


# reproduce: end to end ---------------------------------------------------------------------------------------

def test_reproduce_the_founding_bug(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """aiter #2508 on CPU: 131,072 B allocated, 2,097,152 B written (16x) by the buggy variant; fixed clean."""
    out = tmp_path / "r.json"
    seed = random.SystemRandom().randrange(2**31)
    assert main(["reproduce", "aiter-2508", "--seed", str(seed), "--json", str(out)]) == 0, f"seed={seed}"
    printed = capsys.readouterr().out
    for figure in ("131,072", "2,097,152", "16.0x", "131,072 .. 2,097,151", "detected", "clean"):
        assert figure in printed
    record = json.loads(out.read_text())
    assert (record["bug"], record["detected"], record["clean"], record["reproduced"]) == (
        "aiter-2508", True, True, True)
    assert record["buggy"]["seed"] == record["fixed"]["seed"] == seed
    worst = record["buggy"]["violations"][0]
    assert (worst["buffer"], worst["side"], worst["buffer_bytes"], worst["last_offset"]) == (
        "tmp_out", "overflow", 131_072, 1_966_079)
    assert record["fixed"]["verdict"] == "clean"
    assert record["fixed"]["violations"] == []


def test_reproduce_the_idle_batch_underflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rocm-libraries #6242: counts[-1] written, the 4 bytes before the 512-byte histogram; filtered is clean."""
    out = tmp_path / "r.json"
    assert main(["reproduce", "rocm-6242", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "-4 .. -1" in printed
    assert "516" in printed
    record = json.loads(out.read_text())
    worst = record["buggy"]["violations"][0]
    assert (worst["buffer"], worst["side"], worst["first_offset"], worst["last_offset"], worst["bytes"]) == (
        "counts", "underflow", -4, -1, 4)
    assert record["buggy"]["passed"]
    assert record["fixed"]["verdict"] == "clean"


# reproduce: the side-by-side table ---------------------------------------------------------------------------

_ENV = Environment("cpu (x86_64, triton interpreter)", "none", "2.13.0", "3.9.0", "3.11.9", "abc")


def _result(variant: str, verdict: Verdict, violations: tuple[Violation, ...], err: float) -> CaseResult:
    return CaseResult(scenario="s1", variant=variant, capture_size=1, seed=1, backend="reexec", verdict=verdict,
                      expected=verdict, expectation=str(verdict), passed=True, reason="", violations=violations,
                      max_rel_err=err, tolerance=0.02, eager_us=None, replay_us=None, error=None, notes=(),
                      limits=(), params={"block_m": 16, "splitk": 2}, repro=None, env=_ENV)


REPRODUCE_GOLDEN = """\
                        b1: memset overrun (aiter #2508), T=1
┏━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃                 ┃ buggy                          ┃ fixed                          ┃
┡━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ variant         │ s1 original                    │ s1 pr2551                      │
│ runs            │ MoE K/N/E/topk 7168/2048/256/8 │ MoE K/N/E/topk 7168/2048/256/8 │
│ block_m         │ 16                             │ 16                             │
│ splitk          │ 2                              │ 2                              │
│ verdict         │ oob-write                      │ clean                          │
│ expected        │ oob-write                      │ clean                          │
│ op              │ moe_stage1                     │ -                              │
│ buffer          │ tmp_out                        │ tmp_out                        │
│ bytes allocated │ 131,072                        │ 2,097,152                      │
│ bytes written   │ 2,097,152                      │ -                              │
│ overflow ratio  │ 16.0x                          │ -                              │
│ corrupted range │ 131,072 .. 2,097,151           │ -                              │
│ max rel err     │ 1.0e+00                        │ 3.1e-03                        │
│ result          │ detected                       │ clean                          │
└─────────────────┴────────────────────────────────┴────────────────────────────────┘"""


def test_reproduce_table_golden() -> None:
    bug = Bug.model_validate(_bug(), context={"scenarios": SCENARIOS_FOR_GOLDEN})
    overrun = Violation("tmp_out", "fused_moe.py:140", "overflow", 0, 1_966_079, 1_966_080, 960, 131_072,
                        "moe_stage1", ("eager",))
    fixed = dataclasses.replace(_result("pr2551", Verdict.CLEAN, (), 0.0031), buffers={"tmp_out": 2_097_152})
    rep = Reproduction("b1", bug, _result("original", Verdict.OOB_WRITE, (overrun,), 1.0), fixed)
    assert figures(bug.buggy, rep.buggy).ratio == 16.0
    assert rep.reproduced
    assert _render(reproduce_table(rep, SCENARIOS_FOR_GOLDEN)) == REPRODUCE_GOLDEN


# list and schema ---------------------------------------------------------------------------------------------

LIST_GOLDEN = """\
                               scenarios (graph-harness run SCENARIO)
┏━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃    ┃ runs                           ┃                     ┃                                      ┃
┃ id ┃ sizes                          ┃ variants            ┃ why                                  ┃
┡━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ s1 │ MoE K/N/E/topk 7168/2048/256/8 │ original: oob-write │ The founding shape: split-K 2 at     │
│    │ T 1                            │ pr2551: clean       │ T=1, 16x memset overrun.             │
└────┴────────────────────────────────┴─────────────────────┴──────────────────────────────────────┘"""

BUGS_GOLDEN = """\
                             bugs (graph-harness reproduce BUG)
┏━━━━┳━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ id ┃ T ┃ variants                                   ┃ what                               ┃
┡━━━━╇━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ b1 │ 1 │ buggy s1 original                          │ memset overrun (aiter #2508). test │
│    │   │   oob-write tmp_out 131,072 -> 2,097,152 B │                                    │
│    │   │ fixed s1 pr2551                            │                                    │
│    │   │   clean                                    │                                    │
└────┴───┴────────────────────────────────────────────┴────────────────────────────────────┘"""


def test_list_tables_golden() -> None:
    bugs = {"b1": Bug.model_validate(_bug(), context={"scenarios": SCENARIOS_FOR_GOLDEN})}
    assert _render(scenarios_table(SCENARIOS_FOR_GOLDEN)) == LIST_GOLDEN
    assert _render(bugs_table(bugs)) == BUGS_GOLDEN


def test_list_prints_every_scenario_and_bug(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    assert "scenarios (graph-harness run SCENARIO)" in printed
    assert "bugs (graph-harness reproduce BUG)" in printed
    for name in [*SCENARIOS, *BUGS]:
        assert name in printed
    assert "tmp_out 131,072 -> 2,097,152 B" in printed


def test_list_json_writes_every_scenario_and_bug_for_tools(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "list.json"
    assert main(["list", "--json", str(out)]) == 0
    assert "bugs (graph-harness reproduce BUG)" in capsys.readouterr().out  # the tables still print
    listed = json.loads(out.read_text())
    assert [s["id"] for s in listed["scenarios"]] == list(SCENARIOS)
    assert [b["id"] for b in listed["bugs"]] == list(BUGS)
    (founding,) = [s for s in listed["scenarios"] if s["id"] == "deepseek-v3-ep-decode"]
    assert {k: v for k, v in founding.items() if k not in ("why", "runs")} == {
        "id": "deepseek-v3-ep-decode", "kind": "moe", "capture_sizes": [1], "cpu_sizes": [1], "seed": 1,
        "verdicts": {"original": "oob-write", "pr2551": "clean", "rows_plus_topk": "oob-write", "cktile": "clean"}}
    assert founding["why"].startswith("The founding case (aiter #2508/#2551")
    assert listed["bugs"][0] == {
        "id": "aiter-2508", "title": "split-K memset of sorted_size rows into the (T, topk, 2N) stage1 buffer",
        "source": "aiter #2508 / #2551, rocm-libraries #5225 (S1)", "why": BUGS["aiter-2508"].why, "size": 1,
        "buggy": {"scenario": "deepseek-v3-ep-decode", "variant": "original", "verdict": "oob-write",
                  "buffer": "tmp_out", "allocated": 131_072, "written": 2_097_152},
        "fixed": {"scenario": "deepseek-v3-ep-decode", "variant": "pr2551", "verdict": "clean"}}


def test_list_json_to_a_bad_path_is_one_line_and_writes_nothing(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json", str(tmp_path / "no" / "such" / "dir" / "l.json")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("graph-harness: error: --json: ")
    assert captured.err.count("\n") == 1
    assert captured.out == ""


def test_schema_validates_every_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] == {"if": {"required": ["op"]}, "then": {"$ref": "#/$defs/OpScenario"},
                                              "else": {"$ref": "#/$defs/MoEScenario"}}
    assert set(schema["$defs"]["MoEScenario"]["required"]) == {
        "why", "model", "dtype", "quant", "block_m", "splitk", "cu_num", "capture_sizes", "policies"}
    assert set(schema["$defs"]["OpScenario"]["required"]) == {"why", "op", "capture_sizes", "variants"}
    assert schema["required"] == ["graph-harness"]
    assert schema["$defs"]["Contract"]["additionalProperties"] is False
    for path in scenario_files(SCENARIO_DIR):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    for bad in ({"graph-harness": "scenarios", "s1": {"why": "x", "colour": "red"}},  # an MoE entry, unknown field
                {"graph-harness": "scenarios", "s1": {"why": "x", "op": "m:f", "capture_sizes": [1]}},  # no variants
                {"s1": {"why": "x", "op": "m:f", "capture_sizes": [1], "variants": {"a": {}}}}):  # undeclared
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    jsonschema.validate({"graph-harness": "scenarios",
                         "s1": {"why": "x", "op": "m:f", "capture_sizes": [1],
                                "variants": {"buggy": {"expect": {"verdict": "oob-write", "bytes": 4}},
                                             "fixed": {"expect": "clean"}}}}, schema)
    assert main(["schema", "--bugs"]) == 0
    registry = json.loads(capsys.readouterr().out)
    jsonschema.validate(yaml.safe_load(registry_path(SCENARIO_DIR).read_text()), registry)
