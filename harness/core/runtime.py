"""What the harness asks of the GPU runtime, bound for CUDA and for HIP.

Four things, no more: a raw async memset by pointer on a stream; a captured graph's nodes with their
types; a memset or memcpy node's parameters; the name of a return code. `current()` picks the binding
torch was built for (HIP where `torch.version.hip` is set). Each binding hands back vendor-neutral
`MemsetNode` / `MemcpyNode` records, so the code that turns them into written byte ranges
(`capture.graph_writes`) exists once.

- CUDA: cuda-bindings where installed (driver API for the graph, runtime API for the memset), else
  libcudart through ctypes: torch's own copy, found in the process's maps.
- HIP: libamdhip64 through ctypes, torch's copy where it is loaded. `hipMemsetParams` orders its fields
  unlike `cudaMemsetParams` (dst, elementSize, height, pitch, value, width against dst, pitch, value,
  elementSize, width, height), so each vendor declares its own structures; tests/test_hip.py compares
  every size and offset with the headers. HIP's graph node type numbers also moved: HIP 5.2
  (Debian's libamdhip64-dev, hip_runtime_api.h:1106) counts kernel=1, memcpy=2, memset=3, Memcpy1D=9,
  where ROCm 5.5's header (as in github.com/monorimet/rocm-5.5-libs) and later count as CUDA does,
  kernel=0, memcpy=1, memset=2. `hipRuntimeGetVersion` picks the table: HIP 5.2's below 5.5 (5.3 and
  5.4 are not checked; torch's hipGraph support needs 5.3, ROCm/pytorch#1039).

Capture itself goes through torch on both vendors (`torch.cuda.CUDAGraph`, `torch.cuda.graph`; a ROCm
torch hipifies them onto hipStreamBeginCapture and friends, ROCm/pytorch#1039), so
`capture.CudaGraphBackend` is the same code. What differs on ROCm, as far as read:
- `capture_error_mode` names a `cudaStreamCaptureMode` (pytorch/pytorch#107407); HIP's
  `hipStreamCaptureMode` has the same three modes in the same order (global 0, thread_local 1, relaxed 2:
  hip_runtime_api.h:1163). Before ROCm 7.14 HIP did not report capture-unsafe calls during capture and
  torch checks `hipStreamCaptureStatus` itself to reject them (pytorch/pytorch#187110, for #180232);
  ROCm 7.0 began refusing some calls during capture as CUDA does, "operation not permitted when stream is
  capturing" (ROCm/rccl#2022). So an error mode may catch less, or elsewhere, than on CUDA.
- `CUDAGraph(keep_graph=True)` then `raw_cuda_graph()` (torch docs, torch.cuda.CUDAGraph) is the handle
  these bindings read: a `hipGraph_t` on ROCm, a `cudaGraph_t` on CUDA, both as an int.
- pools: `graph_pool_handle()` and `pool=` are the same API; sharing one pool across captures saved less
  memory on ROCm than on CUDA, the hipGraph implementation with the HSA fragment allocator
  (ROCm/pytorch#2286), and where the GPU lacks the VM API (MI300X, ROCm 7.0) the graph's memory pool
  path need not keep addresses stable across captures (ROCm/clr#280, open).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Any, Literal, Protocol

NodeKind = Literal["memset", "memcpy", "other"]


@dataclass(frozen=True)
class MemsetNode:
    """A memset node: `height` rows of `width` elements of `element_size` bytes, rows `pitch` bytes apart."""

    dst: int
    element_size: int
    width: int
    height: int
    pitch: int


@dataclass(frozen=True)
class MemcpyNode:
    """A memcpy node's destination: `height * depth` rows of `width` bytes, `pitch` apart (0: packed), from byte
    `x` of row `y`; `to_device` unless the copy is known to land in host memory."""

    dst: int
    x: int
    y: int
    width: int
    height: int
    depth: int
    pitch: int
    to_device: bool


class GpuError(RuntimeError):
    """A runtime call failed; `name` is the runtime's own name for the code (`hipErrorInvalidValue`)."""

    def __init__(self, call: str, name: str) -> None:
        super().__init__(f"{call} failed: {name}")
        self.call = call
        self.name = name


class Runtime(Protocol):
    """What the harness calls on the GPU runtime; every call raises `GpuError` on a failing code."""

    name: str  # "cuda" or "hip"

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: int) -> None: ...

    def graph_nodes(self, graph: int) -> list[tuple[int, NodeKind]]: ...

    def memset_params(self, node: int) -> MemsetNode: ...

    def memcpy_params(self, node: int) -> MemcpyNode: ...

    def error_name(self, rc: int) -> str: ...


