"""The public API, `graph_harness.check`, on ops this project never saw: ordinary torch code, Triton kernels
with planted faults, raw memsets, weights passed as constants. Each fault is found with its exact figures,
and no clean op raises a false alarm."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

import graph_harness as gh
from graph_harness.cli import main
from graph_harness.core.lanes import lanes_checked

SIZES = [1, 3]
N = 300  # elements per token: not a multiple of the block, so that masks matter


def _inputs(device: torch.device, cols: int = N):
    def make(size: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=device).manual_seed(seed)
        return {"x": torch.randn(size, cols, generator=gen, device=device)}

    return make


def _twice(inputs: dict[str, torch.Tensor], **_: object) -> torch.Tensor:
    return inputs["x"].double() * 2


@triton.jit
def _double_kernel(x_ptr, out_ptr, n, FAULT: tl.constexpr, BLOCK: tl.constexpr):
    """out = 2x, with one fault: 1 stores element n (past the end), 2 stores element -1 (before the start),
    3 reads x one element further (its last program reads past x), 4 leaves the odd elements unwritten."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    shift = 1 if FAULT == 3 else 0
    x = tl.load(x_ptr + offs + shift, mask=offs < n)
    if FAULT == 1:
        tl.store(out_ptr + offs, x * 2.0, mask=offs <= n)
    elif FAULT == 2:
        tl.store(out_ptr + offs - 1, tl.where(offs == 0, 7.0, x * 2.0), mask=offs < n)
        tl.store(out_ptr + offs, x * 2.0, mask=offs < n)
    elif FAULT == 4:
        tl.store(out_ptr + offs, x * 2.0, mask=(offs < n) & (offs % 2 == 0))
    else:
        tl.store(out_ptr + offs, x * 2.0, mask=offs < n)


def _double(fault: int = 0):
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        _double_kernel[(triton.cdiv(x.numel(), 128),)](x, out, x.numel(), FAULT=fault, BLOCK=128)
        return out

    return op


# No false alarms ----------------------------------------------------------------------------------------

