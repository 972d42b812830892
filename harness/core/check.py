"""`check`: guard, run, capture, replay and judge any op at several capture sizes; and the judging every
runner shares (the MoE domain's too), from protocol outcomes to `CaseResult`s.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from graph_harness.core import phases
from graph_harness.core.capture import Backend, SizeOutcome, Step, Workload, default_backend, run_protocol
from graph_harness.core.expect import Expectation, describe, expectation
from graph_harness.core.guard import Guards, UsageError, adoption_bytes, spare_bytes
from graph_harness.core.lanes import lanes_checked
from graph_harness.core.launches import Launch, observing
from graph_harness.core.results import CaseResult, Param, environment
from graph_harness.core.triton_env import device as default_device
from graph_harness.core.verdict import classify, max_rel_err

GIB = 1 << 30
# The slab is reserved whole. On CPU its pages are touched only as arenas are carved; the MoE CPU
# profile's largest group (3 sizes, ~15 buffers each with 2x2 MiB guards) uses ~200 MiB.
_CPU_BUDGET = 1 * GIB
_GPU_BUDGET_MAX = 48 * GIB
# Of the memory free when the case starts: the rest is for the graph pool, the fp64 reference and a
# second xdist worker. DeepSeek-V3 EP at all 51 sizes needs ~13 GiB of guards for the footprint alone.
_GPU_BUDGET_SHARE = 0.6

Inputs = Callable[[int, int], Mapping[str, torch.Tensor]]
Op = Callable[..., torch.Tensor]
Reference = Callable[..., torch.Tensor]
ExpectLike = Expectation | str | Callable[[int], Expectation | str]

DEFAULT_TOLERANCE = 1e-2  # relative L2 error: bf16 keeps 8 bits
NO_REFERENCE = "no reference: each output was checked for NaN and inf, and each replay against eager"


def default_budget(device: torch.device) -> int:
    """Guard slab bytes: 1 GiB on CPU; on a GPU 60% of free memory, at most 48 GiB, shared by xdist workers."""
    if device.type != "cuda":
        return _CPU_BUDGET
    sharing = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) // max(torch.cuda.device_count(), 1))

    def budget() -> int:
        torch.cuda.empty_cache()  # a cached 37 GiB block cannot serve a 41 GiB slab
        free, _ = torch.cuda.mem_get_info(device)
        free += spare_bytes(device)  # the last case's slab, kept for this one (see Guards.reserve)
        share = int(free * _GPU_BUDGET_SHARE / sharing)
        # whole GiB from 2 GiB up: a worker's next case then finds its last slab, of the same size, more often
        return min(_GPU_BUDGET_MAX, share // GIB * GIB if share >= 2 * GIB else share)

    got = budget()
    if got < _GPU_BUDGET_MAX:
        # The last case's graphs and slab, if a cycle still holds them. Only when short: a full collection
        # took 114 ms a case in a pytest worker on an H200 (18% of the scenario matrix), and with 141 GB the
        # 48 GiB cap is reached without it.
        gc.collect()
        got = budget()
    return got


@dataclass(frozen=True)
class Case:
    """Who a result belongs to and what it must show: everything about a case but its run."""

    scenario: str
    variant: str
    capture_size: int
    seed: int
    expect: Expectation
    params: dict[str, Param] = field(default_factory=dict)
    repro: str | None = None
    limits: tuple[str, ...] = ()  # what is known, before anything runs, not to be checked


def run_and_judge(cases: Sequence[Case], workloads: Mapping[int, Workload], guards: Guards, backend: Backend, *,
                  replays: int = 3, hang_after: float | None = None) -> list[CaseResult]:
    """Run the protocol over the cases' sizes (one seed, one slab) and judge each against its expectation."""
    seeds = {c.seed for c in cases}
    if len(seeds) != 1:
        raise ValueError(f"cases run together share one seed; got {sorted(seeds)}")
    if replays < 3:
        raise UsageError(f"replays: got {replays!r}; allowed: 3 or more (the last replays the first inputs again)")
    outcomes = run_protocol(workloads, guards, backend, seed=seeds.pop(), replays=replays, hang_after=hang_after)
    with phases.timed("results"):
        return [_result(case, outcomes[case.capture_size], workloads[case.capture_size], guards, backend)
                for case in cases]


