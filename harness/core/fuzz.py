"""Fuzzing: capture each size once, then replay it over and over with fresh random inputs, the guards checked
after every replay, until a replay writes (or, where the lane checker runs, reads) outside a buffer.

What a workload's kernels branch on is what the inputs vary: a workload with `fuzz_inputs(seed)` draws them
from there (the MoE layer's: hot experts, one expert for every token, idle tokens, denormal and huge values),
any other from its `inputs(seed)`, which an op's inputs maker varies by seed.

On the first finding the run stops, runs that input again eagerly in step mode to name the kernel, and keeps
the input and the one the graph was captured with (`Finding`), so that `Recorded` can replay them exactly.
A replay's output is not compared (there is no eager run of each input to compare it to): the fuzzer looks
for accesses outside buffers, which the guards see whatever the output.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from graph_harness.core import phases
from graph_harness.core.capture import (
    Backend,
    CaptureError,
    Hang,
    SizeOutcome,
    Workload,
    _Clock,
    _guarded,
    _InFlight,
    _no_step,
    _replay_graph,
    _Size,
    _write_sets,
    default_backend,
    hang_floor,
    mark_wedged,
    quiet_poison,
)
from graph_harness.core.check import Inputs, Op, prepare
from graph_harness.core.expect import describe
from graph_harness.core.guard import GuardMode, Guards, UsageError, sharing_guards
from graph_harness.core.lanes import lanes_checked, watched
from graph_harness.core.launches import observing
from graph_harness.core.results import Environment, environment
from graph_harness.core.violation import UNHELD, Violation

Progress = Callable[[int, float], None]  # (checked replays so far, seconds of replaying so far)
_PROGRESS_EVERY_S = 0.1


@dataclass(frozen=True)
class Finding:
    """The first access outside a buffer a fuzz run found, with the inputs that made it (on the CPU)."""

    capture_size: int
    replay: int  # the checked replay it came in, 1-based; 0: the eager run or the capture, before any replay
    phase: str
    seed: int  # the seed its inputs were drawn from
    violations: tuple[Violation, ...]  # what that replay's check found
    stepped: tuple[Violation, ...]  # what the eager rerun of the same inputs found, launch by launch
    inputs: dict[str, torch.Tensor]
    capture_seed: int
    capture_inputs: dict[str, torch.Tensor]

    @property
    def ops(self) -> tuple[str, ...]:
        """The kernels the step-mode rerun named, in the order of its violations."""
        return tuple(dict.fromkeys(v.op for v in self.stepped if v.op))


@dataclass(frozen=True)
class FuzzRun:
    """What a fuzz run did: how many replays it checked, how fast, and what it found first (if anything)."""

    name: str
    variant: str
    sizes: tuple[int, ...]
    seed: int
    backend: str
    replays: int  # checked replays
    seconds: float  # spent replaying and checking, after the captures
    finding: Finding | None = None
    error: str | None = None  # the op crashed, hung or failed to capture
    interrupted: bool = False
    checks: tuple[str, ...] = ()  # what every replay checked, in words
    limits: tuple[str, ...] = ()
    env: Environment = field(default_factory=environment)

    @property
    def rate(self) -> float:
        """Checked replays a second."""
        return self.replays / self.seconds if self.seconds > 0 else math.nan

    @property
    def clean(self) -> bool:
        return self.finding is None and self.error is None


class Recorded:
    """`workload` with the inputs a fuzz run saved: input set r (seed `first_seed + r`) is `sets[r % len(sets)]`,
    copied to `device`. Everything else is the workload's."""

    def __init__(self, workload: Workload, sets: Sequence[Mapping[str, torch.Tensor]], first_seed: int,
                 device: torch.device) -> None:
        self._workload, self._sets, self._first, self._device = workload, list(sets), first_seed, device
        self.tolerance = workload.tolerance

    def inputs(self, seed: int) -> dict[str, torch.Tensor]:
        chosen = self._sets[(seed - self._first) % len(self._sets)]
        return {k: v.to(self._device).clone() for k, v in chosen.items()}

    def __getattr__(self, name: str) -> Any:  # run, reference, eager_piece
        return getattr(self._workload, name)


def save_inputs(finding: Finding) -> bytes:
    """The finding's two input sets (the capture's, then the one that found it) as the bytes of a file that
    `load_inputs` reads back."""
    buffer = io.BytesIO()
    torch.save({"capture_size": finding.capture_size, "seeds": [finding.capture_seed, finding.seed],
                "sets": [finding.capture_inputs, finding.inputs]}, buffer)
    return buffer.getvalue()


