"""Import triton the one way: interpreted on CPU tensors when no GPU is visible.

`TRITON_INTERPRET` is read when triton is first imported, so every kernel module imports
triton through here. A value set by the user is left alone.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

__all__ = ["INTERPRET", "tl", "triton"]


def device() -> torch.device:
    """Where the kernels run: the current GPU, or the CPU under the interpreter."""
    return torch.device("cpu") if INTERPRET else torch.device("cuda", torch.cuda.current_device())

# The interpreter casts fp32 to bf16 and fp8 by truncation (triton 3.9; compiled code rounds to
# nearest even): up to 1 ulp, 12.5% for e4m3. Kernels round first where this says so.
_MANTISSA_BITS = {torch.bfloat16: 7, torch.float8_e4m3fn: 3}


def store_mantissa(dtype: torch.dtype) -> int:
    """Mantissa bits to round to before a store of `dtype`, 0 where the cast already rounds."""
    return _MANTISSA_BITS.get(dtype, 0) if INTERPRET else 0


@triton.jit
def round_mantissa(x, MANT: tl.constexpr):
    """Round fp32 `x` to nearest even at MANT mantissa bits, so that a truncating cast is exact."""
    if MANT > 0:
        drop: tl.constexpr = 23 - MANT
        bits = x.to(tl.uint32, bitcast=True)
        keep: tl.constexpr = 0xFFFFFFFF - ((1 << drop) - 1)
        bits = bits + ((1 << (drop - 1)) - 1) + ((bits >> drop) & 1)
        # NaN keeps its bits: a NaN payload is the poison the guards follow (S12).
        x = tl.where(x != x, x, (bits & keep).to(tl.float32, bitcast=True))
    return x
