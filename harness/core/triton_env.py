"""Import triton the one way: interpreted on CPU tensors when no GPU is visible.

`TRITON_INTERPRET` is read when a kernel is defined (`@triton.jit`), so every module of the harness
imports triton through here, and `graph_harness/__init__.py` sets it even earlier for the user's own
kernels. A value set by the user is left alone.
"""

import os
from typing import Any

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _patch_lang_once_per_launch() -> None:
    """Make the interpreter patch triton.language once per launch, not again at every device-function call.

    A launch patches `tl` (its builtins, `tl.tensor`'s, `tl.math`'s) for the interpreter and restores it at
    the end. Every call of a `@triton.jit` helper inside the kernel runs the same patch again, over modules
    already patched: an `inspect.getmembers` walk of each, about 1 ms a call, 9 to 12% of a CPU case here
    (7,256 helper calls in `graph-harness reproduce aiter-2508`). The repeat finds nothing to change
    (the patched members are no longer builtins), so it is skipped while a launch that patched a superset
    of the helper's modules is in progress. A helper that sees other modules is patched as before.
    """
    from triton.runtime import interpreter

    if not hasattr(interpreter, "_LangPatchScope") or not callable(getattr(interpreter, "_patch_lang", None)):
        return  # another interpreter than the one this was written against (triton 3.5 to 3.9): leave it
    patch_lang = interpreter._patch_lang
    if getattr(patch_lang, "once_per_launch", False):
        return
    patched: list[set[int]] = []  # the modules each launch in progress patched, innermost last

    def langs(fn: object) -> set[int]:
        scope = getattr(fn, "__globals__", {})
        return {id(v) for v in scope.values() if v is tl or v is tl.core}

    class _LaunchScope(interpreter._LangPatchScope):  # type: ignore[misc,unused-ignore]
        """A launch's patch: restoring it ends the launch."""

        def restore(self) -> None:
            super().restore()
            if patched:
                patched.pop()

    def once_per_launch(fn: object) -> object:
        wanted = langs(fn)
        if patched and wanted and wanted <= patched[-1]:
            return interpreter._LangPatchScope()  # a helper inside a launch: already patched, nothing to undo
        scope = patch_lang(fn)
        if patched:  # a helper seeing more modules: patched for the rest of the launch, as triton leaves it
            patched[-1] |= wanted
            return scope
        launch = _LaunchScope()
        launch._changes = scope._changes
        patched.append(wanted)
        return launch

    once_per_launch.once_per_launch = True  # type: ignore[attr-defined]
    once_per_launch.original = patch_lang  # type: ignore[attr-defined]
    interpreter._patch_lang = once_per_launch


def _no_discarded_overflow_checks() -> None:
    """Make the interpreter skip the integer-overflow checks whose result it throws away.

    With `sanitize_overflow` on (the interpreter's default), every int32 add, sub and mul is done a
    second time in int64 and compared against the type's bounds, and the condition goes to
    `device_assert`, which returns at once when `debug` is off; the interpreter's options are always
    the defaults, so `debug` is off and the checks never fire. The extra casts, compares and
    broadcasts were 21% of a DeepSeek-V3 CPU case. Only the discarded work goes: a builder with
    `debug` on keeps its checks.
    """
    import dataclasses

    from triton.runtime import interpreter

    builder: Any = getattr(interpreter, "interpreter_builder", None)
    options: Any = getattr(builder, "options", None)
    if options is None or not dataclasses.is_dataclass(options) or getattr(options, "debug", True):
        return
    if getattr(options, "sanitize_overflow", False):
        builder.options = dataclasses.replace(builder.options, sanitize_overflow=False)


_GATHER_LANES = 1024  # below this the interpreter's own load is as fast


class _Bytes:
    """Memory the interpreter dereferences, [address, address + count * itemsize), as a read-only numpy array."""

    def __init__(self, address: int, count: int, dtype: Any) -> None:
        self.__array_interface__ = {"data": (address, True), "shape": (count,), "typestr": dtype.str, "version": 3}


def gather(ptrs: Any, mask: Any, other: Any, dtype: Any) -> Any:
    """The interpreter's masked load (`ret[i] = *ptrs[i]` where `mask[i]`, else `other[i]`) as one numpy gather
    over the span of the unmasked lanes; None where it does not apply (few lanes, bool, unaligned lanes, shapes
    the interpreter did not broadcast), for the interpreter's own load to run. Only unmasked lanes are read."""
    import numpy as np

    if (ptrs.size < _GATHER_LANES or dtype == np.bool_ or ptrs.dtype != np.uint64 or mask.shape != ptrs.shape
            or other.shape != ptrs.shape or other.dtype != dtype or dtype.itemsize & (dtype.itemsize - 1)):
        return None
    every = bool(mask.all())
    if not every and not mask.any():
        return other.copy()
    lo = int(ptrs.min() if every else np.min(ptrs, where=mask, initial=np.iinfo(np.uint64).max))
    hi = int(ptrs.max() if every else np.max(ptrs, where=mask, initial=0))
    offsets = ptrs - np.uint64(lo)
    size = dtype.itemsize
    if size > 1:
        spread = np.bitwise_or.reduce(offsets, axis=None, where=True if every else mask, initial=0)
        if int(spread) % size:
            return None
        offsets >>= np.uint64(size.bit_length() - 1)
    index = offsets.view(np.int64)
    memory = np.asarray(_Bytes(lo, (hi - lo) // size + 1, dtype))
    if every:
        return memory.take(index)
    return np.where(mask, memory.take(np.where(mask, index, 0)), other)


def _numpy_loads() -> None:
    """Make the interpreter's masked loads one numpy gather (`gather`) where they apply.

    The interpreter's load copies lane by lane in C++: 0.9 ms for 65,536 one-byte lanes, 1.3 ms for four-byte
    ones gathered through a 256-entry table, against 0.2 ms for numpy's gather of the same addresses. The
    weight tiles of the MoE stage1 kernel are such loads, four a K step. The bytes loaded are the same.
    """
    from triton.runtime import interpreter

    native = getattr(interpreter, "_interpreter", None)
    if native is None or not callable(getattr(native, "load", None)) or isinstance(native, _Loads):
        return
    interpreter._interpreter = _Loads(native)


class _Loads:
    """The interpreter's native module, its `load` through `gather` first."""

    def __init__(self, native: Any) -> None:
        self._native = native

    def __getattr__(self, name: str) -> Any:
        return getattr(self._native, name)

    def load(self, ptrs: Any, mask: Any, other: Any, dtype: Any) -> Any:
        got = gather(ptrs, mask, other, dtype)
        return self._native.load(ptrs, mask, other, dtype) if got is None else got


if INTERPRET:
    _patch_lang_once_per_launch()
    _no_discarded_overflow_checks()
    _numpy_loads()

__all__ = ["INTERPRET", "device", "tl", "triton"]


def device() -> torch.device:
    """Where kernels run: the current GPU, or the CPU under the interpreter."""
    return torch.device("cpu") if INTERPRET else torch.device("cuda", torch.cuda.current_device())
