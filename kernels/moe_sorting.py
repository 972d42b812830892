"""moe_sorting: group (token, slot) pairs by expert in block_m-row blocks, aiter's contract.

Buffers (aiter `_moe_sorting_impl`, docs/moe-contracts.md §2), with P = max_num_tokens_padded:
    sorted_ids        (P,) int32    fused `(slot << 24) | token`; padding `(topk << 24) | T`
    sorted_weights    (P,) fp32     topk weight; 0.0 for padding
    sorted_expert_ids (max_num_m_blocks,) int32   expert of each block
    num_valid_ids     (2,) int32    [padded rows, tokens]
    moe_buf           (T, model_dim) model dtype, zeroed here for stage2's atomics
All are `torch.empty`: the tail past num_valid_ids[0] is never written. Experts without
tokens get no block. Ids outside [0, E) (-1 for idle batches, rocm-libraries #6242) are dropped;
`negative_ids=unfiltered` counts -1 as an expert, writing counts[-1], 4 bytes before `counts` (S8).
"""

from __future__ import annotations

import torch

from graph_harness.kernels._triton import tl, triton
from graph_harness.kernels.contracts import TOKEN_BITS, NegativeIds, max_num_m_blocks, max_num_tokens_padded

# One program per expert scans all T*topk ids; 1024 covers T=113 at topk 9 in one chunk.
_SCAN_BLOCK = 1024
_ZERO_BLOCK = 4096


@triton.jit
def _valid_ids(numel, local_ptr, topk, LOCAL: tl.constexpr):
    """How many of the T*topk ids to sort: all, or (LOCAL) those of the num_local_tokens[0] first tokens, read
    from device memory at every launch."""
    if LOCAL:
        return tl.minimum(tl.load(local_ptr) * topk, numel)
    return numel


@triton.jit
def _count_kernel(ids_ptr, counts_ptr, local_ptr, numel, topk, SCAN: tl.constexpr, FIRST: tl.constexpr,
                  LOCAL: tl.constexpr):
    # FIRST = -1 (unfiltered): one more program, for id -1, stores its count at counts[-1].
    e = tl.program_id(0) + FIRST
    valid = _valid_ids(numel, local_ptr, topk, LOCAL)
    total = tl.zeros((), dtype=tl.int32)
    for start in range(0, numel, SCAN):
        offs = start + tl.arange(0, SCAN)
        ids = tl.load(ids_ptr + offs, mask=offs < valid, other=0)
        total += tl.sum(((ids == e) & (offs < valid)).to(tl.int32), axis=0)
    tl.store(counts_ptr + e, total)


@triton.jit
def _offsets_kernel(counts_ptr, offsets_ptr, num_valid_ptr, moe_buf_ptr, local_ptr, num_experts, tokens, buf_numel,
                    BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, ZERO: tl.constexpr, LOCAL: tl.constexpr):
    pid = tl.program_id(0)
    if pid == 0:
        e = tl.arange(0, BLOCK_E)
        counts = tl.load(counts_ptr + e, mask=e < num_experts, other=0)
        padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        inclusive = tl.cumsum(padded, axis=0)
        tl.store(offsets_ptr + e, inclusive - padded, mask=e < num_experts)
        tl.store(num_valid_ptr, tl.sum(padded, axis=0))
        if LOCAL:
            tl.store(num_valid_ptr + 1, tl.load(local_ptr))
        else:
            tl.store(num_valid_ptr + 1, tokens)
    else:
        # aiter's sorting grid zeroes moe_buf in its extra blocks (moe_buf_set_zero_kernel_2d).
        offs = (pid - 1) * ZERO + tl.arange(0, ZERO)
        tl.store(moe_buf_ptr + offs, tl.zeros((ZERO,), dtype=moe_buf_ptr.dtype.element_ty), mask=offs < buf_numel)


