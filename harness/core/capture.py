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
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import torch

from graph_harness.core import runtime
from graph_harness.core.compare import Comparison, agree, compare, finite
from graph_harness.core.guard import Buffer, Fill, GuardMode, Guards, UsageError
from graph_harness.core.lanes import lanes_checked, watched
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
        """The expected output, any float dtype, on the inputs' device; None when there is none."""
        ...


class CaptureError(RuntimeError):
    """Capture or instantiation failed; the message is the CUDA one."""


class Backend(Protocol):
    """How a thunk is warmed up, captured and replayed."""

    name: str
    warms_up: bool  # whether a warm-up run precedes the eager runs (CUDA: JIT, allocator, side stream)

    def warmup(self, thunk: Thunk) -> torch.Tensor: ...

    def capture(self, thunk: Thunk, guards: Guards) -> Any: ...

    def audit(self, graph: Any, guards: Guards, phase: str) -> None: ...

    def replay(self, graph: Any) -> torch.Tensor: ...

    def timer(self) -> Callable[[], float]: ...


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
        try:
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"), \
                    GuardMode(guards, capturing=True):
                out = thunk()
        except RuntimeError as err:
            raise CaptureError(_first_line(err)) from err
        return graph, out

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

    def timer(self) -> Callable[[], float]:
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()

        def stop() -> float:
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) * 1e3

        return stop


@dataclass
class _Recording:
    """What a re-execution 'graph' holds: the thunk and the allocations it made, in order."""

    thunk: Thunk
    guards: Guards
    allocations: list[tuple[Buffer, torch.Tensor]] = field(default_factory=list)
    out: torch.Tensor | None = None


class _ReplayMode(GuardMode):
    """Hands each factory call the buffer recorded for it at capture, refilled as a graph would."""

    def __init__(self, guards: Guards, recording: _Recording) -> None:
        super().__init__(guards)
        self.recording = recording
        self.index = 0

    def make(self, shape: tuple[int, ...], stride: tuple[int, ...] | None, dtype: torch.dtype, kind: str,
             value: Any, site: tuple[str, str]) -> torch.Tensor:
        allocations = self.recording.allocations
        if self.index >= len(allocations):
            raise CaptureError(f"replay made allocation #{self.index + 1}; the capture made {len(allocations)}")
        buf, tensor = allocations[self.index]
        self.index += 1
        if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
            raise CaptureError(f"replay asked {tuple(shape)} {dtype} where the capture allocated {buf.name} "
                               f"{tuple(tensor.shape)} {tensor.dtype} ({buf.site})")
        if kind != "empty":  # `arm` re-poisoned the empty ones before this replay
            tensor.fill_(value)
        return tensor


class ReexecBackend:
    """CPU stand-in for a graph: replay re-executes the op against the buffers captured for it.

    Capture runs the op's host code once, its interpreted launches skipped, and records its
    allocations; each replay runs it again while every factory call gets its recorded buffer back
    (same address, refilled as the graph's memset would), so all launches hit the static buffers a
    real graph would. It checks that the op allocates the
    same sequence and returns the same static output. Unlike a graph it re-runs host code.
    """

    name = "reexec"
    warms_up = False  # the interpreter compiles nothing, and there is no stream to warm

    def warmup(self, thunk: Thunk) -> torch.Tensor:
        return thunk()

    def capture(self, thunk: Thunk, guards: Guards) -> _Recording:
        recording = _Recording(thunk, guards)

        def keep(buf: Buffer, tensor: torch.Tensor) -> torch.Tensor:
            recording.allocations.append((buf, tensor))
            return tensor

        with GuardMode(guards, capturing=True, on_alloc=keep), quiet_poison(), _interpreted_launches_skipped():
            recording.out = thunk()
        return recording

    def audit(self, graph: Any, guards: Guards, phase: str) -> None:
        """No graph nodes to read: the guards after each replay see what a memset wrote."""

    def replay(self, graph: Any) -> torch.Tensor:
        recording: _Recording = graph
        mode = _ReplayMode(recording.guards, recording)
        with mode, quiet_poison():
            out = recording.thunk()
        if mode.index != len(recording.allocations):
            raise CaptureError(f"replay made {mode.index} allocations; the capture made {len(recording.allocations)}")
        static = recording.out
        assert static is not None
        if out.data_ptr() != static.data_ptr():
            # An output made by a torch op (`x @ w`), not a factory: a graph would have written it into the
            # memory its capture gave that op, so it lands in the captured tensor here too.
            if (out.shape, out.dtype) != (static.shape, static.dtype):
                raise CaptureError(f"replay returned {tuple(out.shape)} {out.dtype} where the capture returned "
                                   f"{tuple(static.shape)} {static.dtype}: a graph's output cannot change shape")
            static.copy_(out)
        return static

    def timer(self) -> Callable[[], float]:
        start = time.perf_counter()
        return lambda: (time.perf_counter() - start) * 1e6


