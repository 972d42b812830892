"""The capture protocol on planted faults, an op the harness never saw, and both backends.

Every planted fault is a tiny Triton kernel or a raw memset, run through `run_protocol` exactly as a
scenario case is, and must be found with its exact offsets.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest
import torch

from graph_harness.core.capture import CudaGraphBackend, ReexecBackend, run_protocol
from graph_harness.core.guard import MIB, Guards, Violation
from graph_harness.core.lanes import lanes_checked
from graph_harness.core.verdict import classify
from graph_harness.kernels._triton import tl, triton
from graph_harness.kernels.memset import raw_memset

N = 1000  # elements in the buffer under test: not a multiple of any block, so masks matter
_STORE, _BEFORE, _ATOMIC, _READ = 1, 2, 3, 4


@triton.jit
def _planted_kernel(x_ptr, out_ptr, n, FAULT: tl.constexpr, BLOCK: tl.constexpr):
    """out = 2x, plus one fault: a store past the end or before the start, an atomic add past the
    end, or a read past the end of x that feeds the output times zero (S12's 0 * NaN)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    y = tl.load(x_ptr + offs, mask=mask) * 2.0
    if FAULT == 4:
        y += 0.0 * tl.load(x_ptr + offs + 1, mask=mask)
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
    if tl.program_id(0) == 0:
        one = tl.arange(0, 1)
        # fp32, then cast: triton 3.6's interpreter cannot make a bf16 constant (no `get_bf16`), 3.9's can.
        seven = tl.full((1,), 7.0, tl.float32).to(out_ptr.dtype.element_ty)
        if FAULT == 1:
            tl.store(out_ptr + n + one, seven)
        if FAULT == 2:
            tl.store(out_ptr - 1 + one, seven)
        if FAULT == 3:
            tl.atomic_add(out_ptr + n + one, tl.full((1,), 1e-30, tl.float32))


class Planted:
    """A Workload: `out = 2 * x` into a buffer the op allocates itself, with one planted fault."""

    tolerance = 1e-2

    def __init__(self, device: torch.device, fault: int = 0, dtype: torch.dtype = torch.float32,
                 memset_extra: int | None = None) -> None:
        self.device, self.fault, self.dtype, self.memset_extra = device, fault, dtype, memset_extra

    def inputs(self, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return {"x": torch.randn(N, generator=gen, device=self.device) + 3.0}

    def run(self, inputs: Mapping[str, torch.Tensor], step) -> torch.Tensor:  # type: ignore[no-untyped-def]
        out = torch.empty(N, dtype=self.dtype, device=self.device)
        if self.memset_extra is not None:
            raw_memset(out, out.nbytes + self.memset_extra)
            step("memset")
        _planted_kernel[(triton.cdiv(N, 256),)](inputs["x"], out, N, FAULT=self.fault, BLOCK=256)
        step("planted")
        return out

    def reference(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return inputs["x"].double() * 2


def _backend(name: str):  # type: ignore[no-untyped-def]
    return CudaGraphBackend() if name == "cuda-graph" else ReexecBackend()


def _run(workload, device, backend: str, seed: int, budget: int = 64 * MIB):  # type: ignore[no-untyped-def]
    guards = Guards(device, budget)
    outcome = run_protocol({N: workload}, guards, _backend(backend), seed=seed)[N]
    violations = guards.violations(tag=N)
    return classify(outcome, violations), violations, outcome


def _only(violations: tuple[Violation, ...]) -> tuple[str, str, int, int, int, str | None]:
    (v,) = violations
    return v.buffer, v.side, v.first_offset, v.last_offset, v.bytes, v.op


@pytest.mark.parametrize(("fault", "dtype", "memset_extra", "expected"), [
    pytest.param(_STORE, torch.float32, None, ("overflow", 0, 3, 4, "planted"), id="store-1-past-end"),
    pytest.param(_BEFORE, torch.float32, None, ("underflow", -4, -1, 4, "planted"), id="store-1-before-start"),
    pytest.param(_STORE, torch.bfloat16, None, ("overflow", 0, 1, 2, "planted"), id="bf16-store-past-end"),
    pytest.param(_ATOMIC, torch.float32, None, ("overflow", 0, 3, 4, "planted"), id="atomic-1e-30-past-end"),
    pytest.param(0, torch.float32, 1, ("overflow", 0, 0, 1, "memset"), id="memset-1-byte-past-end"),
    pytest.param(0, torch.float32, 15 * 4 * N, ("overflow", 0, 15 * 4 * N - 1, 15 * 4 * N, "memset"),
                 id="memset-16x"),
])
def test_planted_write_is_found_with_exact_offsets(device, seed, backend, fault, dtype, memset_extra, expected):
    verdict, violations, outcome = _run(Planted(device, fault, dtype, memset_extra), device, backend, seed)
    assert verdict == "oob-write"
    if fault and lanes_checked(device):  # the lane checker names the kernel itself, and its argument
        expected = (*expected[:4], "_planted_kernel")
        assert (violations[0].arg, violations[0].at_least) == ("out_ptr", False)
    assert _only(violations) == ("out", *expected)
    phases = violations[0].phases
    assert any(p.startswith("replay") for p in phases), phases
    # A memset is a graph node: the audit reads its range at capture time, before any replay.
    assert (f"graph audit T={N}" in phases) == (backend == "cuda-graph" and memset_extra is not None), phases
    assert outcome.numerically_ok  # the in-bounds output is right: only the guard tells


def test_read_past_the_end_feeding_the_output_is_an_oob_read(device, seed, backend):
    verdict, violations, outcome = _run(Planted(device, _READ), device, backend, seed)
    assert verdict == "oob-read"
    assert any("guards hold zeros" in note for note in outcome.notes)
    if lanes_checked(device):  # the lane checker sees the read itself, to the byte
        (v,) = violations
        assert (v.buffer, v.access, v.arg, v.side, v.first_offset, v.last_offset, v.bytes, v.op) == (
            "input.x", "read", "x_ptr", "overflow", 0, 3, 4, "_planted_kernel")
    else:
        assert violations == ()


def test_a_clean_op_is_clean_on_every_run(device, seed, backend):
    verdict, violations, outcome = _run(Planted(device), device, backend, seed)
    assert (verdict, violations) == ("clean", ())
    names = [name for name, _ in outcome.comparisons]
    assert names == ["eager #1 vs reference", "eager #2 vs reference", "replay #1 vs reference",
                     "replay #1 vs eager", "replay #2 vs reference", "replay #2 vs eager", "replay #3 vs reference",
                     "replay #3 vs eager"]
    assert len(outcome.eager_us) == 2
    assert len(outcome.replay_us) == 3


@triton.jit
def _accumulate_kernel(x_ptr, acc_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.atomic_add(acc_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


def third_party_moe_wrapper(x: torch.Tensor) -> torch.Tensor:
    """Stands for a serving stack's Python wrapper: it sizes its workspace one row short."""
    rows = x.shape[0]
    workspace = x.new_empty((rows - 1, x.shape[1]))
    acc = torch.zeros_like(x)
    _accumulate_kernel[(1,)](x, workspace, x.numel(), BLOCK=triton.next_power_of_2(x.numel()))
    _accumulate_kernel[(1,)](x, acc, x.numel(), BLOCK=triton.next_power_of_2(x.numel()))
    return acc


class ThirdParty:
    """A workload around an op the harness has never seen, with no step callback."""

    tolerance = 1e-6

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def inputs(self, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return {"x": torch.rand(4, 8, generator=gen, device=self.device) + 1}

    def run(self, inputs: Mapping[str, torch.Tensor], step) -> torch.Tensor:  # type: ignore[no-untyped-def]
        return third_party_moe_wrapper(inputs["x"])

    def reference(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return inputs["x"].double()


def test_an_op_the_harness_never_saw_is_guarded_unchanged(device, seed, backend):
    guards = Guards(device, 64 * MIB)
    outcome = run_protocol({4: ThirdParty(device)}, guards, _backend(backend), seed=seed)[4]
    (v,) = guards.violations(tag=4)
    assert classify(outcome, (v,)) == "oob-write"
    assert (v.buffer, v.side, v.first_offset, v.last_offset, v.bytes, v.rows) == ("workspace", "overflow", 0, 31, 32, 1)
    assert v.site.startswith("tests/test_protocol.py:")
    assert v.site.endswith("in third_party_moe_wrapper")
    assert v.buffer_bytes == 3 * 8 * 4


class Uninitialised(ThirdParty):
    """Accumulates into `torch.empty` (S4's bug): right only if the memory happened to be zero."""

    def run(self, inputs: Mapping[str, torch.Tensor], step) -> torch.Tensor:  # type: ignore[no-untyped-def]
        x = inputs["x"]
        acc = torch.empty_like(x)
        _accumulate_kernel[(1,)](x, acc, x.numel(), BLOCK=triton.next_power_of_2(x.numel()))
        return acc


def test_accumulating_into_empty_is_an_uninit_read(device, seed, backend):
    guards = Guards(device, 64 * MIB)
    outcome = run_protocol({4: Uninitialised(device)}, guards, _backend(backend), seed=seed)[4]
    assert classify(outcome, guards.violations(tag=4)) == "uninit-read"
    worst = outcome.worst
    assert worst is not None
    assert worst.nan == 32


class Shifting(ThirdParty):
    """Allocates a different shape on every call: a graph would have baked in the first."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.calls = itertools.count(1)

    def run(self, inputs: Mapping[str, torch.Tensor], step) -> torch.Tensor:  # type: ignore[no-untyped-def]
        x = inputs["x"]
        scratch = torch.zeros(next(self.calls), device=self.device)
        out = torch.zeros_like(x)
        out.copy_(x + scratch.sum())
        return out


def test_an_op_whose_host_code_differs_from_call_to_call_replays_what_it_captured(device, seed, backend):
    """A graph replays the allocations its capture made, not those the host code would make now: on CPU too, where
    the tape runs no host code at replay, the op is right on every replay."""
    guards = Guards(device, 64 * MIB)
    op = Shifting(device)
    outcome = run_protocol({4: op}, guards, _backend(backend), seed=seed)[4]
    assert (outcome.error, classify(outcome, guards.violations(4))) == (None, "clean")
    # a warm-up on a GPU, two eager runs and the capture: no replay ran the host code
    assert next(op.calls) == 4 + (backend == "cuda-graph")


class MemsetPastAllocationWhenCaptured(ThirdParty):
    """Eagerly in bounds; under capture it memsets 1 GiB past the slab, which only instantiation rejects."""

    def run(self, inputs: Mapping[str, torch.Tensor], step) -> torch.Tensor:  # type: ignore[no-untyped-def]
        out = torch.zeros_like(inputs["x"])
        extra = 1 << 30 if torch.cuda.is_current_stream_capturing() else 0
        raw_memset(out, out.nbytes + extra)
        out.copy_(inputs["x"])
        return out


@pytest.mark.gpu  # instantiation errors need a CUDA graph
@pytest.mark.parametrize("cached", [False, True], ids=["fresh", "after-a-freed-2GiB-block"])
def test_invalid_argument_at_instantiation_is_a_capture_error(device, seed, cached):
    """Also when the allocator caches a larger free block: a slab carved from it would share its
    segment, and the memset would zero the rest of that segment and replay without a sound."""
    if cached:
        torch.cuda.empty_cache()  # so that the one free block cached is this 2 GiB one
        torch.empty(2 << 30, dtype=torch.uint8, device=device)  # freed at once; the allocator keeps it
    guards = Guards(device, 64 * MIB)
    outcome = run_protocol({4: MemsetPastAllocationWhenCaptured(device)}, guards, CudaGraphBackend(), seed=seed)[4]
    assert outcome.error_kind == "capture-error"
    assert outcome.error is not None
    assert "invalid argument" in outcome.error
    assert any("memset past its allocation" in note for note in outcome.notes)
