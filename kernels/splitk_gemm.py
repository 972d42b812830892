"""A split-K GEMM with aiter's host-side contracts for the state a graph carries: the semaphore that gates the
split-K reduction, the workspace registry, and a workspace that grows.

`y = x @ w.T` (x: (M, K), w: (N, K), fp32 accumulate): program (tile, split) sums its K slice into an fp32
partial, then takes a ticket on its tile's counter; the last to arrive adds the partials into y (zeros where no
program reduces). The kernel leaves the count where the last program left it: only a zero-fill before the
launch re-arms it, as the ASM a16w16 kernels need their counter to be 0 when a launch starts (aiter #4916,
#4920). The contracts:

- `semaphore`
  - `zeroed_once`: zeroed where it is allocated, once, and cached (aiter before #4494). A graph records the
    launch, not that zero-fill: replay starts from a dirty counter.
  - `per_launch`: a slot of a pool allocated before capture, zero-filled by every call, which a graph records
    (aiter #4916).
- `arrival`
  - `wait`: every program first waits for the counter to be below the split count (the entry condition):
    with a dirty counter the waves spin for ever (aiter #4494: 132 waves waiting on a counter holding 2).
  - `ticket`: no wait; only the program whose ticket is the last split reduces. With a dirty counter none is,
    and the output is left with whatever it held (aiter #5393's `splitk_reduce_epilogue`).
- `workspace`
  - `per_device`: the partials' workspace is registered once per device.
  - `per_stream`: registered per stream, created when eager and looked up under capture, which runs on a
    stream of its own (vLLM #53818: "splitk workspace not initialized for the current CUDA stream").
  - `grown`: one shared workspace grown with `resize_()` when the call needs more; the first eager call after a
    capture (a prefill between decode replays) asks 256 B more than it holds, after the graphs captured its
    address (flashinfer #4553: a cuDNN plan asked 33,554,688 B of the 33,554,432; #4398, #4827).
  - `retired`: grown by a new buffer, the old one kept alive for the graphs that hold it (flashinfer #4399).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from graph_harness.kernels._triton import tl, triton

BLOCK_N = 32
SPLITS = 4
_WORKSPACE_GROWTH = 256  # bytes a plan asks past what the workspace holds (flashinfer #4553's log)


@triton.jit
def _splitk_kernel(x_ptr, w_ptr, partial_ptr, y_ptr, count_ptr, M, N, K, SPLITS: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, WAIT: tl.constexpr):
    tile = tl.program_id(0)
    split = tl.program_id(1)
    if WAIT:
        while tl.atomic_add(count_ptr + tile, 0) >= SPLITS:
            pass
    rows = tl.arange(0, BLOCK_M)
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = split * BLOCK_K + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=(rows[:, None] < M) & (ks[None, :] < K), other=0.0)
    w = tl.load(w_ptr + cols[:, None] * K + ks[None, :], mask=(cols[:, None] < N) & (ks[None, :] < K), other=0.0)
    acc = tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))  # the interpreter's bf16 dot is not to be trusted
    at = rows[:, None] * N + cols[None, :]
    inside = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(partial_ptr + split * M * N + at, acc, mask=inside)
    ticket = tl.atomic_add(count_ptr + tile, 1)
    if ticket == SPLITS - 1:
        total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for s in range(SPLITS):
            total += tl.load(partial_ptr + s * M * N + at, mask=inside, other=0.0)
        tl.store(y_ptr + at, total.to(y_ptr.dtype.element_ty), mask=inside)


class SplitKGemm:
    """The wrapper, holding what aiter's holds across calls: the semaphore and the workspace."""

    def __init__(self, semaphore: str = "per_launch", arrival: str = "wait", workspace: str = "per_device") -> None:
        for name, value, allowed in (("semaphore", semaphore, ("zeroed_once", "per_launch")),
                                     ("arrival", arrival, ("wait", "ticket")),
                                     ("workspace", workspace, ("per_device", "per_stream", "grown", "retired"))):
            if value not in allowed:
                raise ValueError(f"{name}: got {value!r}; allowed: {', '.join(allowed)}")
        self.semaphore, self.arrival, self.workspace = semaphore, arrival, workspace
        self.counts: torch.Tensor | None = None
        self.registry: dict[Any, torch.Tensor] = {}
        self.shared: torch.Tensor | None = None
        self.retired: list[torch.Tensor] = []
        self.captured = self.grown_once = False

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x, w = inputs["x"], inputs["w"]
        m, k = x.shape
        n = w.shape[0]
        tiles = triton.cdiv(n, BLOCK_N)
        counts = self._counts(tiles, x.device)
        partial = self._workspace(SPLITS * m * n, x)
        y = torch.zeros(m, n, dtype=x.dtype, device=x.device)
        _splitk_kernel[(tiles, SPLITS)](x, w, partial, y, counts, m, n, k, SPLITS=SPLITS,
                                        BLOCK_M=max(16, triton.next_power_of_2(m)), BLOCK_N=BLOCK_N,
                                        BLOCK_K=triton.next_power_of_2(triton.cdiv(k, SPLITS)),
                                        WAIT=self.arrival == "wait")
        return y

    def _counts(self, tiles: int, device: torch.device) -> torch.Tensor:
        if self.counts is None or self.counts.numel() < tiles:
            self.counts = torch.zeros(tiles, dtype=torch.int32, device=device)  # zeroed where allocated
        if self.semaphore == "per_launch":
            self.counts.zero_()  # a memset node in the graph: every replay starts from 0
        return self.counts

    def _workspace(self, floats: int, x: torch.Tensor) -> torch.Tensor:
        if self.workspace in ("per_device", "per_stream"):
            key = _stream_key(x.device) if self.workspace == "per_stream" else x.device
            ws = self.registry.get(key)
            if ws is None or ws.numel() < floats:
                if torch.cuda.is_current_stream_capturing():
                    raise RuntimeError("splitk workspace not initialized for the current CUDA stream")
                ws = self.registry[key] = torch.empty(floats, dtype=torch.float32, device=x.device)
            return ws
        if self.shared is None:
            self.shared = torch.empty(floats, dtype=torch.float32, device=x.device)
        need = floats
        if torch.cuda.is_current_stream_capturing():
            self.captured = True
        elif self.captured and not self.grown_once:  # the first eager call after a capture: a prefill's plan
            self.grown_once = True
            need = max(need, self.shared.numel() + _WORKSPACE_GROWTH // 4)
        if self.shared.numel() < need:
            if self.workspace == "retired":
                self.retired.append(self.shared)
                self.shared = torch.empty(need, dtype=torch.float32, device=x.device)
            else:
                self.shared.resize_(need)
        return self.shared


def _stream_key(device: torch.device) -> Any:
    """The stream a call runs on: CUDA's, or on CPU, where there are none, the capture's own (as
    `torch.cuda.graph` without `stream=` captures on a stream of its own) and the default one."""
    if device.type == "cuda":
        return torch.cuda.current_stream(device).cuda_stream
    return "capture" if torch.cuda.is_current_stream_capturing() else "default"


def inputs_for(k: int, n: int, dtype: torch.dtype) -> Callable[[int, int], dict[str, torch.Tensor]]:
    """Fresh (x, w) for M = size rows, on the kernels' device."""
    from graph_harness.core.triton_env import device

    def make(size: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {"x": torch.randn(size, k, generator=g).to(device(), dtype),
                "w": (torch.randn(n, k, generator=g) / k ** 0.5).to(device(), dtype)}

    return make


def reference(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return inputs["x"].double() @ inputs["w"].double().T


def case(semaphore: str = "per_launch", arrival: str = "wait", workspace: str = "per_device", k: int = 256,
         n: int = 64, dtype: str = "bf16") -> tuple[Callable[..., torch.Tensor], Callable[..., Any], Any]:
    """An op scenario's factory: (op, inputs, reference) for one contract."""
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    return SplitKGemm(semaphore, arrival, workspace), inputs_for(k, n, torch_dtype), reference
