"""`scale_shift(x, w, b) = x * w + b` per row, one Triton kernel, with a planted off-by-one.

The off-by-one is the classic one: the store mask says `offs <= n` where it means `offs < n`, so the
program holding element n writes one fp32 past the end of `out`: 4 bytes, whatever the capture size,
as long as n is not a multiple of the block (hidden 300 and BLOCK 256 make sure of it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 256
HIDDEN = 300  # not a multiple of BLOCK, so the program holding element n exists at every size


@triton.jit
def _scale_shift_kernel(x_ptr, w_ptr, b_ptr, out_ptr, n, hidden, OFF_BY_ONE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    col = offs % hidden
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    y = x * tl.load(w_ptr + col) + tl.load(b_ptr + col)
    if OFF_BY_ONE:
        tl.store(out_ptr + offs, y, mask=offs <= n)  # the bug: element n is one past the end
    else:
        tl.store(out_ptr + offs, y, mask=offs < n)


def scale_shift(inputs: dict[str, torch.Tensor], w: torch.Tensor, b: torch.Tensor,
                off_by_one: bool = False) -> torch.Tensor:
    """(T, hidden) fp32 -> (T, hidden) fp32: each row times `w`, plus `b`."""
    x = inputs["x"]
    out = torch.empty_like(x)
    n = x.numel()
    _scale_shift_kernel[(triton.cdiv(n, BLOCK),)](x, w, b, out, n, x.shape[1], OFF_BY_ONE=off_by_one, BLOCK=BLOCK)
    return out


def reference(inputs: dict[str, torch.Tensor], w: torch.Tensor, b: torch.Tensor, **_: object) -> torch.Tensor:
    """The same in fp64."""
    return inputs["x"].double() * w.double() + b.double()


def weights(hidden: int = HIDDEN, seed: int = 0, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The op's constants: `w` and `b`, `(hidden,)` fp32."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return {"w": torch.randn(hidden, generator=gen, device=device),
            "b": torch.randn(hidden, generator=gen, device=device)}


def make_inputs(hidden: int = HIDDEN, device: str | torch.device = "cpu"):
    """An inputs maker for graph-harness: `inputs(size, seed)` -> fresh `x`, `(size, hidden)` fp32."""
    def inputs(size: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device=device).manual_seed(seed)
        return {"x": torch.randn(size, hidden, generator=gen, device=device)}

    return inputs


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