# -- structures, each as its vendor's header declares it ------------------------------------------------

class _CudaPos(ctypes.Structure):
    _fields_ = [("x", ctypes.c_size_t), ("y", ctypes.c_size_t), ("z", ctypes.c_size_t)]


class _CudaPitchedPtr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("pitch", ctypes.c_size_t), ("xsize", ctypes.c_size_t),
                ("ysize", ctypes.c_size_t)]


class _CudaExtent(ctypes.Structure):
    _fields_ = [("width", ctypes.c_size_t), ("height", ctypes.c_size_t), ("depth", ctypes.c_size_t)]


class CudaMemsetParams(ctypes.Structure):
    """`struct cudaMemsetParams` (CUDA driver_types.h)."""

    _fields_ = [("dst", ctypes.c_void_p), ("pitch", ctypes.c_size_t), ("value", ctypes.c_uint),
                ("elementSize", ctypes.c_uint), ("width", ctypes.c_size_t), ("height", ctypes.c_size_t)]


class CudaMemcpy3DParms(ctypes.Structure):
    """`struct cudaMemcpy3DParms` (CUDA driver_types.h); `kind` is the `cudaMemcpyKind` enum, an int."""

    _fields_ = [("srcArray", ctypes.c_void_p), ("srcPos", _CudaPos), ("srcPtr", _CudaPitchedPtr),
                ("dstArray", ctypes.c_void_p), ("dstPos", _CudaPos), ("dstPtr", _CudaPitchedPtr),
                ("extent", _CudaExtent), ("kind", ctypes.c_int)]


class _HipPos(ctypes.Structure):
    _fields_ = [("x", ctypes.c_size_t), ("y", ctypes.c_size_t), ("z", ctypes.c_size_t)]


class _HipPitchedPtr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("pitch", ctypes.c_size_t), ("xsize", ctypes.c_size_t),
                ("ysize", ctypes.c_size_t)]


class _HipExtent(ctypes.Structure):
    _fields_ = [("width", ctypes.c_size_t), ("height", ctypes.c_size_t), ("depth", ctypes.c_size_t)]


class HipMemsetParams(ctypes.Structure):
    """`hipMemsetParams` (hip_runtime_api.h): the same fields as CUDA's, in another order."""

    _fields_ = [("dst", ctypes.c_void_p), ("elementSize", ctypes.c_uint), ("height", ctypes.c_size_t),
                ("pitch", ctypes.c_size_t), ("value", ctypes.c_uint), ("width", ctypes.c_size_t)]


class HipMemcpy3DParms(ctypes.Structure):
    """`hipMemcpy3DParms` (hip/driver_types.h), with hipPos, hipPitchedPtr, hipExtent and a `hipMemcpyKind`."""

    _fields_ = [("srcArray", ctypes.c_void_p), ("srcPos", _HipPos), ("srcPtr", _HipPitchedPtr),
                ("dstArray", ctypes.c_void_p), ("dstPos", _HipPos), ("dstPtr", _HipPitchedPtr),
                ("extent", _HipExtent), ("kind", ctypes.c_int)]


# cudaMemcpyKind and hipMemcpyKind agree: HostToHost 0, DeviceToHost 2 land in host memory; HostToDevice 1,
# DeviceToDevice 3 in device memory; Default 4 follows the addresses (UVA), so it counts as device here:
# the audit only attributes destinations inside the guarded device slab.
_TO_HOST = (0, 2)

# Graph node type numbers -> kind. CUDA's cudaGraphNodeType (driver_types.h) and HIP's from 5.5 on;
# HIP 5.2's own (hip_runtime_api.h:1106), where a captured 1D copy may be a Memcpy1D node (9).
_CUDA_NODES: dict[int, NodeKind] = {1: "memcpy", 2: "memset"}
_HIP5_NODES: dict[int, NodeKind] = {2: "memcpy", 3: "memset", 9: "memcpy"}


