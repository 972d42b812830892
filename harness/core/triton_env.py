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


if INTERPRET:
    _patch_lang_once_per_launch()

__all__ = ["INTERPRET", "device", "tl", "triton"]


def device() -> torch.device:
    """Where kernels run: the current GPU, or the CPU under the interpreter."""
    return torch.device("cpu") if INTERPRET else torch.device("cuda", torch.cuda.current_device())
