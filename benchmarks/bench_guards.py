"""What the guards cost: one check and one re-arm against one replay of a DeepSeek-V3 decode graph.

    python benchmarks/bench_guards.py [--scenario deepseek-v3-tp8-decode] [--policy pr2551] [--tokens 1]

The graph is captured exactly as the harness does (static inputs and every buffer in the guard slab);
the plain replay beside it is the same op captured without guards, so the two replays also show
whether the slab moves the kernels' timing. Each layout once: guards of their own (`run`, the matrix) and one
guard shared by neighbours (`fuzz`). The check three ways: `dirty()` as the protocol calls it (a launch and a
host read, wall), the captured check fuzz replays after every replay (device time), and a replay with that check
from an idle GPU to the host's read of the flag (wall). On CPU (the Triton interpreter): the bytes a check reads in
each layout, nothing timed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from statistics import median

import torch

from graph_harness.core.capture import CudaGraphBackend
from graph_harness.core.guard import GuardMode, Guards, sharing_guards
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


def _read(guards: Guards) -> int:
    """Bytes one check reads: every guard word once, and the odd bytes one by one."""
    layout = guards.layout
    return 4 * sum(hi - lo for lo, hi in layout.guards) + len(layout.tail_at)


def _measure(scenario: MoEScenario, name: str, policy: Policy, tokens: int, iters: int, shared: bool) -> dict:
    (case,) = resolve_cases(name, scenario, policy, [tokens], "gpu")
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    weights = MoEWeights.for_case(case, device)
    with sharing_guards() if shared else contextlib.nullcontext():
        guards = guards_for([case], device, budget=None if device.type == "cuda" else 8 << 30, weights=[weights])
    guards.reserve()
    workload = MoEWorkload(case, weights.adopted(guards), device)  # the weights in the slab, as run_cases has them
    inputs = workload.inputs(case.seed + 1)
    with guards.tagged(case.tokens):
        static = {k: guards.adopt(v, f"input.{k}") for k, v in inputs.items()}
    layout = {"scenario": name, "policy": policy.value, "tokens": tokens, "guards": "shared" if shared else "own"}
    if device.type != "cuda":  # the layout alone: the op's buffers carved as a capture keeps them
        guards.arm("dense")
        with guards.tagged(case.tokens), GuardMode(guards):
            workload.run(static, lambda name: None)
        assert not guards.dirty(), "a clean policy left a guard changed"
        return {**layout, "device": "cpu", "buffers": len(guards.buffers), "guard_bytes_read": _read(guards)}
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
    # The check as fuzz makes it after every replay: the count into a device word and its copy to pinned memory,
    # one captured graph, read once its event has passed.
    flag = torch.zeros(1, dtype=torch.int32, device=device)
    host = torch.zeros(1, dtype=torch.int32, pin_memory=True)
    guards.count_changed(flag)
    torch.cuda.synchronize()
    check_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(check_graph, pool=torch.cuda.graph_pool_handle()):
        guards.count_changed(flag)
        host.copy_(flag, non_blocking=True)
    done = torch.cuda.Event()  # type: ignore[no-untyped-call]

    def checked_replay() -> None:
        backend.replay(graph)
        check_graph.replay()
        done.record()
        done.synchronize()

    replay = _time(lambda: backend.replay(graph), iters)
    plain_replay = _time(plain.replay, iters)
    replay_wall = _wall(lambda: backend.replay(graph), iters)
    check = _wall(guards.dirty, iters)
    captured = _time(check_graph.replay, iters)
    checked_wall = _wall(checked_replay, iters)
    arm = _wall(lambda: guards.arm("nan"), iters)
    assert not guards.dirty(), "a clean policy left a guard changed"
    assert (int(host[0]), int(flag[0])) == (0, 0), "the captured check counted a changed guard byte"
    out = backend.replay(graph).double()
    ref = workload.reference(static)
    err = float((out - ref).norm() / ref.norm())
    assert err < workload.tolerance, f"guarded replay is wrong: rel L2 {err:.2e}"
    return {
        **layout, "device": torch.cuda.get_device_name(), "buffers": len(guards.buffers),
        "guard_bytes_read": _read(guards),
        "replay_us": round(replay, 2), "plain_replay_us": round(plain_replay, 2),
        "replay_wall_us": round(replay_wall, 2), "check_us": round(check, 2),
        "captured_check_us": round(captured, 2), "replay_and_captured_check_wall_us": round(checked_wall, 2),
        "arm_us": round(arm, 2),
        "check_share_of_replay": round(check / replay_wall, 3),
        "captured_check_share_of_replay": round(captured / replay, 3),
        "arm_share_of_replay": round(arm / replay_wall, 3), "rel_l2": err,
    }


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
    rows = []
    for shared in (False, True):
        rows.append(_measure(scenario, args.scenario, Policy(args.policy), args.tokens, args.iters, shared))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(json.dumps(rows, indent=2))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