def load_inputs(path: Path) -> list[dict[str, torch.Tensor]]:
    """The input sets a fuzz run saved (`save_inputs`), on the CPU; ValueError for a file of anything else."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - the unpickler fails with whatever the bytes make it do
        raise ValueError(f"not a file torch.save wrote ({type(err).__name__})") from None
    sets = data.get("sets") if isinstance(data, dict) else None
    if not isinstance(sets, list) or not sets or not all(
            isinstance(x, dict) and all(isinstance(v, torch.Tensor) for v in x.values()) for x in sets):
        raise ValueError("it holds no input sets")
    return sets


def fuzz(op: Op, inputs: Inputs, sizes: Sequence[int] = (1,), *, constants: Mapping[str, Any] | None = None,
         device: torch.device | str | None = None, seed: int = 0, replays: int | None = None,
         seconds: float | None = None, guard_budget: int | None = None, name: str | None = None,
         backend: Backend | None = None, hang_after: float | None = None,
         progress: Progress | None = None) -> FuzzRun:
    """Capture `op` at each size once, then replay it on fresh inputs (`inputs(size, seed)` at seeds `seed + 2`,
    `seed + 3`, ...), every guard checked after every replay, until `replays` replays, `seconds` of them (60 s
    when neither is given) or the first access outside a buffer: `FuzzRun.finding`, with its inputs and the
    kernel that made it. Arguments as `check`'s; make `inputs` vary by seed what the op's kernels branch on."""
    with sharing_guards():  # a check after every replay: each guard byte read once
        ready = prepare(op, inputs, sizes, constants=constants, device=device, seed=seed, guard_budget=guard_budget,
                        name=name)
    case = ready.cases[0]
    return fuzz_workloads(ready.workloads, ready.guards, backend or default_backend(ready.device), seed=seed,
                          name=case.scenario, variant=case.variant, replays=replays, seconds=seconds,
                          hang_after=hang_after, progress=progress)


def draw(workload: Workload, seed: int) -> dict[str, torch.Tensor]:
    """A fuzz input: the workload's `fuzz_inputs(seed)` where it has one, else its `inputs(seed)`."""
    make = getattr(workload, "fuzz_inputs", None) or workload.inputs
    return dict(make(seed))


class _Watch:
    """Whether the last replay found anything, as cheaply as the device allows. On a GPU the guard check counts
    into one device word that is never zeroed (the run stops at its first nonzero value), copied to pinned host
    memory behind an event: the host draws the next inputs while the replay and its check run. Where the guards
    stay where they are from replay to replay (no eager piece carves buffers between them), the check and the
    copy are one captured graph: a Triton launch from Python costs more host time than the replay it checks."""

    def __init__(self, guards: Guards, fixed: bool) -> None:
        self.guards, self.gpu = guards, guards.device.type == "cuda"
        self.seen = guards.findings()
        self.graph: torch.cuda.CUDAGraph | None = None
        if not self.gpu:
            return
        self.flag = torch.zeros(1, dtype=torch.int32, device=guards.device)
        self.host = torch.zeros(1, dtype=torch.int32, pin_memory=True)
        self.event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        if fixed:
            self._check()  # compiled and its tables built before the capture
            torch.cuda.synchronize()
            self.flag.zero_()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=torch.cuda.graph_pool_handle()):
                self._check()
            self.graph = graph

    def _check(self) -> None:
        self.guards.count_changed(self.flag)
        self.host.copy_(self.flag, non_blocking=True)

    def launch(self) -> None:
        """Queue the check of the replay just launched."""
        if not self.gpu:
            return
        if self.graph is not None:
            self.graph.replay()
        else:
            self._check()
        self.event.record()

    def found(self, deadline: float, what: str) -> bool:
        """Whether the replay checked by the last `launch` changed a guard byte (or, where the lane checker runs,
        made an access it recorded)."""
        if not self.gpu:
            return self.guards.dirty() or self.guards.findings() != self.seen
        while not self.event.query():  # type: ignore[no-untyped-call]
            if time.monotonic() > deadline:
                raise Hang(f"{what} did not finish within its bound (the device had not finished)")
        return bool(self.host[0])


