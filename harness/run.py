"""Run scenario cases through the protocol and judge them: scenario + policy + sizes + seed -> results."""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Sequence

import torch

from harness.capture import Backend, default_backend, run_protocol
from harness.guard import Guards
from harness.results import CaseResult, environment
from harness.scenario import CaseSpec, Profile, Scenario, resolve
from harness.verdict import classify, max_rel_err, meets
from harness.workload import MoEWeights, MoEWorkload, Workload
from kernels.contracts import Policy

GIB = 1 << 30
# The slab is reserved whole. On CPU its pages are touched only as arenas are carved; the CPU
# profile's largest group (3 sizes, ~15 buffers each with 2x2 MiB guards) uses ~200 MiB.
_CPU_BUDGET = 1 * GIB
_GPU_BUDGET_MAX = 48 * GIB
# Of the memory free after the weights: the rest is for the graph pool, the fp64 reference and a
# second xdist worker. DeepSeek-V3 EP at all 51 sizes needs ~13 GiB of guards for the footprint alone.
_GPU_BUDGET_SHARE = 0.6


def default_budget(device: torch.device) -> int:
    """Guard slab bytes: 1 GiB on CPU; on a GPU 60% of free memory, at most 48 GiB."""
    if device.type != "cuda":
        return _CPU_BUDGET
    gc.collect()  # the last case's graphs and slab, if a cycle still holds them
    torch.cuda.empty_cache()  # a cached 37 GiB block cannot serve a 41 GiB slab
    free, _ = torch.cuda.mem_get_info(device)
    # xdist workers that share this GPU share its memory too.
    sharing = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) // max(torch.cuda.device_count(), 1))
    return min(_GPU_BUDGET_MAX, int(free * _GPU_BUDGET_SHARE / sharing))


def profile_of(device: torch.device) -> Profile:
    """Full shapes on a GPU; the shrunken CPU profile under the interpreter."""
    return "gpu" if device.type == "cuda" else "cpu"


def resolve_cases(scenario_id: str, scenario: Scenario, policy: Policy, sizes: Sequence[int], profile: Profile,
                  seed: int | None = None) -> list[CaseSpec]:
    """The policy's case at each size, the seed overridden when given."""
    cases = []
    for tokens in sizes:
        case = next(c for c in resolve(scenario_id, scenario, tokens, profile) if c.policy is policy)
        cases.append(case if seed is None else dataclasses.replace(case, seed=seed))
    return cases


def guards_for(cases: Sequence[CaseSpec], device: torch.device, budget: int | None = None) -> Guards:
    """A slab for these cases, each size's stage1 buffer guarded for the overflow its footprint predicts."""
    footprints = {c.tokens: c.footprint() for c in cases}
    cover = {t: (fp.alloc_bytes, fp.predicted_overflow_bytes) for t, fp in footprints.items()}
    return Guards(device, budget or default_budget(device), cover=cover)


def run_cases(cases: Sequence[CaseSpec], device: torch.device, *, budget: int | None = None,
              backend: Backend | None = None, replays: int = 2) -> list[CaseResult]:
    """Run one scenario-policy's cases (any sizes, one seed) through the protocol in one shared slab."""
    if not cases:
        return []
    seed = cases[0].seed
    weights: dict[int, MoEWeights] = {}
    workloads: dict[int, Workload] = {}
    for case in cases:
        if case.hidden not in weights:
            weights[case.hidden] = MoEWeights.for_case(case, device)
        workloads[case.tokens] = MoEWorkload(case, weights[case.hidden], device)
    guards = guards_for(cases, device, budget)  # sized after the weights
    backend = backend or default_backend(device)
    outcomes = run_protocol(workloads, guards, backend, seed=seed, replays=replays)
    results = []
    for case in cases:
        outcome = outcomes[case.tokens]
        violations = guards.violations(tag=case.tokens)
        verdict = classify(outcome, violations)
        predicted = case.footprint().predicted_overflow_bytes
        passed, reason = meets(verdict, case.expect, violations, predicted, outcome, case.expect_bytes)
        results.append(CaseResult(
            scenario=case.scenario, policy=case.policy.value, capture_size=case.tokens, seed=case.seed,
            block_m=case.block_m, splitk=case.splitk, backend=backend.name, verdict=verdict, expected=case.expect,
            passed=passed, reason=reason,
            violations=violations, max_rel_err=max_rel_err(outcome), tolerance=workloads[case.tokens].tolerance,
            eager_us=_median(outcome.eager_us), replay_us=_median(outcome.replay_us),
            predicted_overflow_bytes=predicted, error=outcome.error, notes=tuple(outcome.notes + guards.notes),
            env=environment()))
    return results


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
