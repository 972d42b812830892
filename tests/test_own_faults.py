"""The faults that kernels written outside this project showed, planted in a kernel team's own op and found the
way the team would run the harness: as op scenarios in YAML and through the `graph_guard` fixture, in a
pytester project of its own. Each fault must be found with its exact figures, through both doors.

Where the lane checker runs (CPU) every fault has its exact violation; on a GPU the per-launch write set and
the guards find the writes, and a discarded read or a store into memory made before the harness are not
seen there (the README's "What each detector sees"), so those variants run only where the lanes do.
"""

from __future__ import annotations

import json

import pytest
import yaml

from graph_harness.core.guard import MIB
from graph_harness.core.lanes import lanes_checked
from graph_harness.core.triton_env import device as kernel_device

pytest_plugins = ["pytester"]

T, N = 2, 100
NBYTES = T * N * 4
RIGHT = -(-NBYTES // 256) * 256 + 2 * MIB - NBYTES  # a 800 B buffer's right guard: 2 MiB, its end rounded
FAR = 3 * MIB  # bytes past `out` of the store past every guard

FAULTS = f'''
import ctypes

import torch
import triton
import triton.language as tl

from graph_harness.kernels.memset import raw_memset

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
N = {N}
_CACHE = {{}}
_BEFORE = torch.full(({T * N + 64},), 0.1, device=DEVICE)  # made at import, before the harness ran


@triton.jit
def _scale(x_ptr, out_ptr, n, at, READ: tl.constexpr, EXTRA: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=1.0)
    if READ:  # reads x[i + 1], and throws the value past the end away
        near = tl.load(x_ptr + offs + 1, mask=offs < n, other=0.0)
        x += 0.0 * tl.where(offs + 1 < n, near, 0.0)
    tl.store(out_ptr + offs, tl.where(offs < n, x * 2.0, 7.0), mask=offs < n + EXTRA)
    if at != 0:
        if tl.program_id(0) == 0:
            tl.store(out_ptr + n + at + tl.arange(0, 1), tl.full((1,), 7.0, tl.float32))


@triton.jit
def _add_into(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.atomic_add(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2.0, mask=offs < n)


def scale(x, out, read=False, extra=0, at=0):
    n = x.numel()
    _scale[(triton.cdiv(n + max(extra, 0), 128),)](x, out, n, at, READ=read, EXTRA=extra, BLOCK=128)
    return out


def inputs(size, seed):
    gen = torch.Generator(DEVICE).manual_seed(seed)
    return {{"x": torch.randn(size, N, generator=gen, device=DEVICE)}}


def reference(inputs, **_):
    return inputs["x"].double() * 2


def case(fault="none"):
    def op(inputs):
        x = inputs["x"].flatten()
        n = x.numel()
        if fault == "discarded-read":
            out = scale(x, torch.empty_like(x), read=True)
        elif fault in ("view-overrun", "read-and-overrun"):
            ws = torch.full((2 * n,), 0.1, device=x.device)
            out, second = ws[:n], ws[n:]
            scale(x, out, read=fault == "read-and-overrun", extra=4)  # 16 B into `second`, inside ws
            scale(x, second)
        elif fault == "past-every-guard":
            out = scale(x, torch.empty_like(x), at={FAR // 4})
        elif fault == "cached-overrun":
            if "ws" not in _CACHE:
                ws = torch.full((n,), 0.1, device=x.device)
                _CACHE["ws"] = ws
            out = scale(x, _CACHE["ws"], extra=3) + 0
        elif fault == "uninit":
            out = torch.empty_like(x)  # should be zeros
            _add_into[(triton.cdiv(n, 128),)](x, out, n, BLOCK=128)
        elif fault == "made-before":
            out = scale(x, _BEFORE[:n], extra=1).clone()
        elif fault == "memset-through":
            a = torch.zeros_like(x)
            out = torch.zeros_like(x)
            raw_memset(a, {NBYTES + RIGHT + 100})  # through a's guard, 100 B into out's
            scale(x, out)
        else:
            out = scale(x, torch.empty_like(x))
        return out.reshape(inputs["x"].shape)

    return op, inputs, reference
'''

# fault -> (expectation as YAML writes it, where only the lane checker sees it)
WRITE = {"verdict": "oob-write", "side": "overflow"}
EXPECT: dict[str, tuple[dict[str, object], bool]] = {
    "discarded-read": ({"verdict": "oob-read", "buffer": "input.x", "arg": "x_ptr", "side": "overflow",
                        "first": 0, "last": 3, "bytes": 4}, True),
    "view-overrun": ({**WRITE, "buffer": "ws", "arg": "out_ptr", "first": 0, "last": 15, "bytes": 16}, False),
    "read-and-overrun": ({**WRITE, "buffer": "ws", "arg": "out_ptr", "first": 0, "last": 15, "bytes": 16,
                          "also": [{"verdict": "oob-read", "buffer": "input.x", "arg": "x_ptr", "side": "overflow",
                                    "first": 0, "last": 3, "bytes": 4}]}, True),
    "past-every-guard": ({**WRITE, "buffer": "out", "arg": "out_ptr", "first": FAR, "last": FAR + 3, "bytes": 4},
                         False),
    "cached-overrun": ({**WRITE, "buffer": "ws", "first": 0, "last": 11, "bytes": 12}, False),
    "uninit": ({"verdict": "uninit-read"}, False),
    "made-before": ({**WRITE, "buffer": "out_ptr", "arg": "out_ptr", "first": 0, "last": 3, "bytes": 4}, True),
    "memset-through": ({**WRITE, "buffer": "a", "first": 0, "last": RIGHT + 99, "bytes": RIGHT + 100}, False),
    "none": ({"verdict": "clean"}, False),
}


def _faults() -> dict[str, dict[str, object]]:
    lanes = lanes_checked(kernel_device())
    return {fault: expect for fault, (expect, lanes_only) in EXPECT.items() if lanes or not lanes_only}


def _yaml(faults: dict[str, dict[str, object]]) -> str:
    variants = {fault.replace("none", "fixed"): {"params": {"fault": fault}, "expect": expect}
                for fault, expect in faults.items()}
    entry = {"why": "every fault class the harness must find, in an op of the team's own",
             "op": "team_faults:case", "capture_sizes": [T], "seed": 3, "variants": variants}
    return yaml.safe_dump({"graph-harness": "scenarios", "team-faults": entry}, sort_keys=False)


FIXTURE_TESTS = '''
import json
import pytest
import graph_harness as gh
import team_faults

EXPECT = json.loads({expect!r})


def _matcher(e):
    e = dict(e)
    also = [_matcher(a) for a in e.pop("also", [])]
    first = gh.expect.verdict(e.pop("verdict"), **e)
    return gh.expect.all_of(first, *also) if also else first


@pytest.mark.parametrize("fault", sorted(EXPECT))
def test_fault(graph_guard, fault):
    op, inputs, reference = team_faults.case(fault)
    team_faults._CACHE.clear()
    graph_guard.check(op, inputs, [{t}], reference=reference, expect=_matcher(EXPECT[fault]), name=fault)
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    faults = _faults()
    (pytester.path / "team_faults.py").write_text(FAULTS)
    (pytester.path / "tox.ini").write_text("[pytest]\npythonpath = .\n")
    (pytester.path / "scenarios").mkdir()
    (pytester.path / "scenarios" / "faults.yaml").write_text(_yaml(faults))
    (pytester.path / "test_faults.py").write_text(FIXTURE_TESTS.format(expect=json.dumps(faults), t=T))
    return pytester


def _violation(record: dict[str, object]) -> tuple[object, ...]:
    (v,) = [v for v in record["violations"] if v["access"] == "write"] or record["violations"]  # type: ignore[union-attr]
    return (v["buffer"], v["side"], v["first_offset"], v["last_offset"], v["bytes"])  # type: ignore[index]


def test_every_fault_is_found_to_the_byte_as_an_op_scenario_and_through_the_fixture(project: pytest.Pytester) -> None:
    faults = _faults()
    result = project.runpytest("scenarios", "test_faults.py", "-p", "no:cacheprovider", "-p", "no:benchmark",
                               "--harness-json", "r.json")
    result.assert_outcomes(passed=2 * len(faults))
    records = json.loads((project.path / "r.json").read_text())
    by_door: dict[str, dict[str, dict[str, object]]] = {"scenario": {}, "fixture": {}}
    for r in records:
        if r["scenario"] == "team-faults":
            by_door["scenario"][r["variant"].replace("fixed", "none")] = r
        else:
            by_door["fixture"][r["scenario"]] = r
    assert set(by_door["scenario"]) == set(by_door["fixture"]) == set(faults)
    for fault, expect in faults.items():
        scenario, fixture = by_door["scenario"][fault], by_door["fixture"][fault]
        assert scenario["verdict"] == fixture["verdict"] == expect["verdict"], fault
        if "bytes" in expect:
            figures = (expect["buffer"], expect["side"], expect["first"], expect["last"], expect["bytes"])
            assert _violation(scenario) == _violation(fixture) == figures, fault
    assert by_door["scenario"]["none"]["violations"] == []
