"""Guarded allocations: factories, fills, poison, sizes and the bitwise check, on the kernel device."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from graph_harness.core.guard import (
    _BLOCK_WORDS,
    MIB,
    WORDS,
    GuardBudgetError,
    GuardMode,
    Guards,
    _blocks,
    sharing_guards,
)
from graph_harness.kernels.memset import raw_memset

FLOATS = [torch.float32, torch.bfloat16, torch.float16]


def _guards(device: torch.device, budget: int = 64 * MIB, **kw: int) -> Guards:
    guards = Guards(device, budget, **kw)
    guards.arm("nan")
    return guards


@pytest.mark.parametrize("dtype", [*FLOATS, torch.int32, torch.int64, torch.uint8])
def test_empty_is_poisoned_and_the_other_factories_keep_their_values(device, dtype):
    guards = _guards(device)
    src = torch.ones(3, dtype=dtype, device=device)
    with GuardMode(guards):
        empty = torch.empty(5, 7, dtype=dtype, device=device)
        zeros = torch.zeros((4,), dtype=dtype, device=device)
        full = torch.full((2, 3), 5, dtype=dtype, device=device)
        like = torch.ones_like(src)
        new = src.new_full((6,), 3)
        strided = torch.empty_strided((2, 3), (1, 4), dtype=dtype, device=device)
    assert len(guards.buffers) == 6
    assert all(guards.in_slab(t.data_ptr()) for t in (empty, zeros, full, like, new, strided))
    assert bool((zeros == 0).all())
    assert bool((full == 5).all())
    assert bool((like == 1).all())
    assert bool((new == 3).all())
    assert strided.stride() == (1, 4)
    if dtype.is_floating_point:
        assert bool(empty.isnan().all())
    else:
        huge = int("7FC5" * 4, 16) >> (64 - 8 * dtype.itemsize)  # 0x7F, 0x7FC5, 0x7FC57FC5, ...
        assert bool((empty == huge).all())
    assert not guards.dirty()


def test_buffers_are_named_by_assignment_and_call_site(device):
    guards = _guards(device)
    with GuardMode(guards), guards.label("input"):
        workspace = torch.empty(8, device=device)
    with GuardMode(guards):
        torch.zeros(8, device=device)
    named, anonymous = guards.buffers
    assert named.name == "input.workspace"
    assert named.site.startswith("tests/test_guard.py:")
    assert named.site.endswith(
        "in test_buffers_are_named_by_assignment_and_call_site")
    assert anonymous.name == "test_buffers_are_named_by_assignment_and_call_site"
    del workspace


def test_other_devices_and_out_tensors_pass_through(device):
    guards = _guards(device)
    given = torch.ones(4, device=device)
    with GuardMode(guards):
        torch.empty(4, device="meta")
        torch.zeros(4, device=device, out=given)
    assert guards.buffers == []
    assert bool((given == 0).all())


def test_guards_cover_16x_the_buffer_and_at_least_2_mib(device):
    guards = _guards(device, budget=1024 * MIB)
    with GuardMode(guards):
        small = torch.empty(100, device=device)
        large = torch.empty(1 << 20, device=device)  # 4 MiB: 64 MiB guards
    a, b = guards.buffers
    assert a.left >= 2 * MIB
    assert a.right >= 2 * MIB
    assert b.left >= 16 * large.nbytes
    assert b.right >= 16 * large.nbytes
    del small


def test_cover_grows_the_guard_and_a_small_budget_says_so(device):
    grown = _guards(device, budget=64 * MIB, cover=5 * MIB)
    with GuardMode(grown):
        torch.empty(10, device=device)
    assert grown.buffers[0].right >= 5 * MIB
    per_size = _guards(device, budget=64 * MIB, cover={4: (4000, 5 * MIB)})  # only the footprint's buffer
    with per_size.tagged(4), GuardMode(per_size):
        torch.empty(1000, device=device)
        torch.empty(1001, device=device)
    assert [b.right >= 5 * MIB for b in per_size.buffers] == [True, False]
    tight = _guards(device, budget=3 * MIB)
    with GuardMode(tight):
        torch.empty(10, device=device)
    assert tight.buffers[0].right < 2 * MIB
    assert len(tight.limits()) == 1
    assert tight.limits()[0].startswith("not fully guarded: ")
    starved = _guards(device, budget=MIB)
    with pytest.raises(GuardBudgetError, match="exhausted"), GuardMode(starved):
        torch.empty(MIB // 4, device=device)


@pytest.mark.parametrize("fill", ["nan", "dense"])
def test_every_guard_byte_holds_the_fill_and_a_one_byte_change_is_exact(device, fill):
    guards = _guards(device)
    with GuardMode(guards):
        buf = torch.empty(7, dtype=torch.uint8, device=device)  # ends mid-word
    guards.arm(fill)
    b = guards.buffers[0]
    pattern = WORDS[fill].to_bytes(4, "little")
    right = guards.slab[b.start + b.nbytes: b.start + b.nbytes + 16].cpu().tolist()
    assert bytes(right) == bytes(pattern[(b.start + b.nbytes + i) % 4] for i in range(16))
    guards.slab[b.start + b.nbytes + 3] = 0
    guards.slab[b.start - 2] = 0
    assert guards.check("test")
    over, under = sorted(guards.violations(), key=lambda v: v.side)
    assert (over.side, over.first_offset, over.last_offset, over.bytes) == ("overflow", 3, 3, 1)
    assert (under.side, under.first_offset, under.last_offset, under.bytes) == ("underflow", -2, -2, 1)
    del buf


def test_two_fills_differ_in_every_byte_and_no_byte_is_zero():
    nan, dense = (WORDS[f].to_bytes(4, "little") for f in ("nan", "dense"))
    assert all(a != b and a and b for a, b in zip(nan, dense, strict=True))
    as_f32 = torch.tensor([WORDS["nan"], WORDS["dense"]], dtype=torch.int64).to(torch.int32).view(torch.float32)
    assert math.isnan(as_f32[0])
    assert 0 < abs(float(as_f32[1])) < torch.finfo(torch.float32).tiny
    halves = torch.tensor([WORDS["nan"] & 0xFFFF, WORDS["dense"] & 0xFFFF], dtype=torch.int32).to(torch.int16)
    for dtype in (torch.bfloat16, torch.float16):
        nan16, dense16 = halves.view(dtype).float().tolist()
        assert math.isnan(nan16)
        assert 0 < abs(dense16) < torch.finfo(dtype).tiny


def test_union_over_runs_and_scope_release(device):
    guards = _guards(device)
    for fill in ("nan", "dense"):
        guards.arm(fill)
        with guards.scope(), GuardMode(guards):
            buf = torch.empty(64, dtype=torch.uint8, device=device)
            raw_memset(buf, 64 + 10)
            guards.check(fill)
            del buf
        assert guards.buffers == []
    (v,) = guards.violations()
    assert (v.buffer, v.first_offset, v.last_offset, v.bytes, v.phases) == ("buf", 0, 9, 10, ("nan", "dense"))


def test_the_gpu_kernels_block_tables_cover_each_range_word_for_word(seed):
    """`_blocks` (what the one-launch arm and check run over) against the plain loop."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 5 * _BLOCK_WORDS, (40,), generator=gen).tolist() + [0, 1, _BLOCK_WORDS]
    starts = torch.randint(0, 1 << 40, (len(lengths),), generator=gen).tolist()
    ranges = [(a, a + n, v) for a, n, v in zip(starts, lengths, range(-1, len(lengths) - 1), strict=True)]
    expected = [(a, min(a + _BLOCK_WORDS, end), v) for start, end, v in ranges
                for a in range(start, end, _BLOCK_WORDS)]
    lo, hi, value = _blocks(ranges, torch.device("cpu"))
    assert list(zip(lo.tolist(), hi.tolist(), value.tolist(), strict=True)) == expected
    assert value.dtype == torch.int32
    assert all(t.numel() == 0 for t in _blocks([], torch.device("cpu")))