@triton.jit
def _scatter_kernel(ids_ptr, weights_ptr, counts_ptr, offsets_ptr, sorted_ids_ptr, sorted_weights_ptr,
                    sorted_expert_ids_ptr, local_ptr, numel, tokens, topk,
                    BLOCK_M: tl.constexpr, SCAN: tl.constexpr, TOKEN_SHIFT: tl.constexpr, LOCAL: tl.constexpr):
    e = tl.program_id(0)
    count = tl.load(counts_ptr + e)
    valid = _valid_ids(numel, local_ptr, topk, LOCAL)
    if count > 0:
        base = tl.load(offsets_ptr + e)
        filled = 0
        for start in range(0, numel, SCAN):
            offs = start + tl.arange(0, SCAN)
            ids = tl.load(ids_ptr + offs, mask=offs < valid, other=-1)
            hit = ids == e
            rank = tl.cumsum(hit.to(tl.int32), axis=0) - 1
            fused = ((offs % topk) << TOKEN_SHIFT) | (offs // topk)
            tl.store(sorted_ids_ptr + base + filled + rank, fused, mask=hit)
            weights = tl.load(weights_ptr + offs, mask=hit, other=0.0)
            tl.store(sorted_weights_ptr + base + filled + rank, weights, mask=hit)
            filled += tl.sum(hit.to(tl.int32), axis=0)
        padded = (count + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        # Padding lives only in the expert's last block: [base + count, base + padded).
        pad = base + count + tl.arange(0, BLOCK_M)
        in_pad = pad < base + padded
        sentinel = (topk << TOKEN_SHIFT) | tokens
        tl.store(sorted_ids_ptr + pad, tl.zeros((BLOCK_M,), dtype=tl.int32) + sentinel, mask=in_pad)
        tl.store(sorted_weights_ptr + pad, tl.zeros((BLOCK_M,), dtype=tl.float32), mask=in_pad)
        for blk in range(base // BLOCK_M, (base + padded) // BLOCK_M):
            tl.store(sorted_expert_ids_ptr + blk, e)


def sorting_buffers(tokens: int, topk: int, num_experts: int, block_m: int, model_dim: int,
                    dtype: torch.dtype, device: torch.device):
    """Allocate the five outputs as aiter does: all `torch.empty`."""
    padded = max_num_tokens_padded(tokens, topk, num_experts, block_m)
    blocks = max_num_m_blocks(tokens, topk, num_experts, block_m)
    sorted_ids = torch.empty(padded, dtype=torch.int32, device=device)
    sorted_weights = torch.empty(padded, dtype=torch.float32, device=device)
    sorted_expert_ids = torch.empty(blocks, dtype=torch.int32, device=device)
    num_valid_ids = torch.empty(2, dtype=torch.int32, device=device)
    moe_buf = torch.empty(tokens, model_dim, dtype=dtype, device=device)
    return sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf


def moe_sorting_into(topk_ids, topk_weights, num_experts, block_m, sorted_ids, sorted_weights,
                     sorted_expert_ids, num_valid_ids, moe_buf, negative_ids=NegativeIds.FILTERED,
                     num_local_tokens=None):
    """Sort `topk_ids (T, topk) int32` into caller-provided buffers (see module docstring).

    `num_local_tokens`: sort only the first tokens (DP attention's local tokens; the rest are padding): an int32
    `(1,)` tensor the kernels read at every launch (aiter's LocalToken variant), or an int, a count the host
    passes as a kernel argument, which a graph keeps. `num_valid_ids[1]` is that count. moe_buf is zeroed
    whole, where aiter zeroes only the local rows: a caller that compares the whole output needs it defined.
    """
    tokens, topk = topk_ids.shape
    numel = tokens * topk
    ids = topk_ids.reshape(-1)
    weights = topk_weights.reshape(-1).to(torch.float32)
    local = isinstance(num_local_tokens, torch.Tensor)
    if num_local_tokens is not None and not local:
        numel = min(int(num_local_tokens), tokens) * topk
    local_arg = num_local_tokens if local else num_valid_ids
    counts = torch.empty(num_experts, dtype=torch.int32, device=ids.device)
    offsets = torch.empty(num_experts, dtype=torch.int32, device=ids.device)
    first = -1 if negative_ids is NegativeIds.UNFILTERED else 0
    _count_kernel[(num_experts - first,)](ids, counts, local_arg, numel, topk, SCAN=_SCAN_BLOCK, FIRST=first,
                                          LOCAL=local)
    zero_programs = triton.cdiv(moe_buf.numel(), _ZERO_BLOCK)
    _offsets_kernel[(1 + zero_programs,)](
        counts, offsets, num_valid_ids, moe_buf, local_arg, num_experts, numel // topk, moe_buf.numel(),
        BLOCK_M=block_m, BLOCK_E=triton.next_power_of_2(num_experts), ZERO=_ZERO_BLOCK, LOCAL=local)
    _scatter_kernel[(num_experts,)](
        ids, weights, counts, offsets, sorted_ids, sorted_weights, sorted_expert_ids, local_arg, numel, tokens,
        topk, BLOCK_M=block_m, SCAN=_SCAN_BLOCK, TOKEN_SHIFT=TOKEN_BITS, LOCAL=local)


def moe_sorting(topk_ids, topk_weights, num_experts, block_m, model_dim, dtype, negative_ids=NegativeIds.FILTERED,
                num_local_tokens=None):
    """aiter `moe_sorting`: returns (sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf)."""
    tokens, topk = topk_ids.shape
    out = sorting_buffers(tokens, topk, num_experts, block_m, model_dim, dtype, topk_ids.device)
    sorted_ids, sorted_weights, sorted_expert_ids, num_valid_ids, moe_buf = out
    moe_sorting_into(topk_ids, topk_weights, num_experts, block_m, sorted_ids, sorted_weights, sorted_expert_ids,
                     num_valid_ids, moe_buf, negative_ids=negative_ids, num_local_tokens=num_local_tokens)
    return out


def moe_sorting_ref(topk_ids, topk_weights, num_experts, block_m):
    """Torch reference: the valid prefix of each output, and num_valid_ids, on the CPU.

    Returns (sorted_ids[:n], sorted_weights[:n], sorted_expert_ids[:n // block_m], [n, T]).
    """
    tokens, topk = topk_ids.shape
    ids = topk_ids.reshape(-1).cpu().long()
    weights = topk_weights.reshape(-1).cpu().float()
    fused, fused_w, experts = [], [], []
    sentinel = (topk << TOKEN_BITS) | tokens
    for e in range(num_experts):
        flat = torch.nonzero(ids == e).flatten()  # ascending: token order, then slot
        if flat.numel() == 0:
            continue
        padded = -(-flat.numel() // block_m) * block_m
        pad = padded - flat.numel()
        fused.append(torch.cat([(flat % topk) << TOKEN_BITS | flat // topk, torch.full((pad,), sentinel)]))
        fused_w.append(torch.cat([weights[flat], torch.zeros(pad)]))
        experts.append(torch.full((padded // block_m,), e))
    if not fused:
        empty = torch.empty(0, dtype=torch.int32)
        return empty, torch.empty(0), empty, torch.tensor([0, tokens], dtype=torch.int32)
    sorted_ids = torch.cat(fused).to(torch.int32)
    return (sorted_ids, torch.cat(fused_w), torch.cat(experts).to(torch.int32),
            torch.tensor([sorted_ids.numel(), tokens], dtype=torch.int32))
