"""The one capture/replay protocol, with a CUDA-graph backend and a CPU re-execution backend.

`run_protocol` takes one workload per capture size (all sharing a slab of guards) and:
1. warms each up on a side stream (CUDA), then runs it eagerly once per input set, checking the
   guards after every launch of the warm-up (or, on CPU, of the first eager run: step mode), and
   where the lane checker does not run taking each launch's write set there, and keeping each output;
2. captures every size into one shared pool, largest first, with `capture_error_mode="thread_local"`,
   and audits each graph's memset and memcpy nodes against the guarded buffers;
3. replays each graph once per input set (at least twice), fresh inputs copied into its static
   buffers, checking all guards after every replay and comparing against eager and the reference.

When every size is done, the slab bytes no buffer holds are checked (`Guards.check_free`). Failures are
classified, never raised: see `SizeOutcome`.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from graph_harness.core import phases, runtime
from graph_harness.core.compare import Comparison, agree, compare, finite
from graph_harness.core.guard import STRANGER_WORD, Buffer, Fill, GuardBudgetError, GuardMode, Guards, UsageError
from graph_harness.core.lanes import lanes_checked, watched
from graph_harness.core.launches import Launch, observing
from graph_harness.core.verdict import Verdict

# A captured op: called with no arguments, reads the static inputs, returns the static output.
Thunk = Callable[[], torch.Tensor]
Step = Callable[[str], None]
_T = TypeVar("_T")
_FILLS: tuple[Fill, Fill] = ("nan", "dense")


class Workload(Protocol):
    """An op under test at one capture size. `run` may allocate freely: the harness guards its factory calls."""

    tolerance: float

    def inputs(self, seed: int) -> dict[str, torch.Tensor]:
        """Fresh random inputs; the harness copies them into guarded static buffers."""
        ...

    def run(self, inputs: Mapping[str, torch.Tensor], step: Step) -> torch.Tensor:
        """Run the op on `inputs`; call `step(name)` after each launch if it can (step mode)."""
        ...

    def reference(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The expected output, any float dtype, on the inputs' device; None when there is none. A workload may
        also have `references(list of inputs)`, the same for several input sets at once."""
        ...


