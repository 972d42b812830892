"""Every kernel and stage1 policy against its torch reference, on fresh random inputs with
poisoned outputs; sorting compared exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from graph_harness.core.compare import assert_close
from graph_harness.kernels._triton import cast_rne, store_mantissa, tl, triton
from graph_harness.kernels.activation import act_and_mul, act_and_mul_ref
from graph_harness.kernels.contracts import (
    Activation,
    Contract,
    MemsetRows,
    NegativeIds,
    Padding,
    Policy,
    Predicate,
    Quant,
    SortedTail,
    sorted_size,
    stage1_footprint,
)
from graph_harness.kernels.fused_moe import DTYPES, fused_moe, fused_moe_ref, make_inputs, stage1_ref
from graph_harness.kernels.moe_sorting import (
    _SCAN_BLOCK,
    _count_kernel,
    moe_sorting_into,
    moe_sorting_ref,
    sorting_buffers,
)
from graph_harness.kernels.moe_stage1 import moe_stage1
from graph_harness.kernels.quant import FP8, FP8_MAX, FP8_MIN_EXP, per_1x128_quant, per_1x128_quant_ref
from graph_harness.moe.workload import CKTILE_TOLERANCE, TOLERANCE

# A poison no kernel writes by accident: int32 0x5A5A5A5A, and a NaN for floats.
INT_POISON = 0x5A5A5A5A


@pytest.mark.parametrize(("tokens", "topk", "experts", "block_m", "idle"), [
    (1, 8, 256, 16, 0), (4, 9, 257, 16, 0), (37, 8, 128, 32, 0), (64, 2, 8, 64, 0), (5, 4, 16, 16, 2),
    (3, 4, 16, 16, 3)])
def test_sorting_matches_reference_exactly(device, seed, tokens, topk, experts, block_m, idle):
    x = make_inputs(tokens, 128, 128, experts, topk, "bf16", Quant.NONE, seed, device, aliased=True,
                    idle_tokens=idle)
    bufs = sorting_buffers(tokens, topk, experts, block_m, 128, torch.bfloat16, device)
    sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf = bufs
    for buf in (sorted_ids, sorted_expert_ids, num_valid_ids):
        buf.fill_(INT_POISON)
    sorted_weights.fill_(float("nan"))
    moe_buf.fill_(float("nan"))
    moe_sorting_into(x.topk_ids, x.topk_weights, experts, block_m, *bufs)
    ref_ids, ref_weights, ref_experts, ref_valid = moe_sorting_ref(x.topk_ids, x.topk_weights, experts, block_m)
    n = int(ref_valid[0])
    assert torch.equal(num_valid_ids.cpu(), ref_valid)
    assert torch.equal(sorted_ids[:n].cpu(), ref_ids)
    assert torch.equal(sorted_weights[:n].cpu(), ref_weights)
    assert torch.equal(sorted_expert_ids[: n // block_m].cpu(), ref_experts)
    # The tail past num_valid_ids[0] is never written: torch.empty, never filled.
    assert bool((sorted_ids[n:] == INT_POISON).all())
    assert bool(sorted_weights[n:].isnan().all())
    assert bool((sorted_expert_ids[n // block_m:] == INT_POISON).all())
    assert bool((moe_buf == 0).all())
    assert n <= sorted_size(tokens, topk, experts, block_m)


@triton.jit
def _cast_kernel(x_ptr, out_ptr, n, MANT: tl.constexpr, MIN_EXP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(out_ptr + offs, cast_rne(x, out_ptr.dtype.element_ty, MANT, MIN_EXP), mask=offs < n)


@pytest.mark.parametrize(("dtype", "min_exp", "limit"), [(torch.bfloat16, -126, None), (FP8, FP8_MIN_EXP, FP8_MAX)])
def test_kernel_casts_round_like_torch(device, seed, dtype, min_exp, limit):
    """Every bf16 value and 2**16 random fp32 bit patterns, subnormals and NaN payloads included.

    NaNs are made quiet: the interpreter's numpy warns on signalling ones, and poison is quiet.
    """
    gen = torch.Generator().manual_seed(seed)
    every_bf16 = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).float()
    random_bits = torch.randint(-(2**31), 2**31, (2**16,), generator=gen, dtype=torch.int64).to(torch.int32)
    x = torch.cat([every_bf16, random_bits.view(torch.float32)])
    x = torch.where(x.isnan(), x.view(torch.int32).bitwise_or(1 << 22).view(torch.float32), x)
    if limit is not None:
        # e4m3fn has no infinity: torch and the kernels clamp to +-448 before the cast.
        x = x[x.isnan() | (x.abs() <= limit)]
        x = torch.cat([x, x * 2.0**-12, x * 2.0**-20])
    x = x.to(device)
    out = torch.full_like(x, float("nan"), dtype=dtype)
    _cast_kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), MANT=store_mantissa(dtype), MIN_EXP=min_exp,
                                                  BLOCK=1024)
    expected = x.to(dtype)
    finite = ~x.isnan()
    bits = torch.int8 if dtype == FP8 else torch.int16
    assert torch.equal(out[finite].view(bits), expected[finite].view(bits))
    assert bool(out[~finite].float().isnan().all())


def test_quant_matches_reference_bitwise(device, seed):
    gen = torch.Generator(device=device).manual_seed(seed)
    # Magnitudes over six decades, so that many quantise to e4m3 subnormals.
    decades = torch.rand(7, 320, generator=gen, device=device) * 6
    x = (torch.randn(7, 320, generator=gen, device=device) * 3 * 10**-decades).to(torch.bfloat16)
    q, scale = per_1x128_quant(x)
    ref_q, ref_scale = per_1x128_quant_ref(x.cpu())
    assert torch.equal(scale.cpu(), ref_scale)
    assert torch.equal(q.cpu().view(torch.uint8), ref_q.view(torch.uint8))


@pytest.mark.parametrize("activation", list(Activation))
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_act_and_mul(device, seed, activation, dtype):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(6, 2 * 192, generator=gen, device=device)
    out = torch.full((3, 2, 192), float("nan"), dtype=DTYPES[dtype], device=device)
    act_and_mul(out, x, activation)
    assert_close(out.view(6, 192), act_and_mul_ref(x.cpu(), activation), TOLERANCE[(dtype, Quant.NONE)] / 2)


@pytest.mark.parametrize("quant", list(Quant))
@pytest.mark.parametrize(("splitk", "split_instance"), [(0, False), (2, True), (4, True)])
@pytest.mark.parametrize("block_k", [None, 256], ids=["default-tiles", "block_k256"])
def test_stage1_against_reference(device, seed, quant, splitk, split_instance, block_k):
    """block_k 256: two 128-wide scale groups per step for fp8, a 256-deep dot otherwise."""
    tokens, model_dim, inter, experts, topk, block_m = 3, 1024, 192, 16, 4, 16
    x = make_inputs(tokens, model_dim, inter, experts, topk, "bf16", quant, seed, device, aliased=True)
    bufs = sorting_buffers(tokens, topk, experts, block_m, model_dim, torch.bfloat16, device)
    moe_sorting_into(x.topk_ids, x.topk_weights, experts, block_m, *bufs)
    sorted_ids, _, sorted_expert_ids, num_valid_ids, _ = bufs
    a1, a1_scale = per_1x128_quant(x.hidden) if quant is Quant.PER_1X128 else (x.hidden, None)
    rows = sorted_size(tokens, topk, experts, block_m)
    if split_instance:
        # pr2551's torch.empty buffer: the memset (KBatch = 1024/(splitk*128) > 1) must clear the poison.
        out = torch.full((rows, 2 * inter), float("nan"), device=device)
        contract = Contract(k_per_block=128)
    else:
        out = torch.full((tokens, topk, inter), float("nan"), dtype=torch.bfloat16, device=device)
        contract = Contract()
    config = block_k and (dict(BLOCK_N=64, BLOCK_K=block_k), {})
    moe_stage1(a1, x.w1, sorted_ids, sorted_expert_ids, num_valid_ids, out, topk, block_m, splitk,
               split_instance=split_instance, a1_scale=a1_scale, w1_scale=x.w1_scale, contract=contract,
               config=config)
    ref = stage1_ref(x, quant)
    if split_instance:
        assert_close(out[: tokens * topk], ref, 1e-4)
        assert bool((out[tokens * topk:] == 0).all()), "rows past T*topk: memset, and padding clipped"
    else:
        assert_close(out.view(tokens * topk, inter), act_and_mul_ref(ref, Activation.SILU), 1e-2)


# Each policy under the contract that keeps it inside its buffer; the overruns are the harness's job.
IN_BOUNDS = {
    Policy.ORIGINAL: Contract(memset_rows=MemsetRows.TOKENS_TOPK),
    Policy.PR2551: Contract(),
    Policy.ROWS_PLUS_TOPK: Contract(memset_rows=MemsetRows.TOKENS_TOPK),
    Policy.CKTILE: Contract(),
}


@pytest.mark.parametrize("policy", list(Policy))
@pytest.mark.parametrize(("dtype", "quant", "splitk", "model_dim"), [
    ("bf16", Quant.PER_1X128, 2, 1024), ("fp16", Quant.PER_1X128, 4, 2048), ("bf16", Quant.NONE, 0, 1024),
    ("fp16", Quant.NONE, 0, 512)])
@pytest.mark.parametrize("padding", [Padding.CLIPPED, Padding.MASKED])
def test_fused_moe_policy_against_reference(device, seed, policy, dtype, quant, splitk, model_dim, padding):
    """KBatch = K/(splitk*256) stays >= 2 here: at 1 the memset is skipped (S4, aiter #3997)."""
    tokens, inter, experts, topk, block_m = 2, 128, 16, 4, 16
    contract = Contract(padding=padding, stage2_padding=padding, memset_rows=IN_BOUNDS[policy].memset_rows)
    fp = stage1_footprint(policy, tokens, topk, experts, inter, model_dim, block_m, splitk, quant, dtype, contract)
    assert fp.predicted_overflow_bytes == 0
    x = make_inputs(tokens, model_dim, inter, experts, topk, dtype, quant, seed, device, aliased=True)
    out = fused_moe(x, block_m=block_m, splitk=splitk, policy=policy, quant=quant, contract=contract)
    tol = CKTILE_TOLERANCE if policy is Policy.CKTILE and splitk > 1 else TOLERANCE[(dtype, quant)]
    assert_close(out, fused_moe_ref(x, quant), tol)


@pytest.mark.parametrize("activation", list(Activation))
def test_fused_moe_gelu_and_idle_tokens(device, seed, activation):
    x = make_inputs(4, 1024, 128, 8, 2, "bf16", Quant.PER_1X128, seed, device, aliased=True, idle_tokens=1)
    out = fused_moe(x, block_m=16, splitk=2, activation=activation, quant=Quant.PER_1X128)
    ref = fused_moe_ref(x, Quant.PER_1X128, activation)
    assert_close(out, ref, TOLERANCE[("bf16", Quant.PER_1X128)])
    assert bool((out[-1] == 0).all()), "an idle token (ids -1) gets no expert"


@pytest.mark.parametrize("quant", [Quant.NONE, Quant.PER_1X128])
def test_the_reference_of_each_token_is_its_own_and_of_all_idle_slots_zero(device, seed, quant):
    """The fp64 reference multiplies its experts in chunks, rows of several tokens padded together: a token's
    row is what it is computed alone, and a layer with every slot idle (nothing routed at all) is all zeros."""
    x = make_inputs(5, 256, 128, 8, 2, "bf16", quant, seed, device, aliased=False, idle_tokens=1)
    ref = fused_moe_ref(x, quant)
    for t in range(4):
        alone = replace(x, hidden=x.hidden[t:t + 1], topk_ids=x.topk_ids[t:t + 1], topk_weights=x.topk_weights[t:t + 1])
        assert_close(ref[t:t + 1], fused_moe_ref(alone, quant), 1e-12)
    assert bool((ref[-1] == 0).all())  # the idle token
    idle = replace(x, topk_ids=torch.full_like(x.topk_ids, -1))
    assert torch.equal(fused_moe_ref(idle, quant), torch.zeros_like(ref))


# A pattern every fault changes: memset to 0, a store, an fp32 atomic add of 1e-30 all alter it.
_DENORMAL = torch.tensor([1], dtype=torch.int32).view(torch.float32).item()


def _arena(nbytes: int, device: torch.device) -> torch.Tensor:
    return torch.full((nbytes // 4,), _DENORMAL, dtype=torch.float32, device=device)


def _touched_bytes(arena: torch.Tensor) -> int:
    """Bytes from the arena start through the last 4-byte word that no longer holds the pattern."""
    changed = torch.nonzero(arena.view(torch.int32) != 1).flatten()
    return 4 * (int(changed.max()) + 1) if changed.numel() else 0


@pytest.mark.parametrize(("policy", "contract", "tokens", "splitk"), [
    (Policy.ORIGINAL, Contract(), 1, 2),
    (Policy.PR2551, Contract(), 1, 2),
    (Policy.ROWS_PLUS_TOPK, Contract(), 2, 2),
    (Policy.PR2551, Contract(padding=Padding.UNMASKED), 2, 2),
    (Policy.ORIGINAL, Contract(padding=Padding.UNMASKED, memset_rows=MemsetRows.TOKENS_TOPK), 1, 2),
    (Policy.ORIGINAL, Contract(predicate=Predicate.IDENTITY), 1, 2),
])
def test_stage1_writes_exactly_the_predicted_bytes(device, seed, policy, contract, tokens, splitk):
    """DeepSeek-V3 EP decode shape (K shrunk): bytes written from the buffer start == footprint."""
    topk, experts, inter, block_m, model_dim = 8, 256, 2048, 16, 1024
    fp = stage1_footprint(policy, tokens, topk, experts, inter, model_dim, block_m, splitk, Quant.PER_1X128,
                          "bf16", contract)
    x = make_inputs(tokens, model_dim, inter, experts, topk, "bf16", Quant.PER_1X128, seed, device, aliased=True)
    arena = _arena(fp.alloc_bytes + fp.predicted_overflow_bytes + (1 << 20), device)
    bufs = sorting_buffers(tokens, topk, experts, block_m, model_dim, torch.bfloat16, device)
    moe_sorting_into(x.topk_ids, x.topk_weights, experts, block_m, *bufs)
    # Row T exists behind the T-row views: the unmasked gather of the padding token T reads random
    # data with a real scale, so its row T*topk+topk gets a non-zero sum.
    a1, a1_scale = per_1x128_quant(torch.cat([x.hidden, x.hidden[:1].roll(1, -1)]))
    a1, a1_scale = a1[:tokens], a1_scale[:tokens]
    identity = contract.predicate is Predicate.IDENTITY
    out = arena if identity else arena[: fp.alloc_bytes // 4].view(-1, 2 * inter)
    moe_stage1(a1, x.w1, bufs[0], bufs[2], bufs[3], out, topk, block_m, 0 if identity else splitk,
               split_instance=True, a1_scale=a1_scale, w1_scale=x.w1_scale, contract=contract)
    written = max(fp.memset_bytes, fp.scatter_rows * 2 * inter * 4)
    assert _touched_bytes(arena) == written
    assert max(written - fp.alloc_bytes, 0) == fp.predicted_overflow_bytes


@pytest.mark.parametrize(("negative_ids", "before"), [(NegativeIds.FILTERED, INT_POISON), (NegativeIds.UNFILTERED, 8)])
def test_count_pass_on_idle_ids(device, seed, negative_ids, before):
    """rocm-libraries #6242: unfiltered, the histogram of ids -1 lands at counts[-1], inside a guard here."""
    experts, topk, guard = 16, 4, 8
    x = make_inputs(3, 128, 128, experts, topk, "bf16", Quant.NONE, seed, device, aliased=True, idle_tokens=2)
    slab = torch.full((guard + experts + guard,), INT_POISON, dtype=torch.int32, device=device)
    counts = slab[guard:guard + experts]
    ids = x.topk_ids.reshape(-1)
    first = -1 if negative_ids is NegativeIds.UNFILTERED else 0
    _count_kernel[(experts - first,)](ids, counts, counts, ids.numel(), topk, SCAN=_SCAN_BLOCK, FIRST=first,
                                      LOCAL=False)
    assert torch.equal(counts.cpu(), torch.bincount(ids[ids >= 0].long().cpu(), minlength=experts).int())
    assert int(slab[guard - 1]) == before  # 2 idle tokens x topk 4 ids of -1
    assert bool((slab[:guard - 1] == INT_POISON).all())
    assert bool((slab[guard + experts:] == INT_POISON).all())


@pytest.mark.parametrize("tail", list(SortedTail))
def test_stage2_tail_past_num_valid(device, seed, tail, monkeypatch):
    """S5: with the tail of the sorted buffers poisoned, the unguarded stage2 puts NaN into the idle token's
    row (its folded target); with the tail zeroed, or with the early exit, the output is right."""
    x = make_inputs(2, 256, 128, 64, 8, "bf16", Quant.NONE, seed, device, aliased=True, idle_tokens=1)
    ref = fused_moe_ref(x)
    real_empty = torch.empty

    def run(poisoned: bool) -> torch.Tensor:
        def empty(*args, **kwargs):
            out = real_empty(*args, **kwargs)
            if out.dtype == torch.int32:
                return out.fill_(0x7FC57FC5 if poisoned else 0)
            return out.fill_(float("nan") if poisoned else 0.0)

        monkeypatch.setattr(torch, "empty", empty)
        try:
            return fused_moe(x, block_m=16, splitk=0, contract=Contract(sorted_tail=tail))
        finally:
            monkeypatch.setattr(torch, "empty", real_empty)

    tol = TOLERANCE[("bf16", Quant.NONE)]
    assert_close(run(poisoned=False), ref, tol)
    poisoned = run(poisoned=True)
    assert_close(poisoned[:1], ref[:1], tol)
    if tail is SortedTail.UNGUARDED:  # 0xC57FC5 % 2 = 1: the idle token's row, all NaN
        assert bool(poisoned[1].isnan().all())
    else:
        assert_close(poisoned, ref, tol)
