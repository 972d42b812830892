"""The interpreter patches triton.language once per launch, not at every helper call, and computes the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graph_harness.core.triton_env import INTERPRET, tl, triton

pytestmark = pytest.mark.skipif(not INTERPRET, reason="the Triton interpreter's patching (CPU only)")


@triton.jit
def _twice(x):
    return x * 2.0


@triton.jit
def _doubling_kernel(x_ptr, out_ptr, n, TIMES: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    for _ in tl.static_range(TIMES):
        x = _twice(x)
    tl.store(out_ptr + offs, x, mask=offs < n)


def _launch(times: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(100, generator=torch.Generator().manual_seed(seed))
    out = torch.full_like(x, float("nan"))
    _doubling_kernel[(4,)](x, out, 100, TIMES=times, BLOCK=32)
    return x, out


def _walks_per_launch(monkeypatch: pytest.MonkeyPatch, seed: int) -> list[int]:
    """How many module walks (`_patch_builtin`) a launch with 1, then 8 helper calls per program makes."""
    from triton.runtime import interpreter

    walks: list[object] = []
    walk = interpreter._patch_builtin
    monkeypatch.setattr(interpreter, "_patch_builtin", lambda pkg, *a: (walks.append(pkg), walk(pkg, *a))[1])
    counts = []
    for times in (1, 8):  # 4 programs x 1 helper call, then 4 x 8
        walks.clear()
        x, out = _launch(times, seed)
        assert torch.equal(out, x * 2.0**times)  # exact: doubling is exact in fp32
        counts.append(len(walks))
    return counts


def test_helper_calls_do_not_patch_again_and_compute_the_same(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    counts = _walks_per_launch(monkeypatch, seed)
    assert counts[0] == counts[1] > 0  # one launch's patch, however many helper calls
    assert tl.core.is_builtin(tl.load)  # and the launch put triton.language back as it was


def test_triton_alone_walks_again_at_every_helper_call(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    from triton.runtime import interpreter

    per_patch, _ = _walks_per_launch(monkeypatch, seed)  # the launch's own patch
    monkeypatch.setattr(interpreter, "_patch_lang", interpreter._patch_lang.original)
    # The launch's patch, then 4 programs x 1 (then x 8) helper calls, each walking every module again.
    assert _walks_per_launch(monkeypatch, seed) == [5 * per_patch, 33 * per_patch]
    assert tl.core.is_builtin(tl.load)


# --- the loads: one numpy gather, the bytes the interpreter's own load gives -------------------------------

_DTYPES = ["uint8", "uint16", "int32", "float32", "int64", "float64"]


def _native() -> object:
    from triton.runtime import interpreter

    return getattr(interpreter._interpreter, "_native", interpreter._interpreter)


def _table(dtype: str, count: int, rng: object) -> np.ndarray:
    """`count` fresh random values of `dtype`, every bit pattern possible (NaNs included for floats)."""
    size = np.dtype(dtype).itemsize
    return rng.integers(0, 256, count * size, dtype=np.uint8).view(dtype)  # type: ignore[attr-defined]


def _pointers(table: np.ndarray, layout: str, rng: object) -> np.ndarray:
    """Addresses into `table`: in order, through a transposed 2-D view, or drawn at random with repeats."""
    base, size, count = table.ctypes.data, table.itemsize, table.size
    if layout == "contiguous":
        index = np.arange(count)
    elif layout == "transposed":
        index = np.arange(count).reshape(64, count // 64).T.copy()
    else:
        index = rng.integers(0, count, (32, 96))  # type: ignore[attr-defined]
    return (np.uint64(base) + index.astype(np.uint64) * np.uint64(size)).astype(np.uint64)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "random"])
@pytest.mark.parametrize("dtype", _DTYPES)
def test_gather_gives_the_interpreters_bytes(dtype: str, layout: str, seed: int) -> None:
    from graph_harness.core.triton_env import gather

    rng = np.random.default_rng(seed)
    table = _table(dtype, 4096, rng)
    ptrs = _pointers(table, layout, rng)
    other = _table(dtype, ptrs.size, rng).reshape(ptrs.shape)
    for mask in (np.ones(ptrs.shape, bool), rng.random(ptrs.shape) < 0.5):
        wild = np.where(mask, ptrs, np.uint64(8))  # masked-off lanes point nowhere: they must not be read
        got = gather(wild, mask, other, np.dtype(dtype))
        assert got is not None  # the gather path ran, not the fallback
        want = _native().load(wild, mask, other, np.dtype(dtype))
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # bitwise: NaN payloads and all
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_all_masked_gives_other_and_reads_nothing(seed: int) -> None:
    from graph_harness.core.triton_env import gather

    rng = np.random.default_rng(seed)
    other = _table("float32", 2048, rng)
    got = gather(np.full(2048, 8, np.uint64), np.zeros(2048, bool), other, np.dtype("float32"))
    assert got is not None
    assert got.tobytes() == other.tobytes()
    assert got is not other


def test_what_gather_declines_goes_to_the_interpreters_load(seed: int) -> None:
    """Few lanes, bool, lanes off each other's grid: `gather` says None and the interpreter's own load runs."""
    from triton.runtime import interpreter

    from graph_harness.core.triton_env import gather

    rng = np.random.default_rng(seed)
    table = _table("int32", 4096, rng)
    base = np.uint64(table.ctypes.data)
    few = base + np.arange(100, dtype=np.uint64) * np.uint64(4)
    misaligned = base + np.arange(2048, dtype=np.uint64) * np.uint64(4)
    misaligned[rng.integers(0, 2048)] += np.uint64(2)  # one lane off the others' four-byte grid
    flags = (rng.integers(0, 2, 4096) == 1)
    bools = np.uint64(flags.ctypes.data) + np.arange(4096, dtype=np.uint64)
    for ptrs, dtype in ((few, "int32"), (misaligned, "int32"), (bools, "bool")):
        mask = np.ones(ptrs.shape, bool)
        other = np.zeros(ptrs.shape, dtype)
        assert gather(ptrs, mask, other, np.dtype(dtype)) is None
        got = interpreter._interpreter.load(ptrs, mask, other, np.dtype(dtype))
        assert got.tobytes() == _native().load(ptrs, mask, other, np.dtype(dtype)).tobytes()


def test_lanes_all_off_the_dtypes_alignment_gather_alike(seed: int) -> None:
    """Every lane two bytes past a four-byte boundary: one grid, so one gather, of the same bytes."""
    from graph_harness.core.triton_env import gather

    rng = np.random.default_rng(seed)
    table = _table("uint8", 4 * 2048 + 8, rng)
    ptrs = np.uint64(table.ctypes.data + 2) + rng.permutation(2048).astype(np.uint64) * np.uint64(4)
    mask, other = rng.random(2048) < 0.9, _table("float32", 2048, rng)
    got = gather(ptrs, mask, other, np.dtype("float32"))
    assert got is not None
    assert got.tobytes() == _native().load(ptrs, mask, other, np.dtype("float32")).tobytes()


@triton.jit
def _gather_kernel(table_ptr, index_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    index = tl.load(index_ptr + offs, mask=offs < n, other=0)
    tl.store(out_ptr + offs, tl.load(table_ptr + index, mask=offs < n, other=-1.0), mask=offs < n)


def test_a_kernels_masked_gather_loads_through_numpy(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    from triton.runtime import interpreter

    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(300, generator=gen)
    index = torch.randint(0, 300, (3000,), generator=gen, dtype=torch.int32)
    out = torch.full((3000,), float("nan"))
    native_loads: list[int] = []
    native = interpreter._interpreter._native
    monkeypatch.setattr(interpreter._interpreter, "_native", _Counting(native, native_loads))
    _gather_kernel[(2,)](table, index, out, 3000, BLOCK=2048)  # the second program is partly masked
    assert torch.equal(out, table[index.long()])
    assert native_loads == []  # both loads of both programs went through the gather


class _Counting:
    def __init__(self, native: object, loads: list[int]) -> None:
        self._native, self._loads = native, loads

    def __getattr__(self, name: str) -> object:
        return getattr(self._native, name)

    def load(self, ptrs: np.ndarray, *args: object) -> object:
        self._loads.append(ptrs.size)
        return self._native.load(ptrs, *args)


# --- the overflow checks the interpreter discards ---------------------------------------------------------


@triton.jit
def _add_kernel(x_ptr, y_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs) + tl.load(y_ptr + offs))


def test_int32_adds_wrap_and_are_not_checked_twice(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    import dataclasses

    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    assert builder.options.debug is False
    assert builder.options.sanitize_overflow is False
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(2**30, 2**31 - 1, (64,), generator=gen, dtype=torch.int32)
    y = torch.randint(2**30, 2**31 - 1, (64,), generator=gen, dtype=torch.int32)
    out = torch.full((64,), -7, dtype=torch.int32)
    casts: list[object] = []
    cast = builder.create_int_cast
    monkeypatch.setattr(builder, "create_int_cast", lambda *a: (casts.append(a), cast(*a))[1])
    _add_kernel[(1,)](x, y, out, BLOCK=64)
    assert torch.equal(out, (x.long() + y.long() - 2**32).int())  # every lane overflowed and wrapped
    assert casts == []  # no int64 copies of the adds for a check nobody reads
    # Triton's default, for contrast: the same sums, with int64 copies of the operands made and discarded.
    monkeypatch.setattr(builder, "options", dataclasses.replace(builder.options, sanitize_overflow=True))
    out.fill_(-7)
    _add_kernel[(1,)](x, y, out, BLOCK=64)
    assert torch.equal(out, (x.long() + y.long() - 2**32).int())
    assert len(casts) == 2  # x and y widened to int64 for the bounds compare


def test_a_debug_builder_keeps_its_overflow_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from triton.runtime import interpreter

    from graph_harness.core import triton_env

    builder = interpreter.interpreter_builder
    debug = dataclasses.replace(builder.options, debug=True, sanitize_overflow=True)
    monkeypatch.setattr(builder, "options", debug)
    triton_env._no_discarded_overflow_checks()
    assert builder.options is debug
    assert builder.options.sanitize_overflow is True
