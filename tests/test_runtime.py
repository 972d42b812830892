"""The runtime layer on CUDA: both bindings (cuda-bindings and libcudart through ctypes) read a captured
graph's memset and memcpy nodes as the same written ranges, byte for byte."""

from __future__ import annotations

import pytest
import torch

from graph_harness.core import runtime
from graph_harness.core.capture import graph_writes
from graph_harness.kernels.memset import raw_memset


@pytest.mark.gpu
@pytest.mark.parametrize("binding", ["cuda-bindings", "libcudart"])
def test_a_captured_graphs_writes_read_the_same_through_either_binding(binding: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    torch.cuda.init()
    if binding == "cuda-bindings":
        pytest.importorskip("cuda.bindings")
        rt: runtime.Runtime = runtime.CudaBindings()
    else:
        rt = runtime.cudart_runtime()
    buf = torch.full((1 << 20,), 7, dtype=torch.uint8, device="cuda")
    src = torch.randint(0, 255, (4096,), dtype=torch.uint8, device="cuda")
    host = torch.empty(4096, dtype=torch.uint8, pin_memory=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture, as torch asks
        buf[5000:9096].copy_(src)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph(keep_graph=True)
    with torch.cuda.graph(graph):
        raw_memset(buf[100:], 3000)
        buf[5000:9096].copy_(src)
        host.copy_(buf[:4096], non_blocking=True)  # lands in host memory: not a device write
    monkeypatch.setattr(runtime, "current", lambda: rt)
    base = buf.data_ptr()
    assert sorted(graph_writes(graph)) == [(base + 100, 3000, "memset"), (base + 5000, 4096, "memcpy")]
