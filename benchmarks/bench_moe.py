"""Time split-K MoE stage1 and the whole layer by CUDA-graph replay, against read bandwidth.

    python benchmarks/bench_moe.py [--tokens 1 2 4 8] [--json FILE] [--sweep] [--kernel-only] [--floor] [--rounds R]

Shape: DeepSeek-V3 TP8 decode (K=7168, N=256, E=257, topk=9). Each graph replays ROTATE
input sets with their own routing, so the ~33 MB of fp8 weights a call reads are not
served from the 60 MB L2. Bandwidth counts the distinct routed experts' weights, the
activations and the scales a call must read.
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import partial
from pathlib import Path

import torch

from graph_harness.kernels._triton import tl, triton
from graph_harness.kernels.contracts import Contract, MemsetRows, Policy, Quant, get_ksplit, get_padded_m, sorted_size
from graph_harness.kernels.fused_moe import fused_moe, fused_moe_ref, make_inputs, stage1_ref
from graph_harness.kernels.memset import raw_memset
from graph_harness.kernels.moe_sorting import moe_sorting
from graph_harness.kernels.moe_stage1 import moe_stage1
from graph_harness.kernels.quant import per_1x128_quant

MODEL_DIM, INTER, EXPERTS, TOPK, BLOCK_M = 7168, 256, 257, 9, 16
ROTATE = 8
# KPerBlock 128, as aiter's tuned split-K CK instances (MPerBlock 32, KPerBlock 128; docs/moe-contracts.md §1.5), and
# CK's memset after rocm-libraries #5225 (T*topk rows), the one a fixed stack runs.
CONTRACT = Contract(k_per_block=128, memset_rows=MemsetRows.TOKENS_TOPK)
SWEPT = []  # every config timed, for the --json file
FLOOR = "read floor (no math)"
GRID_FLOOR = "{}'s grid, read only"
AFTER_MEMSET = " after CK's memset"


def replay_us(calls, reps=30):
    """Median time of one call, from replays of a graph holding every call once."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / len(calls))
    return statistics.median(times)


def read_bandwidth():
    """bf16 sum over 4 GiB, bytes/s: the ceiling the kernels are held to."""
    x = torch.empty(2 * 1024**3, dtype=torch.bfloat16, device="cuda").normal_()
    for _ in range(3):
        x.sum()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        x.sum()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    nbytes = x.numel() * 2
    del x
    torch.cuda.empty_cache()
    return nbytes / statistics.median(times)


def routed_experts(inputs):
    """The distinct experts a routing sends tokens to, ascending (int64; idle ids of -1 dropped)."""
    return torch.unique(inputs.topk_ids[inputs.topk_ids >= 0]).long()


