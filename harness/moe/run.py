"""Run MoE scenario cases through the protocol and judge them: scenario + policy + sizes + seed -> results."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from graph_harness.core import expect, phases
from graph_harness.core.capture import Backend, Workload, default_backend
from graph_harness.core.check import Case, Prepared, default_budget, run_and_judge
from graph_harness.core.expect import Expectation
from graph_harness.core.guard import Guards, adoption_bytes
from graph_harness.core.lanes import lanes_checked
from graph_harness.core.results import CaseResult
from graph_harness.core.verdict import Verdict
from graph_harness.kernels.contracts import Policy
from graph_harness.moe.scenario import CaseSpec, MoEScenario, resolve
from graph_harness.moe.workload import MoEWeights, MoEWorkload
from graph_harness.schema import Profile, run_command


def resolve_cases(scenario_id: str, scenario: MoEScenario, policy: Policy, sizes: Sequence[int], profile: Profile,
                  seed: int | None = None) -> list[CaseSpec]:
    """The policy's case at each size, the seed overridden when given."""
    cases = []
    for tokens in sizes:
        case = next(c for c in resolve(scenario_id, scenario, tokens, profile) if c.policy is policy)
        cases.append(case if seed is None else dataclasses.replace(case, seed=seed))
    return cases


def guards_for(cases: Sequence[CaseSpec], device: torch.device, budget: int | None = None,
               weights: Sequence[MoEWeights] = ()) -> Guards:
    """A slab for these cases, each size's stage1 buffer guarded for the overflow its footprint predicts, with
    room on top for copies of the layer's weights."""
    footprints = {c.tokens: c.footprint() for c in cases}
    cover = {t: (fp.alloc_bytes, fp.predicted_overflow_bytes) for t, fp in footprints.items()}
    tensors = [t for w in weights for t in (w.w1, w.w1_scale, w.w2, w.w2_scale) if t is not None]
    return Guards(device, budget or default_budget(device), cover=cover, constants=adoption_bytes(tensors))


def expectation(case: CaseSpec, exact: bool = False) -> Expectation:
    """What a case must show: for oob-write, the bytes the scenario names, else the stage1 footprint's overflow
    in whichever buffer holds it; any other verdict as it is. Where the lane checker runs (`exact`), the reads
    past `reads_past` that the padding rows make as well."""
    if case.expect is Verdict.OOB_WRITE and case.expect_bytes is not None:
        found = expect.oob_write(case.expect_bytes.buffer, side=case.expect_bytes.side, extent=case.expect_bytes.extent)
    elif case.expect is Verdict.OOB_WRITE:
        found = expect.oob_write(side="overflow", extent=case.footprint().predicted_overflow_bytes)
    else:
        found = Expectation(case.expect)
    reads = [expect.oob_read(b, side="overflow") for b in case.reads_past] if exact else []
    if not reads or case.expect not in (Verdict.OOB_WRITE, Verdict.CLEAN):
        return found
    return expect.all_of(*([found] if case.expect is Verdict.OOB_WRITE else []), *reads)


def unseen_reads(case: CaseSpec) -> tuple[str, ...]:
    """The limit of a case whose padding reads only the lane checker sees, run without it."""
    if not case.reads_past:
        return ()
    return (f"the padding rows read past {', '.join(case.reads_past)} and discard the values: only the lane "
            "checker (the Triton interpreter) sees such a read",)


def run_cases(cases: Sequence[CaseSpec], device: torch.device, *, budget: int | None = None,
              backend: Backend | None = None, replays: int = 3, scenarios_flag: str = "",
              hang_after: float | None = None) -> list[CaseResult]:
    """Run one scenario-policy's cases (any sizes, one seed) through the protocol in one shared slab."""
    if not cases:
        return []
    ready = prepare_cases(cases, device, budget=budget, scenarios_flag=scenarios_flag)
    return run_and_judge(ready.cases, ready.workloads, ready.guards, backend or default_backend(device),
                         replays=replays, hang_after=hang_after)


def prepare_cases(cases: Sequence[CaseSpec], device: torch.device, *, budget: int | None = None,
                  scenarios_flag: str = "") -> Prepared:
    """One scenario-policy's cases made ready to run: the layer's weights made and copied into one slab."""
    with phases.timed("weights"):
        weights = {c.hidden: MoEWeights.for_case(c, device) for c in cases}
        guards = guards_for(cases, device, budget, list(weights.values()))  # sized after the weights are made
        guards.reserve()
        # The layer's weights are made once, outside the op, as a model's are: like any constant they are
        # copied into the slab with bounded guards, so a read past one shows.
        guarded = {hidden: w.adopted(guards) for hidden, w in weights.items()}
    workloads: dict[int, Workload] = {c.tokens: MoEWorkload(c, guarded[c.hidden], device) for c in cases}
    exact = lanes_checked(device)
    judged = [Case(c.scenario, c.policy.value, c.tokens, c.seed, expectation(c, exact),
                   # K as run (the CPU profile shrinks it, see _run_hidden) and N: the shape the kernels ran
                   params={"block_m": c.block_m, "splitk": c.splitk, "K": c.hidden, "N": c.inter,
                           "predicted_overflow_bytes": c.footprint().predicted_overflow_bytes},
                   repro=run_command(c.scenario, c.policy.value, c.tokens, c.seed) + scenarios_flag,
                   limits=() if exact else unseen_reads(c))
              for c in cases]
    return Prepared(judged, workloads, guards)