@pytest.mark.parametrize("side", ["overflow", "underflow"])
def test_a_buffer_carved_again_with_another_guard_keeps_what_earlier_runs_saw_and_who(device, side):
    """The budget left decides a guard's size, so a later run may carve the same buffer with a larger one: the
    findings of both runs are one violation, aligned at the buffer's edge, with the first writer and every phase."""
    from dataclasses import replace

    guards = _guards(device)
    small = guards.allocate(800, "ws", "op.py:1 in op", None)
    large = replace(small, left=small.left + 4096, right=small.right + 4096)

    def near(buf, n):  # the n guard bytes nearest the buffer's edge
        return (0, n) if side == "overflow" else (buf.left - n, buf.left)

    guards.record_range(small, side, *near(small, 4), "eager T=1 #1", "kernel_a")
    guards.record_range(large, side, *near(large, 12), "replay T=1 #1", "kernel_b")
    (v,) = guards.violations()
    edge = (0, 11) if side == "overflow" else (-12, -1)
    assert (v.first_offset, v.last_offset, v.bytes, v.op, v.phases) == (
        *edge, 12, "kernel_a", ("eager T=1 #1", "replay T=1 #1"))


# One guard between neighbours (sharing_guards: fuzz) ---------------------------------------------------------

def _three(device: torch.device, fill: str = "nan", *, shared: bool = True, sizes: list[int] | None = None) -> Guards:
    """a, b and c, carved one after another (b an `empty`): of random sizes, c a small one, unless given."""
    n = sizes or [int(torch.randint(1, 40_000, ())), int(torch.randint(1, 40_000, ())), int(torch.randint(1, 64, ()))]
    with sharing_guards() if shared else contextlib.nullcontext():
        guards = Guards(device, 64 * MIB)
    guards.arm(fill)  # type: ignore[arg-type]
    with GuardMode(guards):
        a = torch.zeros(n[0], dtype=torch.uint8, device=device)
        b = torch.empty(n[1], dtype=torch.uint8, device=device)
        c = torch.zeros(n[2], dtype=torch.uint8, device=device)
    del a, b, c
    return guards


