"""What the guards cost: one check and one re-arm against one replay of a DeepSeek-V3 decode graph.

    python benchmarks/bench_guards.py [--scenario deepseek-v3-tp8-decode] [--policy pr2551] [--tokens 1]

The graph is captured exactly as the harness does (static inputs and every buffer in the guard slab);
the plain replay beside it is the same op captured without guards, so the two replays also show
whether the slab moves the kernels' timing. CUDA only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import median

import torch

from graph_harness.core.capture import CudaGraphBackend
from graph_harness.core.guard import GuardMode
from graph_harness.kernels.contracts import Policy
from graph_harness.moe.run import guards_for, resolve_cases
from graph_harness.moe.scenario import MoEScenario
from graph_harness.moe.workload import MoEWeights, MoEWorkload
from graph_harness.suite.files import builtin_scenario_dir, load_scenarios, scenario_files


def _time(fn, iters: int) -> float:  # type: ignore[no-untyped-def]
    """Median microseconds of `fn` over `iters` calls, each bracketed by CUDA events."""
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return median(times)


def _wall(fn, iters: int) -> float:  # type: ignore[no-untyped-def]
    """Median wall microseconds of `fn` from an idle GPU to an idle GPU: what the harness waits."""
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e6)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="deepseek-v3-tp8-decode")
    parser.add_argument("--policy", default="pr2551", choices=[p.value for p in Policy])
    parser.add_argument("--tokens", type=int, default=1)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    scenario = load_scenarios(scenario_files(builtin_scenario_dir()))[args.scenario]
    assert isinstance(scenario, MoEScenario), f"{args.scenario} is not an MoE scenario"
    (case,) = resolve_cases(args.scenario, scenario, Policy(args.policy), [args.tokens], "gpu")
    device = torch.device("cuda", torch.cuda.current_device())
    weights = MoEWeights.for_case(case, device)
    guards = guards_for([case], device, weights=[weights])
    guards.reserve()
    workload = MoEWorkload(case, weights.adopted(guards), device)  # the weights in the slab, as run_cases has them
    inputs = workload.inputs(case.seed + 1)
    with guards.tagged(case.tokens):
        static = {k: guards.adopt(v, f"input.{k}") for k, v in inputs.items()}
    backend = CudaGraphBackend()
    guards.arm("dense")
    with guards.tagged(case.tokens), guards.scope(), GuardMode(guards):
        backend.warmup(lambda: workload.run(static, lambda name: None))
    with guards.tagged(case.tokens):
        graph = backend.capture(lambda: workload.run(static, lambda name: None), guards)
    backend.audit(graph, guards, "audit")
    plain_static = {k: v.clone() for k, v in inputs.items()}
    plain_workload = MoEWorkload(case, weights, device)
    backend.warmup(lambda: plain_workload.run(plain_static, lambda name: None))
    plain = torch.cuda.CUDAGraph()
    with torch.cuda.graph(plain, pool=backend.pool):
        plain_workload.run(plain_static, lambda name: None)

    guards.arm("nan")
    replay = _time(lambda: backend.replay(graph), args.iters)
    plain_replay = _time(plain.replay, args.iters)
    replay_wall = _wall(lambda: backend.replay(graph), args.iters)
    check = _wall(guards.dirty, args.iters)
    arm = _wall(lambda: guards.arm("nan"), args.iters)
    assert not guards.dirty(), "a clean policy left a guard changed"
    out = backend.replay(graph).double()
    ref = workload.reference(static)
    err = float((out - ref).norm() / ref.norm())
    assert err < workload.tolerance, f"guarded replay is wrong: rel L2 {err:.2e}"
    guarded_bytes = sum(b.left + b.right for b in guards.buffers)
    row = {
        "device": torch.cuda.get_device_name(), "scenario": args.scenario, "policy": args.policy,
        "tokens": args.tokens, "buffers": len(guards.buffers), "guard_bytes": guarded_bytes,
        "replay_us": round(replay, 2), "plain_replay_us": round(plain_replay, 2),
        "replay_wall_us": round(replay_wall, 2),
        "check_us": round(check, 2), "arm_us": round(arm, 2),
        "check_share_of_replay": round(check / replay_wall, 3), "arm_share_of_replay": round(arm / replay_wall, 3),
        "rel_l2": err,
    }
    print(json.dumps(row, indent=2))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