def fuzz_workloads(workloads: Mapping[int, Workload], guards: Guards, backend: Backend, *, seed: int, name: str,
                   variant: str = "default", replays: int | None = None, seconds: float | None = None,
                   hang_after: float | None = None, progress: Progress | None = None) -> FuzzRun:
    """Capture every size's workload once (on inputs of seed `seed + 1`, as `run_protocol` does), then replay
    the sizes in turn on inputs of seeds `seed + 2`, `seed + 3`, ... until `replays` checked replays or
    `seconds` of replaying (60 s when neither is given), or the first finding. Ctrl-C ends the run early and
    keeps what it found. `progress(replays, seconds)` is called about ten times a second."""
    if replays is not None and replays < 1:
        raise UsageError(f"replays: got {replays!r}; allowed: an integer >= 1")
    if seconds is not None and not seconds > 0:
        raise UsageError(f"seconds: got {seconds!r}; allowed: a number > 0")
    if replays is None and seconds is None:
        seconds = 60.0
    floor = hang_floor() if hang_after is None else hang_after
    guards.reserve()
    sizes = []
    for tokens in sorted(workloads):
        wl = workloads[tokens]
        with phases.timed("inputs"), guards.tagged(tokens):
            first = wl.inputs(seed + 1)
            static = {key: guards.adopt(value, f"input.{key}") for key, value in first.items()}
        sizes.append(_Size(wl, tokens, [first], [None], static, SizeOutcome(tokens)))
    checks: tuple[str, ...] = ("every guard byte around every buffer, after every replay",)
    if lanes_checked(guards.device):
        checks += ("every lane of every Triton access, against the view its kernel was given",)
    limits: tuple[str, ...] = ("replay outputs are not compared: no eager run of each input to compare them to",)
    run = _Run(sizes, guards, backend, seed, _Clock(backend, floor, _InFlight()))
    with watched(guards), observing(run.clock.inflight), backend.host():
        try:
            run.prepare()
            if run.finding is None and run.error is None:
                run.loop(replays, seconds, progress)
                run.check_free()
        except KeyboardInterrupt:
            run.interrupted = True
        except Hang as err:
            run.error = str(err)
            if backend.warms_up:  # a GPU kernel still running: nothing more may touch the device
                mark_wedged()
    if not lanes_checked(guards.device):
        checks += ("the slab bytes no buffer holds, once when the replays end",)
    if unguarded := guards.unguarded():
        limits += (f"unguarded memory passed to kernels, an overrun of it not seen: {'; '.join(unguarded)}",)
    return FuzzRun(name, variant, tuple(s.tokens for s in sizes), seed, backend.name, run.replays, run.seconds,
                   run.finding, run.error, run.interrupted, checks, limits)


