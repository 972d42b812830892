"""The interpreter patches triton.language once per launch, not at every helper call, and computes the same."""

from __future__ import annotations

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