def stage1_bytes(inputs, quant):
    """Bytes one stage1 call must read: routed experts' w1 (+ scales), hidden (+ scales)."""
    experts = len(routed_experts(inputs))
    elem = 1 if quant is Quant.PER_1X128 else 2
    w = experts * 2 * INTER * MODEL_DIM * elem
    scales = experts * (2 * INTER // 128) * (MODEL_DIM // 128) * 4 if quant is Quant.PER_1X128 else 0
    return w + scales + inputs.hidden.numel() * elem


def sorting(x):
    """`moe_sorting` of input set `x` at this shape: (sorted_ids, weights, expert ids, num_valid_ids, moe_buf)."""
    return moe_sorting(x.topk_ids, x.topk_weights, EXPERTS, BLOCK_M, MODEL_DIM, x.hidden.dtype)


def stage1_calls(sets, tokens, quant, splitk, config=None, memset=True):
    """One closure per input set: [memset +] stage1 as the wrapper runs it (memset=False: the kernel alone)."""
    calls = []
    rows = sorted_size(tokens, TOPK, EXPERTS, BLOCK_M)
    for x in sets:
        sorted_ids, _, sorted_expert_ids, num_valid_ids, _ = sorting(x)
        a1, a1_scale = per_1x128_quant(x.hidden) if quant is Quant.PER_1X128 else (x.hidden, None)
        split = splitk > 1

        def call(x=x, a1=a1, a1_scale=a1_scale, sorted_ids=sorted_ids, sorted_expert_ids=sorted_expert_ids,
                 num_valid_ids=num_valid_ids, split=split):
            if split:
                out = torch.empty(rows, 2 * INTER, dtype=torch.float32, device="cuda")
            else:
                out = torch.empty(tokens, TOPK, INTER, dtype=x.hidden.dtype, device="cuda")
            moe_stage1(a1, x.w1, sorted_ids, sorted_expert_ids, num_valid_ids, out, TOPK, BLOCK_M, splitk,
                       split_instance=split, a1_scale=a1_scale, w1_scale=x.w1_scale, contract=CONTRACT,
                       config=config, memset=memset)
            return out

        calls.append(call)
    return calls


@triton.jit
def _read_kernel(w_ptr, experts_ptr, out_ptr, expert_words, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """Sum CHUNK int32 words of one routed expert's w1, wrapping: a read with no math, checked."""
    pid_e, pid_c = tl.program_id(0), tl.program_id(1)
    expert = tl.load(experts_ptr + pid_e).to(tl.int64)
    ptrs = w_ptr + expert * expert_words + pid_c * CHUNK + tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.int32)
    for off in range(0, CHUNK, BLOCK):
        acc += tl.load(ptrs + off)
    tl.store(out_ptr + pid_e * tl.num_programs(1) + pid_c, tl.sum(acc, 0))


def ck_memset(tokens):
    """CK's memset node as the split-K path runs it here: T*topk rows of 2N fp32."""
    out = torch.empty(tokens * TOPK, 2 * INTER, dtype=torch.float32, device="cuda")
    raw_memset(out, out.numel() * out.element_size())


def floor_calls(sets, tokens, config, memset):
    """One closure per input set: read its routed experts' w1 as int32 words [after CK's memset].

    The fastest `config` is the floor for stage1, which reads the same weights plus scales and
    activations and does its math on them. A split-K stage1 also waits for its memset node:
    `memset=True` times that pair.
    """
    chunks, block, warps = config
    calls = []
    for x in sets:
        experts = routed_experts(x).to(torch.int32)
        words = x.w1.view(torch.int32)
        expert_words = words[0].numel()

        def call(words=words, experts=experts, expert_words=expert_words):
            if memset:
                ck_memset(tokens)
            sums = torch.empty(len(experts), chunks, dtype=torch.int32, device=words.device)
            _read_kernel[(len(experts), chunks)](words, experts, sums, expert_words, CHUNK=expert_words // chunks,
                                                 BLOCK=block, num_warps=warps)
            return sums

        calls.append(call)
    return calls


def wrapped_int32(sums):
    """int64 sums as the kernels' wrapping int32 accumulators hold them."""
    return (sums + 2**31) % 2**32 - 2**31


def fastest_read(sets, tokens, quant, name, configs, calls, want):
    """The fastest of `configs` for a no-math read, its output checked word for word: its config.

    `calls(sets, cfg)` builds the read's closures; `want(x, cfg)` is what the first's must return.
    """
    timed = [(cfg, replay_us(calls(sets, cfg), reps=10)) for cfg in configs]
    for cfg, us in timed:
        SWEPT.append(dict(quant=quant.value, tokens=tokens, variant=name, config=repr(cfg), us=us))
    best = min(timed, key=lambda t: t[1])[0]
    got = calls(sets[:1], best)[0]()
    assert torch.equal(got.long(), want(sets[0], best)), f"{name}: a program did not read its own words"
    return best


def read_floor(sets, tokens, quant):
    """The fastest read of the routed weights over a small sweep, checked word for word: its config."""
    expert_words = sets[0].w1[0].view(torch.int32).numel()
    # On an H100 (benchmarks/NOTES.md, session 6) the fastest of 60 configs read 28 KB a program (128
    # chunks an fp8 expert) with 8 warps, and 2 or 4 stages were alike; 8 chunks were 1.2 us slower at T=4.
    configs = [(chunks, block, warps) for chunks in (16, 32, 64, 128) for block in (1024, 2048) for warps in (4, 8)
               if expert_words % (chunks * block) == 0]

    def want(x, cfg):
        experts = routed_experts(x)
        return wrapped_int32(x.w1.view(torch.int32)[experts].reshape(len(experts), cfg[0], -1).sum(-1))

    return fastest_read(sets, tokens, quant, FLOOR, configs,
                        lambda sets, cfg: floor_calls(sets, tokens, cfg, memset=False), want)


@triton.jit
def _grid_read_kernel(w_ptr, sorted_expert_ids_ptr, num_valid_ids_ptr, out_ptr, inter, k_words, stride_we, stride_wn,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, PAIRED: tl.constexpr,
                      STAGES: tl.constexpr):
    """Stage1's grid and weight walk with no math: sum each program's w1 tiles as int32 words.

    Grid, early exit and expert lookup as `_moe_stage1_kernel`; a program steps BLOCK_N rows x
    BLOCK_KW words over its K split, gate and up rows together when PAIRED (the fused path).
    Sums are wrapping int32, (splits, m blocks, N tiles); a block past num_valid_ids stores 0.
    """
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    total = 0
    if pid_m * BLOCK_M < tl.load(num_valid_ids_ptr):
        expert = tl.load(sorted_expert_ids_ptr + pid_m).to(tl.int64)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_w = pid_k * k_words + tl.arange(0, BLOCK_KW)
        ptrs = w_ptr + expert * stride_we + rows.to(tl.int64)[:, None] * stride_wn + offs_w[None, :]
        acc = tl.zeros((BLOCK_N, BLOCK_KW), dtype=tl.int32)
        for kk in tl.range(0, k_words, BLOCK_KW, num_stages=STAGES):
            acc += tl.load(ptrs + kk)
            if PAIRED:
                acc += tl.load(ptrs + inter * stride_wn + kk)
        total = tl.sum(tl.sum(acc, 1), 0)
    tl.store(out_ptr + (pid_k * tl.num_programs(1) + pid_m) * tl.num_programs(0) + pid_n, total)


def m_blocks(tokens):
    """Stage1's grid rows: ceil(sorted_size / block_m)."""
    return triton.cdiv(sorted_size(tokens, TOPK, EXPERTS, BLOCK_M), BLOCK_M)


def grid_floor_calls(sets, tokens, splitk, config, memset):
    """One closure per input set: `_grid_read_kernel` on the grid of stage1 at `splitk` [after CK's memset].

    `config` is (BLOCK_N, BLOCK_KW, warps, stages). Each closure returns the program sums.
    """
    block_n, block_kw, warps, stages = config
    paired, splits = splitk <= 1, max(splitk, 1)
    grid = (triton.cdiv(INTER if paired else 2 * INTER, block_n), m_blocks(tokens), splits)
    calls = []
    for x in sets:
        _, _, sorted_expert_ids, num_valid_ids, _ = sorting(x)
        words = x.w1.view(torch.int32)

        def call(words=words, sorted_expert_ids=sorted_expert_ids, num_valid_ids=num_valid_ids):
            if memset:
                ck_memset(tokens)
            sums = torch.empty(grid[::-1], dtype=torch.int32, device=words.device)
            _grid_read_kernel[grid](words, sorted_expert_ids, num_valid_ids, sums, INTER, words.shape[2] // splits,
                                    words.stride(0), words.stride(1), BLOCK_M=BLOCK_M, BLOCK_N=block_n,
                                    BLOCK_KW=block_kw, PAIRED=paired, STAGES=stages, num_warps=warps)
            return sums

        calls.append(call)
    return calls


def grid_floor_want(x, tokens, splitk, block_n):
    """What `_grid_read_kernel` must store for input set `x`: wrapping int32 sums, (splits, m blocks, N tiles)."""
    _, _, sorted_expert_ids, num_valid_ids, _ = sorting(x)
    blocks = m_blocks(tokens)
    valid = min(blocks, int(num_valid_ids[0]) // BLOCK_M)
    splits = max(splitk, 1)
    words = x.w1.view(torch.int32)[sorted_expert_ids[:valid].long()].long()  # (blocks, 2N, K words)
    words = words.reshape(valid, 2 * INTER // block_n, block_n, splits, -1).sum((2, 4))  # (blocks, 2N tiles, splits)
    if splitk <= 1:  # a fused program reads gate tile n and up tile n
        words = words[:, : INTER // block_n] + words[:, INTER // block_n:]
    want = torch.zeros(splits, blocks, words.shape[1], dtype=torch.int64, device=words.device)
    want[:, :valid] = words.permute(2, 0, 1)
    return wrapped_int32(want)


def grid_floor(sets, tokens, quant, name, splitk):
    """The fastest no-math read on variant `name`'s stage1 grid (`splitk`), over a small sweep, checked: its config."""
    k_words = sets[0].w1.view(torch.int32).shape[2] // max(splitk, 1)
    configs = [(block_n, block_kw, warps, stages)
               for block_n in ((16, 32, 64) if splitk <= 1 else (16, 32, 64, 128))
               for block_kw in (32, 64, 128) if k_words % block_kw == 0
               for warps in (4, 8) for stages in (2, 3)]
    return fastest_read(sets, tokens, quant, GRID_FLOOR.format(name), configs,
                        lambda sets, cfg: grid_floor_calls(sets, tokens, splitk, cfg, memset=False),
                        lambda x, cfg: grid_floor_want(x, tokens, splitk, cfg[0]))


def stage1_figures(us, nbytes, bw):
    """A row's stage1 time, the bandwidth it achieved and its share of the measured read bandwidth."""
    return dict(stage1_us=us, stage1_bytes=nbytes, stage1_tbs=nbytes / us / 1e6,
                stage1_pct_read_bw=100 * nbytes / (us * 1e-6) / bw)


def grouped_mm_calls(sets, tokens):
    """What a user would run instead: torch._grouped_mm over the routed rows, bf16."""
    calls = []
    for x in sets:
        ids = x.topk_ids.flatten().long()
        order = torch.argsort(ids, stable=True)
        a = x.hidden[order // TOPK].contiguous()
        offs = torch.bincount(ids, minlength=EXPERTS).cumsum(0).to(torch.int32)
        w = x.w1.transpose(-2, -1)
        calls.append(lambda a=a, w=w, offs=offs: torch._grouped_mm(a, w, offs=offs))
    return calls


def make_sets(tokens, dtype, quant, seed=0):
    # One weight set, shared: ROTATE routings of the same layer. Weights are 1.9 GB in bf16.
    base = make_inputs(tokens, MODEL_DIM, INTER, EXPERTS, TOPK, dtype, quant, seed, "cuda")
    sets = [base]
    for i in range(1, ROTATE):
        other = make_inputs(tokens, 128, 128, EXPERTS, TOPK, dtype, Quant.NONE, seed + i, "cuda")
        hidden = torch.randn(tokens, MODEL_DIM, device="cuda").to(base.hidden.dtype)
        sets.append(type(base)(hidden, base.w1, base.w2, other.topk_ids, other.topk_weights, base.w1_scale,
                               base.w2_scale))
    return sets


def check(sets, tokens, quant, splitk, config=None):
    """Stage1 (with `config`) and the layer against the fp64 reference, before they are timed."""
    x = sets[0]
    out = stage1_calls([x], tokens, quant, splitk, config)[0]()
    torch.cuda.synchronize()
    ref = stage1_ref(x, quant)
    if splitk > 1:
        err1 = float((out[: tokens * TOPK].double() - ref).norm() / ref.norm())
    else:
        err1 = float("nan")  # the fused path's activation is checked through the layer
    moe = fused_moe(x, block_m=BLOCK_M, splitk=splitk, policy=Policy.PR2551, quant=quant, contract=CONTRACT)
    ref2 = fused_moe_ref(x, quant)
    err2 = float((moe.double() - ref2).norm() / ref2.norm())
    return err1, err2


def sweep(sets, tokens, quant, splitk):
    """Tile configs for stage1; returns (the fastest, its time)."""
    fp8 = quant is Quant.PER_1X128
    configs = [(dict(BLOCK_N=block_n, BLOCK_K=block_k), dict(num_warps=warps, num_stages=stages))
               for block_n in ((32, 64, 128, 256) if splitk > 1 else (32, 64, 128))
               for block_k in ((128, 256, 512) if fp8 else (64, 128))
               for warps in ((4, 8) if fp8 else (4,))
               for stages in (2, 3, 4, 5)]
    best = None
    for cfg in configs:
        if MODEL_DIM // max(splitk, 1) % cfg[0]["BLOCK_K"]:
            continue
        try:
            us = replay_us(stage1_calls(sets, tokens, quant, splitk, cfg), reps=10)
        except Exception as exc:  # a config that does not fit shared memory
            print(f"  skip {cfg}: {type(exc).__name__}")
            continue
        SWEPT.append(dict(quant=quant.value, tokens=tokens, splitk=splitk, config=repr(cfg), us=us))
        if best is None or us < best[1]:
            best = (cfg, us)
    return best


def grid_floor_lines(plain, split, by_variant):
    """What each variant's math costs over its own grid's read floor, and what split-K's may cost to win."""
    plain_grid = by_variant.get(GRID_FLOOR.format("ksplit=1"))
    split_grid = by_variant.get(GRID_FLOOR.format(split["variant"]))
    split_grid_memset = by_variant.get(GRID_FLOOR.format(split["variant"]) + AFTER_MEMSET)
    if not (plain_grid and split_grid and split_grid_memset):
        return []
    name = split["variant"]
    lines = [f"    on each one's own grid, read only: ksplit=1 {plain_grid['stage1_us']:.1f} us; {name} "
             f"{split_grid['stage1_us']:.1f} us, {split_grid_memset['stage1_us']:.1f} us after CK's memset"]
    math = f"    math over the grid floor: ksplit=1 {plain['stage1_us'] - plain_grid['stage1_us']:.1f} us"
    alone = by_variant.get(f"{name}, no memset")
    if alone:
        math += f", {name} {alone['stage1_us'] - split_grid['stage1_us']:.1f} us"
    room = plain["stage1_us"] - split_grid_memset["stage1_us"]
    lines.append(math + (f"; {name} would win only with math under {room:.1f} us" if room > 0 else
                         f"; {name} cannot win on its grid here, with no math at all"))
    return lines


def bars(rows):
    """Issue 2's bars, read off the rows: lines of figures and whether each is met."""
    def find(quant, tokens, pick):
        return next((r for r in rows if r["quant"] == quant and r["tokens"] == tokens and pick(r)), None)

    def verdict(ok):
        return "met" if ok else "NOT met"

    lines = ["", "Issue 2's bars (split-K as aiter's get_ksplit picks it):"]
    for tokens in sorted({r["tokens"] for r in rows}):
        split = find("per_1x128", tokens, lambda r: r["heuristic"])
        plain = find("per_1x128", tokens, lambda r: r["variant"] == "ksplit=1")
        if tokens == 1 and split:
            pct = split["stage1_pct_read_bw"]
            lines.append(f"  fp8 stage1 at T=1 ({split['variant']}): {pct:.0f}% of read bandwidth, >= 50%: "
                         f"{verdict(pct >= 50)}")
        if tokens <= 4 and split and plain:
            lines.append(f"  fp8 T={tokens}: {split['variant']} {split['stage1_us']:.1f} us against ksplit=1 "
                         f"{plain['stage1_us']:.1f} us: {verdict(split['stage1_us'] < plain['stage1_us'])}")
        floor = find("per_1x128", tokens, lambda r: r["variant"] == FLOOR + AFTER_MEMSET)
        if tokens <= 4 and floor and plain:
            room = plain["stage1_us"] - floor["stage1_us"]
            lines.append(f"    the routed weights' read floor after CK's memset: {floor['stage1_us']:.1f} us, "
                         + (f"{room:.1f} us under ksplit=1" if room > 0 else
                            f"{-room:.1f} us over ksplit=1: no split-K stage1 can beat it here"))
        if tokens <= 4 and split and plain:
            fp8 = {r["variant"]: r for r in rows if r["quant"] == "per_1x128" and r["tokens"] == tokens}
            lines += grid_floor_lines(plain, split, fp8)
        ours = [r for r in rows if r["quant"] == "none" and r["tokens"] == tokens
                and (r["heuristic"] or r["variant"] == "ksplit=1")]
        grouped = find("none", tokens, lambda r: r["variant"] == "torch._grouped_mm")
        if ours and grouped:
            best = min(ours, key=lambda r: r["stage1_us"])
            lines.append(f"  bf16 T={tokens}: {best['variant']} {best['stage1_us']:.1f} us against torch._grouped_mm "
                         f"{grouped['stage1_us']:.1f} us: {verdict(best['stage1_us'] < grouped['stage1_us'])}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--json")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--splitk", type=int, nargs="+", default=[],
                        help="also time these forced splits (K/128 must divide by each)")
    parser.add_argument("--quant", choices=["per_1x128", "none", "both"], default="both")
    parser.add_argument("--kernel-only", action="store_true",
                        help="also time each split-K stage1 without its memset (not a contract path: "
                             "it shows what the memset node costs)")
    parser.add_argument("--floor", action="store_true",
                        help="also time the fastest read of the routed weights with no math, alone and after "
                             "CK's memset: the floor for stage1, and for split-K stage1 with its memset; and the "
                             "same read on each variant's own grid and tile walk, to split partition from math")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time the variants of each T in this many interleaved rounds; report the median")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds: got {args.rounds}; allowed: 1 or more")
    props = torch.cuda.get_device_properties(0)
    cu_num = props.multi_processor_count
    bw = read_bandwidth()
    print(f"device {props.name}, {cu_num} SMs, torch {torch.__version__}; bf16 sum over 4 GiB: {bw / 1e12:.2f} TB/s")
    rows = []
    quants = {"per_1x128": (Quant.PER_1X128,), "none": (Quant.NONE,), "both": (Quant.PER_1X128, Quant.NONE)}
    for quant, dtype in ((q, "bf16") for q in quants[args.quant]):
        for tokens in args.tokens:
            sets = make_sets(tokens, dtype, quant)
            nbytes = statistics.mean(stage1_bytes(x, quant) for x in sets)
            auto = get_ksplit(get_padded_m(tokens), TOPK, EXPERTS, INTER, MODEL_DIM, cu_num)
            variants = {"ksplit=1": 0}
            for splitk in sorted({auto or 2, 2 * (auto or 2), *args.splitk}):
                while MODEL_DIM % (splitk * 128):
                    splitk += 1
                variants[f"split-K {splitk}"] = splitk
            chosen = {}
            for name, splitk in variants.items():
                cfg = None
                if args.sweep and (quant is Quant.PER_1X128 or tokens == args.tokens[0]):
                    cfg, _ = sweep(sets, tokens, quant, splitk)
                chosen[name] = (splitk, cfg, *check(sets, tokens, quant, splitk, cfg))
            # (row name, splitk, config, memsets timed, closures at a memset): the no-math reads.
            floors = []
            if args.floor:
                cfg = read_floor(sets, tokens, quant)
                floors.append((FLOOR, 0, cfg, (False, True), partial(floor_calls, sets, tokens, cfg)))
                for name, (splitk, *_) in chosen.items():
                    cfg = grid_floor(sets, tokens, quant, name, splitk)
                    floors.append((GRID_FLOOR.format(name), splitk, cfg, (False, True) if splitk > 1 else (False,),
                                   partial(grid_floor_calls, sets, tokens, splitk, cfg)))
            # Timed in interleaved rounds, so that drift over a long sweep lands on every variant alike.
            stage1_us = {}
            for _ in range(args.rounds):
                for name, (splitk, cfg, _, _) in chosen.items():
                    for memset in (True, False) if args.kernel_only and splitk > 1 else (True,):
                        calls = stage1_calls(sets, tokens, quant, splitk, cfg, memset=memset)
                        stage1_us.setdefault((name, memset), []).append(replay_us(calls))
                for name, _, _, memsets, calls in floors:
                    for memset in memsets:
                        stage1_us.setdefault((name, memset), []).append(replay_us(calls(memset)))
            for name, (splitk, cfg, err1, err2) in chosen.items():
                moe_us = replay_us([lambda x=x, s=splitk, q=quant: fused_moe(
                    x, block_m=BLOCK_M, splitk=s, policy=Policy.PR2551, quant=q, contract=CONTRACT)
                    for x in sets])
                us = statistics.median(stage1_us[name, True])
                rows.append(dict(quant=quant.value, dtype=dtype, tokens=tokens, variant=name, splitk=splitk,
                                 heuristic=splitk == (auto or None), **stage1_figures(us, nbytes, bw), moe_us=moe_us,
                                 stage1_rel_err=err1, moe_rel_err=err2, config=repr(cfg)))
                if (name, False) in stage1_us:
                    us = statistics.median(stage1_us[name, False])
                    rows.append(dict(rows[-1], variant=f"{name}, no memset", heuristic=False,
                                     **stage1_figures(us, nbytes, bw),
                                     moe_us=float("nan"), stage1_rel_err=float("nan"), moe_rel_err=float("nan")))
            for name, splitk, cfg, memsets, _ in floors:
                for memset in memsets:
                    us = statistics.median(stage1_us[name, memset])
                    rows.append(dict(quant=quant.value, dtype=dtype, tokens=tokens,
                                     variant=name + AFTER_MEMSET if memset else name, splitk=splitk,
                                     heuristic=False, **stage1_figures(us, nbytes, bw), moe_us=float("nan"),
                                     stage1_rel_err=float("nan"), moe_rel_err=float("nan"), config=repr(cfg)))
            if quant is Quant.NONE:
                try:
                    us = replay_us(grouped_mm_calls(sets, tokens))
                    rows.append(dict(quant="none", dtype=dtype, tokens=tokens, variant="torch._grouped_mm",
                                     splitk=0, heuristic=False, **stage1_figures(us, nbytes, bw), moe_us=float("nan"),
                                     stage1_rel_err=float("nan"), moe_rel_err=float("nan"), config=""))
                except Exception as exc:
                    print(f"torch._grouped_mm failed at T={tokens}: {type(exc).__name__}: {exc}")
            del sets, floors  # floors hold the sets too
            torch.cuda.empty_cache()
    print("\n| quant | T | variant | stage1 us | TB/s | % read BW | MoE us | stage1 err | MoE err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['quant']} | {r['tokens']} | {r['variant']} | {r['stage1_us']:.1f} | {r['stage1_tbs']:.2f} | "
              f"{r['stage1_pct_read_bw']:.0f}% | {r['moe_us']:.1f} | {r['stage1_rel_err']:.1e} | "
              f"{r['moe_rel_err']:.1e} |")
    if args.sweep:
        for r in rows:
            print(r["quant"], r["tokens"], r["variant"], r["config"])
    print("\n".join(bars(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(read_bw=bw, device=props.name, rows=rows, sweep=SWEPT), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
