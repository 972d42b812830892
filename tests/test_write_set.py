"""The per-launch write set, and the slab bytes no buffer holds: what a GPU sees where the lane checker does not run.

In step mode every Triton launch's write set is taken: the bytes of the slab's buffers (and of the slab past
the last arena) that the launch changed outside the views it was given are its violation, named by kernel,
argument and the buffer whose bytes changed. Every slab byte no buffer holds is filled, and checked when the
protocol ends. On a GPU this is how the harness runs; on CPU these tests turn the lane checker off
(`GRAPH_HARNESS_LANES=0`) to run the same code.
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

import graph_harness as gh
from graph_harness.core.guard import MIB, UNHELD, keeping_slabs
from graph_harness.kernels.memset import raw_memset

T = 2
N = 100  # floats per token
BLOCK = 128
BUDGET = 64 * MIB


@pytest.fixture(autouse=True)
def _no_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPH_HARNESS_LANES", "0")


def _inputs(device: torch.device):  # type: ignore[no-untyped-def]
    def make(size: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=device).manual_seed(seed)
        return {"x": torch.randn(size, N, generator=gen, device=device)}

    return make


def _twice(inputs: dict[str, torch.Tensor], **_: object) -> torch.Tensor:
    return inputs["x"].double() * 2


def _check(op, expect, device: torch.device, reference=_twice):  # type: ignore[no-untyped-def]
    (r,) = gh.check(op, _inputs(device), [T], reference=reference, expect=expect, device=device,
                    guard_budget=BUDGET)
    assert r.passed, r.reason
    return r


def _stepped(device: torch.device) -> str:
    return f"warm-up T={T}" if device.type == "cuda" else f"eager T={T} #1"


@triton.jit
def _scale(x_ptr, out_ptr, n, at, EXTRA: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = 2 x[i] for i < n, 7.0 for n <= i < n + EXTRA (or before out, for a negative EXTRA); and, where
    `at` is not 0, one more 7.0 at out[n + at]. 7.0 (0x40E00000) differs in every byte from 0.1 (0x3DCCCCCD), what
    the victims hold, and from the slab's free fill: a write set sees changed bytes, and each of these changes."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=1.0)
    tl.store(out_ptr + offs, tl.where(offs < n, x * 2.0, 7.0), mask=offs < n + EXTRA)
    if EXTRA < 0:
        tl.store(out_ptr + offs + EXTRA, tl.full((BLOCK,), 7.0, tl.float32), mask=offs < -EXTRA)
    if at != 0:
        if tl.program_id(0) == 0:
            tl.store(out_ptr + n + at + tl.arange(0, 1), tl.full((1,), 7.0, tl.float32))


def _scaled(x: torch.Tensor, out: torch.Tensor, extra: int = 0, at: int = 0) -> torch.Tensor:
    n = x.numel()
    _scale[(triton.cdiv(n + max(extra, 0), BLOCK),)](x, out, n, at, EXTRA=extra, BLOCK=BLOCK)
    return out


def test_an_overrun_of_a_view_inside_its_workspace_is_the_launchs_write(device: torch.device) -> None:
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        ws = torch.full((2 * x.numel(),), 0.1, device=x.device)
        first, second = ws[: x.numel()], ws[x.numel():]
        _scaled(x, first, extra=4)  # 16 B into `second`, inside ws: no guard is touched
        _scaled(x, second)
        return (first + second).reshape(inputs["x"].shape) / 2

    nbytes = T * N * 4
    r = _check(op, gh.expect.oob_write("ws", arg="out_ptr", side="overflow", first=0, last=15, bytes=16), device)
    (v,) = r.violations
    assert (v.at, v.buffer_bytes, v.op, v.hits, v.phases) == (0, nbytes, "_scale", (), (_stepped(device),))
    assert gh.expect.describe(v) == f"ws[0:{nbytes:,}]: 16 B past its end (16 B written by _scale through out_ptr)"


def test_an_underflow_of_the_second_view_into_the_first_is_the_seconds(device: torch.device) -> None:
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        ws = torch.full((2 * x.numel(),), 0.1, device=x.device)
        first, second = ws[: x.numel()], ws[x.numel():]
        _scaled(x, second, extra=-2)  # and 7.0 into second[-2:0]: the tail of `first`
        _scaled(x[: x.numel() - 2], first[: x.numel() - 2])
        return first.reshape(inputs["x"].shape)

    def reference(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = _twice(inputs).flatten()
        out[-2:] = 7.0
        return out.reshape(T, N)

    nbytes = T * N * 4
    r = _check(op, gh.expect.oob_write("ws", arg="out_ptr", side="underflow", first=-8, last=-1, bytes=8), device,
               reference=reference)
    (v,) = r.violations
    assert (v.at, v.op, v.hits) == (nbytes, "_scale", ())


def test_a_write_into_a_buffer_the_launch_was_not_given_names_both(device: torch.device) -> None:
    """One float stored past `a`'s guard, into the body of `b`: no guard byte changes."""
    seen: dict[str, int] = {}

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"].flatten()
        a = torch.empty_like(x)
        b = torch.full_like(x, 0.1)  # 0x3DCCCCCD: every byte differs from 7.0's, so the store changes all four
        at = (b.data_ptr() - a.data_ptr()) // 4 - x.numel() + 10  # b[10], counted from a's end
        seen["offset"] = 4 * at
        _scaled(x, a, at=at)
        return (a + b - 0.1).reshape(inputs["x"].shape)

    def reference(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        out = _twice(inputs).flatten()
        out[10] += 6.9  # b[10] became 7.0
        return out.reshape(T, N)

    r = _check(op, gh.expect.oob_write("a", arg="out_ptr", side="overflow"), device, reference=reference)
    (v,) = r.violations
    assert (v.first_offset, v.last_offset, v.bytes, v.hits, v.op) == (
        seen["offset"], seen["offset"] + 3, 4, ("b",), "_scale")
    assert gh.expect.describe(v).endswith("(4 B written by _scale through out_ptr, into b)")


def test_a_store_past_every_guard_is_named_within_the_watched_tail(device: torch.device) -> None:
    far = 3 * MIB  # bytes past the end of `out`: past its 2 MiB guard, inside the slab

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        return _scaled(x.flatten(), out, at=far // 4).reshape(x.shape)

    r = _check(op, gh.expect.oob_write("out", arg="out_ptr", side="overflow", first=far, last=far + 3, bytes=4),
               device)
    (v,) = r.violations
    assert (v.at_least, v.hits, v.phases) == (False, (), (_stepped(device),))


def test_a_store_far_past_the_watched_tail_is_found_where_no_buffer_was(device: torch.device) -> None:
    far = 24 * MIB  # past the 16 MiB of slab that the write set watches beyond the last arena

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        return _scaled(x.flatten(), out, at=far // 4).reshape(x.shape)

    r = _check(op, gh.expect.oob_write(UNHELD, bytes=4), device)
    (v,) = r.violations
    assert (v.op, v.phases, v.last_offset - v.first_offset) == (None, ("after every run",), 3)
    assert "no buffer was" in gh.expect.describe(v)


def test_a_raw_memset_past_every_guard_is_found_where_no_buffer_was(device: torch.device) -> None:
    """Host code, not a Triton launch: no write set names it, and the filled free slab still shows it."""
    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        out = torch.empty_like(x)
        _scaled(x.flatten(), out)
        spare = torch.empty(64, device=x.device)
        raw_memset(spare, 64 * 4 + 8 * MIB)  # zeroes 8 MiB past it: through its guard and far beyond
        return out

    r = _check(op, gh.expect.all_of(gh.expect.oob_write("spare", side="overflow", extent=2 * MIB),
                                    gh.expect.oob_write(UNHELD, bytes=6 * MIB)), device)
    spare, unheld = sorted(r.violations, key=lambda v: v.buffer != "spare")
    assert (spare.at_least, spare.bytes) == (True, 2 * MIB)  # the whole guard: "at least"
    assert (unheld.op, unheld.phases) == (None, ("after every run",))


def test_a_memset_through_one_guard_into_the_next_names_the_buffer_it_left_from(device: torch.device) -> None:
    """What the guards see: `a`'s overflow run through its guard's far end into `b`'s guard is one violation of
    `a`, with `b` in hits."""
    nbytes = T * N * 4
    right = -(-nbytes // 256) * 256 + 2 * MIB - nbytes  # a's right guard: the 2 MiB minimum, its end rounded

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        a = torch.zeros_like(x)
        b = torch.zeros_like(x)
        raw_memset(a, nbytes + right + 100)
        return _scaled(x.flatten(), b).reshape(x.shape)

    r = _check(op, gh.expect.oob_write("a", side="overflow", first=0, last=right + 99, bytes=right + 100), device)
    (v,) = r.violations
    assert (v.hits, v.at_least, v.op) == (("b",), False, "host code before _scale")


def test_a_constant_written_in_place_by_a_launch_given_it_is_clean_and_by_one_not_given_it_is_found(
        device: torch.device) -> None:
    """A constant (a layer's weight) is compared against the tensor it was copied from, not snapshotted: a
    launch it was given may write it, and its new bytes become the reference; any other launch may not."""
    def op(inputs: dict[str, torch.Tensor], w: torch.Tensor, stray: bool) -> torch.Tensor:
        x = inputs["x"].flatten()
        _scaled(x, w)  # w = 2x, in place: w was given
        out = torch.empty_like(x)
        at = (w.data_ptr() - out.data_ptr()) // 4 - x.numel() + 5 if stray else 0  # w[5], from out's end
        _scaled(w if not stray else x, out, at=at)  # the stray launch is given x and out, not w
        return out.reshape(inputs["x"].shape)

    def reference(inputs: dict[str, torch.Tensor], w: torch.Tensor, stray: bool) -> torch.Tensor:
        return _twice(inputs) * (1 if stray else 2)

    w = torch.full((T * N,), 0.1, device=device)
    (clean,) = gh.check(op, _inputs(device), [T], reference=reference, constants={"w": w, "stray": False},
                        device=device, guard_budget=BUDGET)
    assert (clean.verdict, clean.violations) == (gh.Verdict.CLEAN, ()), clean.reason
    (found,) = gh.check(op, _inputs(device), [T], reference=reference, constants={"w": w, "stray": True},
                        device=device, guard_budget=BUDGET, expect=gh.expect.oob_write(bytes=4))
    assert found.passed, found.reason
    (v,) = found.violations  # through the argument whose view lies nearest: a GPU does not say which pointer
    assert (v.op, v.bytes, v.hits) == ("_scale", 4, ("constant.w",))


# Ordinary code raises nothing --------------------------------------------------------------------------

_CACHE: dict[str, torch.Tensor] = {}


def test_clean_ops_over_views_in_place_updates_and_a_cached_workspace_raise_nothing(device: torch.device) -> None:
    _CACHE.clear()

    def op(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        flat = x.flatten()
        if "ws" not in _CACHE:
            _CACHE["ws"] = torch.empty(3 * flat.numel(), device=x.device)
        ws = _CACHE["ws"]
        first, second, third = ws[: flat.numel()], ws[flat.numel(): 2 * flat.numel()], ws[2 * flat.numel():]
        _scaled(flat, first)  # 2x
        second.copy_(first).mul_(0.5)  # torch between launches: x
        _scaled(second, third)  # 2x
        rows = torch.zeros(T + 1, N, device=x.device)[1:]  # a view past a row of its own buffer
        _scaled(third, rows)  # 4x
        strided = torch.empty(N, T, device=x.device).t()  # transposed: written through its own strides
        _scaled(flat, strided.contiguous())
        return rows / 2

    try:
        r = _check(op, gh.expect.clean(), device)
    finally:
        _CACHE.clear()
    assert r.violations == ()
    assert r.verdict == gh.Verdict.CLEAN


def _dirties_far(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    x = inputs["x"]
    out = _scaled(x.flatten(), torch.empty_like(x).flatten()).reshape(x.shape)
    spare = torch.empty(64, device=x.device)
    raw_memset(spare, 64 * 4 + 8 * MIB)  # 6 MiB past its guard, into the free slab
    return out


_FAR = gh.expect.all_of(gh.expect.oob_write("spare", side="overflow", extent=2 * MIB),
                        gh.expect.oob_write(UNHELD, bytes=6 * MIB))


def _slab_pointer(device: torch.device) -> int | None:
    from graph_harness.core.guard import _SPARES

    spare = _SPARES.get(device) if device.type == "cuda" else None
    return None if spare is None else spare.slab.data_ptr()


def test_a_slab_kept_for_the_next_check_shows_it_nothing_the_last_one_wrote(device: torch.device) -> None:
    """Where cases run one after another (`graph-harness run`, scenario items) a GPU slab is kept for the next case
    of its size (allocating a 48 GiB one took 87 ms, a tenth of a scenario-matrix case): what the last case's write
    past every guard changed is filled again first, so the next op, a clean one, is clean; and the next dirty one
    is found with the same figures. Elsewhere (a check through the API) nothing is kept."""
    def clean(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        return _scaled(x.flatten(), torch.empty_like(x).flatten()).reshape(x.shape)

    _check(clean, gh.expect.clean(), device)
    assert _slab_pointer(device) is None  # given back
    with keeping_slabs():
        _check(_dirties_far, _FAR, device)
        first = _slab_pointer(device)
        assert (first is not None) == (device.type == "cuda")
        assert not _check(clean, gh.expect.clean(), device).violations
        assert _slab_pointer(device) == first  # the same slab
        again = _check(_dirties_far, _FAR, device)
        assert sorted(v.bytes for v in again.violations) == [2 * MIB, 6 * MIB]
        assert not _check(clean, gh.expect.clean(), device).violations
    assert _slab_pointer(device) is None


_KEPT: list[torch.Tensor] = []


def test_a_tensor_an_op_keeps_from_its_check_is_not_overwritten_by_the_next(device: torch.device) -> None:
    """A view of the slab alive after its case (the op cached a buffer) keeps the slab from the next case, which
    would fill it again: the cached values stay the op's."""
    def caches(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["x"]
        if not _KEPT:
            _KEPT.append(torch.full((4096,), 3.0, device=x.device))
        return x * 2

    _KEPT.clear()
    try:
        with keeping_slabs():
            (r,) = gh.check(caches, _inputs(device), [T], reference=_twice, device=device, guard_budget=BUDGET)
            assert r.persistent, r.notes  # the harness saw the cache
            first = _slab_pointer(device)
            _check(_dirties_far, _FAR, device)
            assert torch.equal(_KEPT[0].cpu(), torch.full((4096,), 3.0))
            assert first is None or _slab_pointer(device) != first
    finally:
        _KEPT.clear()
