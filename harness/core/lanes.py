"""Exact access checking under the Triton interpreter: every lane of every load, store and atomic of every
launch, masked-off lanes excluded, against the view of the tensor argument its pointer was made from.

Guards see a write only where it changes a red-zone byte, and a read only when its value reaches the
output. The interpreter runs each access as a numpy array of addresses, so here each lane is checked
instead: a read whose value a store mask throws away, an overrun of one view that stays inside its parent
workspace, and a write past the far end of any guard are all seen, to the byte.

Provenance. When the interpreter turns a tensor argument into a pointer, the pointer is tagged with the
argument, and the tag follows it through pointer arithmetic and reshaping (`_CARRY`). A lane must lie
inside the view of the argument its pointer came from: an overrun of view A into view B, its neighbour
in one workspace, is A's overrun although those bytes are B's. A pointer whose provenance is lost (a
select between two arguments, an integer cast to a pointer) must lie inside some argument's view.

On CPU the interpreter's "host copies" of the arguments are the arguments themselves (same storage), so
the addresses it dereferences are the harness's own: a lane is attributed to guarded buffers by address.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from graph_harness.core.guard import Access, Guards
from graph_harness.core.launches import Launch, kernel_name, observing, own

_TAG = "graph_harness.arg"
# Builder calls whose pointer result is made from a pointer operand: the result keeps the operand's argument.
_CARRY = ("create_addptr", "create_splat", "create_broadcast", "create_expand_dims", "create_reshape",
          "create_view", "create_trans", "create_permute", "create_bitcast", "create_select", "create_cat",
          "create_join", "create_unsplat", "create_make_block_ptr", "create_advance",
          "create_make_tensor_descriptor")
# Builder calls that access memory through a block pointer or a tensor descriptor: the masked load or store
# they make inside goes through their first operand's base.
_THROUGH = ("create_tensor_pointer_load", "create_tensor_pointer_store", "create_descriptor_load",
            "create_descriptor_store", "create_descriptor_gather", "create_descriptor_scatter")


@dataclass(frozen=True)
class LaunchArg:
    """A tensor argument of one launch: its parameter name and the byte range [lo, hi) of its view."""

    param: str
    lo: int
    hi: int
    row_bytes: int | None  # row stride of a 2-D view


def tensor_of(value: Any) -> torch.Tensor | None:
    """The torch tensor behind a kernel argument: itself, or the base of triton's reinterpreting wrapper."""
    if isinstance(value, torch.Tensor):
        return value
    base = getattr(value, "base", None)
    return base if isinstance(base, torch.Tensor) and hasattr(value, "data_ptr") else None


def view_range(tensor: torch.Tensor) -> tuple[int, int]:
    """[lo, hi) byte addresses of a tensor's view: its first element through its last (empty for 0 elements)."""
    lo = int(tensor.data_ptr())
    if tensor.numel() == 0:
        return lo, lo
    span = 1 + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride(), strict=True))
    return lo, lo + span * tensor.element_size()


def tensor_args(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """(parameter name, argument) of each tensor argument of a call of kernel `fn`: torch tensors, triton's
    reinterpreting wrappers, the bases of tensor descriptors, the items of tuples."""
    names = list(inspect.signature(fn).parameters)
    bound = dict(zip(names, args, strict=False))
    bound.update((k, v) for k, v in kwargs.items() if k in names)
    out: list[tuple[str, Any]] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, tuple):
            for i, item in enumerate(value):
                walk(f"{name}[{i}]", item)
        elif tensor_of(value) is not None:
            out.append((name, value))
        elif tensor_of(getattr(value, "base", None)) is not None:  # a tensor descriptor
            out.append((name, value.base))

    for name, value in bound.items():
        walk(name, value)
    return out


def launch_arg(param: str, value: Any) -> LaunchArg:
    tensor = tensor_of(value)
    assert tensor is not None
    lo, hi = view_range(tensor)
    row_bytes = tensor.stride(0) * tensor.element_size() if tensor.dim() == 2 else None
    return LaunchArg(param, lo, hi, row_bytes)


