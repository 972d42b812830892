"""MoE stage2: `a2[row] @ w2[e].T * sorted_weight`, atomically added into `moe_buf[token]`.

Shapes (aiter `ck_moe_stage2`, docs/moe-contracts.md §1.6, §3.3):
    a2       (T, topk, N) model dtype, or fp8 with a2_scale (T*topk, N/128) fp32
    w2       (E, K, N); fp8 with w2_scale (E, K/128, N/128)
    moe_buf  (T, K) model dtype, zeroed by `moe_sorting`
A row is `token*topk + slot`; padding rows point at `T*topk + topk`, weight 0.0. Unmasked, they
read past a2 and add `0 * a2[T*topk+topk]` into row T of moe_buf: `0 * NaN` is NaN (S12).
A block whose first row is >= num_valid_ids[0] exits at once, unless `sorted_tail=unguarded` (S5).
"""

from __future__ import annotations

import torch

from graph_harness.kernels._triton import INTERPRET, cast_rne, fp8_operand, fp8_table, store_mantissa, tl, triton
from graph_harness.kernels.contracts import DEFAULT_CONTRACT, QUANT_GROUP, TOKEN_BITS, TOKEN_MASK, SortedTail
from graph_harness.kernels.moe_stage1 import PADDING_CODE, _row_mask


@triton.jit
def _moe_stage2_kernel(
    a_ptr, a_scale_ptr, w_ptr, w_scale_ptr, out_ptr, table_ptr,
    sorted_ids_ptr, sorted_weights_ptr, sorted_expert_ids_ptr, num_valid_ids_ptr,
    tokens, topk, inter, model_dim, experts,
    stride_a, stride_as, stride_we, stride_wn, stride_wse, stride_wsn, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    QUANT: tl.constexpr, PADDING: tl.constexpr, UPCAST: tl.constexpr, RMW: tl.constexpr,
    TOKEN_SHIFT: tl.constexpr, TOKEN_MASK_C: tl.constexpr, GROUP: tl.constexpr, MANT: tl.constexpr,
    TABLE: tl.constexpr, UNGUARDED_TAIL: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    num_valid = tl.load(num_valid_ids_ptr)
    if (pid_m * BLOCK_M < num_valid) | UNGUARDED_TAIL:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        fused = tl.load(sorted_ids_ptr + rows)
        token = fused & TOKEN_MASK_C
        expert = tl.load(sorted_expert_ids_ptr + pid_m).to(tl.int64)
        if UNGUARDED_TAIL:
            # The tail holds whatever torch.empty left: stale in-range ids after a replay, a wild
            # 0xC57FC5 under the harness's poison. Folding a tail row into [0, T) and its expert into
            # [0, E) keeps the interpreter off wild addresses while its weight (NaN when poisoned)
            # still reaches moe_buf, as the stale ids' would.
            in_tail = pid_m * BLOCK_M >= num_valid
            token = tl.where(in_tail, token % tokens, token)
            expert = tl.where(in_tail, expert % experts, expert)
        a_row = token.to(tl.int64) * topk + (fused >> TOKEN_SHIFT)
        a_ok = _row_mask(token, a_row, tokens, topk, PADDING)
        weight = tl.load(sorted_weights_ptr + rows)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < model_dim
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + a_row[:, None] * stride_a + offs_k[None, :]
        w_ptrs = w_ptr + expert * stride_we + cols.to(tl.int64)[None, :] * stride_wn + offs_k[:, None]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, inter, BLOCK_K):
            k_ok = k0 + offs_k < inter
            a = tl.load(a_ptrs, mask=a_ok[:, None] & k_ok[None, :], other=0.0)
            if TABLE:  # fp8 bytes, widened by table (graph_harness.kernels._triton.fp8_operand)
                a = tl.load(table_ptr + a.to(tl.int32))
            w = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            if TABLE:  # fp8 bytes, widened by table (graph_harness.kernels._triton.fp8_operand)
                w = tl.load(table_ptr + w.to(tl.int32))
            if UPCAST:
                a = a.to(tl.float32)
                w = w.to(tl.float32)
            part = tl.dot(a, w)
            if QUANT:
                group = k0 // GROUP
                a_scale = tl.load(a_scale_ptr + a_row * stride_as + group, mask=a_ok, other=0.0)
                w_scale = tl.load(w_scale_ptr + expert * stride_wse + (cols // GROUP) * stride_wsn + group,
                                  mask=col_ok, other=0.0)
                acc += part * a_scale[:, None] * w_scale[None, :]
            else:
                acc += part
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        acc = acc * weight[:, None]
        # The output descriptor spans T rows: clipped and masked both drop the sentinel token T.
        out_ok = (token < tokens) | (PADDING == 1)
        mask = out_ok[:, None] & col_ok[None, :]
        out_ptrs = out_ptr + token.to(tl.int64)[:, None] * stride_out + cols[None, :]
        if RMW:
            cur = tl.load(out_ptrs, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_ptrs, cast_rne(cur + acc, out_ptr.dtype.element_ty, MANT), mask=mask)
        else:
            # Relaxed, as CK's atomicAdd (see moe_stage1).
            tl.atomic_add(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask, sem="relaxed")


_INTERPRET_BLOCK_N = 4096


def _config(quant: bool, model_dim: int):
    if INTERPRET:
        return dict(BLOCK_N=min(_INTERPRET_BLOCK_N, triton.next_power_of_2(model_dim)), BLOCK_K=QUANT_GROUP), {}
    return dict(BLOCK_N=64, BLOCK_K=128 if quant else 64), dict(num_warps=4, num_stages=4)


def moe_stage2(a2, w2, sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf, topk, block_m, *,
               a2_scale=None, w2_scale=None, contract=DEFAULT_CONTRACT, config=None):
    """Launch stage2 into `moe_buf (T, K)`; grid K tiles x ceil(sorted_size / block_m)."""
    tokens, model_dim = moe_buf.shape
    inter = w2.shape[2]
    a2_rows = a2.reshape(-1, inter)
    sorted_rows = min(tokens * topk * block_m, sorted_ids.shape[0])
    quant = a2_scale is not None
    meta, launch = config or _config(quant, model_dim)
    grid = (triton.cdiv(model_dim, meta["BLOCK_N"]), triton.cdiv(sorted_rows, block_m))
    a_arg, table = fp8_operand(a2_rows)
    w_arg, w_table = fp8_operand(w2)
    assert table == w_table, (a2.dtype, w2.dtype)
    _moe_stage2_kernel[grid](
        a_arg, a2_scale if quant else a2_rows, w_arg, w2_scale if quant else w2, moe_buf,
        fp8_table(w2.dtype, w2.device) if table else w2,
        sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids,
        tokens, topk, inter, model_dim, w2.shape[0],
        a2_rows.stride(0), a2_scale.stride(0) if quant else 0, w2.stride(0), w2.stride(1),
        w2_scale.stride(0) if quant else 0, w2_scale.stride(1) if quant else 0, moe_buf.stride(0),
        BLOCK_M=block_m, QUANT=quant, PADDING=PADDING_CODE[contract.stage2_padding],
        UPCAST=INTERPRET and a2.dtype == torch.bfloat16, RMW=INTERPRET and moe_buf.dtype == torch.bfloat16,
        TOKEN_SHIFT=TOKEN_BITS, TOKEN_MASK_C=TOKEN_MASK, GROUP=QUANT_GROUP, MANT=store_mantissa(moe_buf.dtype),
        TABLE=table, UNGUARDED_TAIL=contract.sorted_tail is SortedTail.UNGUARDED, **meta, **launch)
    return moe_buf