def _library(stem: str, names: tuple[str, ...]) -> ctypes.CDLL:
    """The copy of library `stem` this process already loaded (torch's), else the first of `names` that loads."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if f"/{stem}.so" in path:
                return ctypes.CDLL(path)
    for name in names[:-1]:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return ctypes.CDLL(names[-1])


class CtypesRuntime:
    """A runtime API through ctypes: CUDA's and HIP's share every signature here, only the prefix, the
    structures and the node type numbers differ."""

    def __init__(self, name: str, lib: ctypes.CDLL, prefix: str, memset_struct: type[ctypes.Structure],
                 memcpy_struct: type[ctypes.Structure], node_kinds: dict[int, NodeKind]) -> None:
        self.name = name
        self.lib = lib
        self.prefix = prefix
        self.memset_struct = memset_struct
        self.memcpy_struct = memcpy_struct
        self.node_kinds = node_kinds
        vp, p = ctypes.c_void_p, ctypes.POINTER
        signatures: dict[str, list[Any]] = {
            "MemsetAsync": [vp, ctypes.c_int, ctypes.c_size_t, vp],
            "GraphGetNodes": [vp, p(vp), p(ctypes.c_size_t)],
            "GraphNodeGetType": [vp, p(ctypes.c_int)],
            "GraphMemsetNodeGetParams": [vp, p(memset_struct)],
            "GraphMemcpyNodeGetParams": [vp, p(memcpy_struct)],
        }
        for suffix, argtypes in signatures.items():
            fn = getattr(lib, prefix + suffix)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
        get_name = getattr(lib, prefix + "GetErrorName")
        get_name.argtypes, get_name.restype = [ctypes.c_int], ctypes.c_char_p

    @property
    def symbols(self) -> list[str]:
        """Every symbol this binding calls."""
        calls = ("MemsetAsync", "GraphGetNodes", "GraphNodeGetType", "GraphMemsetNodeGetParams",
                 "GraphMemcpyNodeGetParams", "GetErrorName")
        return [self.prefix + call for call in calls]

    def _call(self, suffix: str, what: str, *args: Any) -> None:
        rc = getattr(self.lib, self.prefix + suffix)(*args)
        if rc != 0:
            raise GpuError(f"{self.prefix}{suffix}({what})", self.error_name(rc))

    def error_name(self, rc: int) -> str:
        """The runtime's name for return code `rc`."""
        name: bytes | None = getattr(self.lib, self.prefix + "GetErrorName")(rc)
        return name.decode() if name else f"error {rc}"

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: int) -> None:
        """Set `nbytes` bytes from `ptr` to `value` on `stream`, unchecked."""
        self._call("MemsetAsync", f"{ptr:#x}, {value}, {nbytes}", ctypes.c_void_p(ptr), value, nbytes,
                   ctypes.c_void_p(stream))

    def graph_nodes(self, graph: int) -> list[tuple[int, NodeKind]]:
        """Every node of graph handle `graph`, with its kind."""
        count = ctypes.c_size_t(0)
        self._call("GraphGetNodes", f"{graph:#x}", ctypes.c_void_p(graph), None, ctypes.byref(count))
        nodes = (ctypes.c_void_p * count.value)()
        self._call("GraphGetNodes", f"{graph:#x}", ctypes.c_void_p(graph), nodes, ctypes.byref(count))
        out: list[tuple[int, NodeKind]] = []
        for node in nodes[:count.value]:
            kind = ctypes.c_int()
            self._call("GraphNodeGetType", f"{node or 0:#x}", ctypes.c_void_p(node), ctypes.byref(kind))
            out.append((node or 0, self.node_kinds.get(kind.value, "other")))
        return out

    def memset_params(self, node: int) -> MemsetNode:
        """The parameters of memset node `node`."""
        p: Any = self.memset_struct()
        self._call("GraphMemsetNodeGetParams", f"{node:#x}", ctypes.c_void_p(node), ctypes.byref(p))
        return MemsetNode(p.dst or 0, p.elementSize, p.width, p.height, p.pitch)

    def memcpy_params(self, node: int) -> MemcpyNode:
        """The destination of memcpy node `node`."""
        p: Any = self.memcpy_struct()
        self._call("GraphMemcpyNodeGetParams", f"{node:#x}", ctypes.c_void_p(node), ctypes.byref(p))
        return MemcpyNode(p.dstPtr.ptr or 0, p.dstPos.x, p.dstPos.y, p.extent.width, p.extent.height, p.extent.depth,
                          p.dstPtr.pitch, p.kind not in _TO_HOST)