@contextmanager
def _interpreted_launches_skipped() -> Iterator[None]:
    """Like a CUDA capture, the re-execution capture records and runs nothing: interpreted Triton
    launches are skipped (a fifth of a CPU case's time). Host code and raw memsets still run."""
    try:
        from triton.runtime.interpreter import GridExecutor
    except ImportError:  # no interpreter in this triton: the launches run, which only costs time
        yield
        return
    launch = GridExecutor.__call__
    GridExecutor.__call__ = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        GridExecutor.__call__ = launch


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

@dataclass
class SizeOutcome:
    """What happened at one capture size; the verdict is decided from this (graph_harness.core.verdict)."""

    tokens: int
    comparisons: list[tuple[str, Comparison]] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None  # "capture-error" or "crash"
    eager_us: list[float] = field(default_factory=list)
    replay_us: list[float] = field(default_factory=list)
    attribution: Verdict | None = None  # uninit-read / oob-read when a poison variant fixed the output
    notes: list[str] = field(default_factory=list)

    @property
    def worst(self) -> Comparison | None:
        return max((c for _, c in self.comparisons), key=lambda c: c.rel_l2, default=None)

    @property
    def numerically_ok(self) -> bool:
        return all(c.ok for _, c in self.comparisons)


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
    flipped_replay: int | None = None  # a replay with the poison flipped that differed from its eager run

    def thunk(self, step: Step) -> Thunk:
        return lambda: self.workload.run(self.static, step)

    def check(self, r: int, out: torch.Tensor) -> Comparison:
        """Output `out` of input set `r` against its reference, or for NaN and inf when there is none."""
        ref = self.refs[r]
        tol = self.workload.tolerance
        return finite(out, tol) if ref is None else compare(out, ref, tol)

    def load(self, r: int) -> None:
        for key, value in self.inputs[r].items():
            self.static[key].copy_(value)


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


def run_protocol(workloads: Mapping[int, Workload], guards: Guards, backend: Backend, *, seed: int,
                 replays: int = 2, step_mode: bool = True) -> dict[int, SizeOutcome]:
    """Run the protocol over capture sizes (tokens -> workload) sharing one slab; see the module doc."""
    if replays < 2:
        raise ValueError("the protocol replays each graph at least twice")
    guards.reserve()
    sizes: list[_Size] = []
    for tokens in sorted(workloads):
        wl = workloads[tokens]
        inputs = [wl.inputs(seed + 1 + r) for r in range(replays)]
        refs = [wl.reference(x) for x in inputs]
        with guards.tagged(tokens):
            static = {key: guards.adopt(value, f"input.{key}") for key, value in inputs[0].items()}
        sizes.append(_Size(wl, tokens, inputs, refs, static, SizeOutcome(tokens)))

    with watched(guards):
        _run(sizes, guards, backend, replays, step_mode)
    guards.check_free()
    return {s.tokens: s.outcome for s in sizes}


def _run(sizes: list[_Size], guards: Guards, backend: Backend, replays: int, step_mode: bool) -> None:
    for size in sizes:
        with guards.tagged(size.tokens):
            _eager(size, guards, backend, step_mode)
    live = [s for s in sizes if s.outcome.error is None]
    for size in sorted(live, key=lambda s: -s.tokens):  # largest first, as vLLM captures
        try:
            size.load(0)
            with guards.tagged(size.tokens), guards.running(f"capture T={size.tokens}"):
                size.graph = backend.capture(size.thunk(_no_step), guards)
            backend.audit(size.graph, guards, f"graph audit T={size.tokens}")
        except CaptureError as err:
            size.outcome.error, size.outcome.error_kind = str(err), "capture-error"
            if "invalid argument" in str(err):
                size.outcome.notes.append("invalid argument at capture end: probably a memset past its allocation")
        except UsageError:
            raise
        except Exception as err:  # noqa: BLE001 - the re-execution backend runs the op while capturing
            size.outcome.error, size.outcome.error_kind = f"{type(err).__name__}: {_first_line(err)}", "crash"
    for r in range(replays):
        for size in (s for s in sizes if s.graph is not None and s.outcome.error is None):
            with guards.tagged(size.tokens), guards.running(f"replay T={size.tokens} #{r + 1}"):
                _replay(size, r, guards, backend)
    for size in (s for s in sizes if s.flipped_replay is not None and s.outcome.error is None):
        again = size.flipped_replay
        assert again is not None
        with guards.tagged(size.tokens):
            cause = _poison_differs(size, guards, _FILLS[(again + (not backend.warms_up)) % 2], again)
        if cause is not None and (size.outcome.attribution is None or cause.rank < size.outcome.attribution.rank):
            size.outcome.attribution = cause


def _no_step(name: str) -> None:
    """Under capture nothing runs, so there is nothing to check between launches."""


