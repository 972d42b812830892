"""aiter's two-stage MoE call sites, with the stage1 allocation policy as a parameter.

`fused_moe` follows `fused_moe_2stages` (docs/moe-contracts.md §1.6): sort, [quantise], stage1 into
the buffer the policy allocates, activation, [requantise], stage2 into moe_buf. Every buffer is
made by a torch factory call in Python, so a harness that intercepts factories guards them all.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from graph_harness.kernels.activation import act_and_mul, act_and_mul_ref
from graph_harness.kernels.contracts import (
    DEFAULT_CONTRACT,
    Activation,
    Policy,
    Quant,
    Stage1Mode,
    sorted_size,
    stage1_buffer,
    stage1_mode,
)
from graph_harness.kernels.moe_sorting import moe_sorting
from graph_harness.kernels.moe_stage1 import moe_stage1
from graph_harness.kernels.moe_stage2 import moe_stage2
from graph_harness.kernels.quant import (
    FP8,
    dequant_rows,
    dequant_weight_128x128,
    per_1x128_quant,
    per_1x128_quant_ref,
)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

# Aliased weights: expert e is the pool shifted by e*128 elements, so E experts cost one
# expert's memory (DeepSeek-V3 EP w1 is 7.5 G elements) yet differ, and a wrong expert shows.
_ALIAS_SHIFT = 128


@dataclass(frozen=True)
class MoEInputs:
    """One layer's inputs. Weights are fp8 with block scales when quantised."""

    hidden: torch.Tensor  # (T, K) model dtype
    w1: torch.Tensor  # (E, 2N, K)
    w2: torch.Tensor  # (E, K, N)
    topk_ids: torch.Tensor  # (T, topk) int32
    topk_weights: torch.Tensor  # (T, topk) fp32
    w1_scale: torch.Tensor | None = None  # (E, 2N/128, K/128) fp32
    w2_scale: torch.Tensor | None = None  # (E, K/128, N/128) fp32