def _result(case: Case, outcome: SizeOutcome, workload: Workload, guards: Guards, backend: Backend) -> CaseResult:
    """One case's result from its size's outcome and the guards' findings."""
    violations = guards.violations(tag=case.capture_size)
    verdict = classify(outcome, violations)
    passed, reason = case.expect.judge(verdict, violations, outcome)
    notes = list(outcome.notes)
    for v in violations:
        if v.view is not None:
            offset, span = v.view
            notes.append(f"{describe(v)}: offsets are from the edge of {v.buffer}'s {v.buffer_bytes:,} B "
                         f"allocation; the op was given a view of {span:,} B of it at byte {offset:,}")
    unguarded = guards.unguarded(case.capture_size)
    limits = case.limits + guards.limits(case.capture_size) + tuple(outcome.limits)
    if unguarded and lanes_checked(guards.device):
        notes.append(f"unguarded memory, its accesses checked lane by lane: {'; '.join(unguarded)}")
    elif unguarded:
        limits += (f"unguarded memory passed to kernels, an overrun of it not seen: {'; '.join(unguarded)}",)
    return CaseResult(
        scenario=case.scenario, variant=case.variant, capture_size=case.capture_size, seed=case.seed,
        backend=backend.name, verdict=verdict, expected=case.expect.verdict, expectation=str(case.expect),
        passed=passed, reason=reason, violations=violations, max_rel_err=max_rel_err(outcome),
        tolerance=workload.tolerance, eager_us=_median(outcome.eager_us),
        replay_us=_median(outcome.replay_us), error=outcome.error, notes=tuple(notes),
        limits=limits, params=dict(case.params), repro=case.repro, env=environment(), unguarded=unguarded,
        persistent=guards.persistent(case.capture_size), buffers=guards.sizes(case.capture_size))


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


# -- any op, through the public API --------------------------------------------------------------------

@dataclass(frozen=True)
class Piecewise:
    """An op in two pieces, as vLLM's piecewise capture runs a layer: `eager(inputs, **constants)` stays outside
    the graph and runs on every call (and before every replay), returning a dict of tensors; `graph(inputs |
    those, **constants)` is captured. The graph reads the tensors the eager piece made at capture, whatever it
    makes later: a per-call allocation there is memory the graph reads after its owner let go of it.

        op = gh.Piecewise(eager=align_block_size, graph=fused_experts)
        gh.check(op, inputs, sizes=[1, 8], reference=ref)
    """

    eager: Callable[..., Mapping[str, torch.Tensor]]
    graph: Op

    def __call__(self, inputs: Mapping[str, torch.Tensor], **constants: Any) -> torch.Tensor:
        return self.graph({**inputs, **self.pieces(inputs, **constants)}, **constants)

    def pieces(self, inputs: Mapping[str, torch.Tensor], **constants: Any) -> dict[str, torch.Tensor]:
        """Run the eager piece; the tensors it hands the graph."""
        made = self.eager(dict(inputs), **constants)
        if not isinstance(made, Mapping) or not all(isinstance(v, torch.Tensor) for v in made.values()):
            raise UsageError(f"the eager piece returned {type(made).__name__}; allowed: a dict of name -> Tensor, "
                             "the tensors the captured piece reads")
        return dict(made)


