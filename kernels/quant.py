"""fp8 e4m3 per_1x128 quantisation: one fp32 scale per row and 128-wide group, as aiter's
`per_1x128` activations (docs/moe-contracts.md §1.6: stage2 input is requantised this way)."""

from __future__ import annotations

import torch

from graph_harness.kernels._triton import cast_rne, store_mantissa, tl, triton
from graph_harness.kernels.contracts import QUANT_GROUP

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
# The smallest normal e4m3 is 2**-6; below it the step is 2**-9.
FP8_MIN_EXP = -6
# Scales never fall below this: an all-zero group would otherwise divide by zero.
_MIN_AMAX = 1e-10


@triton.jit
def _quant_kernel(x_ptr, q_ptr, scale_ptr, cols, stride_x, groups,
                  GROUP: tl.constexpr, FP8_MAX_C: tl.constexpr, MIN_AMAX: tl.constexpr, MANT: tl.constexpr,
                  MIN_EXP: tl.constexpr):
    row = tl.program_id(0)
    g = tl.program_id(1)
    offs = g * GROUP + tl.arange(0, GROUP)
    mask = offs < cols
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    amax = tl.maximum(tl.max(tl.abs(x), axis=0), MIN_AMAX)
    # IEEE division (div_rn) as torch does; the default approximate one flips fp8 roundings.
    scale = tl.div_rn(amax, FP8_MAX_C)
    q = cast_rne(tl.clamp(tl.div_rn(x, scale), -FP8_MAX_C, FP8_MAX_C), q_ptr.dtype.element_ty, MANT, MIN_EXP)
    tl.store(q_ptr + row * cols + offs, q, mask=mask)
    tl.store(scale_ptr + row * groups + g, scale)


def per_1x128_quant(x):
    """`x (rows, D)` -> (`q (rows, D) fp8 e4m3`, `scale (rows, ceil(D/128)) fp32`)."""
    rows, cols = x.shape
    groups = triton.cdiv(cols, QUANT_GROUP)
    q = torch.empty(rows, cols, dtype=FP8, device=x.device)
    scale = torch.empty(rows, groups, dtype=torch.float32, device=x.device)
    if rows:
        _quant_kernel[(rows, groups)](x, q, scale, cols, x.stride(0), groups,
                                      GROUP=QUANT_GROUP, FP8_MAX_C=FP8_MAX, MIN_AMAX=_MIN_AMAX,
                                      MANT=store_mantissa(FP8), MIN_EXP=FP8_MIN_EXP)
    return q, scale


def per_1x128_quant_ref(x):
    """Torch reference of `per_1x128_quant`, in fp32."""
    rows, cols = x.shape
    groups = -(-cols // QUANT_GROUP)
    padded = torch.nn.functional.pad(x.float(), (0, groups * QUANT_GROUP - cols)).view(rows, groups, QUANT_GROUP)
    scale = padded.abs().amax(-1).clamp_min(_MIN_AMAX) / FP8_MAX
    q = (padded / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(FP8).view(rows, groups * QUANT_GROUP)[:, :cols]
    return q, scale


def dequant_rows(q, scale):
    """Undo `per_1x128_quant` in fp32: `q (rows, D)`, `scale (rows, ceil(D/128))`."""
    expanded = scale.float().repeat_interleave(QUANT_GROUP, dim=-1)[..., : q.shape[-1]]
    return q.float() * expanded


def dequant_weight_128x128(q, scale):
    """fp32 weights `q (E, R, C)` times their 128x128 block scales `(E, ceil(R/128), ceil(C/128))`."""
    r, c = q.shape[-2:]
    gr, gc = -(-r // QUANT_GROUP), -(-c // QUANT_GROUP)
    w = q.float()
    if (gr * QUANT_GROUP, gc * QUANT_GROUP) != (r, c):
        w = torch.nn.functional.pad(w, (0, gc * QUANT_GROUP - c, 0, gr * QUANT_GROUP - r))
    # each scale broadcast over its block, not repeated out to the weight's size (a DeepSeek-V3 expert's w1
    # is 29M weights: the reference dequantises 257 of them twice a case); the same fp32 products
    blocks = w.view(*q.shape[:-2], gr, QUANT_GROUP, gc, QUANT_GROUP)
    blocks.mul_(scale.float()[..., :, None, :, None])
    return blocks.view(*q.shape[:-2], gr * QUANT_GROUP, gc * QUANT_GROUP)[..., :r, :c]
