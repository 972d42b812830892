"""Faults of every class that kernels written outside this project showed, each planted in an op the harness
never saw and checked through the public API with its exact violation; and clean ops that must raise none.

Under the Triton interpreter (CPU) the lane checker sees every access: reads whose value a mask throws
away, overruns that stay inside a parent workspace, memory the op did not allocate. The guards' own
findings (raw memsets, a GPU) are attributed across neighbouring buffers and say "at least" where they
reach a guard's far end.
"""

from __future__ import annotations

import ctypes

import pytest
import torch
import triton
import triton.language as tl
from rich.console import Console

import graph_harness as gh
from graph_harness.core.guard import MIB
from graph_harness.core.lanes import lanes_checked
from graph_harness.reports.tables import result_cells, violation_table

T = 2  # tokens: the capture size every case here runs at
N = 100  # floats per token, not a multiple of the block
BLOCK = 128


@pytest.fixture(autouse=True)
def _interpreted(device: torch.device) -> None:
    if not lanes_checked(device):
        pytest.skip("the lane checker runs under the Triton interpreter (CPU)")


def _inputs(device: torch.device):
    def make(size: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=device).manual_seed(seed)
        return {"x": torch.randn(size, N, generator=gen, device=device)}

    return make


def _twice(inputs: dict[str, torch.Tensor], **_: object) -> torch.Tensor:
    return inputs["x"].double() * 2


def _check(op, expect, reference=_twice, **kw):  # type: ignore[no-untyped-def]
    (r,) = gh.check(op, _inputs(kw.pop("device")), [T], reference=reference, expect=expect, **kw)
    assert r.passed, r.reason
    return r


def _one(r: gh.CaseResult) -> gh.Violation:
    (v,) = r.violations
    return v