def _eager(size: _Size, guards: Guards, backend: Backend, step_mode: bool) -> None:
    """Warm up in step mode (guards checked after every launch), then one timed eager run per input set."""
    out = size.outcome
    warmup = f"warm-up T={size.tokens}"

    def step(name: str) -> None:
        guards.check(warmup, op=name)

    def warm() -> None:
        size.load(0)
        guards.arm("dense")
        with _guarded(guards), guards.running(warmup), _write_sets(guards, step_mode):
            backend.warmup(size.thunk(step if step_mode else _no_step))
            guards.check(warmup)

    def eager(r: int, stepped: bool) -> tuple[float, torch.Tensor]:
        size.load(r)
        guards.arm(_FILLS[(r + (not backend.warms_up)) % 2])
        with _guarded(guards), guards.running(f"eager T={size.tokens} #{r + 1}"), _write_sets(guards, stepped):
            stop = backend.timer()
            result = size.thunk(step if stepped else _no_step)()
            took = stop()
            guards.check(f"eager T={size.tokens} #{r + 1}")
            kept = result.detach().clone()
            del result  # what still points at a buffer when the scope ends is the op's cache
        return took, kept

    try:
        if backend.warms_up:
            _constant_writes_named(guards, step_mode, warm)
        empties = guards.empties
        for r in range(len(size.inputs)):
            # Without a warm-up (nothing to compile or warm on CPU) the first eager run is the stepped
            # one, and takes the dense fill: the one every write changes, so each op is named.
            stepped = step_mode and r == 0 and not backend.warms_up
            if stepped:
                warmup = f"eager T={size.tokens} #1"
            took, kept = _constant_writes_named(guards, stepped, functools.partial(eager, r, stepped))
            out.eager_us.append(took)
            size.eager.append(kept)
            label = "vs reference" if size.refs[r] is not None else "finite (no reference)"
            out.comparisons.append((f"eager #{r + 1} {label}", size.check(r, size.eager[r])))
        size.made_empties = guards.empties > empties
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the op is a crash verdict, not a harness error
        out.error, out.error_kind = f"{type(err).__name__}: {_first_line(err)}", "crash"
        return
    if not out.numerically_ok:
        cause = _attribute(size, guards, backend)
        if cause is not None and (out.attribution is None or cause.rank < out.attribution.rank):
            out.attribution = cause


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


def _poison_differs(size: _Size, guards: Guards, fill: Fill, r: int) -> Verdict | None:
    """Differential poisoning: rerun eager run `r` with every bit of the `empty` poison flipped. An output that
    changes reads bytes nobody wrote, whether or not zero would have been the right answer."""
    size.load(r)
    guards.arm(fill)  # the guards as they were for that run: only the poison differs
    with guards.flipped_empties(), _guarded(guards), guards.running(f"poison check T={size.tokens}"):
        flipped = size.thunk(_no_step)().detach().clone()
        guards.check(f"poison check T={size.tokens}")
    if agree(flipped, size.eager[r], size.workload.tolerance):
        return None
    changed = compare(flipped, size.eager[r].double(), size.workload.tolerance)
    size.outcome.notes.append(f"{Verdict.UNINIT_READ}: the output changed when every bit of the `empty` poison was "
                              f"flipped (0x7FC5 to 0x803A), the inputs the same ({changed})")
    return Verdict.UNINIT_READ


def _attribute(size: _Size, guards: Guards, backend: Backend) -> Verdict | None:
    """Rerun eagerly with one poison made benign at a time: the one that fixes the output is the cause."""
    r = next(i for i, (_, c) in enumerate(size.outcome.comparisons) if not c.ok)
    variants = ((Verdict.UNINIT_READ, guards.benign_empties, "empty buffers hold zeros instead of poison"),
                (Verdict.OOB_READ, guards.benign_guards, "guards hold zeros instead of NaN"))
    for cause, benign, how in variants:
        size.load(r)
        guards.arm("nan")
        with benign(), _guarded(guards), guards.running(f"attribution T={size.tokens}"):
            fixed = size.check(r, size.thunk(_no_step)())
        guards.arm("nan")  # the benign guard fill is not a finding
        if fixed.ok:
            size.outcome.notes.append(f"{cause}: the output is right when {how} ({fixed})")
            return cause
    return None


def _replay(size: _Size, r: int, guards: Guards, backend: Backend) -> None:
    """Replay `r`; every second one with the `empty` poison flipped (differential poisoning at no extra run:
    only a replay that then differs from eager gets an eager rerun to tell uninit-read from a graph's own
    divergence, `_poison_differs`)."""
    out = size.outcome
    flip = size.made_empties and r % 2 == 1
    try:
        size.load(r)
        with guards.flipped_empties() if flip else nullcontext():
            guards.arm(_FILLS[r % 2])
        stop = backend.timer()
        result = backend.replay(size.graph)
        out.replay_us.append(stop())
        guards.check(f"replay T={size.tokens} #{r + 1}")
    except CaptureError as err:
        out.error, out.error_kind = str(err), "capture-error"
        return
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - a failed replay is a crash verdict
        out.error, out.error_kind = f"{type(err).__name__}: {_first_line(err)}", "crash"
        return
    if size.refs[r] is not None:
        out.comparisons.append((f"replay #{r + 1} vs reference", size.check(r, result)))
    eager = size.eager[r].to(torch.float64)
    against = compare(result, eager, size.workload.tolerance)
    out.comparisons.append((f"replay #{r + 1} vs eager", against))
    if flip and not against.ok and size.flipped_replay is None:
        size.flipped_replay = r
