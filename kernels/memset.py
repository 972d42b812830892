"""Raw memset by pointer and byte count, the way CK zeroes the split-K output.

CK calls `hipMemsetAsync(p_c_grid, 0, bytes, stream)` on a bare pointer (docs/moe-contracts.md §3.2):
nothing checks the bytes against the tensor. This module does the same: on CUDA a real
`cudaMemsetAsync` on the current stream (so a captured graph holds a memset node), on CPU a
libc memset of the address. Never a bounds-checked tensor op.
"""

from __future__ import annotations

import ctypes
import functools

import torch


@functools.cache
def _cudart() -> ctypes.CDLL:
    """The libcudart torch already loaded (cuda-bindings is optional)."""
    torch.cuda.init()
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "libcudart.so" in line:
                lib = ctypes.CDLL(line.split()[-1])
                break
        else:
            lib = ctypes.CDLL("libcudart.so")
    lib.cudaMemsetAsync.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p]
    lib.cudaMemsetAsync.restype = ctypes.c_int
    lib.cudaGetErrorName.restype = ctypes.c_char_p
    return lib


def _cuda_memset(ptr: int, nbytes: int) -> None:
    stream = torch.cuda.current_stream().cuda_stream
    try:
        from cuda.bindings import runtime
    except ImportError:
        lib = _cudart()
        rc = lib.cudaMemsetAsync(ctypes.c_void_p(ptr), 0, nbytes, ctypes.c_void_p(stream))
        name = lib.cudaGetErrorName(rc).decode()
    else:
        (err,) = runtime.cudaMemsetAsync(ptr, 0, nbytes, stream)
        rc, name = int(err), str(err).rsplit(".", 1)[-1].split(":")[0]
    if rc != 0:
        # CK discards this code (hipGetErrorString); we raise so the harness can attribute it.
        raise RuntimeError(f"cudaMemsetAsync({ptr:#x}, 0, {nbytes}) failed: {name}")


def raw_memset(tensor: torch.Tensor, nbytes: int) -> None:
    """Zero `nbytes` bytes from `tensor.data_ptr()`, unchecked against the tensor's size."""
    if nbytes <= 0:
        return
    if tensor.is_cuda:
        _cuda_memset(tensor.data_ptr(), nbytes)
    else:
        ctypes.memset(tensor.data_ptr(), 0, nbytes)
