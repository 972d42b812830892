"""One observer of the op's Triton launches, for everything in the protocol that needs to see them.

`observing(listener)` patches `JITFunction.run` (and the interpreter's `InterpretedFunction.run`) once,
however many listeners are registered, and calls each listener's `before` and `after` around every launch
the op makes: the step checks that name the kernel that wrote, the per-launch write set, the note of memory
the harness did not guard. `before` runs in registration order, `after` in reverse, so a listener
registered inside another sees the launch nearest to it.

Not seen: the harness's own kernels (arming and checking the guards, which a listener may launch), warm-up
compilations (`warmup=True`), and every launch that is not Triton's (a raw memset, a torch op, an
extension's kernel): between two Triton launches only the guards see those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from graph_harness.core.triton_env import INTERPRET


@dataclass(frozen=True)
class Launch:
    """One launch of a Triton kernel: its name, and its tensor arguments by parameter name."""

    kernel: str
    args: tuple[tuple[str, torch.Tensor], ...]
    compiled: bool  # a `JITFunction` (compiled for a GPU), not the interpreter's function


class Listener(Protocol):
    def before(self, launch: Launch) -> None: ...

    def after(self, launch: Launch) -> None: ...


def kernel_name(fn: Any) -> str:
    """A kernel's name: its Python function's, through autotuners and heuristics."""
    inner = getattr(fn, "fn", None)
    return str(getattr(inner, "__name__", None) or getattr(fn, "__name__", "triton kernel"))


def own(fn: Any) -> bool:
    """The harness's own kernels (arming and checking the guards): never the op's launches."""
    return str(getattr(fn, "__module__", "")).startswith("graph_harness.core.")


_listeners: list[Listener] = []
_saved: list[tuple[type, Callable[..., Any]]] = []
_busy = False  # a listener is running: what it launches is the harness's, not the op's


def _observed(kind: type, run: Callable[..., Any]) -> Callable[..., Any]:
    from graph_harness.core.lanes import tensor_args, tensor_of

    compiled = kind.__name__ == "JITFunction"

    def launch(self: Any, *args: Any, **kwargs: Any) -> Any:
        global _busy
        fn = getattr(self, "fn", None)
        if _busy or kwargs.get("warmup") or own(fn) or not _listeners:
            return run(self, *args, **kwargs)
        pairs = tensor_args(fn, args, kwargs) if fn is not None else []
        seen = Launch(kernel_name(self), tuple((p, t) for p, v in pairs if (t := tensor_of(v)) is not None),
                      compiled)
        listeners = list(_listeners)
        _busy = True
        try:
            for listener in listeners:
                listener.before(seen)
        finally:
            _busy = False
        result = run(self, *args, **kwargs)
        _busy = True
        try:
            for listener in reversed(listeners):
                listener.after(seen)
        finally:
            _busy = False
        return result

    return launch


@contextmanager
def observing(listener: Listener) -> Iterator[None]:
    """Call `listener.before` and `.after` around every Triton launch of the op for the duration of a block."""
    if not _listeners:
        from triton.runtime.jit import JITFunction

        kinds: list[type] = [JITFunction]
        if INTERPRET:
            from triton.runtime.interpreter import InterpretedFunction

            kinds.append(InterpretedFunction)
        for kind in kinds:
            run = kind.run  # type: ignore[attr-defined]
            _saved.append((kind, run))
            kind.run = _observed(kind, run)  # type: ignore[attr-defined]
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
        if not _listeners:
            while _saved:
                kind, run = _saved.pop()
                kind.run = run  # type: ignore[attr-defined]
