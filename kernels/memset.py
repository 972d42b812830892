"""Raw memset by pointer and byte count, the way CK zeroes the split-K output.

CK calls `hipMemsetAsync(p_c_grid, 0, bytes, stream)` on a bare pointer (docs/moe-contracts.md §3.2):
nothing checks the bytes against the tensor. This module does the same: on a GPU a real
`cudaMemsetAsync` / `hipMemsetAsync` on the current stream (so a captured graph holds a memset node),
on CPU a zero fill of a tensor made over the address. Never a bounds-checked tensor op.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch

from graph_harness.core import runtime


def raw_memset(tensor: torch.Tensor, nbytes: int) -> None:
    """Zero `nbytes` bytes from `tensor.data_ptr()`, unchecked against the tensor's size."""
    if nbytes <= 0:
        return
    if tensor.is_cuda:
        # CK discards the return code (hipGetErrorString); the binding raises it, named, so the harness
        # can attribute it.
        runtime.current().memset_async(tensor.data_ptr(), 0, nbytes, torch.cuda.current_stream().cuda_stream)
    else:
        # A tensor over the raw bytes, not `tensor`: a torch op, so that a CPU capture records it as a memset node.
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(tensor.data_ptr()))
        torch.from_numpy(raw).zero_()