class _OpWorkload:
    """An op the harness never saw, at one capture size: `op(inputs, **constants)` as a Workload."""

    def __init__(self, op: Op, make_inputs: Inputs, size: int, reference: Reference | None,
                 constants: Mapping[str, Any], tolerance: float, device: torch.device) -> None:
        self.op, self.make_inputs, self.size, self.ref = op, make_inputs, size, reference
        self.constants, self.tolerance, self.device = constants, tolerance, device

    def inputs(self, seed: int) -> dict[str, torch.Tensor]:
        made = self.make_inputs(self.size, seed)
        if not isinstance(made, Mapping) or not all(isinstance(k, str) for k in made):
            raise UsageError(f"inputs({self.size}, {seed}) returned {type(made).__name__}; "
                             "allowed: a dict of name -> Tensor")
        for key, value in made.items():
            if not isinstance(value, torch.Tensor):
                raise UsageError(f"inputs({self.size}, {seed})[{key!r}] is {type(value).__name__}; allowed: a Tensor "
                                 "(pass values that never change through constants)")
            if value.device.type != self.device.type:
                raise UsageError(f"inputs({self.size}, {seed})[{key!r}] is on {value.device}; the check runs on "
                                 f"{self.device}: make inputs there")
        return dict(made)

    def run(self, inputs: Mapping[str, torch.Tensor], step: Step,
            pieces: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        with observing(_Stepper(step, self.device)):
            if pieces is None:
                out = self.op(dict(inputs), **self.constants)
            else:
                out = cast(Piecewise, self.op).graph({**inputs, **pieces}, **self.constants)
        if not isinstance(out, torch.Tensor):
            raise UsageError(f"the op returned {type(out).__name__}; allowed: one Tensor, the same static tensor on "
                             "every run (return the output buffer, or stack several)")
        return out

    @property
    def eager_piece(self) -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]] | None:
        """A `Piecewise` op's eager piece (the protocol captures only the rest); None for an op captured whole."""
        if not isinstance(self.op, Piecewise):
            return None
        return functools.partial(self.op.pieces, **self.constants)

    def reference(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        if self.ref is None:
            return None
        with torch.no_grad():
            ref = self.ref(dict(inputs), **self.constants)
        if not isinstance(ref, torch.Tensor):
            raise UsageError(f"the reference returned {type(ref).__name__}; allowed: one Tensor")
        return ref


class _Stepper:
    """Calls `step(kernel name)` after each Triton launch, so that a violation names the kernel that wrote it
    (and `step("host code before K")` before it: a raw memset or a torch op since the last launch).

    A compiled kernel cannot run on CPU tensors (its inputs made there, or it was defined before
    TRITON_INTERPRET was set): that is refused with what to do, not reported as a crash of the op.
    """

    def __init__(self, step: Step, device: torch.device) -> None:
        self.step, self.device = step, device

    def before(self, launch: Launch) -> None:
        if self.device.type == "cpu" and launch.compiled:
            raise UsageError(f"Triton kernel {launch.kernel} is compiled for a GPU, and the check runs on the CPU, "
                             "where its inputs are: make them on the GPU, or define the kernel under "
                             "TRITON_INTERPRET=1 (graph_harness sets it when imported first on a machine with no GPU)")
        self.step(f"host code before {launch.kernel}")

    def after(self, launch: Launch) -> None:
        self.step(launch.kernel)


def _where_inputs_live(inputs: Inputs, size: int, seed: int) -> torch.device:
    """The device of the op's inputs (the first tensor `inputs` makes); the kernels' default device if none."""
    made = inputs(size, seed + 1)
    first = next((v for v in made.values() if isinstance(v, torch.Tensor)), None) if isinstance(made, Mapping) else None
    return first.device if first is not None else default_device()


def _expectation_for(expect: ExpectLike | None, size: int) -> Expectation:
    if expect is None:
        return expectation("clean")
    if callable(expect) and not isinstance(expect, Expectation):
        return expectation(expect(size))
    return expectation(expect)


@dataclass
class Prepared:
    """Cases made ready to run: the workload at each of their sizes, and the slab that guards them all."""

    cases: list[Case]
    workloads: dict[int, Workload]
    guards: Guards

    @property
    def device(self) -> torch.device:
        return self.guards.device


def check(op: Op, inputs: Inputs, sizes: Sequence[int] = (1,), *, reference: Reference | None = None,
          constants: Mapping[str, Any] | None = None, tolerance: float = DEFAULT_TOLERANCE,
          device: torch.device | str | None = None,
          expect: ExpectLike | None = None, seed: int = 0, replays: int = 3, guard_budget: int | None = None,
          name: str | None = None, variant: str = "default", repro: str | Callable[[int], str] | None = None,
          backend: Backend | None = None, hang_after: float | None = None) -> list[CaseResult]:
    """Guard, run eagerly, capture, replay and judge `op` at each capture size; one `CaseResult` per size.

    `op(inputs, **constants)` returns one tensor; `inputs(size, seed)` makes fresh inputs for a size, which the
    harness copies into guarded static buffers; `reference(inputs, **constants)` (optional) computes the
    expected output. Tensors among `constants` are shared by every size and guarded too, with a bounded guard.
    `expect` (default: clean) is an `expect.*` matcher, a verdict's name, or a function of the size.
    `device` (default: where the inputs are made) holds the guards; every input and constant must be there.
    `replays` (at least 3) replays of each graph load the `replays - 1` input sets in turn, then the first again:
    make `inputs` move what the op decides on the host from seed to seed (a token count, the routing), so that a
    decision baked in at capture shows. `hang_after`: the floor, in seconds, of every run's bound (default 120).
    """
    ready = prepare(op, inputs, sizes, reference=reference, constants=constants, tolerance=tolerance, device=device,
                    expect=expect, seed=seed, guard_budget=guard_budget, name=name, variant=variant, repro=repro)
    return run_and_judge(ready.cases, ready.workloads, ready.guards, backend or default_backend(ready.device),
                         replays=replays, hang_after=hang_after)


def prepare(op: Op, inputs: Inputs, sizes: Sequence[int] = (1,), *, reference: Reference | None = None,
            constants: Mapping[str, Any] | None = None, tolerance: float = DEFAULT_TOLERANCE,
            device: torch.device | str | None = None, expect: ExpectLike | None = None, seed: int = 0,
            guard_budget: int | None = None, name: str | None = None, variant: str = "default",
            repro: str | Callable[[int], str] | None = None) -> Prepared:
    """`check`'s arguments checked, the slab made and the constants copied into it: the cases ready to run."""
    if not callable(op) or not callable(inputs):
        raise UsageError("op and inputs must be callables: op(inputs, **constants) -> Tensor, "
                         "inputs(size, seed) -> dict[str, Tensor]")
    if not sizes or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in sizes):
        raise UsageError(f"sizes: got {list(sizes)!r}; allowed: capture sizes, integers >= 1")
    if len(set(sizes)) != len(sizes):
        raise UsageError(f"sizes: got {list(sizes)!r}; allowed: each size once")
    if not tolerance > 0:
        raise UsageError(f"tolerance: got {tolerance!r}; allowed: a relative L2 error > 0")
    dev = torch.device(device) if device is not None else _where_inputs_live(inputs, sizes[0], seed)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    expectations = {t: _expectation_for(expect, t) for t in sizes}
    tensors = [v for v in (constants or {}).values() if isinstance(v, torch.Tensor)]
    with phases.timed("weights"):  # the slab, and the constants copied into it
        guards = Guards(dev, guard_budget or default_budget(dev), constants=adoption_bytes(tensors))
        guards.reserve()
        guarded = {k: guards.adopt(v, f"constant.{k}", constant=True) if isinstance(v, torch.Tensor) else v
                   for k, v in (constants or {}).items()}
    workloads: dict[int, Workload] = {
        t: _OpWorkload(op, inputs, t, reference, guarded, tolerance, dev) for t in sizes}
    label = name or getattr(op, "__name__", None) or type(op).__name__
    limits = () if reference is not None else (NO_REFERENCE,)
    cases = [Case(label, variant, t, seed, expectations[t], repro=repro(t) if callable(repro) else repro, limits=limits)
             for t in sizes]
    return Prepared(cases, workloads, guards)
