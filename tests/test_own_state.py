"""The graph-state faults planted in a kernel team's own op, found the way the team would run the harness: as op
scenarios in YAML and through the `graph_guard` fixture, in a pytester project of its own. Each fault has its
fixed twin, which must stay clean through both doors.
"""

from __future__ import annotations

import json

import pytest
import yaml

pytest_plugins = ["pytester"]

T = 4

TEAM_STATE = '''
import torch
import graph_harness as gh

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class Accumulate:
    """out = 2x through an fp32 accumulator the op keeps; `rezero`: zeroed by every call, in the graph, where
    the fault zeroes it once, where it is allocated."""

    def __init__(self, rezero):
        self.rezero, self.acc = rezero, {}

    def __call__(self, inputs):
        x = inputs["x"]
        acc = self.acc.get(x.shape)
        if acc is None:
            acc = self.acc[x.shape] = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        if self.rezero:
            acc.zero_()
        acc += 2 * x
        out = torch.empty_like(x)
        return out.copy_(acc)


class Scaled:
    """The eager piece scales x into a buffer of its own (per call, or one kept per shape); the graph adds x."""

    def __init__(self, kept):
        self.kept, self.bufs = kept, {}

    def __call__(self, inputs):
        x = inputs["x"]
        buf = self.bufs.setdefault(x.shape, torch.empty_like(x)) if self.kept else torch.empty_like(x)
        buf.copy_(2 * x)
        return {"scaled": buf}


def add_x(inputs):
    return inputs["scaled"] + inputs["x"]


class FirstRows:
    """Doubles the first n rows of x, zeros the rest; the fault reads n on the host when not capturing and keeps
    it, where the fix masks on the device."""

    def __init__(self, on_device):
        self.on_device, self.rows = on_device, 0

    def __call__(self, inputs):
        x, n = inputs["x"], inputs["n"]
        if self.on_device:
            keep = torch.arange(x.shape[0], device=x.device)[:, None] < n
            return torch.where(keep, 2 * x, 0)
        if not torch.cuda.is_current_stream_capturing():
            self.rows = int(n.item())
        out = torch.zeros_like(x)
        out[: self.rows] = 2 * x[: self.rows]
        return out


def _x(size, seed):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(size, 64, generator=g).to(DEVICE)}


def _rows(size, seed):
    made = _x(size, seed)
    made["n"] = torch.tensor([1 + seed % size], dtype=torch.int32, device=DEVICE)
    return made


def _doubled(inputs):
    return 2 * inputs["x"].double()


def _tripled(inputs):
    return 3 * inputs["x"].double()


def _first_rows(inputs):
    x = inputs["x"].double()
    return torch.where(torch.arange(x.shape[0], device=x.device)[:, None] < inputs["n"].long(), 2 * x, 0)


def case(fault):
    """(op, inputs, reference) of one fault or its fix."""
    return {
        "replay-state": (Accumulate(rezero=False), _x, _doubled),
        "rezeroed": (Accumulate(rezero=True), _x, _doubled),
        "use-after-free": (gh.Piecewise(eager=Scaled(kept=False), graph=add_x), _x, _tripled),
        "kept-per-shape": (gh.Piecewise(eager=Scaled(kept=True), graph=add_x), _x, _tripled),
        "stale-capture": (FirstRows(on_device=False), _rows, _first_rows),
        "masked-on-device": (FirstRows(on_device=True), _rows, _first_rows),
    }[fault]
'''

EXPECT = {"replay-state": "replay-state", "rezeroed": "clean", "use-after-free": "use-after-free",
          "kept-per-shape": "clean", "stale-capture": "stale-capture", "masked-on-device": "clean"}

FIXTURE_TESTS = '''
import pytest
import team_state

EXPECT = {expect!r}


@pytest.mark.parametrize("fault", sorted(EXPECT))
def test_fault(graph_guard, fault):
    op, inputs, reference = team_state.case(fault)
    graph_guard.check(op, inputs, [{t}], reference=reference, expect=EXPECT[fault], name=fault)
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "team_state.py").write_text(TEAM_STATE)
    (pytester.path / "tox.ini").write_text("[pytest]\npythonpath = .\n")
    (pytester.path / "scenarios").mkdir()
    variants = {fault: {"params": {"fault": fault}, "expect": verdict} for fault, verdict in EXPECT.items()}
    entry = {"why": "the graph-state faults of a team's own op, and their fixes", "op": "team_state:case",
             "capture_sizes": [T], "seed": 5, "variants": variants}
    (pytester.path / "scenarios" / "state.yaml").write_text(
        yaml.safe_dump({"graph-harness": "scenarios", "team-state": entry}, sort_keys=False))
    (pytester.path / "test_state.py").write_text(FIXTURE_TESTS.format(expect=EXPECT, t=T))
    return pytester


def test_every_graph_state_fault_is_found_as_an_op_scenario_and_through_the_fixture(project: pytest.Pytester) -> None:
    result = project.runpytest("scenarios", "test_state.py", "-p", "no:cacheprovider", "-p", "no:benchmark",
                               "--harness-json", "r.json")
    result.assert_outcomes(passed=2 * len(EXPECT))
    records = json.loads((project.path / "r.json").read_text())
    scenario = {r["variant"]: r for r in records if r["scenario"] == "team-state"}
    fixture = {r["scenario"]: r for r in records if r["scenario"] != "team-state"}
    assert {f: r["verdict"] for f, r in scenario.items()} == {f: r["verdict"] for f, r in fixture.items()} == EXPECT
    for door in (scenario, fixture):
        (drift,) = [n for n in door["replay-state"]["notes"] if n.startswith("replay-state: acc")]
        # the accumulator keeps every replay's 2x: after replay #3 it holds another sum than after replay #1
        assert "differs in" in drift
        assert "state the graph does not reset" in drift
        (uaf,) = [n for n in door["use-after-free"]["notes"] if n.startswith("use-after-free: ")]
        assert "made outside the graph by the op's eager piece, at capture" in uaf
        assert "with the bytes it held before put back, the same inputs replayed again, its output changed" in uaf
        (stale,) = [n for n in door["stale-capture"]["notes"] if n.startswith("stale-capture: ")]
        assert "disagrees with eager on the same inputs" in stale
        assert all(door[f]["violations"] == [] for f in EXPECT)