@dataclass
class _Launch:
    kernel: str
    args: list[LaunchArg]
    by_id: dict[int, int]  # id() of the tensor the interpreter converts -> index into args


class LaneChecker:
    """Checks every access of every interpreted launch while installed (`with checker.installed():`), and
    records what falls outside its argument's view in `guards` (`Guards.record_stray`), with the run in
    progress and the capture size; each launch's tensor arguments go to `Guards.record_launch`.
    `skip(fn)` says which kernels are the harness's own."""

    def __init__(self, guards: Guards, *, skip: Callable[[Any], bool] = lambda fn: False) -> None:
        self.guards = guards
        self.skip = skip
        self._launch: _Launch | None = None
        self._through: int | None = None

    # -- what the interpreter calls ---------------------------------------------------------------------

    def _begin(self, fn: Any, args_hst: list[Any], kwargs_hst: dict[str, Any]) -> None:
        if self.skip(fn):
            self._launch = None
            return
        pairs = tensor_args(fn, tuple(args_hst), kwargs_hst)
        name = kernel_name(fn)
        launch = _Launch(name, [], {})
        for param, value in pairs:
            launch.by_id[id(value)] = len(launch.args)
            launch.args.append(launch_arg(param, value))
        self._launch = launch
        self.guards.record_launch(name, [(param, tensor_of(value)) for param, value in pairs])  # type: ignore[misc]

    def _tag(self, value: Any, converted: Any) -> Any:
        launch = self._launch
        if launch is not None and id(value) in launch.by_id:
            handle = getattr(converted, "handle", None)
            if handle is not None and hasattr(handle, "attr"):
                handle.attr[_TAG] = launch.by_id[id(value)]
        return converted

    def check(self, ptrs: Any, mask: Any, access: Access) -> np.ndarray | None:
        """Check the unmasked lanes of one access; record those outside their argument's view. Returns the mask
        to run the access with where some lane lies in no memory the harness knows (no argument's view, not the
        slab): a wild address, which a GPU faults on and the interpreter would segfault on, is recorded and not
        dereferenced. None: run it as it is."""
        launch = self._launch
        if launch is None:
            return None
        lanes = np.asarray(ptrs.data)
        if mask is not None:
            keep = np.asarray(mask.data)
            if not keep.all():
                lanes = lanes[np.broadcast_to(keep, lanes.shape)]
        if lanes.size == 0:
            return None
        size = max(1, ptrs.get_element_ty().primitive_bitwidth // 8)
        lo, hi = int(lanes.min()), int(lanes.max()) + size
        index = getattr(ptrs, "attr", {}).get(_TAG, self._through)
        if index is not None:
            arg = launch.args[index]
            if arg.lo <= lo and hi <= arg.hi:
                return None
            self._stray(launch, arg, lanes.astype(np.int64).ravel(), size, access)
        elif any(a.lo <= lo and hi <= a.hi for a in launch.args):
            return None
        else:
            self._unknown(launch, lanes.astype(np.int64).ravel(), size, access)
        return self._known(launch, np.asarray(ptrs.data), mask, size)

    def _known(self, launch: _Launch, lanes: np.ndarray, mask: Any, size: int) -> np.ndarray | None:
        """The access's mask less the lanes that lie in no argument's view and outside the slab."""
        slab = self.guards.slab
        base = slab.data_ptr()
        known = (lanes >= base) & (lanes + size <= base + slab.numel())
        for a in launch.args:
            known |= (lanes >= a.lo) & (lanes + size <= a.hi)
        keep = np.ones(lanes.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask.data), lanes.shape)
        if bool(known[keep].all()):
            return None
        return keep & known

    def _stray(self, launch: _Launch, arg: LaunchArg, lanes: np.ndarray, size: int, access: Access) -> None:
        # Every byte of every lane, then those outside the view: a lane may straddle its edge.
        addresses = (lanes[:, None] + np.arange(size, dtype=np.int64)).ravel()
        outside = addresses[(addresses < arg.lo) | (addresses >= arg.hi)]
        if outside.size:
            self.guards.record_stray(launch.kernel, arg, access, np.unique(outside))

    def _unknown(self, launch: _Launch, lanes: np.ndarray, size: int, access: Access) -> None:
        """Lanes of a pointer of unknown provenance: those inside no argument's view go to the nearest view."""
        inside = np.zeros(lanes.shape, dtype=bool)
        for a in launch.args:
            inside |= (lanes >= a.lo) & (lanes + size <= a.hi)
        bad = lanes[~inside]
        if not bad.size or not launch.args:
            return
        for arg, stray in nearest(launch.args, bad, size):
            self._stray(launch, arg, stray, size, access)

    # -- installing -------------------------------------------------------------------------------------

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Patch the interpreter for the duration of a block; put everything back after."""
        from triton.runtime import interpreter

        builder = interpreter.interpreter_builder
        executor = interpreter.GridExecutor
        checker = self
        saved_module = {"_implicit_cvt": interpreter._implicit_cvt}
        saved_executor = {"_init_args_hst": executor._init_args_hst}
        saved_builder: dict[str, Any] = {}

        def init_args_hst(self: Any, args_dev: Any, kwargs: Any) -> Any:
            args_hst, kwargs_hst = saved_executor["_init_args_hst"](self, args_dev, kwargs)
            checker._begin(self.fn, args_hst, kwargs_hst)
            return args_hst, kwargs_hst

        def implicit_cvt(arg: Any) -> Any:
            return checker._tag(arg, saved_module["_implicit_cvt"](arg))

        def carry(method: Callable[..., Any]) -> Callable[..., Any]:
            def carried(*operands: Any, **kw: Any) -> Any:
                out = method(*operands, **kw)
                tags = {getattr(o, "attr", {}).get(_TAG) for o in operands if hasattr(o, "attr")}
                tags.discard(None)
                base = getattr(out, "base", None)
                target = base if base is not None and hasattr(base, "attr") and not hasattr(out, "attr") else out
                if len(tags) == 1 and hasattr(target, "attr"):
                    target.attr[_TAG] = tags.pop()
                return out
            return carried

        def through(method: Callable[..., Any]) -> Callable[..., Any]:
            def via(first: Any, *rest: Any, **kw: Any) -> Any:
                base = getattr(first, "base", None)
                previous, checker._through = checker._through, getattr(base, "attr", {}).get(_TAG)
                try:
                    return method(first, *rest, **kw)
                finally:
                    checker._through = previous
            return via

        def known(ptrs: Any, mask: Any, access: Access) -> Any:
            """The mask to run with: lanes at wild addresses are recorded, then dropped."""
            kept = checker.check(ptrs, mask, access)
            if kept is None or mask is None:
                return mask
            return interpreter.TensorHandle(kept, mask.dtype)

        def load(method: Callable[..., Any]) -> Callable[..., Any]:
            def checked(ptrs: Any, mask: Any, *rest: Any, **kw: Any) -> Any:
                return method(ptrs, known(ptrs, mask, "read"), *rest, **kw)
            return checked

        def store(method: Callable[..., Any]) -> Callable[..., Any]:
            def checked(ptrs: Any, value: Any, mask: Any, *rest: Any, **kw: Any) -> Any:
                return method(ptrs, value, known(ptrs, mask, "write"), *rest, **kw)
            return checked

        def rmw(method: Callable[..., Any]) -> Callable[..., Any]:
            def checked(op: Any, ptrs: Any, value: Any, mask: Any, *rest: Any, **kw: Any) -> Any:
                return method(op, ptrs, value, known(ptrs, mask, "write"), *rest, **kw)
            return checked

        def cas(method: Callable[..., Any]) -> Callable[..., Any]:
            def checked(ptrs: Any, *rest: Any, **kw: Any) -> Any:
                checker.check(ptrs, None, "write")
                return method(ptrs, *rest, **kw)
            return checked

        wrappers: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
            **dict.fromkeys(_CARRY, carry), **dict.fromkeys(_THROUGH, through),
            "create_masked_load": load, "create_masked_store": store, "create_atomic_rmw": rmw,
            "create_atomic_cas": cas}
        for name, wrap in wrappers.items():
            method = getattr(builder, name, None)
            if method is not None:
                saved_builder[name] = builder.__dict__.get(name)
                setattr(builder, name, wrap(method))
        interpreter._implicit_cvt = implicit_cvt
        executor._init_args_hst = init_args_hst
        try:
            yield
        finally:
            interpreter._implicit_cvt = saved_module["_implicit_cvt"]
            executor._init_args_hst = saved_executor["_init_args_hst"]
            for name, previous in saved_builder.items():
                if previous is None:
                    delattr(builder, name)
                else:
                    setattr(builder, name, previous)
            self._launch = None


def lanes_checked(device: torch.device) -> bool:
    """Whether launches on `device` run under the interpreter, where every lane is checked.
    `GRAPH_HARNESS_LANES=0` turns the checker off, to measure what it costs (benchmarks/bench_lanes.py)."""
    from graph_harness.core.triton_env import INTERPRET

    return device.type == "cpu" and INTERPRET and os.environ.get("GRAPH_HARNESS_LANES", "1") != "0"


class WriteSet:
    """Where the lanes are not checked (a GPU): notes each launch's arguments that lie outside guarded memory
    (`Guards.record_launch`), and in step mode (`Guards.watching_writes`) takes the launch's write set.

    The write set is the bytes of every buffer in the slab, and of the slab past the last arena, that the
    launch changed outside the views of the tensors it was given: each is the launch's violation, through
    the argument whose view lies nearest (a GPU does not say which pointer made a store), with the buffers
    whose bytes changed in `hits`. A store that writes the value already there changes nothing and is not
    seen; the guards check their own bytes.
    """

    def __init__(self, guards: Guards) -> None:
        self.guards = guards

    def before(self, launch: Launch) -> None:
        self.guards.record_launch(launch.kernel, launch.args)
        if self.guards.watching:
            self.guards.snapshot()

    def after(self, launch: Launch) -> None:
        if not self.guards.watching:
            return
        args = [launch_arg(param, tensor) for param, tensor in launch.args]
        changed = self.guards.changed([(a.lo, a.hi) for a in args])
        if changed.size:
            for arg, addresses in nearest(args, changed, 1):
                self.guards.record_stray(launch.kernel, arg, "write", addresses)


def nearest(args: list[LaunchArg], addresses: np.ndarray, size: int) -> Iterator[tuple[LaunchArg, np.ndarray]]:
    """Accesses of `size` bytes at `addresses` (outside every view) grouped by the argument whose view is nearest;
    with no tensor argument at all, under an empty view at the first of them."""
    if not args:
        yield LaunchArg("(no tensor argument)", int(addresses[0]), int(addresses[0]), None), addresses
        return
    lo = np.array([a.lo for a in args], dtype=np.int64)
    hi = np.array([a.hi for a in args], dtype=np.int64)
    distance = np.maximum(lo[None, :] - addresses[:, None], addresses[:, None] + size - hi[None, :]).clip(min=0)
    which = distance.argmin(axis=1)
    for index in np.unique(which):
        yield args[int(index)], addresses[which == index]


@contextmanager
def watched(guards: Guards) -> Iterator[None]:
    """Every launch of the op is seen for the duration of a block: under the interpreter (a CPU slab) each
    access is checked lane by lane; elsewhere each launch's arguments are noted, so that memory the harness
    did not guard is never passed over in silence, and in step mode its write set is taken (`WriteSet`)."""
    if lanes_checked(guards.device):
        with LaneChecker(guards, skip=own).installed():
            yield
        return
    with observing(WriteSet(guards)):
        yield
