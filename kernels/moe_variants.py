"""MoE layers whose contract lives in the call, not in one buffer's size: op-scenario factories over the MoE
kernels (moe_sorting, stage1, stage2), each with a buggy contract and its fix (docs/moe-contracts.md §8.3).

- `ep(bias_ids=...)` (S6): expert parallelism. topk ids are global, with a fused shared expert in the
  last slot and the fake expert (always masked) for tokens this rank does not own; `expert_mask` keeps this
  rank's experts, whose local ids (the mask's cumsum) index the weights and a per-expert bias.
  - `local`: the bias is indexed by the local ids sorting returns (-1 for masked slots: skipped).
  - `global`: by the global ids, past the local bias's rows on every rank but the first (aiter #3208).
- `local(count=...)` (S7): DP attention. Only the first `num_local_tokens[0]` tokens are this
  rank's; the rest are padding with arbitrary routes, and their output rows are zeros.
  - `device`: sorting reads the count from device memory at every launch (aiter's LocalToken variant).
  - `host`: the wrapper reads it on the host when it may, not while capturing, and keeps it: a graph runs
    with the count of the last eager call before capture.
- `pieces(buffers=...)` (S9): sorting runs in an eager piece, outside the graph, and the stages read
  its buffers inside it (`graph_harness.Piecewise`, as vLLM's piecewise capture splits a layer).
  - `per_call`: the eager piece allocates its buffers on every call, so a graph reads the ones of the call
    it captured, which the process has since handed to others.
  - `static`: allocated once per shape and sorted into on every call: the graph reads this call's.
- `blocks(sort_block_m=..., block_m=...)` (S10): moe_sorting lays out blocks of `sort_block_m` rows, the
  stages read blocks of `block_m`; they must agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from graph_harness.kernels._triton import cast_rne, store_mantissa, tl, triton
from graph_harness.kernels.contracts import Activation
from graph_harness.kernels.fused_moe import DTYPES, MoEInputs, fused_moe_ref, make_weights
from graph_harness.kernels.moe_sorting import moe_sorting, moe_sorting_into, sorting_buffers
from graph_harness.kernels.moe_stage1 import moe_stage1
from graph_harness.kernels.moe_stage2 import moe_stage2
from graph_harness.suite.op import OpSpec

Tensors = Mapping[str, torch.Tensor]

# A small layer: the contracts do not depend on the model's size, and the interpreter runs it in seconds.
HIDDEN, INTER, EXPERTS, TOPK, BLOCK_M = 256, 128, 16, 4, 16
_BIAS_BLOCK = 128


def _device() -> torch.device:
    from graph_harness.core.triton_env import device

    return device()


def _weights(experts: int, dtype: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    w1, _, w2, _ = make_weights(HIDDEN, INTER, experts, dtype, None, seed, _device())
    return w1, w2


def _route(tokens: int, experts: int, topk: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """topk ids (distinct per token, int32) and weights summing to 1, drawn on the CPU."""
    weights, ids = torch.topk(torch.rand(tokens, experts, generator=gen), topk, dim=-1)
    return ids.to(torch.int32), weights / weights.sum(-1, keepdim=True)


def _activations(size: int, seed: int, experts: int, topk: int, dtype: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(size, HIDDEN, generator=gen).to(DTYPES[dtype])
    ids, weights = _route(size, experts, topk, gen)
    dev = _device()
    return {"hidden": hidden.to(dev), "topk_ids": ids.to(dev), "topk_weights": weights.to(dev)}


def _stages(hidden: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, sorted_ids: torch.Tensor,
            sorted_weights: torch.Tensor, sorted_expert_ids: torch.Tensor, num_valid_ids: torch.Tensor,
            moe_buf: torch.Tensor, topk: int, block_m: int,
            between: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """stage1 (activation fused) into a2 `(T, topk, N)`, `between(a2)`, then stage2 into moe_buf."""
    tokens = hidden.shape[0]
    a2 = torch.empty((tokens, topk, INTER), dtype=hidden.dtype, device=hidden.device)
    moe_stage1(hidden, w1, sorted_ids, sorted_expert_ids, num_valid_ids, a2, topk, block_m, 0, split_instance=False)
    if between is not None:
        between(a2)
    moe_stage2(a2, w2, sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf, topk, block_m)
    return moe_buf


def _layer(inputs: Tensors, w1: torch.Tensor, w2: torch.Tensor, topk_ids: torch.Tensor | None = None) -> MoEInputs:
    ids = inputs["topk_ids"] if topk_ids is None else topk_ids
    return MoEInputs(inputs["hidden"], w1, w2, ids, inputs["topk_weights"])


# -- S6: expert parallelism, global and local expert ids ------------------------------------------------------

@triton.jit
def _expert_bias_kernel(out_ptr, ids_ptr, bias_ptr, n, BLOCK: tl.constexpr, MANT: tl.constexpr):
    """Row r of a2 `(T*topk, N)` gets bias[ids[r]]; rows of id -1 (masked experts) are not this rank's."""
    row = tl.program_id(0)
    e = tl.load(ids_ptr + row)
    if e >= 0:
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(out_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(bias_ptr + e * n + cols, mask=mask, other=0.0)
        tl.store(out_ptr + row * n + cols, cast_rne(x + b, out_ptr.dtype.element_ty, MANT), mask=mask)


def expert_bias(a2: torch.Tensor, ids: torch.Tensor, bias: torch.Tensor) -> None:
    """a2 `(T, topk, N)` += bias `(E, N)` fp32 of each row's expert, `ids (T, topk)` int32, in place."""
    rows = ids.numel()
    n = a2.shape[-1]
    block = min(_BIAS_BLOCK, triton.next_power_of_2(n))
    _expert_bias_kernel[(rows, triton.cdiv(n, block))](a2, ids, bias, n, BLOCK=block, MANT=store_mantissa(a2.dtype))


EP_SIZE, EP_RANK = 2, 1


def _ep_mask(routed: int) -> torch.Tensor:
    """aiter's test_moe_ep convention: `routed` experts, then one shared expert every rank keeps, then the fake
    expert, always masked. This rank keeps its slice of the routed ones."""
    mask = torch.zeros(routed + 2, dtype=torch.int32)
    per_rank = routed // EP_SIZE
    mask[EP_RANK * per_rank:(EP_RANK + 1) * per_rank] = 1
    mask[routed] = 1
    return mask


def local_ids(topk_ids: torch.Tensor, expert_mask: torch.Tensor) -> torch.Tensor:
    """sorting's `return_local_topk_ids`: `cumsum(mask) - 1` for kept experts, -1 for masked ones."""
    table = torch.where(expert_mask > 0, torch.cumsum(expert_mask, 0) - 1, -1).to(torch.int32)
    local = torch.empty_like(topk_ids)  # made by a factory, so that the harness guards what the kernels read
    return local.copy_(table[topk_ids.long()])


class ExpertParallel:
    """One EP rank's MoE with a fused shared expert and a per-expert bias on a2 (see the module doc)."""

    def __init__(self, bias_ids: str) -> None:
        if bias_ids not in ("local", "global"):
            raise ValueError(f"bias_ids: got {bias_ids!r}; allowed: local, global")
        self.bias_ids = bias_ids

    def __call__(self, inputs: dict[str, torch.Tensor], *, w1: torch.Tensor, w2: torch.Tensor, bias: torch.Tensor,
                 expert_mask: torch.Tensor) -> torch.Tensor:
        hidden, ids = inputs["hidden"], inputs["topk_ids"]
        local = local_ids(ids, expert_mask)
        topk = ids.shape[1]
        sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf = moe_sorting(
            local, inputs["topk_weights"], w1.shape[0], BLOCK_M, HIDDEN, hidden.dtype)
        by = local if self.bias_ids == "local" else ids
        return _stages(hidden, w1, w2, sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf, topk,
                       BLOCK_M, between=lambda a2: expert_bias(a2, by, bias))


def _ep_reference(inputs: Tensors, *, w1: torch.Tensor, w2: torch.Tensor, bias: torch.Tensor,
                  expert_mask: torch.Tensor) -> torch.Tensor:
    """This rank's partial sum in fp64: its experts' slots only, a2 = bf16(bf16(act(gate) * up) + bias)."""
    x = _layer(inputs, w1, w2, local_ids(inputs["topk_ids"], expert_mask))
    from graph_harness.kernels.activation import act_and_mul_ref
    from graph_harness.kernels.fused_moe import stage1_ref

    tokens, topk = x.topk_ids.shape
    ids = x.topk_ids.reshape(-1).long()
    a2 = act_and_mul_ref(stage1_ref(x), Activation.SILU).to(x.hidden.dtype).double()
    kept = ids >= 0
    a2[kept] = (a2[kept] + bias.double()[ids[kept]]).to(x.hidden.dtype).double()
    out = torch.zeros(tokens, HIDDEN, dtype=torch.float64, device=a2.device)
    weights = x.topk_weights.double().reshape(-1)
    for e in torch.unique(ids[kept]).tolist():
        sel = torch.nonzero(ids == e).flatten()
        out.index_add_(0, sel // topk, (a2[sel] @ w2[e].double().T) * weights[sel, None])
    return out


def ep(bias_ids: str = "local", dtype: str = "bf16", seed: int = 6) -> OpSpec:
    """S6 (aiter #3208): rank 1 of 2 over 16 routed experts, topk 4 + the shared slot; factory of an op scenario."""
    mask = _ep_mask(EXPERTS)
    local = int(mask.sum())
    w1, w2 = _weights(local, dtype, seed)
    gen = torch.Generator().manual_seed(seed)
    bias = (torch.randn(local, INTER, generator=gen) * 0.5).to(_device())
    routed, shared, fake = EXPERTS, EXPERTS, EXPERTS + 1

    def inputs(size: int, seed: int) -> dict[str, torch.Tensor]:
        made = _activations(size, seed, routed, TOPK, dtype)
        gen = torch.Generator().manual_seed(seed + 7)
        owned = torch.rand(size, generator=gen) < 0.5
        owned[0] = True  # at least one token of this rank's
        slot = torch.where(owned, shared, fake).to(torch.int32)[:, None].to(made["topk_ids"].device)
        made["topk_ids"] = torch.cat([made["topk_ids"], slot], dim=1)
        weights = made["topk_weights"]
        made["topk_weights"] = torch.cat([weights, torch.full_like(weights[:, :1], 1.0)], dim=1)
        return made

    constants = {"w1": w1, "w2": w2, "bias": bias, "expert_mask": mask.to(_device())}
    return OpSpec(ExpertParallel(bias_ids), inputs, _ep_reference, constants)


# -- S7: num_local_tokens, read on the device or baked on the host -----------------------------------------

class LocalTokens:
    """DP attention's MoE over the first `num_local_tokens[0]` tokens (see the module doc)."""

    def __init__(self, count: str) -> None:
        if count not in ("device", "host"):
            raise ValueError(f"count: got {count!r}; allowed: device, host")
        self.count = count
        self.host_count = 0

    def __call__(self, inputs: dict[str, torch.Tensor], *, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        hidden, ids, n = inputs["hidden"], inputs["topk_ids"], inputs["num_local_tokens"]
        local: torch.Tensor | int = n
        if self.count == "host":
            if not torch.cuda.is_current_stream_capturing():  # a read under capture would fail: keep the last
                self.host_count = int(n.item())
            local = self.host_count
        sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf = moe_sorting(
            ids, inputs["topk_weights"], w1.shape[0], BLOCK_M, HIDDEN, hidden.dtype, num_local_tokens=local)
        return _stages(hidden, w1, w2, sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf,
                       ids.shape[1], BLOCK_M)


def _local_reference(inputs: Tensors, *, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The local tokens' MoE; padding tokens' rows are zeros (their routes count for no expert)."""
    ids = inputs["topk_ids"].clone()
    ids[int(inputs["num_local_tokens"][0]):] = -1
    return fused_moe_ref(_layer(inputs, w1, w2, ids))


def local(count: str = "device", dtype: str = "bf16", seed: int = 7) -> OpSpec:
    """S7 (aiter #4375): the local count differs from input set to input set, 1 + seed % size."""
    w1, w2 = _weights(EXPERTS, dtype, seed)

    def inputs(size: int, seed: int) -> dict[str, torch.Tensor]:
        made = _activations(size, seed, EXPERTS, TOPK, dtype)
        made["num_local_tokens"] = torch.tensor([1 + seed % size], dtype=torch.int32, device=_device())
        return made

    return OpSpec(LocalTokens(count), inputs, _local_reference, {"w1": w1, "w2": w2})


# -- S9: sorting in an eager piece, the stages in the graph ------------------------------------------------

class EagerSort:
    """The eager piece: sort into buffers made per call, or into ones kept per shape."""

    def __init__(self, buffers: str) -> None:
        if buffers not in ("per_call", "static"):
            raise ValueError(f"buffers: got {buffers!r}; allowed: per_call, static")
        self.buffers = buffers
        self.kept: dict[tuple[int, ...], tuple[torch.Tensor, ...]] = {}

    def __call__(self, inputs: dict[str, torch.Tensor], *, w1: torch.Tensor, w2: torch.Tensor) -> dict[str, Any]:
        ids = inputs["topk_ids"]
        tokens, topk = ids.shape
        experts = w1.shape[0]
        key = tuple(ids.shape)
        made = self.kept.get(key) if self.buffers == "static" else None
        if made is None:
            # moe_buf is the graph's: the eager piece sorts only (an empty moe_buf, nothing to zero)
            made = sorting_buffers(tokens, topk, experts, BLOCK_M, 0, inputs["hidden"].dtype, ids.device)[:4]
            if self.buffers == "static":
                self.kept[key] = made
        sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids = made
        moe_sorting_into(ids, inputs["topk_weights"], experts, BLOCK_M, sorted_ids, sorted_weights,
                         sorted_expert_ids, num_valid_ids, ids.new_empty((0, 0), dtype=inputs["hidden"].dtype))
        return {"sorted_ids": sorted_ids, "sorted_weights": sorted_weights, "sorted_expert_ids": sorted_expert_ids,
                "num_valid_ids": num_valid_ids}


def graph_stages(inputs: dict[str, torch.Tensor], *, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The captured piece: stage1 and stage2 over what the eager piece sorted."""
    hidden = inputs["hidden"]
    moe_buf = torch.zeros(hidden.shape[0], HIDDEN, dtype=hidden.dtype, device=hidden.device)
    return _stages(hidden, w1, w2, inputs["sorted_ids"], inputs["sorted_weights"], inputs["sorted_expert_ids"],
                   inputs["num_valid_ids"], moe_buf, inputs["topk_ids"].shape[1], BLOCK_M)


def _reference(inputs: Tensors, *, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    return fused_moe_ref(_layer(inputs, w1, w2))


def pieces(buffers: str = "static", dtype: str = "bf16", seed: int = 9) -> OpSpec:
    """S9 (sglang #19787, vLLM #40044): factory of an op scenario."""
    from graph_harness.core.check import Piecewise

    w1, w2 = _weights(EXPERTS, dtype, seed)
    op = Piecewise(eager=EagerSort(buffers), graph=graph_stages)
    return OpSpec(op, lambda size, seed: _activations(size, seed, EXPERTS, TOPK, dtype), _reference,
                  {"w1": w1, "w2": w2})


# -- S10: the sorting's block size against the stages' ----------------------------------------------------

def blocks(sort_block_m: int = BLOCK_M, block_m: int = BLOCK_M, dtype: str = "bf16", seed: int = 10) -> OpSpec:
    """S10 (aiter #2651's review): moe_sorting with `sort_block_m`, stage1 and stage2 with `block_m`."""
    w1, w2 = _weights(EXPERTS, dtype, seed)

    def op(inputs: dict[str, torch.Tensor], *, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        hidden, ids = inputs["hidden"], inputs["topk_ids"]
        sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf = moe_sorting(
            ids, inputs["topk_weights"], EXPERTS, sort_block_m, HIDDEN, hidden.dtype)
        return _stages(hidden, w1, w2, sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf,
                       ids.shape[1], block_m)

    return OpSpec(op, lambda size, seed: _activations(size, seed, EXPERTS, TOPK, dtype), _reference,
                  {"w1": w1, "w2": w2})
