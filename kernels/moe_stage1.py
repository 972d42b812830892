"""MoE stage1: gathered `hidden @ w1[e].T`, split-K with CK's memset contract.

Shapes (aiter `ck_moe_stage1`, docs/moe-contracts.md §1.1, §3):
    hidden            (T, K) bf16/fp16, or fp8 e4m3 with a1_scale (T, K/128) fp32
    w1                (E, 2N, K), gate rows [0, N) then up rows [N, 2N); fp8 with w1_scale (E, 2N/128, K/128)
    sorted_*          from `moe_sorting`
    split-K out       (rows, 2N) fp32 (or model dtype for cktile): fp32 partials atomically added
                      into row `token*topk + slot`; the activation runs afterwards
    non-split out     (T, topk, N) model dtype with the activation fused

Grid: 2N (or N) tiles x ceil(sorted_size / block_m) x splitk, sorted_size = min(T*topk*block_m, P).
A block whose first row is >= num_valid_ids[0] exits at once.
"""

from __future__ import annotations

import torch

from graph_harness.kernels._triton import INTERPRET, cast_rne, fp8_operand, fp8_table, store_mantissa, tl, triton
from graph_harness.kernels.activation import act_fn
from graph_harness.kernels.contracts import (
    DEFAULT_CONTRACT,
    QUANT_GROUP,
    TOKEN_BITS,
    TOKEN_MASK,
    Activation,
    MemsetRows,
    Padding,
    kbatch,
)
from graph_harness.kernels.memset import raw_memset

PADDING_CODE = {Padding.CLIPPED: 0, Padding.UNMASKED: 1, Padding.MASKED: 2}


@triton.jit
def _row_mask(token, out_row, tokens, topk, PADDING: tl.constexpr):
    """Which rows may touch memory: clipped drops rows past T*topk, masked drops the sentinel."""
    if PADDING == 0:
        ok = out_row < tokens * topk
    elif PADDING == 2:
        ok = token < tokens
    else:
        ok = out_row >= 0
    return ok


