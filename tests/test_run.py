"""Scenario cases end to end: every fixed policy is clean, and `graph-harness run` reports the founding bug."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.run import profile_of, resolve_cases, run_cases
from harness.scenario import capture_sizes, find_scenario_dir, load_scenarios, scenario_files
from kernels._triton import device as kernel_device

_SCENARIOS = load_scenarios(scenario_files(find_scenario_dir()))
_FIXED = [(sid, policy) for sid, s in _SCENARIOS.items() for policy, expect in s.policies.items()
          if expect == "clean"]


@pytest.mark.parametrize(("scenario_id", "policy"), _FIXED, ids=[f"{s}-{p.value}" for s, p in _FIXED])
def test_fixed_policy_is_clean_at_every_size(scenario_id, policy):
    """No false alarms: every clean expectation of every default scenario, at every size of the profile."""
    dev = kernel_device()
    scenario = _SCENARIOS[scenario_id]
    sizes = capture_sizes(scenario, profile_of(dev))
    results = run_cases(resolve_cases(scenario_id, scenario, policy, sizes, profile_of(dev)), dev)
    assert [(r.capture_size, r.verdict) for r in results] == [(t, "clean") for t in sizes], \
        [r.reason for r in results]
    assert all(r.passed and r.violations == () for r in results)


def test_run_reports_the_founding_overrun_and_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    argv = ["run", "deepseek-v3-ep-decode", "--policy", "original", "--policy", "pr2551", "--sizes", "1",
            "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tmp_out" in printed
    assert "1,966,080" in printed
    assert "16.0x" in printed
    original, fixed = json.loads(out.read_text())
    assert (original["policy"], original["verdict"], original["passed"]) == ("original", "oob-write", True)
    (v,) = original["violations"]
    assert {k: v[k] for k in ("buffer", "side", "first_offset", "last_offset", "bytes", "op")} == {
        "buffer": "tmp_out", "side": "overflow", "first_offset": 0, "last_offset": 1_966_079, "bytes": 1_966_080,
        "op": "moe_stage1"}
    assert v["buffer_bytes"] == 131_072
    assert v["rows"] == 120
    assert (fixed["policy"], fixed["verdict"], fixed["violations"], fixed["passed"]) == ("pr2551", "clean", [], True)
    for record in (original, fixed):
        assert {"scenario", "capture_size", "max_rel_err", "replay_us", "eager_us", "env"} <= set(record)
        assert record["max_rel_err"] < record["tolerance"]
        assert record["replay_us"] > 0


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "deepseek-v3-ep-decode", "--policy", "bogus"], "argument --policy: invalid choice: 'bogus'"),
    (["run", "deepseek-v3-ep-decode", "--sizes", "3"], "--sizes: got 3; allowed: its capture_sizes 1"),
    (["run", "qwen3-235b-tp8-bs1-kbatch-guard", "--policy", "cktile"],
     "--policy: got cktile; allowed: original, pr2551"),
    (["run", "nope"], "got unknown scenario 'nope'"),
    (["run", "deepseek-v3-ep-decode", "--seed", "-1"], "argument --seed: got '-1'; allowed: integer >= 0"),
    (["run", "deepseek-v3-ep-decode", "--replays", "1"], "argument --replays: got '1'; allowed: integer >= 2"),
    (["run", "deepseek-v3-ep-decode", "--guard-budget", "0"], "argument --guard-budget: got '0'; allowed: GiB > 0"),
])
def test_run_bad_input_is_one_line_and_exit_2(argv, expected, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert expected in err


def test_run_json_to_an_unwritable_path_fails_before_running(tmp_path: Path, capsys) -> None:
    assert main(["run", "deepseek-v3-ep-decode", "--json", str(tmp_path / "no" / "r.json")]) == 2
    assert "--json: got " in capsys.readouterr().err