def _spoil(guards: Guards, lo: int, hi: int) -> None:
    """Change every byte of slab [lo, hi): each one differs from what it held, whatever the fill."""
    guards.slab[lo:hi] = ~guards.slab[lo:hi]


def test_shared_guards_lie_between_neighbours_once_and_each_buffer_keeps_its_own_size(device):
    guards = _three(device)
    a, b, c = guards.buffers
    for first, then in ((a, b), (b, c)):
        assert first.start + first.nbytes + first.right == then.start  # the first one's guard reaches the next one
        assert then.start - then.left == -(-(first.start + first.nbytes) // 256) * 256  # ... and is the next one's
        assert then.left >= 2 * MIB
        assert first.right >= 2 * MIB

    def words(lo: int, hi: int) -> int:
        return hi // 4 - -(-lo // 4)
    read = sum(hi - lo for lo, hi in guards.layout.guards)
    assert read == (words(a.start - a.left, a.start) + words(a.start + a.nbytes, b.start)
                    + words(b.start + b.nbytes, c.start) + words(c.start + c.nbytes, c.start + c.nbytes + c.right))
    own = _three(device, shared=False)  # guards of their own: six of them, twice the bytes between buffers
    assert sum(hi - lo for lo, hi in own.layout.guards) == sum(
        words(x.start - x.left, x.start) + words(x.start + x.nbytes, x.start + x.nbytes + x.right) for x in own.buffers)
    assert sum(hi - lo for lo, hi in own.layout.guards) > 1.4 * read
    assert not guards.dirty()
    assert not own.dirty()


@pytest.mark.parametrize("fill", ["nan", "dense"])
def test_a_shared_guard_names_the_buffer_each_overrun_reaches_in_from(device, fill):
    guards = _three(device, fill)
    a, b, _c = guards.buffers
    end, gap = a.start + a.nbytes, a.right
    over, under = int(torch.randint(1, gap // 3, ())), int(torch.randint(1, gap // 3, ()))
    _spoil(guards, end, end + over)  # a's overflow, from its end
    guards.check("run #1")
    (v,) = guards.violations()
    assert (v.buffer, v.side, v.first_offset, v.last_offset, v.bytes, v.at_least) == ("a", "overflow", 0, over - 1,
                                                                                       over, False)
    _spoil(guards, b.start - under, b.start)  # b's underflow, up to its start: b's, not a's
    guards.check("run #2")
    found = {(v.buffer, v.side): v for v in guards.violations()}
    assert set(found) == {("a", "overflow"), ("b", "underflow")}
    v = found["b", "underflow"]
    assert (v.first_offset, v.last_offset, v.bytes, v.at_least, v.hits) == (-under, -1, under, False, ())
    assert found["a", "overflow"].bytes == over
    guards.forget()
    guards.arm(fill)  # type: ignore[arg-type]
    middle = end + gap - gap // 5  # nearer b's start than a's end: b's
    _spoil(guards, middle, middle + 64)
    guards.check("run #3")
    (v,) = guards.violations()
    assert (v.buffer, v.side, v.first_offset, v.bytes) == ("b", "underflow", middle - b.start, 64)


def test_an_overrun_through_the_whole_shared_guard_is_at_least_and_reaches_the_neighbour(device):
    guards = _three(device)
    a, b, _c = guards.buffers
    end = a.start + a.nbytes
    raw_memset(guards.view(a, torch.uint8), a.nbytes + a.right + 100)  # 100 B into b: no guard sees those
    guards.check("run #1")
    (v,) = guards.violations()
    assert (v.buffer, v.side, v.first_offset, v.last_offset, v.bytes, v.at_least, v.hits) == (
        "a", "overflow", 0, b.start - end - 1, b.start - end, True, ("b",))


def test_a_buffer_carved_next_to_one_an_op_overran_leaves_the_overrun_for_the_check(device):
    """The guard two neighbours share is armed when the first is carved; carving the second arms only what it adds,
    so an overrun of the first made before the second is carved (no check in between) is still there."""
    for grows in (False, True):
        with sharing_guards():
            guards = Guards(device, 256 * MIB)
        guards.arm("dense")
        n, spill = int(torch.randint(1, 5000, ())), int(torch.randint(1, 1000, ()))
        with GuardMode(guards):
            a = torch.zeros(n, dtype=torch.uint8, device=device)
            raw_memset(a, n + spill)
            # a guard of 16x 1 MiB: the shared one grows by 14 MiB, and only those are armed
            torch.zeros(MIB if grows else 8, dtype=torch.uint8, device=device)
        guards.check("run")
        (v,) = guards.violations()
        assert (v.buffer, v.bytes, v.last_offset) == ("a", spill, spill - 1)
        assert guards.buffers[1].left == (16 if grows else 2) * MIB
        del a


def test_a_scope_given_back_next_to_a_kept_buffer_leaves_its_guard_whole(device):
    """Released buffers' arenas go back to the free fill, less the guard they shared with a buffer still there: no
    false alarm under either fill, and the next buffer carved shares that guard again."""
    with sharing_guards():
        guards = Guards(device, 64 * MIB)
    for fill in ("dense", "nan", "dense"):
        guards.arm(fill)  # type: ignore[arg-type]
        with GuardMode(guards):
            kept = torch.zeros(int(torch.randint(1, 9000, ())), device=device)
            with guards.scope():
                torch.empty(int(torch.randint(1, 9000, ())), device=device).fill_(1)
            after = torch.zeros(int(torch.randint(1, 9000, ())), device=device)
        assert not guards.dirty(), fill
        k, x = guards.buffers[-2:]
        assert k.start + k.nbytes + k.right == x.start
        del kept, after
    guards.check_free()
    assert guards.violations() == ()


@pytest.mark.parametrize("trial", range(4))
def test_an_overrun_within_the_guard_reads_the_same_in_shared_guards_as_in_own(device, trial):
    """Overruns that stay inside the guard a buffer wants (from either edge, of either neighbour, several at once)
    give the same violations, to the byte, whether the neighbours share the guard or have guards of their own."""
    sizes = [int(torch.randint(1, 40_000, ())) for _ in range(3)]
    shared, own = _three(device, sizes=sizes), _three(device, sizes=sizes, shared=False)
    cuts = [(i, side, int(torch.randint(1, MIB, ())))
            for i, side in ((0, "overflow"), (1, "underflow"), (1, "overflow"), (2, "underflow"))
            if bool(torch.rand(()) < 0.6)] or [(0, "overflow", 1)]
    for guards in (shared, own):
        for i, side, n in cuts:
            buf = guards.buffers[i]
            at = buf.start + buf.nbytes if side == "overflow" else buf.start - n
            _spoil(guards, at, at + n)
        guards.check("run")

    def seen(guards: Guards) -> list[tuple[object, ...]]:
        return sorted((v.buffer, v.side, v.first_offset, v.last_offset, v.bytes, v.at_least, v.hits)
                      for v in guards.violations())

    assert seen(shared) == seen(own) == sorted(
        ("abc"[i], side, 0 if side == "overflow" else -n, n - 1 if side == "overflow" else -1, n, False, ())
        for i, side, n in cuts)
