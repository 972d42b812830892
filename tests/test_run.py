"""`graph-harness run` end to end: the founding bug and its fix, and bad input.

Every scenario case itself is a pytest item (harness/plugin.py): a fixed policy that is not clean fails there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph_harness.cli import main


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
    assert (original["variant"], original["verdict"], original["passed"]) == ("original", "oob-write", True)
    (v,) = original["violations"]
    assert {k: v[k] for k in ("buffer", "side", "first_offset", "last_offset", "bytes", "op")} == {
        "buffer": "tmp_out", "side": "overflow", "first_offset": 0, "last_offset": 1_966_079, "bytes": 1_966_080,
        "op": "moe_stage1"}
    assert v["buffer_bytes"] == 131_072
    assert v["rows"] == 120
    assert (fixed["variant"], fixed["verdict"], fixed["violations"], fixed["passed"]) == ("pr2551", "clean", [], True)
    assert original["repro"] == "graph-harness run deepseek-v3-ep-decode --variant original --sizes 1 --seed 1"
    on_gpu = original["env"]["driver"] != "none"  # the CPU profile shrinks K, keeping KBatch > 1 (_run_hidden)
    assert original["params"] == {"block_m": 16, "splitk": 2, "K": 7168 if on_gpu else 1024, "N": 2048,
                                  "predicted_overflow_bytes": 1_966_080}
    for record in (original, fixed):  # a GPU shared by xdist workers may leave no room to copy 11 GB of weights
        assert all(limit.startswith("constant.") and " is not guarded: " in limit for limit in record["limits"])
        if record["env"]["driver"] == "none":
            assert record["limits"] == []
    for record in (original, fixed):
        assert {"scenario", "capture_size", "max_rel_err", "replay_us", "eager_us", "env"} <= set(record)
        assert record["max_rel_err"] < record["tolerance"]
        assert record["replay_us"] > 0


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "deepseek-v3-ep-decode", "--policy", "bogus"],
     "deepseek-v3-ep-decode: --variant: got bogus; allowed: original, pr2551, rows_plus_topk, cktile"),
    (["run", "--variant", "bogus"], "--variant: got bogus; allowed: the variants of the scenarios: cktile, "),
    (["run", "deepseek-v3-ep-decode", "--sizes", "3"], "--sizes: got 3; allowed: its capture_sizes 1"),
    (["run", "qwen3-235b-tp8-bs1-kbatch-guard", "--policy", "cktile"],
     "--variant: got cktile; allowed: original, pr2551"),
    (["run", "nope"], "got unknown scenario 'nope'"),
    (["run", "deepseek-v3-ep-decode", "--seed", "-1"], "argument --seed: got '-1'; allowed: integer >= 0"),
    (["run", "deepseek-v3-ep-decode", "--replays", "2"], "argument --replays: got '2'; allowed: integer >= 3"),
    (["run", "deepseek-v3-ep-decode", "--guard-budget", "0"], "argument --guard-budget: got '0'; allowed: GiB > 0"),
    (["run", "deepseek-v3-ep-decode", "--hang-after", "soon"],
     "argument --hang-after: got 'soon'; allowed: seconds, a number > 0"),
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


WIDE_OP = """
import torch

ROW = 1 << 22  # 16 MiB of fp32 a token: two sizes' graphs do not fit a 0.05 GiB slab together, each alone does


def wide(inputs):
    x = inputs["x"]
    out = torch.empty(x.shape[0], ROW, dtype=torch.float32, device=x.device)
    out.zero_()
    out[:, : x.shape[1]] = 2 * x
    return out


def reference(inputs):
    x = inputs["x"].double()
    return torch.nn.functional.pad(2 * x, (0, ROW - x.shape[1]))


def inputs(size, seed):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"x": torch.randn(size, 4, generator=torch.Generator().manual_seed(seed)).to(device)}


def spec():
    return wide, inputs, reference
"""


def test_a_group_the_guard_budget_cannot_hold_runs_in_smaller_slabs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An op whose output at T=1 and 2 (16 and 32 MiB) cannot be held by a 0.05 GiB slab at once, as the 51 sizes
    of deepseek-v3-ep-split2-all-sizes could not be by the default budget on the H200: each size then runs in a
    slab of its own, with the verdict it gets alone, and says so."""
    (tmp_path / "wide_op.py").write_text(WIDE_OP)
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "wide.yaml").write_text(
        "graph-harness: scenarios\nwide:\n  why: outputs too wide for one slab of both sizes\n  op: wide_op:spec\n"
        "  capture_sizes: [1, 2]\n  variants: {plain: {}}\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.json"
    code = main(["run", "wide", "--scenarios", "scenarios", "--guard-budget", "0.05", "--json", str(out)])
    records = json.loads(out.read_text())
    assert code == 0
    assert [(r["capture_size"], r["verdict"], r["passed"]) for r in records] == [(1, "clean", True), (2, "clean", True)]
    for r in records:
        (note,) = [n for n in r["notes"] if n.startswith("slab split: ")]
        assert "the guard budget did not hold all of the group's sizes in one slab" in note
    assert main(["run", "wide", "--scenarios", "scenarios", "--sizes", "2", "--guard-budget", "0.05", "--json",
                 str(out)]) == 0
    (alone,) = json.loads(out.read_text())
    assert not [n for n in alone["notes"] if n.startswith("slab split: ")]  # one size alone fits: no split
