"""Kernel-side helpers for running the same Triton kernels compiled on a GPU and interpreted on CPU.

triton itself is imported through `graph_harness.core.triton_env`, which decides interpretation.
"""

import torch

from graph_harness.core.triton_env import INTERPRET, device, tl, triton

__all__ = ["INTERPRET", "cast_rne", "device", "fp8_operand", "fp8_table", "store_mantissa", "tl", "triton"]

_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)
_FP8_TABLES: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


# The interpreter casts fp32 to bf16 and fp8 by truncation (triton 3.9; compiled code rounds to
# nearest even): up to 1 ulp, 12.5% for e4m3. It also garbles fp32 subnormals cast to bf16.
# Kernels store through `cast_rne`, which is exact in both.
_MANTISSA_BITS = {torch.bfloat16: 7, torch.float8_e4m3fn: 3}


def store_mantissa(dtype: torch.dtype) -> int:
    """Mantissa bits `cast_rne` rounds to for a store of `dtype`; 0 where the cast already rounds."""
    return _MANTISSA_BITS.get(dtype, 0) if INTERPRET else 0


@triton.jit
def cast_rne(x, DTYPE: tl.constexpr, MANT: tl.constexpr, MIN_EXP: tl.constexpr = -126):
    """fp32 `x` cast to DTYPE, rounded to nearest even, as compiled code does.

    MANT is `store_mantissa(DTYPE)`: 0 leaves the cast to triton. Below 2**MIN_EXP, the target's
    smallest normal (-6 for e4m3, fp32's -126 for bf16), the step is 2**(MIN_EXP - MANT).
    """
    if MANT == 0:
        y = x.to(DTYPE)
    else:
        drop: tl.constexpr = 23 - MANT
        bits = x.to(tl.uint32, bitcast=True)
        keep: tl.constexpr = 0xFFFFFFFF - ((1 << drop) - 1)
        rounded = (bits + ((1 << (drop - 1)) - 1) + ((bits >> drop) & 1)) & keep
        if MIN_EXP > -126:
            # fp32 addition rounds to nearest even, so adding 1.5 * 2**23 rounds to an integer.
            step: tl.constexpr = 2.0 ** (MIN_EXP - MANT)
            magic: tl.constexpr = 12582912.0
            tiny = tl.abs(x) < 2.0 ** MIN_EXP
            magnitude = ((tl.where(tiny, tl.abs(x), 0.0) / step + magic) - magic) * step
            subnormal = magnitude.to(tl.uint32, bitcast=True) | (bits & 0x80000000)
            rounded = tl.where(tiny, subnormal, rounded)
        if MANT == 7:
            # bf16 is the top half of fp32: take the bits, not the interpreter's cast. NaN keeps
            # its payload, the poison the guards follow (S12).
            y = (tl.where(x != x, bits, rounded) >> 16).to(tl.uint16).to(DTYPE, bitcast=True)
        else:
            # e4m3fn has one NaN, all ones: three mantissa ones and nothing below to round up.
            nan = (bits & 0x80000000) | 0x7FF00000
            y = tl.where(x != x, nan, rounded).to(tl.float32, bitcast=True).to(DTYPE)
    return y


def fp8_operand(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(`t` as the kernel should take it, whether it comes as bytes to widen through `fp8_table`).

    The interpreter converts fp8 to fp32 with numpy bit arithmetic: 90% of a DeepSeek-V3 stage1
    run on CPU. A 256-entry table gather gives the same fp32 values (each e4m3 value is exact).
    """
    if INTERPRET and t.dtype in _FP8:
        return t.view(torch.uint8), True
    return t, False


def fp8_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The fp32 value of each of the 256 bit patterns of an fp8 dtype."""
    key = (dtype, device)
    if key not in _FP8_TABLES:
        _FP8_TABLES[key] = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).float().to(device)
    return _FP8_TABLES[key]

