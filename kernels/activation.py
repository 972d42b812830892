"""silu_and_mul / gelu_and_mul on the valid rows of the split-K stage1 output.

aiter (docs/moe-contracts.md §1.1): `valid_out = tmp_out[:T*topk]`, gate is columns [0, N), up is
[N, 2N); the model-dtype result goes to `out (T, topk, N)`.
"""

from __future__ import annotations

import torch

from graph_harness.kernels._triton import INTERPRET, cast_rne, store_mantissa, tl, triton
from graph_harness.kernels.contracts import Activation

_BLOCK = 1024


@triton.jit
def act_fn(gate, GELU: tl.constexpr):
    """Exact (erf) GELU, or SiLU through exp(-|x|), which never overflows."""
    if GELU:
        return 0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476))
    e = tl.exp(-tl.abs(gate))
    return gate * tl.where(gate >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _act_and_mul_kernel(x_ptr, out_ptr, n, stride_x, stride_out, BLOCK: tl.constexpr, GELU: tl.constexpr,
                        MANT: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + n + cols, mask=mask, other=0.0).to(tl.float32)
    act = act_fn(gate, GELU)
    tl.store(out_ptr + row * stride_out + cols, cast_rne(act * up, out_ptr.dtype.element_ty, MANT),
             mask=mask)


def act_and_mul(out, x, activation: Activation):
    """`x (rows, 2N)` any float dtype -> `out (rows, N)` (a view of `(T, topk, N)`), in place."""
    rows, width = x.shape
    n = width // 2
    out2d = out.view(-1, n)
    if rows:
        block = min(_BLOCK, triton.next_power_of_2(n)) if not INTERPRET else triton.next_power_of_2(n)
        _act_and_mul_kernel[(rows, triton.cdiv(n, block))](
            x, out2d, n, x.stride(0), out2d.stride(0), BLOCK=block, GELU=activation is Activation.GELU,
            MANT=store_mantissa(out.dtype))
    return out


def act_and_mul_ref(x, activation: Activation):
    """fp32 reference: act(gate) * up."""
    gate, up = x.float().chunk(2, dim=-1)
    act = torch.nn.functional.gelu(gate) if activation is Activation.GELU else torch.nn.functional.silu(gate)
    return act * up