def test_ordinary_torch_code_is_clean(device: torch.device) -> None:
    """Outputs made by torch ops (not factories), transposed views, `*_like` of a non-contiguous tensor, an
    int `full`, in-place ops: all of it as a graph would run it, and nothing to report."""
    w = torch.randn(N, 64, device=device)

    def op(inputs: dict[str, torch.Tensor], w: torch.Tensor, scale: float) -> torch.Tensor:
        xt = inputs["x"].t()  # (N, T), not contiguous
        acc = torch.zeros_like(xt)  # keeps xt's strides, as torch does
        assert acc.stride() == xt.stride()
        acc.add_(xt)
        count = torch.full((1,), 2)  # an int fill: int64, guarded like any other buffer
        assert count.dtype == torch.int64
        return torch.relu(acc.t() @ w) * scale * count.item() / 2

    def ref(inputs: dict[str, torch.Tensor], w: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.relu(inputs["x"].double() @ w.double()) * scale

    results = gh.check(op, _inputs(device), SIZES, reference=ref, constants={"w": w, "scale": 0.5}, device=device)
    assert [(r.capture_size, r.verdict, r.passed, r.violations) for r in results] == [
        (t, "clean", True, ()) for t in SIZES]
    assert all(r.checked_fully and r.max_rel_err is not None and r.max_rel_err < 1e-5 for r in results)
    assert {r.scenario for r in results} == {"op"}


def test_the_clean_kernel_is_clean_and_fully_checked(device: torch.device) -> None:
    results = gh.check(_double(), _inputs(device), SIZES, reference=_twice, device=device, seed=11)
    assert [(r.verdict, r.passed, r.limits, r.seed) for r in results] == [("clean", True, (), 11)] * 2


# Faults, found exactly ------------------------------------------------------------------------------------

def test_an_off_by_one_store_is_found_to_the_byte_and_named_by_its_kernel(device: torch.device) -> None:
    expected = gh.expect.oob_write("out", side="overflow", first=0, last=3, bytes=4)
    results = gh.check(_double(1), _inputs(device), SIZES, reference=_twice, device=device, expect=expected)
    for r in results:
        assert (r.verdict, r.passed, r.expectation) == (
            "oob-write", True, "oob-write buffer=out side=overflow first=0 last=3 bytes=4")
        (v,) = r.violations
        assert (v.buffer, v.side, v.first_offset, v.last_offset, v.bytes, v.buffer_bytes, v.op) == (
            "out", "overflow", 0, 3, 4, r.capture_size * N * 4, "_double_kernel")
        assert v.site.startswith("test_api.py:") or v.site.startswith("tests/test_api.py:")


def test_a_store_before_the_start_is_an_underflow(device: torch.device) -> None:
    (r,) = gh.check(_double(2), _inputs(device), [2], reference=_twice, device=device,
                    expect=gh.expect.oob_write("out", side="underflow", first=-4, last=-1, bytes=4))
    assert r.passed, r.reason


def test_an_unexpected_violation_fails_with_the_figures(device: torch.device) -> None:
    (r,) = gh.check(_double(1), _inputs(device), [1], reference=_twice, device=device)
    assert (r.verdict, r.passed) == ("oob-write", False)
    how = "4 B written by _double_kernel through out_ptr" if lanes_checked(device) else "4 B changed"
    assert r.reason == f"expected clean, got oob-write: out: 4 B past its end ({how})"
    (r,) = gh.check(_double(1), _inputs(device), [1], reference=_twice, device=device,
                    expect=gh.expect.oob_write("out", bytes=8))
    assert not r.passed
    assert r.reason.startswith("oob-write detected but not the expected oob-write buffer=out bytes=8: out: 4 B")


def test_a_read_past_the_input_is_an_oob_read(device: torch.device) -> None:
    def shifted(inputs: dict[str, torch.Tensor]) -> torch.Tensor:  # right where x[n] would be 0
        flat = inputs["x"].double().flatten()
        return 2 * torch.cat([flat[1:], flat.new_zeros(1)]).reshape(inputs["x"].shape)

    (r,) = gh.check(_double(3), _inputs(device), [1], reference=shifted, device=device, expect="oob-read")
    assert (r.verdict, r.passed) == ("oob-read", True)
    assert any("guards hold zeros instead of NaN" in note for note in r.notes)


def test_bytes_never_written_are_an_uninit_read(device: torch.device) -> None:
    """Half of `out` is never written. Its poison reaches the output whether or not zero is the right answer
    there: flipping every bit of the poison changes the output, so the verdict names the cause, not a mismatch."""
    for ref in (_twice, lambda inputs: _twice(inputs) * (torch.arange(N, device=device) % 2 == 0)):
        (r,) = gh.check(_double(4), _inputs(device), [1], reference=ref, device=device, expect=gh.expect.uninit_read())
        assert (r.verdict, r.passed) == ("uninit-read", True)
        assert any("flipped (0x7FC5 to 0x803A)" in note for note in r.notes), r.notes


def test_a_raw_memset_past_a_buffer_is_found_and_blamed_on_host_code(device: torch.device) -> None:
    """A memset by pointer, as CK's `hipMemsetAsync`: no tensor op checks it, the guards do. It happens
    before the kernel, so the kernel is not blamed for it."""
    if device.type != "cpu":
        pytest.skip("the libc memset by pointer is the CPU stand-in of cudaMemsetAsync")

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.zeros_like(x)
        ctypes.memset(out.data_ptr(), 0, out.nbytes + 64)
        _double_kernel[(triton.cdiv(x.numel(), 128),)](x, out, x.numel(), FAULT=0, BLOCK=128)
        return out

    (r,) = gh.check(op, _inputs(device), [1], reference=_twice, device=device,
                    expect=gh.expect.oob_write("out", side="overflow", first=0, last=63, bytes=64))
    assert r.passed, r.reason
    assert r.violations[0].op == "host code before _double_kernel"


def test_a_read_past_a_constant_reaches_the_output(device: torch.device) -> None:
    """Weights are guarded too: a kernel that reads one column past `w` reads its guard's NaN."""
    w = torch.randn(N, device=device)

    def shifted(inputs: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:  # right where w[N] would be 0
        return inputs["x"].double() * torch.cat([w[1:], w.new_zeros(1)]).double()

    (r,) = gh.check(lambda inputs, w: _scaled(inputs["x"], w, 1), _inputs(device), [1], reference=shifted,
                    constants={"w": w}, device=device, expect="oob-read")
    assert (r.verdict, r.passed) == ("oob-read", True)


def test_a_large_weight_is_guarded_without_taking_the_op_buffers_room(device: torch.device) -> None:
    """A constant larger than the guard budget is copied into room of its own on top of it: the op's buffers
    keep their full guards, and nothing is left unguarded."""
    w = torch.randn(12 << 20, device=device)  # 48 MiB, against a 16 MiB guard budget

    def op(inputs: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        return _scaled(inputs["x"], w, 0)

    (r,) = gh.check(op, _inputs(device), [1], reference=lambda inputs, w: inputs["x"].double() * w[:N].double(),
                    constants={"w": w}, device=device, guard_budget=16 << 20)
    assert (r.verdict, r.passed, r.limits) == ("clean", True, ())


@triton.jit
def _scale_kernel(x_ptr, w_ptr, out_ptr, n, cols, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    w = tl.load(w_ptr + offs % cols + SHIFT, mask=offs < n)
    tl.store(out_ptr + offs, x * w, mask=offs < n)


def _scaled(x: torch.Tensor, w: torch.Tensor, shift: int) -> torch.Tensor:
    out = torch.empty_like(x)
    _scale_kernel[(triton.cdiv(x.numel(), 128),)](x, w, out, x.numel(), x.shape[1], SHIFT=shift, BLOCK=128)
    return out


def test_a_constant_that_is_a_view_keeps_its_offset_and_says_what_is_not_seen(device: torch.device) -> None:
    """A weight sliced from a larger tensor: the harness copies its whole allocation, keeps the view's offset
    and strides (the op reads the right values), and says that an overrun inside the allocation is not seen."""
    parent = torch.randn(N + 40, device=device)
    w = parent[40:]

    (r,) = gh.check(lambda inputs, w: _scaled(inputs["x"], w, 0), _inputs(device), [2],
                    reference=lambda inputs, w: inputs["x"].double() * w.double(), constants={"w": w},
                    device=device)
    assert (r.verdict, r.passed) == ("clean", True)
    if lanes_checked(device):  # the lane checker checks every access against the view itself
        assert r.limits == ()
        return
    assert r.limits == (f"constant.w is a view of {N * 4:,} B at byte 160 of its {(N + 40) * 4:,} B allocation: the "
                        "guards sit at the allocation's edges, so an overrun of the view that stays inside the "
                        "allocation is not seen",)


def test_without_a_reference_the_result_says_what_was_checked(device: torch.device) -> None:
    results = gh.check(_double(), _inputs(device), [1], device=device)
    assert [(r.verdict, r.passed, r.limits, r.max_rel_err) for r in results] == [
        ("clean", True, ("no reference: each output was checked for NaN and inf, and each replay against eager",),
         None)]
    assert not results[0].checked_fully
    # Poison reaching the output is still seen: NaN is never a right answer.
    (r,) = gh.check(_double(4), _inputs(device), [1], device=device)
    assert r.verdict == "uninit-read"


def test_expectation_per_size(device: torch.device) -> None:
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:  # writes one token's row past the end
        x = inputs["x"]
        out = torch.empty_like(x)
        _double_kernel[(triton.cdiv(x.numel(), 128),)](x, out, x.numel(), FAULT=0, BLOCK=128)
        ctypes.memset(out.data_ptr() + out.nbytes, 1, 4 * x.shape[0]) if device.type == "cpu" else None
        return out

    if device.type != "cpu":
        pytest.skip("the libc memset by pointer is the CPU stand-in of cudaMemsetAsync")
    results = gh.check(op, _inputs(device), SIZES, reference=_twice, device=device,
                       expect=lambda t: gh.expect.oob_write("out", side="overflow", extent=4 * t))
    assert [(r.capture_size, r.passed, r.violations[0].bytes) for r in results] == [(1, True, 4), (3, True, 12)]


# The rules, as errors a user can act on -------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"op": lambda inputs: (inputs["x"], inputs["x"])},
     "the op returned tuple; allowed: one Tensor, the same static tensor on every run"),
    ({"inputs": lambda size, seed: {"x": 3}}, "inputs(1, 1)['x'] is int; allowed: a Tensor"),
    ({"inputs": lambda size, seed: [torch.ones(1)]}, "inputs(1, 1) returned list; allowed: a dict of name -> Tensor"),
    ({"sizes": [0]}, "sizes: got [0]; allowed: capture sizes, integers >= 1"),
    ({"sizes": [1, 1]}, "sizes: got [1, 1]; allowed: each size once"),
    ({"tolerance": 0}, "tolerance: got 0; allowed: a relative L2 error > 0"),
])
def test_misuse_is_a_usage_error_not_a_verdict(device: torch.device, kwargs: dict, message: str) -> None:
    args = {"op": _double(), "inputs": _inputs(device), "sizes": [1], **kwargs}
    with pytest.raises(gh.UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        gh.check(args.pop("op"), args.pop("inputs"), args.pop("sizes"), device=device, **args)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: gh.expect.oob_write(first=4, last=1), "first: got 4 after last 1; allowed: first <= last"),
    (lambda: gh.expect.oob_write(bytes=0), "bytes: got 0; allowed: an integer >= 1"),
    (lambda: gh.expect.oob_write(side="overflow", first=-1), "first: got -1; allowed: >= 0 on the overflow side"),
    (lambda: gh.expect.oob_write(side="left"), "side: got 'left'; allowed: overflow, underflow"),
    (lambda: gh.expect.verdict("clean", bytes=4), "bytes: byte figures go with oob-write or oob-read, not clean"),
    (lambda: gh.expect.verdict("boom"), "verdict: got 'boom'; allowed: hang, capture-error, crash, oob-write"),
    (lambda: gh.expect.verdict("crash", rows=1), "rows: unknown field; allowed: arg, buffer, bytes, extent"),
])
def test_an_impossible_expectation_is_refused(make, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


# Results travel ------------------------------------------------------------------------------------------

def test_results_written_by_the_api_make_a_report(device: torch.device, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    results = [*gh.check(_double(), _inputs(device), [1], reference=_twice, device=device, name="double"),
               *gh.check(_double(1), _inputs(device), [1], reference=_twice, device=device, name="double",
                         variant="off-by-one")]
    path = tmp_path / "api.json"
    gh.write_results(results, path)
    assert gh.read_results(path) == results
    assert json.loads(path.read_text())[1]["violations"][0]["op"] == "_double_kernel"
    assert main(["report", "--from-json", str(path), "--out", str(tmp_path / "report")]) == 1
    printed = capsys.readouterr().out
    assert "FAIL double off-by-one T=1: expected clean, got oob-write: out: 4 B past its end" in printed
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| off-by-one | 1 | 0 | oob-write | clean | FAIL | out | 4 |" in report