@triton.jit
def _scale(x_ptr, out_ptr, n, READ: tl.constexpr, WRITE: tl.constexpr, EXTRA: tl.constexpr,
           BLOCK: tl.constexpr):
    """out[i + WRITE] = 2 x[i], i < n + EXTRA; with READ != 0 it also reads x[i + READ], keeping it only
    where that is in bounds (the value past the edge is thrown away)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    if READ != 0:
        near = tl.load(x_ptr + offs + READ, mask=offs < n, other=0.0)
        x += 0.0 * tl.where((offs + READ >= 0) & (offs + READ < n), near, 0.0)
    tl.store(out_ptr + offs + WRITE, x * 2.0, mask=offs < n + EXTRA)


def _scaled(x: torch.Tensor, out: torch.Tensor, read: int = 0, write: int = 0, extra: int = 0) -> torch.Tensor:
    n = x.numel()
    _scale[(triton.cdiv(n + max(extra, 0), BLOCK),)](x, out, n, READ=read, WRITE=write, EXTRA=extra, BLOCK=BLOCK)
    return out


def _op(read: int = 0, write: int = 0, extra: int = 0):  # type: ignore[no-untyped-def]
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        return _scaled(x, out, read, write, extra)

    return op


# Reads whose value a mask throws away ------------------------------------------------------------------

def test_a_discarded_read_past_the_input_is_an_oob_read_to_the_byte(device: torch.device) -> None:
    r = _check(_op(read=1), gh.expect.oob_read("input.x", arg="x_ptr", side="overflow", first=0, last=3, bytes=4),
               device=device)
    v = _one(r)
    assert (v.access, v.op, v.buffer_bytes, v.at_least) == ("read", "_scale", T * N * 4, False)
    assert r.max_rel_err is not None
    assert r.max_rel_err < 1e-6  # the output is right: only the lanes tell


def test_a_discarded_read_before_the_start_is_an_underflow_read(device: torch.device) -> None:
    _check(_op(read=-1), gh.expect.oob_read("input.x", side="underflow", first=-4, last=-1, bytes=4), device=device)


@triton.jit
def _gather_rows(a_ptr, ids_ptr, out_ptr, tokens, COLS: tl.constexpr, ROWS: tl.constexpr):
    """out[r] = a[ids[r]] for rows whose id is a token; padding rows (id == tokens) still load row `tokens`,
    one past the activations, and the store mask throws it away (sorted ids' padding, unmasked)."""
    r = tl.arange(0, ROWS)
    ids = tl.load(ids_ptr + r)
    c = tl.arange(0, COLS)
    a = tl.load(a_ptr + ids[:, None] * COLS + c[None, :])
    tl.store(out_ptr + r[:, None] * COLS + c[None, :], a, mask=(ids < tokens)[:, None])


def test_padding_rows_that_gather_the_row_past_the_activations_are_found(device: torch.device) -> None:
    cols, rows = 16, 4

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        a = inputs["x"][:, :cols].contiguous()  # a torch op's result: memory the harness did not allocate
        ids = torch.full((rows,), a.shape[0], dtype=torch.int32)  # padding: the sentinel id T
        ids[: a.shape[0]] = torch.arange(a.shape[0], dtype=torch.int32)
        out = torch.zeros(rows, cols)
        _gather_rows[(1,)](a, ids, out, a.shape[0], COLS=cols, ROWS=rows)
        return out[: a.shape[0]]

    def ref(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["x"][:, :cols].double()

    r = _check(op, gh.expect.oob_read("a_ptr", arg="a_ptr", side="overflow", first=0, last=cols * 4 - 1,
                                      bytes=cols * 4), reference=ref, device=device)
    v = _one(r)
    assert (v.site, v.rows) == ("memory the harness did not allocate", 1)
    assert r.unguarded == (f"_gather_rows(a_ptr): {T * cols * 4:,} B",)
    assert any("checked lane by lane" in note for note in r.notes)


def test_a_discarded_read_past_a_constant_is_found(device: torch.device) -> None:
    w = torch.randn(N, device=device)

    @triton.jit
    def _weighted(x_ptr, w_ptr, out_ptr, n, cols, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        col = offs % cols
        w = tl.load(w_ptr + col + 1, mask=offs < n)  # one column too far, kept only where it exists
        w = tl.where(col + 1 < cols, w, 0.0)
        x = tl.load(x_ptr + offs, mask=offs < n)
        tl.store(out_ptr + offs, x * 2.0 + 0.0 * w, mask=offs < n)

    def op(inputs: dict[str, torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        _weighted[(triton.cdiv(x.numel(), BLOCK),)](x, w, out, x.numel(), N, BLOCK=BLOCK)
        return out

    _check(op, gh.expect.oob_read("constant.w", arg="w_ptr", side="overflow", first=0, last=3, bytes=4),
           constants={"w": w}, device=device)


def test_masked_off_lanes_with_wild_pointers_are_not_accesses(device: torch.device) -> None:
    """Lanes a mask turns off may point anywhere: they read and write nothing, so they are no finding."""

    @triton.jit
    def _wild(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        far = tl.where(offs < n, offs, offs + 1_000_000_000)
        x = tl.load(x_ptr + far, mask=offs < n)
        tl.store(out_ptr + far, x * 2.0, mask=offs < n)

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        _wild[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), BLOCK=BLOCK)
        return out

    r = _check(op, gh.expect.clean(), device=device)
    assert (r.violations, r.limits, r.unguarded) == ((), (), ())


# Overruns inside a parent workspace ---------------------------------------------------------------------

def _carved(write: int = 0, extra: int = 0, read: int = 0):  # type: ignore[no-untyped-def]
    """An op that carves its two intermediates out of one workspace, as serving stacks do."""

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        ws = torch.empty(2 * x.numel())
        first, second = ws[: x.numel()], ws[x.numel():]
        _scaled(x, second)  # second = 2x
        _scaled(x, first, read, write, extra)  # first = 2x, with the fault
        return (first + second).reshape(inputs["x"].shape) / 2

    return op


def test_an_overrun_of_a_view_inside_its_workspace_is_found_though_no_guard_is_touched(device: torch.device) -> None:
    nbytes = T * N * 4
    r = _check(_carved(extra=4), gh.expect.oob_write("ws", arg="out_ptr", side="overflow", first=0, last=15,
                                                      bytes=16), device=device)
    v = _one(r)
    assert (v.at, v.buffer_bytes, v.hits, v.op) == (0, nbytes, (), "_scale")
    assert gh.expect.describe(v) == f"ws[0:{nbytes:,}]: 16 B past its end (16 B written by _scale through out_ptr)"


def test_an_underflow_of_the_second_view_lands_in_the_first_and_is_its_own(device: torch.device) -> None:
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        ws = torch.zeros(2 * x.numel())
        first, second = ws[: x.numel()], ws[x.numel():]
        _scaled(x, first)
        _scaled(x, second, write=-2)  # second[i - 2] = 2 x[i]: its first two land in the tail of `first`
        return first.reshape(inputs["x"].shape)

    nbytes = T * N * 4
    r = _check(op, gh.expect.oob_write("ws", arg="out_ptr", side="underflow", first=-8, last=-1, bytes=8),
               reference=lambda inputs: torch.cat([_twice(inputs).flatten()[:-2],
                                                   inputs["x"].double().flatten()[:2] * 2]).reshape(T, N),
               device=device)
    assert _one(r).at == nbytes


def test_a_discarded_read_past_a_view_into_its_neighbour_is_found(device: torch.device) -> None:
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        ws = torch.empty(2 * x.numel())
        first, second = ws[: x.numel()], ws[x.numel():]
        _scaled(x, first)
        _scaled(x, second)
        out = torch.empty_like(inputs["x"])
        return _scaled(first, out, read=1)  # reads first[n], which is second[0]: inside ws, thrown away

    _check(op, gh.expect.oob_read("ws", arg="x_ptr", side="overflow", first=0, last=3, bytes=4),
           reference=lambda inputs: _twice(inputs) * 2, device=device)


def test_a_kernel_given_a_view_of_an_input_is_checked_against_the_view(device: torch.device) -> None:
    """An input that is a row of a larger tensor: the guards copy its whole allocation, the lanes check the
    view, and offsets count from the view's edge."""

    def inputs(size: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=device).manual_seed(seed)
        return {"x": torch.randn(size + 1, N, generator=gen, device=device)[1:]}

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        return _scaled(x.flatten(), out, read=-1)

    (r,) = gh.check(op, inputs, [T], reference=_twice, device=device,
                    expect=gh.expect.oob_read("input.x", side="underflow", first=-4, last=-1, bytes=4))
    assert r.passed, r.reason
    assert (_one(r).at, _one(r).buffer_bytes) == (N * 4, T * N * 4)


# Memory the op did not allocate in the call --------------------------------------------------------------

_BACKING = torch.zeros(T * N + 64)  # room past the view, so that the planted overrun corrupts nothing
_MADE_BEFORE = _BACKING[: T * N]  # a buffer made before the harness started: at import
_CACHE: dict[str, torch.Tensor] = {}


def test_a_buffer_made_before_the_harness_is_listed_as_unguarded_and_its_overrun_found(device: torch.device) -> None:
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        _scaled(x, _MADE_BEFORE, extra=1)
        return _MADE_BEFORE.reshape(inputs["x"].shape).clone()

    r = _check(op, gh.expect.oob_write("out_ptr", arg="out_ptr", side="overflow", first=0, last=3, bytes=4),
               device=device)
    assert _one(r).site == "memory the harness did not allocate"
    assert r.unguarded == (f"_scale(out_ptr): {T * N * 4:,} B",)


def test_a_workspace_cached_on_the_first_call_persists_and_raises_no_false_alarm(device: torch.device) -> None:
    """The op keeps its workspace in a module-level dict: the harness keeps its arena and guards for good, never
    carves another buffer over it, and lists it."""
    _CACHE.clear()

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        if "ws" not in _CACHE:
            ws = torch.empty(4 * x.numel())
            _CACHE["ws"] = ws
        ws = _CACHE["ws"][: x.numel()]
        _scaled(x, ws)
        out = torch.empty_like(inputs["x"])
        return _scaled(ws / 2, out)

    try:
        r = _check(op, gh.expect.clean(), device=device)
    finally:
        _CACHE.clear()
    (cached,) = r.persistent
    assert cached.startswith("ws ("), cached
    assert cached.endswith(f" in op): {4 * T * N * 4:,} B"), cached
    assert r.violations == ()


def test_an_overrun_of_a_cached_workspace_is_found_on_every_call(device: torch.device) -> None:
    _CACHE.clear()

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        if "ws" not in _CACHE:
            ws = torch.empty(x.numel())
            _CACHE["ws"] = ws
        _scaled(x, _CACHE["ws"], extra=3)
        return (_CACHE["ws"] + 0).reshape(inputs["x"].shape)

    try:
        r = _check(op, gh.expect.oob_write("ws", side="overflow", first=0, last=11, bytes=12), device=device)
    finally:
        _CACHE.clear()
    assert {p.split(" #")[0] for p in _one(r).phases} >= {"eager T=2", "replay T=2"}


# Writes no guard holds -----------------------------------------------------------------------------------

def test_a_store_beyond_the_far_end_of_every_guard_is_found_exactly(device: torch.device) -> None:
    far = 3 * MIB // 4  # floats: past the 2 MiB guard, inside the slab

    @triton.jit
    def _far(x_ptr, out_ptr, n, FAR: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n)
        tl.store(out_ptr + offs, x * 2.0, mask=offs < n)
        tl.store(out_ptr + n + FAR + tl.arange(0, 1), tl.full((1,), 1.0, tl.float32))

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        _far[(1,)](x, out, x.numel(), FAR=far, BLOCK=256)
        return out

    r = _check(op, gh.expect.oob_write("out", side="overflow", first=far * 4, last=far * 4 + 3, bytes=4),
               device=device, guard_budget=64 * MIB)
    assert not _one(r).at_least


def test_a_read_modify_write_past_the_end_is_one_write(device: torch.device) -> None:
    @triton.jit
    def _accumulate(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n)
        cur = tl.load(out_ptr + offs, mask=offs < n + 2)
        tl.store(out_ptr + offs, cur + x * 2.0, mask=offs < n + 2)

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.zeros_like(x)
        _accumulate[(triton.cdiv(x.numel() + 2, BLOCK),)](x, out, x.numel(), BLOCK=BLOCK)
        return out

    _check(op, gh.expect.oob_write("out", arg="out_ptr", side="overflow", first=0, last=7, bytes=8), device=device)


@pytest.mark.parametrize(("fill", "dtype", "itemsize"), [(0, torch.int64, 8), (False, torch.bool, 1)])
def test_a_full_with_an_int_or_bool_fill_is_guarded_and_its_overrun_found(device: torch.device, fill: object,
                                                                          dtype: torch.dtype, itemsize: int) -> None:
    @triton.jit
    def _mark(flags_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(flags_ptr + offs, tl.full((BLOCK,), 1, flags_ptr.dtype.element_ty), mask=offs < n + 1)

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        flags = torch.full((inputs["x"].shape[0],), fill)
        assert flags.dtype == dtype
        _mark[(1,)](flags, flags.numel(), BLOCK=16)
        return flags.double()

    _check(op, gh.expect.oob_write("flags", side="overflow", first=0, last=itemsize - 1, bytes=itemsize),
           reference=lambda inputs: torch.ones(T, dtype=torch.float64), device=device)


# Reads of bytes nobody wrote ----------------------------------------------------------------------------

def test_accumulating_into_empty_is_an_uninit_read_though_zero_is_not_the_answer(device: torch.device) -> None:
    """The reference is 2x, never zero: with zeros as poison this was a mismatch. Two poisons that differ in
    every byte give two outputs, so the cause is named."""

    @triton.jit
    def _add_into(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n)
        tl.atomic_add(out_ptr + offs, x * 2.0, mask=offs < n)

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)  # should be zeros
        _add_into[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), BLOCK=BLOCK)
        return out

    r = _check(op, gh.expect.uninit_read(), device=device)
    assert r.violations == ()


def test_an_int_counter_left_uninitialised_is_an_uninit_read(device: torch.device) -> None:
    @triton.jit
    def _count(counts_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.atomic_add(counts_ptr + offs % 4, tl.full((BLOCK,), 1, tl.int32), mask=offs < n)

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        counts = torch.empty(4, dtype=torch.int32)  # should be zeros
        _count[(1,)](counts, inputs["x"].numel(), BLOCK=256)
        return counts.double()

    _check(op, gh.expect.uninit_read(), reference=lambda inputs: torch.full((4,), T * N / 4, dtype=torch.float64),
           device=device)


# Attribution of what the guards see ------------------------------------------------------------------------

def _neighbours(spill: int):  # type: ignore[no-untyped-def]
    """`a` then `b`, adjacent in the slab; a memset by pointer (CK's hipMemsetAsync on CPU) from `a` runs
    `spill` bytes past the end of a's guard, into b's."""

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        a = torch.zeros_like(x)
        b = torch.zeros_like(x)
        guard = 2 * MIB  # a 800 B buffer's guard: the 2 MiB minimum, its end rounded to 256
        ctypes.memset(a.data_ptr(), 0, -(-a.nbytes // 256) * 256 + guard + spill)
        return _scaled(x, b)

    return op


def test_a_memset_through_one_guard_into_the_next_names_the_buffer_it_left_from(device: torch.device) -> None:
    right = -(-T * N * 4 // 256) * 256 + 2 * MIB - T * N * 4  # a's right guard
    r = _check(_neighbours(100), gh.expect.oob_write("a", side="overflow", first=0, last=right + 99,
                                                     bytes=right + 100), device=device)
    v = _one(r)
    assert (v.hits, v.at_least, v.op) == (("b",), False, "host code before _scale")
    assert gh.expect.describe(v).endswith("changed, into b)")


def test_a_memset_through_the_next_guard_whole_says_at_least(device: torch.device) -> None:
    right = -(-T * N * 4 // 256) * 256 + 2 * MIB - T * N * 4
    r = _check(_neighbours(2 * MIB + 8), gh.expect.oob_write("a", side="overflow", extent=right + 2 * MIB),
               device=device)
    v = _one(r)
    assert (v.hits, v.at_least) == (("b",), True)
    assert gh.expect.describe(v).startswith(f"a: at least {right + 2 * MIB:,} B past its end")
    # ... and so do the tables and the reports, which share these cells
    assert result_cells(r).outside == f"≥{right + 2 * MIB:,}"
    console = Console(width=200, record=True)
    console.print(violation_table(r))
    text = console.export_text()
    assert f"│ ≥{right + 2 * MIB - 1:,} │" in text
    assert "│ b    │" in text


# No false alarm on clean ops ---------------------------------------------------------------------------------

def test_a_clean_op_using_every_factory_form_is_clean(device: torch.device) -> None:
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        xt = x.t()
        parts = [
            torch.empty(x.shape), torch.empty(*x.shape), torch.empty(size=x.shape), torch.zeros_like(xt).t(),
            torch.empty_like(xt).t(), torch.ones_like(x), x.new_empty(x.shape), x.new_zeros(*x.shape),
            torch.full(x.shape, 0.0), torch.full_like(x, 1), x.new_full(x.shape, 2),
            torch.empty_strided(x.shape, x.stride()), torch.empty_strided(size=x.shape, stride=x.stride()),
        ]
        total = torch.zeros_like(x)
        for p in parts:
            _scaled(x, p)
            total += p
        count = torch.full((1,), len(parts))
        return total / count

    r = _check(op, gh.expect.clean(), device=device)
    assert (r.violations, r.limits, r.unguarded, r.persistent) == ((), (), (), ())


def test_a_clean_op_that_views_into_one_workspace_is_clean(device: torch.device) -> None:
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        ws = torch.empty(3, *x.shape)
        a, b, c = ws.unbind(0)
        _scaled(x, a)
        _scaled(a, b)
        _scaled(b, c)
        return c / 4

    r = _check(op, gh.expect.clean(), device=device)
    assert (r.violations, r.unguarded) == ((), ())
