"""Every factory the guards intercept returns what torch returns: dtype, shape, strides, memory format,
requires_grad and values, for every argument form. Table-driven against torch's own eager results: a
factory that returned other strides made an op that writes with its source's strides fail as `mismatch`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from graph_harness.core.guard import MIB, GuardMode, Guards

Make = Callable[[dict[str, Any]], torch.Tensor]


def _sources(device: torch.device) -> dict[str, Any]:
    gen = torch.Generator(device=device).manual_seed(7)
    c = torch.randn(4, 6, generator=gen, device=device)
    return {
        "dev": device,
        "c": c,  # contiguous
        "t": c.t(),  # transposed
        "sl": c[:, 1:5],  # a slice: not dense
        "ex": c[:, :1].expand(4, 6),  # expanded: stride 0
        "cl": torch.randn(2, 3, 4, 5, generator=gen, device=device).contiguous(memory_format=torch.channels_last),
        "z": c[:0],  # 0 elements
        "i": torch.randint(-9, 9, (4, 6), generator=gen, device=device, dtype=torch.int32),
        "h": c.half(),
        "o": torch.ones(6, device=device),  # for out=
    }


# (id, make, guarded): guarded False where torch writes into a tensor the caller gave (`out=`).
FORMS: list[tuple[str, Make, bool]] = [
    ("empty int", lambda s: torch.empty(3, device=s["dev"]), True),
    ("empty ints", lambda s: torch.empty(2, 3, device=s["dev"]), True),
    ("empty tuple", lambda s: torch.empty((2, 3), device=s["dev"]), True),
    ("empty list", lambda s: torch.empty([2, 3], device=s["dev"]), True),
    ("empty Size", lambda s: torch.empty(torch.Size([2, 3]), device=s["dev"]), True),
    ("empty size=", lambda s: torch.empty(size=(2, 3), device=s["dev"]), True),
    ("empty 0-dim", lambda s: torch.empty((), device=s["dev"]), True),
    ("empty 0 elements", lambda s: torch.empty(0, 5, device=s["dev"]), True),
    ("empty dtype", lambda s: torch.empty(2, 3, dtype=torch.float16, device=s["dev"]), True),
    ("empty device str", lambda s: torch.empty(2, 3, device=str(s["dev"])), True),
    ("empty device type str", lambda s: torch.empty(2, 3, device=s["dev"].type), True),
    ("empty channels_last", lambda s: torch.empty(2, 3, 4, 5, device=s["dev"], memory_format=torch.channels_last),
     True),
    ("empty requires_grad", lambda s: torch.empty(2, 3, device=s["dev"], requires_grad=True), True),
    ("empty out=", lambda s: torch.empty(2, 3, out=s["o"]), False),
    ("zeros", lambda s: torch.zeros(2, 3, device=s["dev"]), True),
    ("zeros int dtype", lambda s: torch.zeros((2, 3), dtype=torch.int32, device=s["dev"]), True),
    ("zeros size=", lambda s: torch.zeros(size=(5,), device=s["dev"]), True),
    ("zeros bool", lambda s: torch.zeros(4, dtype=torch.bool, device=s["dev"]), True),
    ("zeros out=", lambda s: torch.zeros(6, out=s["o"]), False),
    ("ones", lambda s: torch.ones(2, 3, device=s["dev"]), True),
    ("ones fp16", lambda s: torch.ones(7, dtype=torch.float16, device=s["dev"]), True),
    ("full int fill", lambda s: torch.full((2, 3), 7, device=s["dev"]), True),
    ("full bool fill", lambda s: torch.full((2, 3), True, device=s["dev"]), True),
    ("full float fill", lambda s: torch.full((2, 3), 1.5, device=s["dev"]), True),
    ("full dtype", lambda s: torch.full((2, 3), 2, dtype=torch.float16, device=s["dev"]), True),
    ("full float into int", lambda s: torch.full((3,), 2.0, dtype=torch.int32, device=s["dev"]), True),
    ("full keywords", lambda s: torch.full(size=(2, 3), fill_value=3, device=s["dev"]), True),
    ("full requires_grad", lambda s: torch.full((2,), 0.5, device=s["dev"], requires_grad=True), True),
    ("full out=", lambda s: torch.full((6,), 4.0, out=s["o"]), False),
    ("empty_like", lambda s: torch.empty_like(s["c"]), True),
    ("empty_like transposed", lambda s: torch.empty_like(s["t"]), True),
    ("empty_like slice", lambda s: torch.empty_like(s["sl"]), True),
    ("empty_like expanded", lambda s: torch.empty_like(s["ex"]), True),
    ("empty_like channels_last", lambda s: torch.empty_like(s["cl"]), True),
    ("empty_like 0 elements", lambda s: torch.empty_like(s["z"]), True),
    ("empty_like contiguous_format", lambda s: torch.empty_like(s["cl"], memory_format=torch.contiguous_format),
     True),
    ("empty_like to channels_last", lambda s: torch.empty_like(s["cl"].contiguous(),
                                                               memory_format=torch.channels_last), True),
    ("empty_like dtype", lambda s: torch.empty_like(s["t"], dtype=torch.int8), True),
    ("empty_like device", lambda s: torch.empty_like(s["c"], device=s["dev"]), True),
    ("zeros_like transposed int", lambda s: torch.zeros_like(s["t"], dtype=torch.int32), True),
    ("zeros_like requires_grad", lambda s: torch.zeros_like(s["c"], requires_grad=True), True),
    ("ones_like channels_last", lambda s: torch.ones_like(s["cl"]), True),
    ("ones_like int", lambda s: torch.ones_like(s["i"]), True),
    ("full_like", lambda s: torch.full_like(s["t"], 3), True),
    ("full_like float into int", lambda s: torch.full_like(s["i"], 2.0), True),
    ("full_like bool fill", lambda s: torch.full_like(s["h"], True), True),
    ("full_like keyword", lambda s: torch.full_like(s["c"], fill_value=-1.25), True),
    ("new_empty int", lambda s: s["c"].new_empty(3), True),
    ("new_empty tuple", lambda s: s["c"].new_empty((2, 3)), True),
    ("new_empty size=", lambda s: s["h"].new_empty(size=(2, 3)), True),
    ("new_empty dtype", lambda s: s["c"].new_empty((2, 3), dtype=torch.int64), True),
    ("new_zeros ints", lambda s: s["i"].new_zeros(2, 3), True),
    ("new_zeros 0 elements", lambda s: s["c"].new_zeros((0,)), True),
    ("new_ones dtype", lambda s: s["c"].new_ones((2, 3), dtype=torch.int32), True),
    ("new_full", lambda s: s["h"].new_full((2, 3), 5), True),
    ("new_full float into int", lambda s: s["i"].new_full((4,), 3.0), True),
    ("new_full keywords", lambda s: s["c"].new_full(size=(2,), fill_value=9.5), True),
    ("new_full requires_grad", lambda s: s["c"].new_full((2,), 1.0, requires_grad=True), True),
    ("empty_strided", lambda s: torch.empty_strided((2, 3), (1, 2), device=s["dev"]), True),
    ("empty_strided dtype", lambda s: torch.empty_strided((2, 3), (3, 1), dtype=torch.int8, device=s["dev"]), True),
    ("empty_strided padded", lambda s: torch.empty_strided((2, 3), (8, 1), device=s["dev"]), True),
]


def _in_slab(t: torch.Tensor, guards: Guards) -> bool:
    return guards.in_slab(t.untyped_storage().data_ptr())


@pytest.mark.parametrize(("make", "guarded"), [pytest.param(m, g, id=name) for name, m, g in FORMS])
def test_a_guarded_factory_returns_what_torch_returns(device: torch.device, make: Make, guarded: bool) -> None:
    want = make(_sources(device))
    sources = _sources(device)  # `out=` resizes its tensor: each call has its own
    guards = Guards(device, 64 * MIB)
    guards.arm("nan")
    with GuardMode(guards):
        got = make(sources)
    assert (got.dtype, got.shape, got.stride(), got.device, got.requires_grad) == (
        want.dtype, want.shape, want.stride(), want.device, want.requires_grad)
    for fmt in (torch.contiguous_format, torch.channels_last):
        if got.dim() == 4:
            assert got.is_contiguous(memory_format=fmt) == want.is_contiguous(memory_format=fmt)
    assert _in_slab(got, guards) == guarded
    assert len(guards.buffers) == int(guarded)
    if guarded and guards.buffers[0].poison is None:  # not `empty`: the values are torch's
        assert torch.equal(got.detach(), want.detach())
    assert not guards.dirty()