class CudaBindings:
    """CUDA through cuda-bindings: the driver API for graphs (its CUDA_MEMCPY3D names the destination's
    memory type outright), the runtime API for the memset, as before this module existed."""

    name = "cuda"

    def __init__(self) -> None:
        from cuda.bindings import driver, runtime

        self.cu: Any = driver
        self.rt: Any = runtime

    @staticmethod
    def _name(err: Any) -> str:
        return str(err).rsplit(".", 1)[-1].split(":")[0]

    def _check(self, err: Any, call: str) -> None:
        if int(err) != 0:
            raise GpuError(call, self._name(err))

    def error_name(self, rc: int) -> str:
        """The runtime's name for return code `rc`."""
        return self._name(self.rt.cudaError_t(rc))

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: int) -> None:
        """Set `nbytes` bytes from `ptr` to `value` on `stream`, unchecked."""
        (err,) = self.rt.cudaMemsetAsync(ptr, value, nbytes, stream)
        self._check(err, f"cudaMemsetAsync({ptr:#x}, {value}, {nbytes})")

    def graph_nodes(self, graph: int) -> list[tuple[int, NodeKind]]:
        """Every node of graph handle `graph`, with its kind."""
        cu = self.cu
        handle = cu.CUgraph(graph)
        err, _, count = cu.cuGraphGetNodes(handle, 0)
        self._check(err, "cuGraphGetNodes")
        err, nodes, count = cu.cuGraphGetNodes(handle, count)
        self._check(err, "cuGraphGetNodes")
        kinds: dict[Any, NodeKind] = {cu.CUgraphNodeType.CU_GRAPH_NODE_TYPE_MEMSET: "memset",
                                      cu.CUgraphNodeType.CU_GRAPH_NODE_TYPE_MEMCPY: "memcpy"}
        out: list[tuple[int, NodeKind]] = []
        for node in nodes[:count]:
            err, kind = cu.cuGraphNodeGetType(node)
            self._check(err, "cuGraphNodeGetType")
            out.append((int(node), kinds.get(kind, "other")))
        return out

    def memset_params(self, node: int) -> MemsetNode:
        """The parameters of memset node `node`."""
        err, p = self.cu.cuGraphMemsetNodeGetParams(self.cu.CUgraphNode(node))
        self._check(err, "cuGraphMemsetNodeGetParams")
        return MemsetNode(int(p.dst), int(p.elementSize), int(p.width), int(p.height), int(p.pitch))

    def memcpy_params(self, node: int) -> MemcpyNode:
        """The destination of memcpy node `node`."""
        err, p = self.cu.cuGraphMemcpyNodeGetParams(self.cu.CUgraphNode(node))
        self._check(err, "cuGraphMemcpyNodeGetParams")
        return MemcpyNode(int(p.dstDevice), int(p.dstXInBytes), int(p.dstY), int(p.WidthInBytes), int(p.Height),
                          int(p.Depth), int(p.dstPitch), p.dstMemoryType == self.cu.CUmemorytype.CU_MEMORYTYPE_DEVICE)


def hip_library() -> ctypes.CDLL:
    """libamdhip64: torch's copy on ROCm, else the system's (ROCm 6's soname, then 5's)."""
    return _library("libamdhip64", ("libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"))


def hip_runtime(lib: ctypes.CDLL | None = None) -> CtypesRuntime:
    """The HIP binding over `lib` (default `hip_library()`), its node table chosen by the library's version."""
    lib = lib or hip_library()
    version = ctypes.c_int(0)
    lib.hipRuntimeGetVersion.argtypes, lib.hipRuntimeGetVersion.restype = [ctypes.POINTER(ctypes.c_int)], ctypes.c_int
    lib.hipRuntimeGetVersion(ctypes.byref(version))
    # HIP_VERSION is major * 10_000_000 + minor * 100_000 + patch (5.2.21153 reads 50221153).
    nodes = _CUDA_NODES if version.value >= 50_500_000 else _HIP5_NODES
    return CtypesRuntime("hip", lib, "hip", HipMemsetParams, HipMemcpy3DParms, nodes)


def cudart_runtime(lib: ctypes.CDLL | None = None) -> CtypesRuntime:
    """The CUDA binding over libcudart through ctypes (default: torch's copy), for where cuda-bindings is not."""
    return CtypesRuntime("cuda", lib or _library("libcudart", ("libcudart.so",)), "cuda", CudaMemsetParams,
                         CudaMemcpy3DParms, _CUDA_NODES)


@functools.cache
def current() -> Runtime:
    """The runtime torch was built for: HIP where `torch.version.hip` is set, else CUDA (cuda-bindings preferred)."""
    import torch

    if torch.version.hip is not None:
        return hip_runtime()
    torch.cuda.init()  # type: ignore[no-untyped-call]  # so that torch's libcudart is in the maps before ctypes looks for one
    try:
        return CudaBindings()
    except ImportError:
        return cudart_runtime()