class PiecewiseWorkload(Workload, Protocol):
    """A workload part of whose op stays outside the graph, as in vLLM's piecewise capture: `eager_piece` runs at
    capture, outside it, and again before every replay; only `run(inputs, step, pieces)` is captured."""

    def eager_piece(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the eager piece; return the tensors it hands the captured piece."""
        ...

    def run(self, inputs: Mapping[str, torch.Tensor], step: Step,
            pieces: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The whole op, eager piece and all; with `pieces` (what `eager_piece` returned), the captured piece."""
        ...


class CaptureError(RuntimeError):
    """Capture or instantiation failed; the message is the CUDA one."""


class Backend(Protocol):
    """How a thunk is warmed up, captured and replayed."""

    name: str
    warms_up: bool  # whether a warm-up run precedes the eager runs (CUDA: JIT, allocator, side stream)

    def warmup(self, thunk: Thunk) -> torch.Tensor: ...

    def capture(self, thunk: Thunk, guards: Guards) -> Any: ...

    def output(self, graph: Any) -> torch.Tensor:
        """The static output a capture returned."""
        ...

    def audit(self, graph: Any, guards: Guards, phase: str) -> None: ...

    def replay(self, graph: Any) -> torch.Tensor: ...

    def settle(self, deadline: float) -> bool:
        """Wait until the device has finished what was launched; False if it has not by `deadline`."""
        ...

    def host(self) -> AbstractContextManager[None]:
        """What the whole protocol runs inside."""
        ...

    def timer(self, deadline: float = math.inf) -> Callable[[], float]:
        """Start timing; the returned stop gives microseconds, NaN if the device is not done by `deadline`."""
        ...


class CudaGraphBackend:
    """Real CUDA graphs (HIP graphs on ROCm): side-stream warm-up, one shared pool, keep_graph for the audit."""

    name = "cuda-graph"
    warms_up = True

    def __init__(self) -> None:
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def warmup(self, thunk: Thunk) -> torch.Tensor:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = thunk()
        torch.cuda.current_stream().wait_stream(self.stream)
        return out

    def capture(self, thunk: Thunk, guards: Guards) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        graph = torch.cuda.CUDAGraph(keep_graph=True)
        stopped: list[Exception] = []  # what the op, or the harness's slab, raised under capture

        def run() -> torch.Tensor:
            try:
                return thunk()
            except Exception as err:
                stopped.append(err)
                raise

        stream = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"), \
                    GuardMode(guards, capturing=True):
                out = run()
        except Exception as err:
            # Ending a capture that an exception stopped raises anew, hiding why it stopped: the capture was
            # invalidated, or (where warnings are errors, as under pytest's `filterwarnings = error`) the graph
            # is empty because the stop came before the first kernel. A slab too small for the sizes at once must
            # reach the caller, which runs them in smaller slabs (suite.plan): on the H200 it was a crash verdict.
            cause = err
            if stopped and (isinstance(stopped[0], GuardBudgetError) or isinstance(err, Warning)):
                cause = stopped[0]
            if isinstance(cause, GuardBudgetError):
                raise cause from None
            if isinstance(cause, RuntimeError):
                raise CaptureError(_first_line(cause)) from cause
            if cause is err:
                raise
            raise cause from None
        finally:
            # torch.cuda.graph leaves its capture stream current when ending the capture raised: every later run
            # of the process would go to it (a later capture then found its graph empty, on the H200)
            torch.cuda.set_stream(stream)
        return graph, out

    def output(self, graph: Any) -> torch.Tensor:
        return cast(torch.Tensor, graph[1])

    def audit(self, graph: Any, guards: Guards, phase: str) -> None:
        """Check every memset and memcpy node's destination range, then instantiate."""
        g, _ = graph
        for dst, nbytes, kind in graph_writes(g):
            buf = guards.owner(dst)
            if buf is not None:
                _record_write(guards, buf, dst - guards.slab.data_ptr(), nbytes, phase, f"{kind} node")
        try:
            g.instantiate()
            torch.cuda.synchronize()
        except RuntimeError as err:
            raise CaptureError(_first_line(err)) from err

    def replay(self, graph: Any) -> torch.Tensor:
        g, out = graph
        g.replay()
        return cast(torch.Tensor, out)

    def host(self) -> AbstractContextManager[None]:
        return nullcontext()

    def settle(self, deadline: float) -> bool:
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        return _finished(event, deadline)

    def timer(self, deadline: float = math.inf) -> Callable[[], float]:
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()

        def stop() -> float:
            end.record()
            if not _finished(end, deadline):
                return math.nan  # the bound's settle names the hang
            return float(start.elapsed_time(end)) * 1e3

        return stop


_polling = False  # the host is waiting for the device (`_finished`): a bound's alarm now is the device's hang


def _finished(event: torch.cuda.Event, deadline: float) -> bool:
    """Poll `event` until it completes or `deadline` (time.monotonic) passes: a wait that a hung kernel never
    ends (`synchronize`) would hold the process with it."""
    global _polling
    _polling = True
    try:
        while not event.query():  # type: ignore[no-untyped-call]
            if time.monotonic() > deadline:
                return False
            time.sleep(1e-4)
        return True
    finally:
        _polling = False


class _Tape(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """What a CPU capture records instead of running: every torch op and every interpreted Triton launch, in
    order, with its arguments; `replay` runs them again and nothing else, as a graph replays its nodes.

    Like a graph's kernel parameters, the tape holds guarded memory by address (a view of the slab rebuilt
    from it), never the op's own tensor: a buffer the op lets go of is released although the tape still
    points at it (use-after-free). Host code does not run at replay: a decision it made at capture (a count,
    a block number, a pointer) stays made (stale-capture). A host read of a tensor (`.item()`) under capture
    is allowed, as it is on CUDA for a tensor in host memory, which every tensor is here: its value is baked
    in. On a GPU, the same read of device memory is a capture error.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """No: torch would wrap `__torch_dispatch__` to keep dynamo out of it, importing torch._dynamo (a second
        on CPU) at the first op. Nothing here compiles."""
        return False

    def __init__(self, guards: Guards) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.guards = guards
        self.steps: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], tuple[torch.Tensor, ...]]] = []
        slab = guards.slab
        self._lo, self._hi = slab.data_ptr(), slab.data_ptr() + slab.numel()
        self._typed: dict[torch.dtype, torch.Tensor] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = func._schema.name
        out = func(*args, **kwargs)
        if not func.is_view and not name.startswith("aten::empty") and name not in ("aten::lift_fresh", "aten::detach"):
            outs = tuple(self.held(t) for t in _tensors(out))
            self.steps.append((func, self.held(args), self.held(kwargs), outs))
        return out

    def launch(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Record an interpreted Triton launch: the kernel runs at replay, through whatever observes launches."""
        self.steps.append((functools.partial(_interpreted_run, fn), self.held(args), self.held(kwargs), ()))

    def held(self, value: Any) -> Any:
        """`value` with every tensor in guarded memory replaced by the same view of the slab."""
        if isinstance(value, torch.Tensor):
            return self._at(value)
        if isinstance(value, tuple | list):
            return type(value)(self.held(v) for v in value)
        if isinstance(value, dict):
            return {k: self.held(v) for k, v in value.items()}
        base = getattr(value, "base", None)
        if isinstance(base, torch.Tensor) and hasattr(value, "dtype"):  # triton's reinterpreting wrapper
            try:
                return type(value)(self._at(base), value.dtype)
            except TypeError:
                return value
        return value

    def _at(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "cpu" or tensor.is_sparse or not tensor.numel():
            return tensor
        storage = tensor.untyped_storage()
        address = storage.data_ptr()
        if not self._lo <= address or address + storage.nbytes() > self._hi or storage.data_ptr() == self._lo and \
                storage.nbytes() == self._hi - self._lo:
            return tensor
        itemsize = tensor.element_size()
        if (address - self._lo) % itemsize:
            return tensor
        typed = self._typed.get(tensor.dtype)
        if typed is None:
            typed = self._typed[tensor.dtype] = self.guards.slab[: (self._hi - self._lo) // itemsize * itemsize].view(
                tensor.dtype)
        return typed.as_strided(tensor.shape, tensor.stride(), (address - self._lo) // itemsize
                                + tensor.storage_offset())

    def replay(self) -> None:
        for func, args, kwargs, outs in self.steps:
            fresh = _tensors(func(*args, **kwargs))
            for old, new in zip(outs, fresh, strict=False):
                if old.data_ptr() != new.data_ptr():
                    if old.shape != new.shape:
                        raise CaptureError(f"replay of {func} made {tuple(new.shape)} where the capture made "
                                           f"{tuple(old.shape)}: a graph's tensors cannot change shape")
                    old.copy_(new)


def _tensors(value: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, tuple | list):
        return tuple(t for v in value for t in _tensors(v))
    return ()


def _interpreted_run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Launch an interpreted kernel as the op did, through the class's `run` as it is now (observed)."""
    return type(fn).run(fn, *args, **kwargs)


@dataclass
class _Recording:
    """What a CPU 'graph' holds: its tape and the static output."""

    tape: _Tape
    out: torch.Tensor


class ReexecBackend:
    """CPU stand-in for a graph: capture records the op's torch ops and Triton launches on a tape (`_Tape`),
    running the torch ops but not the launches; replay runs the tape, against the buffers captured for it.

    As on a GPU, the op's host code runs once, at capture: allocations are not made again, decisions are not
    taken again, and each replay reads and writes the static buffers that capture gave the op.
    """

    name = "reexec"
    warms_up = False  # the interpreter compiles nothing, and there is no stream to warm

    def warmup(self, thunk: Thunk) -> torch.Tensor:
        return thunk()

    def capture(self, thunk: Thunk, guards: Guards) -> _Recording:
        tape = _Tape(guards)
        try:
            with GuardMode(guards, capturing=True), quiet_poison(), _launches_recorded(tape), \
                    _capturing(True), tape:
                out = thunk()
        except RuntimeError as err:  # as torch.cuda.graph's exit turns what the op raised into a capture failure
            raise CaptureError(f"{type(err).__name__}: {_first_line(err)}") from err
        return _Recording(tape, out)

    def output(self, graph: Any) -> torch.Tensor:
        recording: _Recording = graph
        return recording.out

    def host(self) -> AbstractContextManager[None]:
        """For the whole protocol: `torch.cuda.is_current_stream_capturing()` answers on CPU too (False outside
        capture), where a CPU build of torch would raise."""
        return _capturing(False)

    def audit(self, graph: Any, guards: Guards, phase: str) -> None:
        """No graph nodes to read: the guards after each replay see what a memset wrote."""

    def replay(self, graph: Any) -> torch.Tensor:
        recording: _Recording = graph
        with quiet_poison():
            recording.tape.replay()
        return recording.out

    def settle(self, deadline: float) -> bool:
        """CPU runs are synchronous: what is still running is host code, which the alarm stops."""
        return True

    def timer(self, deadline: float = math.inf) -> Callable[[], float]:
        start = time.perf_counter()
        return lambda: (time.perf_counter() - start) * 1e6


@contextmanager
def _launches_recorded(tape: _Tape) -> Iterator[None]:
    """Like a CUDA capture, the CPU capture runs no kernel: each interpreted Triton launch goes on the tape."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # no interpreter in this triton: nothing launches on CPU tensors
        yield
        return
    run = InterpretedFunction.run

    def record(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
        if warmup:
            return
        tape.launch(self, args, {"grid": grid, "warmup": False, **kwargs})

    InterpretedFunction.run = record
    try:
        yield
    finally:
        InterpretedFunction.run = run


@contextmanager
def _capturing(value: bool) -> Iterator[None]:
    """`torch.cuda.is_current_stream_capturing()` is `value`: true during a CPU capture, as during a CUDA one, so
    that an op which decides something by it decides the same on both."""
    saved = torch.cuda.is_current_stream_capturing
    torch.cuda.is_current_stream_capturing = lambda: value
    try:
        yield
    finally:
        torch.cuda.is_current_stream_capturing = saved


def default_backend(device: torch.device) -> Backend:
    """CUDA graphs on a GPU, re-execution on CPU."""
    return CudaGraphBackend() if device.type == "cuda" else ReexecBackend()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _record_write(guards: Guards, buf: Buffer, lo: int, nbytes: int, phase: str, op: str) -> None:
    """Record the parts of slab bytes [lo, lo+nbytes) that fall in `buf`'s guards."""
    hi = lo + nbytes
    if lo < buf.start:
        guards.record_range(buf, "underflow", lo - (buf.start - buf.left), min(hi, buf.start) - (buf.start - buf.left),
                            phase, op)
    end = buf.start + buf.nbytes
    if hi > end:
        guards.record_range(buf, "overflow", max(lo, end) - end, hi - end, phase, op)


def graph_writes(graph: torch.cuda.CUDAGraph) -> Iterator[tuple[int, int, str]]:
    """(destination address, bytes, "memset" | "memcpy") of every memset and memcpy node, on CUDA or HIP."""
    rt = runtime.current()
    try:
        for node, kind in rt.graph_nodes(graph.raw_cuda_graph()):
            if kind == "memset":
                m = rt.memset_params(node)
                height = max(m.height, 1)
                row = m.element_size * m.width
                pitch = m.pitch if height > 1 else row
                yield m.dst, pitch * (height - 1) + row, "memset"
            elif kind == "memcpy":
                c = rt.memcpy_params(node)
                if c.to_device:
                    height, depth = max(c.height, 1), max(c.depth, 1)
                    pitch = c.pitch or c.width
                    yield c.dst + c.x + c.y * pitch, pitch * (height * depth - 1) + c.width, "memcpy"
    except runtime.GpuError as err:
        raise CaptureError(str(err)) from err


# -- the protocol ------------------------------------------------------------------------------------

HANG_FLOOR_S = 120.0  # the shortest bound a run gets, in seconds (GRAPH_HARNESS_HANG_AFTER sets another)
_HANG_FACTOR = 20  # past its first run, an op gets this many times its slowest eager run before it is a hang
_wedged = False  # a GPU kernel of this process hung and still holds the device


def hang_floor() -> float:
    """The floor of every run's bound: GRAPH_HARNESS_HANG_AFTER seconds when set, else HANG_FLOOR_S."""
    text = os.environ.get("GRAPH_HARNESS_HANG_AFTER", "")
    try:
        seconds = float(text) if text else HANG_FLOOR_S
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise UsageError(f"GRAPH_HARNESS_HANG_AFTER: got {text!r}; allowed: seconds, a number > 0")
    return seconds


PROGRESS_ENV = "GRAPH_HARNESS_PROGRESS"  # a file the run in progress is written to, for a parent process


def _progress(what: str, seconds: float) -> None:
    """Tell a parent process watching this one (`suite.isolate`) what runs now and for how long it may: one line,
    `phase<TAB>bound in seconds<TAB>wall-clock start`, replaced at every run."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"{what}\t{seconds!r}\t{time.time()!r}\n")


def mark_wedged() -> None:
    """A kernel of this process hung on the GPU (see `wedged`)."""
    global _wedged
    _wedged = True


def wedged() -> bool:
    """Whether a kernel of this process hung on the GPU: it cannot be stopped in-process, and every later use of
    the device waits on it, so nothing more should run here (`--isolate` runs each case in a child process)."""
    return _wedged


class Hang(BaseException):
    """A run that did not finish within its bound. A BaseException: no `except Exception` in the op takes it."""


class _Wedged(BaseException):
    """A GPU kernel hung: the protocol stops at once, touching the device no more."""


class _InFlight:
    """The Triton launch in progress (on CPU, where a launch runs while it is called) and the last one made (on a
    GPU, where it runs after the call returned), for a hang's result (a listener of `launches.observing`)."""

    def __init__(self) -> None:
        self.kernel: str | None = None
        self.last: str | None = None

    def before(self, launch: Launch) -> None:
        self.kernel = self.last = launch.kernel

    def after(self, launch: Launch) -> None:
        self.kernel = None


@dataclass
class SizeOutcome:
    """What happened at one capture size; the verdict is decided from this (graph_harness.core.verdict)."""

    tokens: int
    comparisons: list[tuple[str, Comparison]] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None  # "hang", "capture-error" or "crash"
    eager_us: list[float] = field(default_factory=list)
    replay_us: list[float] = field(default_factory=list)
    attribution: Verdict | None = None  # uninit-read / oob-read when a poison variant fixed the output
    # use-after-free, replay-state or stale-capture: what the graph-state checks found (see `_judge_state`)
    state: Verdict | None = None
    notes: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)  # what this size's run could not check

    @property
    def worst(self) -> Comparison | None:
        return max((c for _, c in self.comparisons), key=lambda c: c.rel_l2, default=None)

    @property
    def numerically_ok(self) -> bool:
        return all(c.ok for _, c in self.comparisons)


@dataclass
class _Replayed:
    """One replay: which input set it loaded, its output (kept), and how it compared."""

    number: int  # 1-based
    inputs: int  # the input set, 0-based
    out: torch.Tensor
    vs_eager: Comparison
    vs_reference: Comparison | None


@dataclass
class _Size:
    workload: Workload
    tokens: int
    inputs: list[dict[str, torch.Tensor]]
    refs: list[torch.Tensor | None]
    static: dict[str, torch.Tensor]
    outcome: SizeOutcome
    eager: list[torch.Tensor] = field(default_factory=list)
    graph: Any = None
    made_empties: bool = False  # the op made `empty` buffers: their poison may reach the output
    piecewise: bool = False  # part of the op runs outside the graph, before every replay
    flipped_replay: int | None = None  # a replay with the poison flipped that differed from its eager run
    replayed: list[_Replayed] = field(default_factory=list)
    first: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # state before and after replay #1
    last: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # and the last replay's
    state: list[Buffer] = field(default_factory=list)  # the buffers whose bytes make the graph's state
    strangers: list[tuple[Buffer, torch.Tensor]] = field(default_factory=list)  # released buffers, their bytes
    stranger_writes: list[str] = field(default_factory=list)  # what the last replay wrote into them

    def thunk(self, step: Step, pieces: Mapping[str, torch.Tensor] | None = None) -> Thunk:
        if pieces is None:
            return lambda: self.workload.run(self.static, step)
        workload = cast(PiecewiseWorkload, self.workload)
        return lambda: workload.run(self.static, step, pieces)

    def eager_piece(self) -> dict[str, torch.Tensor] | None:
        """Run the op's eager piece on the static inputs, where it has one."""
        piece = getattr(self.workload, "eager_piece", None)
        return None if piece is None else cast(dict[str, torch.Tensor], piece(self.static))

    def check(self, r: int, out: torch.Tensor) -> Comparison:
        """Output `out` of input set `r` against its reference, or for NaN and inf when there is none."""
        ref = self.refs[r]
        tol = self.workload.tolerance
        return finite(out, tol) if ref is None else compare(out, ref, tol)

    def load(self, r: int) -> None:
        for key, value in self.inputs[r].items():
            self.static[key].copy_(value)

    def bound(self, floor: float) -> float:
        """Seconds a run may take: the floor, or many times the slowest eager run once one has run."""
        slowest = max(self.outcome.eager_us, default=0.0) / 1e6
        return max(floor, _HANG_FACTOR * slowest)


@contextmanager
def quiet_poison() -> Iterator[None]:
    """Silence numpy's warnings about NaN and overflow: under the interpreter, poison read by a
    buggy op makes them, and pytest's `-W error` would turn the finding into a crash."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@contextmanager
def _guarded(guards: Guards) -> Iterator[None]:
    with guards.scope(), GuardMode(guards), quiet_poison():
        yield


class _Clock:
    """The bound of the run in progress: an alarm for host code, and a deadline the backend polls the device
    against (a hung kernel would block any wait for it). Where no alarm can be set (not the main thread), a hang
    of host code is not bounded, and the result says so."""

    def __init__(self, backend: Backend, floor: float, inflight: _InFlight) -> None:
        self.backend, self.floor, self.inflight = backend, floor, inflight
        self.deadline = math.inf
        self.seconds = 0.0
        self.what = ""
        self.alarms = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

    @contextmanager
    def bounded(self, size: _Size, what: str, *, compiles: bool = False) -> Iterator[None]:
        """Bound the run inside. `compiles`: the first run of the op on a GPU (its warm-up) JIT-compiles its kernels
        on the host, which is no hang: it gets at least HANG_FLOOR_S whatever the floor."""
        self.seconds, self.what = size.bound(self.floor), what
        if compiles:
            self.seconds = max(self.seconds, HANG_FLOOR_S)
        self.inflight.last = None
        self.deadline = time.monotonic() + self.seconds
        _progress(what, self.seconds)
        previous = None
        if self.alarms:
            previous = signal.signal(signal.SIGALRM, self._ring)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        hung = False
        try:
            yield
            self.settle()
        except Hang:
            hung = True
            raise
        finally:
            if self.alarms:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            self.deadline = math.inf
            if hung:  # only host work is left, the results, with no check (a loaded machine took over 2 s)
                _progress(f"results after {what}", HANG_FLOOR_S)
            else:
                _progress(f"checks after {what}", self.floor)

    def settle(self) -> None:
        """Wait for the device to finish what was launched, until the deadline."""
        if not self.backend.settle(self.deadline):
            raise Hang(self.message(device=True))

    def message(self, device: bool = False) -> str:
        if device:  # the kernels run after their launch returned: the last one launched is the suspect
            where = f", after {self.inflight.last} was launched" if self.inflight.last else ""
        else:
            where = f", in {self.inflight.kernel}" if self.inflight.kernel else ""
        what = "the device had not finished" if device else "it had not returned"
        return f"{self.what}{where} did not finish within its bound of {self.seconds:.3g} s ({what})"

    def _ring(self, signum: int, frame: Any) -> None:
        # the alarm and the device's deadline fall due together: where the host was waiting for the device, the
        # device had not finished (on the H200 the alarm won the race, and the hang named no kernel)
        raise Hang(self.message(device=_polling))


def run_protocol(workloads: Mapping[int, Workload], guards: Guards, backend: Backend, *, seed: int,
                 replays: int = 3, step_mode: bool = True, hang_after: float | None = None) -> dict[int, SizeOutcome]:
    """Run the protocol over capture sizes (tokens -> workload) sharing one slab; see the module doc.

    `replays` graph replays per size (at least 3) load input sets 1, 2, ... in turn and the first set again
    last; there are `replays - 1` input sets, each run eagerly. `hang_after` is the floor of every run's bound
    in seconds (default: `hang_floor()`).
    """
    if replays < 3:
        raise ValueError("the protocol replays each graph at least 3 times")
    floor = hang_floor() if hang_after is None else hang_after
    if not floor > 0:
        raise UsageError(f"hang_after: got {floor!r}; allowed: seconds, a number > 0")
    guards.reserve()
    sizes: list[_Size] = []
    for tokens in sorted(workloads):
        wl = workloads[tokens]
        with phases.timed("inputs"):
            inputs = [wl.inputs(seed + 1 + r) for r in range(replays - 1)]
        with phases.timed("reference"):
            several = getattr(wl, "references", None)  # one pass for every input set, where the workload can
            refs = list(several(inputs)) if several is not None else [wl.reference(x) for x in inputs]
        with phases.timed("inputs"), guards.tagged(tokens):
            static = {key: guards.adopt(value, f"input.{key}") for key, value in inputs[0].items()}
        sizes.append(_Size(wl, tokens, inputs, refs, static, SizeOutcome(tokens)))

    inflight = _InFlight()
    clock = _Clock(backend, floor, inflight)
    if not clock.alarms:
        for size in sizes:
            size.outcome.limits.append("hangs of host code are not bounded: the protocol runs outside the main "
                                       "thread, where no alarm can be set")
    try:
        with watched(guards), observing(inflight), backend.host():
            _run(sizes, guards, backend, replays, step_mode, clock)
    except _Wedged:
        for size in sizes:
            if size.outcome.error is None:
                size.outcome.error, size.outcome.error_kind = "not run: a kernel of another size hung and still " \
                                                              "holds the GPU", "hang"
        return {s.tokens: s.outcome for s in sizes}
    guards.check_free()
    return {s.tokens: s.outcome for s in sizes}


def _hung(size: _Size, err: Hang, backend: Backend) -> None:
    """Record a hang; on a GPU, stop everything: the kernel cannot be stopped in-process."""
    global _wedged
    out = size.outcome
    out.error, out.error_kind = str(err), "hang"
    if backend.warms_up:  # a device that runs kernels on its own: they are still running
        _wedged = True
        out.notes.append("hang: a GPU kernel cannot be stopped in-process; it still holds the device, so nothing "
                         "more ran in this process (run the case with --isolate to go on past it)")
        raise _Wedged from err


def _run(sizes: list[_Size], guards: Guards, backend: Backend, replays: int, step_mode: bool, clock: _Clock) -> None:
    for size in sizes:
        with guards.tagged(size.tokens):
            _eager(size, guards, backend, step_mode, clock)
    live = [s for s in sizes if s.outcome.error is None]
    for size in sorted(live, key=lambda s: -s.tokens):  # largest first, as vLLM captures
        try:
            size.load(0)
            made = len(guards.buffers)  # nothing is released during a capture: it is in no scope
            with guards.tagged(size.tokens), guards.running(f"capture T={size.tokens}"), \
                    clock.bounded(size, f"capture T={size.tokens}"), phases.timed("capture"):
                with GuardMode(guards), quiet_poison():
                    pieces = size.eager_piece()
                outside = guards.buffers[made:]
                size.piecewise = pieces is not None
                size.graph = backend.capture(size.thunk(_no_step, pieces), guards)
                del pieces
            guards.kept_from_capture(guards.buffers[made:], returned=backend.output(size.graph), outside=outside)
            with phases.timed("audit"):
                backend.audit(size.graph, guards, f"graph audit T={size.tokens}")
        except Hang as err:
            _hung(size, err, backend)
        except CaptureError as err:
            size.outcome.error, size.outcome.error_kind = str(err), "capture-error"
            if "invalid argument" in str(err):
                size.outcome.notes.append("invalid argument at capture end: probably a memset past its allocation")
        except UsageError:
            raise
        except Exception as err:  # noqa: BLE001 - the re-execution backend runs the op while capturing
            size.outcome.error, size.outcome.error_kind = f"{type(err).__name__}: {_first_line(err)}", "crash"
    for size in sizes:
        size.state = guards.state_buffers(size.tokens)
    sets = replays - 1
    for r in range(sets):  # replays #1 .. #sets, one per input set
        for size in _replaying(sizes):
            with guards.tagged(size.tokens), guards.running(f"replay T={size.tokens} #{r + 1}"):
                _replay(size, r, r, guards, backend, clock, keep=r == 0)
    for size in _replaying(sizes):
        if guards.persistent():  # an op that keeps memory across calls (any size's) may re-allocate it in one
            with guards.tagged(size.tokens):
                _eager_again(size, guards, backend, clock)
    for size in _replaying(sizes):  # the last replay: input set 1 again, what the op released in a stranger's hands
        size.strangers = guards.hand_out_released()
        with guards.tagged(size.tokens), guards.running(f"replay T={size.tokens} #{sets + 1}"):
            _replay(size, sets, 0, guards, backend, clock, keep=True)
        size.stranger_writes = guards.strangers_changed(size.strangers)
    for size in (s for s in sizes if s.flipped_replay is not None and s.outcome.error is None):
        again = size.flipped_replay
        assert again is not None
        with guards.tagged(size.tokens):
            cause = _poison_differs(size, guards, _FILLS[(again + (not backend.warms_up)) % 2], again)
        if cause is not None and (size.outcome.attribution is None or cause.rank < size.outcome.attribution.rank):
            size.outcome.attribution = cause
    for size in (s for s in sizes if s.outcome.error is None and s.replayed):
        with guards.tagged(size.tokens):
            _judge_state(size, guards, backend, clock)


def _replaying(sizes: list[_Size]) -> Iterator[_Size]:
    return (s for s in sizes if s.graph is not None and s.outcome.error is None)


def _no_step(name: str) -> None:
    """Under capture nothing runs, so there is nothing to check between launches."""


def _eager(size: _Size, guards: Guards, backend: Backend, step_mode: bool, clock: _Clock) -> None:
    """Warm up in step mode (guards checked after every launch), then one timed eager run per input set."""
    out = size.outcome
    warmup = f"warm-up T={size.tokens}"

    def step(name: str) -> None:
        clock.settle()
        guards.check(warmup, op=name)

    def warm() -> None:
        size.load(0)
        guards.arm("dense")
        with _guarded(guards), guards.running(warmup), _write_sets(guards, step_mode), \
                clock.bounded(size, warmup, compiles=True):
            backend.warmup(size.thunk(step if step_mode else _no_step))
        guards.check(warmup)

    def eager(r: int, stepped: bool) -> tuple[float, torch.Tensor]:
        size.load(r)
        guards.arm(_FILLS[(r + (not backend.warms_up)) % 2])
        phase = f"eager T={size.tokens} #{r + 1}"
        with _guarded(guards), guards.running(phase), _write_sets(guards, stepped):
            with clock.bounded(size, phase):
                stop = backend.timer(clock.deadline)
                result = size.thunk(step if stepped else _no_step)()
                took = stop()
            guards.check(phase)
            kept = result.detach().clone()
            del result  # what still points at a buffer when the scope ends is the op's cache
        return took, kept

    try:
        if backend.warms_up:
            with phases.timed("warm-up"):
                _constant_writes_named(guards, step_mode, warm)
        empties = guards.empties
        for r in range(len(size.inputs)):
            # Without a warm-up (nothing to compile or warm on CPU) the first eager run is the stepped
            # one, and takes the dense fill: the one every write changes, so each op is named.
            stepped = step_mode and r == 0 and not backend.warms_up
            if stepped:
                warmup = f"eager T={size.tokens} #1"
            with phases.timed("eager"):
                took, kept = _constant_writes_named(guards, stepped, functools.partial(eager, r, stepped))
            out.eager_us.append(took)
            size.eager.append(kept)
            label = "vs reference" if size.refs[r] is not None else "finite (no reference)"
            out.comparisons.append((f"eager #{r + 1} {label}", size.check(r, size.eager[r])))
        size.made_empties = guards.empties > empties
    except Hang as err:
        _hung(size, err, backend)
        return
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the op is a crash verdict, not a harness error
        out.error, out.error_kind = f"{type(err).__name__}: {_first_line(err)}", "crash"
        return
    if not out.numerically_ok:
        cause = _attribute(size, guards, backend)
        if cause is not None and (out.attribution is None or cause.rank < out.attribution.rank):
            out.attribution = cause


def _eager_again(size: _Size, guards: Guards, backend: Backend, clock: _Clock) -> None:
    """An op that caches memory runs eagerly once more after every capture, on the first input set, as a server
    runs eagerly between replays: a cache it re-sizes or re-allocates now leaves the graphs pointing at memory
    it released (handed to a stranger before the last replay), and an output that differs from the first eager
    run on the same inputs carries state from call to call."""
    phase = f"eager after capture T={size.tokens}"
    size.load(0)
    guards.arm(_FILLS[(not backend.warms_up) % 2])
    try:
        with _guarded(guards), guards.running(phase):
            with clock.bounded(size, phase):
                result = size.thunk(_no_step)()
            guards.check(phase)
            again = result.detach().clone()
            del result
    except Hang as err:
        _hung(size, err, backend)
        return
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001
        size.outcome.error, size.outcome.error_kind = f"{type(err).__name__}: {_first_line(err)}", "crash"
        return
    if not agree(again, size.eager[0], size.workload.tolerance):
        size.outcome.state = Verdict.REPLAY_STATE
        changed = compare(again, size.eager[0].double(), size.workload.tolerance)
        size.outcome.notes.append(f"{Verdict.REPLAY_STATE}: eagerly, the same inputs gave another output after "
                                  f"capture than on the first call ({changed})")


def _constant_writes_named(guards: Guards, stepped: bool, run: Callable[[], _T]) -> _T:
    """A stepped run checks the constants (a layer's weights) once, when it ends, against the tensors they were
    copied from. Where one changed, they are put back and the run made again with every launch's write set
    covering them, so that the launch that wrote is named: a layer's weights are read once a run, not once a
    launch, unless something writes them."""
    done = run()
    if stepped and not lanes_checked(guards.device) and guards.constants_changed():
        guards.restore_constants()
        with guards.constants_per_launch():
            done = run()
    return done


def _write_sets(guards: Guards, stepped: bool) -> AbstractContextManager[None]:
    """In step mode, where the lane checker does not run, each launch's write set is taken (`lanes.WriteSet`)."""
    return guards.watching_writes() if stepped and not lanes_checked(guards.device) else nullcontext()


def _same(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """Two runs agree, NaN where NaN: a run that reads a NaN fill is repeatable if it reads it again."""
    return bool(torch.equal(a.isnan(), b.isnan())) and agree(torch.nan_to_num(a), torch.nan_to_num(b), tol)


def _rerun(size: _Size, guards: Guards, r: int, fill: Fill, phase: str,
           variant: AbstractContextManager[None] | None = None, *, checked: bool = True) -> torch.Tensor:
    """Eager run `r` again, the guards armed with `fill` and, where given, one of the guards' variants in force
    (flipped poison, benign guards); its output, kept."""
    size.load(r)
    guards.arm(fill)
    with variant or nullcontext(), _guarded(guards), guards.running(phase):
        out = size.thunk(_no_step)().detach().clone()
        if checked:
            guards.check(phase)
    return out


def _poison_differs(size: _Size, guards: Guards, fill: Fill, r: int) -> Verdict | None:
    """Differential poisoning: rerun eager run `r` with every bit of the `empty` poison flipped. An output that
    changes reads bytes nobody wrote, whether or not zero would have been the right answer. An op that gives
    another output on every call (it carries state) is first run again unflipped: one that no longer agrees
    with its own eager run proves nothing."""
    phase = f"poison check T={size.tokens}"
    tol = size.workload.tolerance
    if not _same(_rerun(size, guards, r, fill, phase), size.eager[r], tol):
        return None
    # the guards as they were for that run: only the poison differs
    flipped = _rerun(size, guards, r, fill, phase, guards.flipped_empties())
    if agree(flipped, size.eager[r], tol):
        return None
    changed = compare(flipped, size.eager[r].double(), tol)
    size.outcome.notes.append(f"{Verdict.UNINIT_READ}: the output changed when every bit of the `empty` poison was "
                              f"flipped (0x7FC5 to 0x803A), the inputs the same ({changed})")
    return Verdict.UNINIT_READ


def _attribute(size: _Size, guards: Guards, backend: Backend) -> Verdict | None:
    """Rerun eagerly with one poison made benign at a time: the one that fixes the output is the cause."""
    r = next(i for i, (_, c) in enumerate(size.outcome.comparisons) if not c.ok)
    phase = f"attribution T={size.tokens}"
    variants = ((Verdict.UNINIT_READ, guards.benign_empties, "empty buffers hold zeros instead of poison"),
                (Verdict.OOB_READ, guards.benign_guards, "guards hold zeros instead of NaN"))
    for cause, benign, how in variants:
        fixed = size.check(r, _rerun(size, guards, r, "nan", phase, benign(), checked=False))
        guards.arm("nan")  # the benign guard fill is not a finding
        if fixed.ok:
            size.outcome.notes.append(f"{cause}: the output is right when {how} ({fixed})")
            return cause
    # A read past a buffer whose value matters (a bias row, an index), where zeros are no more right than NaN:
    # the output moves with the guards' fill, the inputs and the poison the same, while two runs with the same
    # fill agree (an op that carries state from call to call gives another output each call, whatever the fill).
    outs = [_rerun(size, guards, r, fill, phase, checked=False) for fill in (*_FILLS, _FILLS[0])]
    guards.arm("nan")
    tol = size.workload.tolerance
    if _same(outs[0], outs[2], tol) and not agree(outs[0], outs[1], tol):
        moved = compare(outs[1], outs[0].double(), tol)
        size.outcome.notes.append(f"{Verdict.OOB_READ}: the output changed with the guards' fill ({_FILLS[0]} to "
                                  f"{_FILLS[1]}), the inputs the same ({moved})")
        return Verdict.OOB_READ
    return None


def _replay(size: _Size, number: int, r: int, guards: Guards, backend: Backend, clock: _Clock, *,
            keep: bool = False) -> None:
    with phases.timed("replay"):
        _replay_once(size, number, r, guards, backend, clock, keep=keep)


def _replay_once(size: _Size, number: int, r: int, guards: Guards, backend: Backend, clock: _Clock, *,
                 keep: bool = False) -> None:
    """Replay #`number + 1` on input set `r`; every second one with the `empty` poison flipped (differential
    poisoning at no extra run: only a replay that then differs from eager gets an eager rerun to tell uninit-read
    from a graph's own divergence, `_poison_differs`). `keep`: the graph's state is kept, before and after."""
    out = size.outcome
    flip = size.made_empties and number % 2 == 1
    phase = f"replay T={size.tokens} #{number + 1}"
    try:
        size.load(r)
        with guards.flipped_empties() if flip else nullcontext():
            guards.arm(_FILLS[number % 2])
        before = guards.state_bytes(size.state) if keep else None
        with clock.bounded(size, phase):
            stop = backend.timer(clock.deadline)
            result = _replay_graph(size, guards, backend)
            took = stop()
        out.replay_us.append(took)
        if before is not None:
            kept = (before, guards.state_bytes(size.state))
            size.first, size.last = (kept, None) if number == 0 else (size.first, kept)
        guards.check(phase)
    except Hang as err:
        _hung(size, err, backend)
        return
    except CaptureError as err:
        out.error, out.error_kind = str(err), "capture-error"
        return
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - a failed replay is a crash verdict
        out.error, out.error_kind = f"{type(err).__name__}: {_first_line(err)}", "crash"
        return
    reference = None
    if size.refs[r] is not None:
        reference = size.check(r, result)
        out.comparisons.append((f"replay #{number + 1} vs reference", reference))
    against = compare(result, size.eager[r].to(torch.float64), size.workload.tolerance)
    out.comparisons.append((f"replay #{number + 1} vs eager", against))
    size.replayed.append(_Replayed(number + 1, r, result.detach().clone(), against, reference))
    if flip and not against.ok and size.flipped_replay is None:
        size.flipped_replay = number


def _replay_graph(size: _Size, guards: Guards, backend: Backend) -> torch.Tensor:
    """Replay the graph, after the op's eager piece where it has one: run again on the inputs loaded, its tensors
    not handed to the graph, which reads those it captured (vLLM's piecewise capture copies nothing between
    pieces)."""
    if size.piecewise:
        with _guarded(guards):
            size.eager_piece()
    return backend.replay(size.graph)


def _judge_state(size: _Size, guards: Guards, backend: Backend, clock: _Clock) -> None:
    """The graph-state checks, from what the replays left: use-after-free (the last replay changed the bytes of a
    stranger that memory the op released was handed to, or its output or state change with the stranger's
    bytes), replay-state (the same inputs replayed again give another output, or leave the graph's state otherwise
    than the first replay did), stale-capture (a replay disagrees with eager on the same inputs while eager agrees
    with the reference)."""
    out = size.outcome
    last, first = size.replayed[-1], size.replayed[0]
    tol = size.workload.tolerance
    released = {id(b) for b, _ in size.strangers}
    if size.strangers:
        if size.stranger_writes:
            out.state = Verdict.USE_AFTER_FREE
            out.notes.extend(f"{Verdict.USE_AFTER_FREE}: replay #{last.number} wrote {text}"
                             for text in size.stranger_writes)
            return
        if _reads_strangers(size, guards, backend, clock, released):
            out.state = Verdict.USE_AFTER_FREE
            return
    drift: list[str] = []
    if not agree(last.out, first.out, tol):
        drift.append(f"replay #{last.number} gave another output than replay #1 on the same inputs "
                     f"({compare(last.out, first.out.double(), tol)})")
    if size.first is not None and size.last is not None:
        drift += guards.state_drift(size.state, size.first, size.last, tol, f"replay #{last.number}", skip=released)
    if drift:
        out.state = Verdict.REPLAY_STATE
        wrong = next((p for p in size.replayed if not p.vs_eager.ok or (p.vs_reference is not None and
                                                                          not p.vs_reference.ok)), None)
        first_drift = (f"; replay #{wrong.number} was the first to drift ({wrong.vs_reference or wrong.vs_eager})"
                       if wrong is not None else "; every replay's output still agreed with eager")
        out.notes.extend(f"{Verdict.REPLAY_STATE}: {text}" for text in drift[:-1])
        out.notes.append(f"{Verdict.REPLAY_STATE}: {drift[-1]}{first_drift}")
        return
    for p in size.replayed:
        eager_ok = next((c.ok for name, c in out.comparisons if name.startswith(f"eager #{p.inputs + 1} ")), False)
        if not p.vs_eager.ok and eager_ok:
            out.state = Verdict.STALE_CAPTURE
            out.notes.append(f"{Verdict.STALE_CAPTURE}: replay #{p.number} (input set {p.inputs + 1}, the graph "
                             f"captured with set 1) disagrees with eager on the same inputs ({p.vs_eager}), while "
                             "eager agrees with the reference: something decided at capture did not follow the "
                             "inputs")
            return


def _reads_strangers(size: _Size, guards: Guards, backend: Backend, clock: _Clock, released: set[int]) -> bool:
    """Differential poisoning of released memory: replay the last replay again, its inputs and the state it
    started from put back, with the bytes the released memory held before the stranger's fill restored. An
    output, or a state byte, that changes with them was read from memory the op had released."""
    last = size.replayed[-1]
    if size.last is None:
        return False
    guards.put_state(size.state, size.last[0], skip=released)
    guards.hand_out_released(restored=True)
    size.load(last.inputs)
    guards.arm(_FILLS[(last.number - 1) % 2])
    phase = f"use-after-free check T={size.tokens}"
    before = guards.state_bytes(size.state)
    with guards.running(phase), clock.bounded(size, phase):
        again = _replay_graph(size, guards, backend).detach().clone()
    after = guards.state_bytes(size.state)
    guards.check(phase)
    tol = size.workload.tolerance
    found = []
    if not agree(again, last.out, tol):
        found.append(f"its output changed ({compare(again, last.out.double(), tol)})")
    found += guards.state_drift(size.state, size.last, (before, after), tol, "the check",
                                against=f"replay #{last.number}", skip=released)
    if not found:
        return False
    names = ", ".join(f"{b.name} ({b.site}, {b.nbytes:,} B)" for b, _ in size.strangers)
    made = (" (made outside the graph by the op's eager piece, at capture: the graph reads those, whatever the "
            "eager piece makes later)") if size.piecewise else ""
    size.outcome.notes.append(f"{Verdict.USE_AFTER_FREE}: replay #{last.number} read memory the op had released "
                              f"({names}){made}, handed to a stranger who filled it (floats with "
                              f"0x{STRANGER_WORD:08X}, integers with zeros): with the bytes it held before put back, "
                              f"the same inputs replayed again, {'; and '.join(found)}")
    return True
