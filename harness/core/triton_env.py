"""Import triton the one way: interpreted on CPU tensors when no GPU is visible.

`TRITON_INTERPRET` is read when a kernel is defined (`@triton.jit`), so every module of the harness
imports triton through here, and `graph_harness/__init__.py` sets it even earlier for the user's own
kernels. A value set by the user is left alone.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

__all__ = ["INTERPRET", "device", "tl", "triton"]


def device() -> torch.device:
    """Where kernels run: the current GPU, or the CPU under the interpreter."""
    return torch.device("cpu") if INTERPRET else torch.device("cuda", torch.cuda.current_device())