def _weights(gen, experts, rows, cols, dtype, quant, aliased, device):
    """Random `(E, rows, cols)` weights with unit-variance outputs; fp8 + scales when quantised."""
    quantised = quant is Quant.PER_1X128
    # fp8 values carry their magnitude in the block scales; plain weights are scaled here.
    std = 1.0 if quantised else 1.0 / math.sqrt(cols)
    store = FP8 if quantised else dtype
    if aliased:
        pool = torch.randn(rows * cols + (experts - 1) * _ALIAS_SHIFT, generator=gen, device=device) * std
        w = pool.to(store).as_strided((experts, rows, cols), (_ALIAS_SHIFT, cols, 1))
    else:
        # One expert at a time: DeepSeek-V3 EP's w1 in fp32 would be 28 GiB before the cast.
        w = torch.empty(experts, rows, cols, dtype=store, device=device)
        for e in range(experts):
            w[e] = torch.randn(rows, cols, generator=gen, device=device) * std
    if not quantised:
        return w, None
    groups = (-(-rows // 128), -(-cols // 128))
    scale = (0.5 + torch.rand(experts, *groups, generator=gen, device=device)) / math.sqrt(cols)
    return w, scale


def make_weights(model_dim, inter, experts, dtype, quant, seed, device, aliased=False):
    """(w1, w1_scale, w2, w2_scale): `(E, 2N, K)` and `(E, K, N)`, scales None unless quantised."""
    gen = torch.Generator(device=device).manual_seed(seed)
    model_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    w1, w1_scale = _weights(gen, experts, 2 * inter, model_dim, model_dtype, quant, aliased, device)
    w2, w2_scale = _weights(gen, experts, model_dim, inter, model_dtype, quant, aliased, device)
    return w1, w1_scale, w2, w2_scale


def make_activations(tokens, model_dim, experts, topk, dtype, seed, device, idle_tokens=0):
    """(hidden `(T, K)`, topk_ids `(T, topk) int32`, topk_weights `(T, topk) fp32`), fresh per seed.

    `idle_tokens` trailing tokens route to -1 (sglang idle batches).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    model_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    hidden = torch.randn(tokens, model_dim, generator=gen, device=device).to(model_dtype)
    scores = torch.rand(tokens, experts, generator=gen, device=device)
    weights, ids = torch.topk(scores, topk, dim=-1)
    ids = ids.to(torch.int32)
    if idle_tokens:
        ids[tokens - idle_tokens:] = -1
    return hidden, ids, weights / weights.sum(-1, keepdim=True)


@functools.cache
def _generator(device):
    """One generator per device, seeded anew for every draw: a fuzz run draws thousands of inputs a second, and
    making a CUDA generator is host time the replay does not have."""
    return torch.Generator(device=device)


ROUTINGS = ("uniform", "hot", "one-expert", "idle")
VALUES = ("normal", "denormal", "huge")


def fuzz_activations(tokens, model_dim, experts, topk, dtype, seed, device, idle_tokens=0, negative_ids=True):
    """Activations as `make_activations`, drawn to vary what the kernels branch on: the routing (`ROUTINGS[seed %
    4]`: uniform; 1-4 hot experts in every token's top-k; every token on one expert; a random number of idle
    tokens, routed to -1, where `negative_ids`) and the values (`VALUES[seed // 4 % 3]`: unit normal; a random
    quarter of the rows scaled into the dtype's subnormals; a random quarter scaled to 1/64 of its largest value).
    """
    gen = _generator(device).manual_seed(seed)
    model_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    routing, values = ROUTINGS[seed % 4], VALUES[seed // 4 % 3]
    if routing == "idle" and not negative_ids:
        routing = "uniform"
    hidden = torch.randn(tokens, model_dim, generator=gen, device=device)
    if values != "normal":
        info = torch.finfo(model_dtype)
        scale = info.smallest_normal / 4 if values == "denormal" else info.max / 64 / 4  # randn reaches ~4
        rows = torch.rand(tokens, 1, generator=gen, device=device) < 0.25
        hidden = torch.where(rows, hidden * scale, hidden)
    scores = torch.rand(tokens, experts, generator=gen, device=device)
    if routing in ("hot", "one-expert"):
        count = 1 if routing == "one-expert" else 1 + seed // 12 % min(4, topk)
        hot = torch.randperm(experts, generator=gen, device=device)[:count]
        scores[:, hot] += 1.0  # above every other score: in every token's top-k
    weights, ids = torch.topk(scores, topk, dim=-1)
    ids = ids.to(torch.int32)
    idle = idle_tokens
    if routing == "idle":
        idle = max(idle, 1 + seed // 12 % tokens)
    if idle:
        ids[tokens - idle:] = -1
    return hidden.to(model_dtype), ids, weights / weights.sum(-1, keepdim=True)


def make_inputs(tokens, model_dim, inter, experts, topk, dtype, quant, seed, device, aliased=False,
                idle_tokens=0):
    """Fresh random weights and activations for one layer."""
    w1, w1_scale, w2, w2_scale = make_weights(model_dim, inter, experts, dtype, quant, seed, device, aliased)
    hidden, ids, weights = make_activations(tokens, model_dim, experts, topk, dtype, seed + 1, device, idle_tokens)
    return MoEInputs(hidden, w1, w2, ids, weights, w1_scale, w2_scale)


def fused_moe(x: MoEInputs, *, block_m, splitk, policy=Policy.PR2551, quant=Quant.NONE,
              activation=Activation.SILU, contract=DEFAULT_CONTRACT, on_step: Callable[[str], None] | None = None):
    """Run the MoE layer; returns `moe_buf (T, K)` in the model dtype.

    `on_step(name)` is called after each launch, so a harness can check guards op by op.
    """
    step = on_step or (lambda name: None)
    hidden = x.hidden
    tokens, model_dim = hidden.shape
    experts, inter = x.w1.shape[0], x.w2.shape[2]
    topk = x.topk_ids.shape[1]
    dtype = hidden.dtype
    sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf = moe_sorting(
        x.topk_ids, x.topk_weights, experts, block_m, model_dim, dtype, contract.negative_ids)
    step("moe_sorting")
    a1, a1_scale = hidden, None
    if quant is Quant.PER_1X128:
        a1, a1_scale = per_1x128_quant(hidden)
        step("quant_a1")
    # aiter's a2: the stage1 output in the model dtype, (T, topk, N).
    out = torch.empty((tokens, topk, inter), dtype=dtype, device=hidden.device)
    mode = stage1_mode(quant, splitk, model_dim, contract)
    stage1 = dict(split_instance=mode is not Stage1Mode.FUSED, activation=activation, a1_scale=a1_scale,
                  w1_scale=x.w1_scale, contract=contract)
    sorted_rows = sorted_size(tokens, topk, experts, block_m)
    if mode is Stage1Mode.SPLIT:
        buf = stage1_buffer(policy, tokens, topk, inter, sorted_rows, DTYPE_NAMES[dtype], split=True)
        factory = torch.zeros if buf.init == "zeros" else torch.empty
        tmp_out = factory((buf.rows, buf.width), dtype=DTYPES[buf.dtype], device=hidden.device)
        moe_stage1(a1, x.w1, sorted_ids, sorted_expert_ids, num_valid_ids, tmp_out, topk, block_m, splitk,
                   memset=policy is not Policy.CKTILE, **stage1)
        step("moe_stage1")
        act_and_mul(out, tmp_out[:buf.view_rows], activation)
        step("act_and_mul")
    elif mode is Stage1Mode.IDENTITY:
        # aiter #3050: `is` made is_splitk False, so the wrapper passed splitk=0 and `out` itself,
        # but the split-K instance picked by name writes fp32 rows 2N wide into it.
        moe_stage1(a1, x.w1, sorted_ids, sorted_expert_ids, num_valid_ids, out.view(torch.float32), topk,
                   block_m, 0, **stage1)
        step("moe_stage1")
    else:
        moe_stage1(a1, x.w1, sorted_ids, sorted_expert_ids, num_valid_ids, out, topk, block_m, 0, **stage1)
        step("moe_stage1")
    a2, a2_scale = out, None
    if quant is Quant.PER_1X128:
        a2, a2_scale = per_1x128_quant(out.view(-1, inter))
        step("quant_a2")
    moe_stage2(a2, x.w2, sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf, topk, block_m,
               a2_scale=a2_scale, w2_scale=x.w2_scale, contract=contract)
    step("moe_stage2")
    return moe_buf


def _routed(x: MoEInputs):
    """(the experts that appear, ascending; the flat (token, slot) indices routed to them, grouped by expert and
    ascending within each; the count of each group, as a list): one sort and one host sync. Idle slots (ids
    below 0) are left out."""
    ids = x.topk_ids.reshape(-1).long()
    order = torch.argsort(ids, stable=True)
    experts, counts = torch.unique_consecutive(ids[order], return_counts=True)
    sizes = counts.tolist()
    idle = int((experts < 0).sum())
    return experts[idle:], order[sum(sizes[:idle]):], sizes[idle:]


# fp64 weights that `_expert_products` dequantises at once: a chunk of experts, not one at a time (a Python loop
# over 257 DeepSeek-V3 experts, ~10 ops each, left a case's reference host-bound at ~150 ms on the H200)
_CHUNK_BYTES = {"cuda": 1 << 30, "cpu": 1 << 28}


def _expert_products(lhs, lhs_rows, w, scale, routed):
    """`y`: in fp64, for each routed flat index (in `routed`'s order) its row of `lhs` (`lhs_rows`, in that order)
    times its expert's weights `(N, K)` transposed, their 128x128 block scales applied. Experts go in chunks whose
    fp64 weights and rows fit `_CHUNK_BYTES`, those with the most rows first; a chunk's rows are padded to its
    largest count and multiplied in one batched product."""
    experts, flat, sizes = routed
    n, k = w.shape[1:]
    y = lhs.new_empty(len(flat), n, dtype=torch.float64)
    room = _CHUNK_BYTES.get(w.device.type, _CHUNK_BYTES["cpu"]) // (8 * k)  # rows of K in fp64
    first = np.cumsum(sizes) - sizes  # where each expert's group starts in `flat`
    by_rows = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    while by_rows:
        chunk = np.array(by_rows[: max(1, room // (n + sizes[by_rows[0]]))])  # its weights and padded rows
        del by_rows[: len(chunk)]
        counts = np.asarray(sizes)[chunk]
        group = np.repeat(np.arange(len(chunk)), counts)
        pos = np.arange(len(group)) - np.repeat(np.cumsum(counts) - counts, counts)  # the row's place in its group
        at = first[chunk][group] + pos  # and in `flat`
        index = torch.from_numpy(np.stack([group, pos, at])).to(w.device)
        group_t, pos_t, at_t = index
        chosen = experts[torch.from_numpy(chunk).to(w.device)]
        weights = w[chosen].double() if scale is None else dequant_weight_128x128(w[chosen], scale[chosen]).double()
        padded = lhs.new_zeros(len(chunk), int(counts.max()), k, dtype=torch.float64)
        padded[group_t, pos_t] = lhs[lhs_rows[at_t]].double()
        y[at_t] = torch.bmm(padded, weights.transpose(1, 2))[group_t, pos_t]
    return y


def _quant_roundtrip(x):
    """per_1x128 quantise and dequantise on CPU, where torch's fp8 cast is the one the kernels match
    bit for bit (test_quant_matches_reference_bitwise): on CUDA the reference drifted by 5e-3."""
    return dequant_rows(*per_1x128_quant_ref(x.cpu())).to(x.device)


def stage1_ref(x: MoEInputs, quant=Quant.NONE, routed=None):
    """fp64 gate|up rows `(T*topk, 2N)` for every routed (token, slot); rows of idle slots stay 0.

    Computed on the inputs' device, touching only the routed experts' weights.
    """
    tokens, topk = x.topk_ids.shape
    a = x.hidden.double()
    if quant is Quant.PER_1X128:
        a = _quant_roundtrip(x.hidden).double()
    routed = routed if routed is not None else _routed(x)
    rows = torch.zeros(tokens * topk, x.w1.shape[1], dtype=torch.float64, device=a.device)
    rows[routed[1]] = _expert_products(a, routed[1] // topk, x.w1, x.w1_scale, routed)
    return rows


def fused_moe_ref(x: MoEInputs, quant=Quant.NONE, activation=Activation.SILU):
    """fp64 reference of `fused_moe` `(T, K)`, quantising the intermediate as the kernels do."""
    tokens, topk = x.topk_ids.shape
    routed = _routed(x)
    flat = routed[1]
    # only the routed slots' rows go on (each row is quantised on its own): under expert parallelism 7 slots in 8
    # are another rank's, and the CPU's fp8 round trip of them all was most of a large-T reference
    a2 = act_and_mul_ref(stage1_ref(x, quant, routed)[flat], activation).to(x.hidden.dtype)
    a2 = _quant_roundtrip(a2) if quant is Quant.PER_1X128 else a2.float()
    slots = torch.zeros(tokens * topk, x.w2.shape[1], dtype=torch.float64, device=a2.device)
    y = _expert_products(a2, torch.arange(len(flat), device=a2.device), x.w2, x.w2_scale, routed)
    slots[flat] = y * x.topk_weights.double().reshape(-1)[flat, None]
    # each token's slots summed in one reduction: an `index_add_` of them all adds in whatever order the GPU's
    # atomics land, and equal inputs must give the bitwise-equal reference (the references served again)
    return slots.view(tokens, topk, -1).sum(1)