@triton.jit
def _moe_stage1_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, out_ptr, table_ptr,
    sorted_ids_ptr, sorted_expert_ids_ptr, num_valid_ids_ptr,
    tokens, topk, inter, k_split,
    stride_a, stride_as, stride_we, stride_wn, stride_wse, stride_wsn, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT: tl.constexpr, QUANT: tl.constexpr, PADDING: tl.constexpr, GELU: tl.constexpr,
    UPCAST: tl.constexpr, RMW: tl.constexpr, TOKEN_SHIFT: tl.constexpr, TOKEN_MASK_C: tl.constexpr,
    GROUP: tl.constexpr, MANT: tl.constexpr, TABLE: tl.constexpr, SUB: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    if pid_m * BLOCK_M < tl.load(num_valid_ids_ptr):
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        fused = tl.load(sorted_ids_ptr + rows)
        token = fused & TOKEN_MASK_C
        slot = fused >> TOKEN_SHIFT
        expert = tl.load(sorted_expert_ids_ptr + pid_m).to(tl.int64)
        # Padding rows gather A row T: clipped/masked read 0 (AMD buffer loads past the
        # descriptor return 0); unmasked reads past the end of hidden.
        a_ok = (token < tokens) | (PADDING == 1)
        width = 2 * inter if SPLIT else inter
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < width
        k0 = pid_k * k_split
        offs_k = k0 + tl.arange(0, SUB)
        a_ptrs = a_ptr + token.to(tl.int64)[:, None] * stride_a + offs_k[None, :]
        w_ptrs = w_ptr + expert * stride_we + cols.to(tl.int64)[None, :] * stride_wn + offs_k[:, None]
        w_up_ptrs = w_ptrs + inter * stride_wn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kk in range(0, k_split, BLOCK_K):
            # A step covers BLOCK_K // SUB scale groups: fp8 takes one dot per 128-wide group.
            for sub in tl.static_range(BLOCK_K // SUB):
                a = tl.load(a_ptrs + sub * SUB, mask=a_ok[:, None], other=0.0)
                if TABLE:  # fp8 bytes, widened by table (graph_harness.kernels._triton.fp8_operand)
                    a = tl.load(table_ptr + a.to(tl.int32))
                w = tl.load(w_ptrs + sub * SUB, mask=col_ok[None, :], other=0.0)
                if TABLE:
                    w = tl.load(table_ptr + w.to(tl.int32))
                if not SPLIT:
                    w_up = tl.load(w_up_ptrs + sub * SUB, mask=col_ok[None, :], other=0.0)
                    if TABLE:
                        w_up = tl.load(table_ptr + w_up.to(tl.int32))
                if UPCAST:  # the interpreter's bf16 tl.dot is garbage (triton 3.9)
                    a = a.to(tl.float32)
                    w = w.to(tl.float32)
                    if not SPLIT:
                        w_up = w_up.to(tl.float32)
                part = tl.dot(a, w)
                if not SPLIT:
                    part_up = tl.dot(a, w_up)
                if QUANT:
                    group = (k0 + kk + sub * SUB) // GROUP
                    a_scale = tl.load(a_scale_ptr + token.to(tl.int64) * stride_as + group, mask=a_ok, other=0.0)
                    w_scale_base = w_scale_ptr + expert * stride_wse + group
                    w_scale = tl.load(w_scale_base + (cols // GROUP) * stride_wsn, mask=col_ok, other=0.0)
                    acc += part * a_scale[:, None] * w_scale[None, :]
                    if not SPLIT:
                        w_up_scale = tl.load(w_scale_base + ((cols + inter) // GROUP) * stride_wsn, mask=col_ok,
                                             other=0.0)
                        acc_up += part_up * a_scale[:, None] * w_up_scale[None, :]
                else:
                    acc += part
                    if not SPLIT:
                        acc_up += part_up
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
            w_up_ptrs += BLOCK_K
        out_row = token.to(tl.int64) * topk + slot
        mask = _row_mask(token, out_row, tokens, topk, PADDING)[:, None] & col_ok[None, :]
        out_ptrs = out_ptr + out_row[:, None] * stride_out + cols[None, :]
        if SPLIT:
            if RMW:  # the interpreter has no bf16 atomics; its programs run one at a time
                cur = tl.load(out_ptrs, mask=mask, other=0.0).to(tl.float32)
                tl.store(out_ptrs, cast_rne(cur + acc, out_ptr.dtype.element_ty, MANT), mask=mask)
            else:
                # Relaxed, as CK's atomicAdd: the sum needs no ordering within the launch, and the
                # default acq_rel fences every add.
                tl.atomic_add(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask, sem="relaxed")
        else:
            tl.store(out_ptrs, cast_rne(act_fn(acc, GELU) * acc_up, out_ptr.dtype.element_ty, MANT), mask=mask)


_INTERPRET_BLOCK_N = 4096


def _config(split: bool, quant: bool, width: int, valid_rows: int, k_split: int):
    """Tile sizes. The interpreter pays per program, so it takes the widest tiles."""
    if INTERPRET:
        return dict(BLOCK_N=min(_INTERPRET_BLOCK_N, triton.next_power_of_2(width)), BLOCK_K=QUANT_GROUP), {}
    # `bench_moe.py --sweep` on an H100, DeepSeek-V3 TP8 decode, fp8 (benchmarks/NOTES.md, session 5):
    # split-K was fastest at BLOCK_N 64, BLOCK_K 128, 3 stages for T*topk < 32 (T=1 and 2), and at
    # BLOCK_N 32 with two scale groups a step (BLOCK_K 256), 2 stages, at T=4; the fused path at
    # BLOCK_N 32 (gate and up: 64 weight rows), BLOCK_K 256, 3 stages. bf16 keeps session 2's tiles.
    wide_k = quant and k_split % (2 * QUANT_GROUP) == 0
    if split and valid_rows < 32:
        return dict(BLOCK_N=64, BLOCK_K=128 if quant else 64), dict(num_warps=4, num_stages=3)
    if split and wide_k:
        return dict(BLOCK_N=32, BLOCK_K=2 * QUANT_GROUP), dict(num_warps=4, num_stages=2)
    if split:
        return dict(BLOCK_N=128, BLOCK_K=128 if quant else 64), dict(num_warps=4, num_stages=3)
    if wide_k:
        return dict(BLOCK_N=32, BLOCK_K=2 * QUANT_GROUP), dict(num_warps=4, num_stages=3)
    return dict(BLOCK_N=32, BLOCK_K=128), dict(num_warps=4, num_stages=5)


def moe_stage1(hidden, w1, sorted_ids, sorted_expert_ids, num_valid_ids, out, topk, block_m, splitk, *,
               split_instance, activation=Activation.SILU, a1_scale=None, w1_scale=None,
               contract=DEFAULT_CONTRACT, memset=True, config=None):
    """Launch stage1 the way CK's `ck_moe_stage1_gemm` does, into the caller's `out`.

    `split_instance`: the compiled instance is split-K (fp32 atomics, 2N-wide rows), whatever
    `splitk` the wrapper passes. `splitk` <= 1 with a split instance means one K split and
    KBatch 1: no memset, atomics all the same (aiter #3997). `memset=False` is cktile's path,
    whose hipMemsetAsync is commented out.
    """
    tokens, model_dim = hidden.shape
    inter = w1.shape[1] // 2
    sorted_rows = min(tokens * topk * block_m, sorted_ids.shape[0])
    splits = max(splitk, 1)
    if split_instance:
        kb = kbatch(model_dim, splitk, contract.k_per_block)
        if memset and kb > 1:
            rows = sorted_rows if contract.memset_rows is MemsetRows.SORTED_SIZE else tokens * topk
            raw_memset(out, rows * 2 * inter * out.element_size())
    width = 2 * inter if split_instance else inter
    k_split = model_dim // splits
    quant = a1_scale is not None
    meta, launch = config or _config(split_instance, quant, width, tokens * topk, k_split)
    # fp8 steps whole scale groups: a BLOCK_K under 128 would run no group at all.
    sub = QUANT_GROUP if quant else meta["BLOCK_K"]
    assert k_split % meta["BLOCK_K"] == 0, (model_dim, splits, meta)
    assert meta["BLOCK_K"] % sub == 0, (sub, meta)
    grid = (triton.cdiv(width, meta["BLOCK_N"]), triton.cdiv(sorted_rows, block_m), splits)
    a_arg, table = fp8_operand(hidden)
    w_arg, w_table = fp8_operand(w1)
    assert table == w_table, (hidden.dtype, w1.dtype)
    _moe_stage1_kernel[grid](
        a_arg, a1_scale if quant else hidden, w_arg, w1_scale if quant else w1, out,
        fp8_table(w1.dtype, w1.device) if table else w1,
        sorted_ids, sorted_expert_ids, num_valid_ids,
        tokens, topk, inter, k_split,
        hidden.stride(0), a1_scale.stride(0) if quant else 0, w1.stride(0), w1.stride(1),
        w1_scale.stride(0) if quant else 0, w1_scale.stride(1) if quant else 0, width,
        BLOCK_M=block_m, SPLIT=split_instance, QUANT=quant, PADDING=PADDING_CODE[contract.padding],
        GELU=activation is Activation.GELU, UPCAST=INTERPRET and hidden.dtype == torch.bfloat16,
        RMW=INTERPRET and out.dtype == torch.bfloat16, TOKEN_SHIFT=TOKEN_BITS, TOKEN_MASK_C=TOKEN_MASK,
        GROUP=QUANT_GROUP, MANT=store_mantissa(out.dtype), TABLE=table,
        SUB=sub, **meta, **launch)
    return out