class _Run:
    """One fuzz run in progress (see `fuzz`)."""

    def __init__(self, sizes: list[_Size], guards: Guards, backend: Backend, seed: int, clock: _Clock) -> None:
        self.sizes, self.guards, self.backend, self.seed, self.clock = sizes, guards, backend, seed, clock
        self.replays = 0
        self.seconds = 0.0
        self.finding: Finding | None = None
        self.error: str | None = None
        self.interrupted = False

    def prepare(self) -> None:
        """Each size's eager run in step mode on its capture inputs, then every capture (largest first)."""
        for size in self.sizes:
            with self.guards.tagged(size.tokens):
                self._stepped(size, f"eager T={size.tokens}")
            if self._stop(size, 0, f"eager T={size.tokens}", self.seed + 1, size.inputs[0], stepped=True) or \
                    self.error is not None:
                return
        for size in sorted(self.sizes, key=lambda s: -s.tokens):
            phase = f"capture T={size.tokens}"
            size.load(0)
            self.guards.arm("nan")
            try:
                made = len(self.guards.buffers)
                with self.guards.tagged(size.tokens), self.guards.running(phase), \
                        self.clock.bounded(size, phase), phases.timed("capture"):
                    with GuardMode(self.guards), quiet_poison():
                        pieces = size.eager_piece()
                    outside = self.guards.buffers[made:]
                    size.piecewise = pieces is not None
                    size.graph = self.backend.capture(size.thunk(_no_step, pieces), self.guards)
                    del pieces
                self.guards.kept_from_capture(self.guards.buffers[made:], returned=self.backend.output(size.graph),
                                              outside=outside)
                with phases.timed("audit"):
                    self.backend.audit(size.graph, self.guards, f"graph audit T={size.tokens}")
            except CaptureError as err:
                self.error = f"T={size.tokens}: capture failed: {err}"
                return
            if self.guards.violations(tag=size.tokens):  # the audit's: a memset node past a buffer
                self._stop(size, 0, phase, self.seed + 1, size.inputs[0], stepped=False)
                return

    def check_free(self) -> None:
        """The slab bytes no buffer holds, once the replays are done: a write past every guard changes them, and
        no replay's check sees it (nor says which replay wrote, so it is an error of the run, not a finding with
        inputs to replay)."""
        if self.finding is not None or self.error is not None:
            return
        self.guards.check_free()
        loose = [v for v in self.guards.violations() if v.buffer == UNHELD]
        if loose:
            self.error = f"{describe(loose[0])}: written by one of the {self.replays:,} replays, which the checks " \
                         "after each did not see (past every guard)"

    def _stepped(self, size: _Size, phase: str) -> None:
        """Run the op eagerly on the static inputs, the guards checked after every launch, which names it."""
        guards, clock = self.guards, self.clock

        def step(op: str) -> None:
            clock.settle()
            guards.check(phase, op=op)

        guards.arm("dense")
        try:
            with _guarded(guards), guards.running(phase), _write_sets(guards, True), \
                    clock.bounded(size, phase, compiles=True):
                self.backend.warmup(size.thunk(step))
            guards.check(phase)
        except (Hang, UsageError, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 - a crash of the op ends the run, as a result
            self.error = f"T={size.tokens}: {phase}: {type(err).__name__}: {err}"

    def loop(self, replays: int | None, seconds: float | None, progress: Progress | None) -> None:
        """Replay the sizes in turn, each on fresh inputs, until a limit or a finding. A replay counts once its
        check has come back clean; the next inputs are drawn while it runs."""
        self.guards.arm("nan")
        watch = _Watch(self.guards, fixed=not any(s.piecewise for s in self.sizes))
        order = sorted(self.sizes, key=lambda s: s.tokens)
        bound = max(s.bound(self.clock.floor) for s in order)
        start = shown = time.perf_counter()
        pending: tuple[_Size, int, dict[str, torch.Tensor]] | None = None
        i = 0
        try:
            while True:
                size, seed = order[i % len(order)], self.seed + 2 + i
                with phases.timed("inputs"):
                    drawn = draw(size.workload, seed)
                if pending is not None:
                    with phases.timed("guards"):
                        found = watch.found(time.monotonic() + bound, f"fuzz replay #{self.replays + 1}")
                    if found:
                        self._found(*pending)
                        return
                    self.replays += 1
                    pending = None
                now = time.perf_counter()
                self.seconds = now - start
                if progress is not None and now - shown > _PROGRESS_EVERY_S:
                    progress(self.replays, self.seconds)
                    shown = now
                if (replays is not None and self.replays >= replays) or (seconds is not None and
                                                                         self.seconds >= seconds):
                    return
                with phases.timed("inputs"):
                    for key, value in drawn.items():
                        size.static[key].copy_(value)
                with phases.timed("replay"):
                    self._replay(size)
                if self.error is not None:
                    return
                with phases.timed("guards"):
                    watch.launch()
                pending = (size, seed, drawn)
                i += 1
        finally:
            self.seconds = time.perf_counter() - start
            if progress is not None:
                progress(self.replays, self.seconds)

    def _replay(self, size: _Size) -> None:
        phase = f"fuzz replay T={size.tokens} #{self.replays + 1}"
        try:
            if self.backend.warms_up:  # asynchronous: the watch bounds the wait
                _replay_graph(size, self.guards, self.backend)
                return
            with self.guards.running(phase), self.clock.bounded(size, phase), quiet_poison():
                _replay_graph(size, self.guards, self.backend)
        except (Hang, UsageError, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001
            self.error = f"T={size.tokens}: {phase}: {type(err).__name__}: {err}"

    def _found(self, size: _Size, seed: int, inputs: dict[str, torch.Tensor]) -> None:
        number = self.replays + 1
        phase = f"fuzz replay #{number} T={size.tokens} (seed {seed})"
        with self.guards.tagged(size.tokens):
            self.guards.check(phase)
        self._stop(size, number, phase, seed, inputs, stepped=False)

    def _stop(self, size: _Size, replay: int, phase: str, seed: int, inputs: Mapping[str, torch.Tensor], *,
              stepped: bool) -> bool:
        """Where the guards found something: the finding, its inputs run again eagerly in step mode (unless that
        was the run that found it) to name the kernel. False where they found nothing."""
        found = self.guards.violations(tag=size.tokens)
        if not found:
            return False
        again = found
        if not stepped:
            self.guards.forget()
            for key, value in inputs.items():
                size.static[key].copy_(value)
            with self.guards.tagged(size.tokens):
                self._stepped(size, f"eager step rerun T={size.tokens} (seed {seed})")
            again = self.guards.violations(tag=size.tokens)
        self.finding = Finding(size.tokens, replay, phase, seed, found, again, _host(inputs), self.seed + 1,
                               _host(size.inputs[0]))
        return True


def _host(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
