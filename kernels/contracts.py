"""aiter's MoE buffer contracts: size formulas, allocation policies and dispatch heuristics.

Every formula cites docs/moe-contracts.md (a bare §n is its section n). Nothing here touches a device: the
footprint model, the scenario validator and the kernel wrappers all read the same arithmetic.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Fused sorted id: (topk_slot << 24) | token (moe_sorting_opus.h MOE_SORTING_MOCK_ID).
TOKEN_BITS = 24
TOKEN_MASK = (1 << TOKEN_BITS) - 1

# aiter's per_1x128 block scale: activations per (token, 128 K), weights per (128 N, 128 K).
QUANT_GROUP = 128

# aiter #3997 took KPerBlock = 256 for its KBatch guard; CK's tuned instances use 128 (§1.5).
DEFAULT_K_PER_BLOCK = 256


class Padding(str, enum.Enum):
    """How stage1 stores and stage2 loads treat the padding rows of the sorted ids."""

    CLIPPED = "clipped"  # AMD buffer descriptor on T*topk rows drops them (CK-faithful)
    UNMASKED = "unmasked"  # a port without clipping: row T*topk+topk is written (S2) and read (S12)
    MASKED = "masked"  # explicit sentinel mask, as vLLM does


class MemsetRows(str, enum.Enum):
    """Rows the CK split-K memset zeroes (rocm-libraries #5225)."""

    SORTED_SIZE = "sorted_size"  # before #5225: arg.M = sorted_size
    TOKENS_TOPK = "tokens_topk"  # after #5225: NumTokens * TopK


class Predicate(str, enum.Enum):
    """The wrapper's is_splitk test (aiter #3050)."""

    EQUALITY = "equality"  # quant_type == per_1x128: split-K when splitk > 1
    IDENTITY = "identity"  # quant_type is per_1x128: always False, split-K kernel still chosen


class SortedTail(str, enum.Enum):
    """What stage2 does with the blocks of its sorted_size grid past num_valid_ids[0] (S5)."""

    EARLY_EXIT = "early_exit"  # CK: a block whose first row is >= num_valid_ids[0] exits at once
    UNGUARDED = "unguarded"  # no exit: the never-written tail of sorted_ids/weights/expert_ids is read


class NegativeIds(str, enum.Enum):
    """How moe_sorting treats topk ids of -1, sglang's idle-batch marker (rocm-libraries #6242, S8)."""

    FILTERED = "filtered"  # counted for no expert: dropped
    UNFILTERED = "unfiltered"  # the count pass indexes its histogram by the raw id: counts[-1] is written


class Policy(str, enum.Enum):
    """Who allocates the stage1 output, and how (aiter's call sites over time)."""

    ORIGINAL = "original"  # #1667: zeros (T, topk, 2N) fp32
    PR2551 = "pr2551"  # #2551: empty (sorted_size, 2N) fp32, first T*topk rows used
    ROWS_PLUS_TOPK = "rows_plus_topk"  # #3005 message: T*topk + topk + 1 rows fp32
    CKTILE = "cktile"  # cktile_moe_stage1: zeros (T*topk, 2N) model dtype, no memset


class Quant(str, enum.Enum):
    NONE = "none"
    PER_1X128 = "per_1x128"


class Activation(str, enum.Enum):
    SILU = "silu"
    GELU = "gelu"


DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class Contract:
    """The kernel-side behaviour a scenario pins down."""

    padding: Padding = Padding.CLIPPED  # stage1's store of the padding rows (S2)
    # stage2's read of a2 and store into moe_buf for the sentinel token T (S12): the same flag in CK,
    # kept apart so that a scenario can pin one bug at a time.
    stage2_padding: Padding = Padding.CLIPPED
    memset_rows: MemsetRows = MemsetRows.SORTED_SIZE
    predicate: Predicate = Predicate.EQUALITY
    kbatch_guard: bool = False  # aiter #3997 (reverted by #4394): split-K only when KBatch >= 2
    k_per_block: int = DEFAULT_K_PER_BLOCK
    sorted_tail: SortedTail = SortedTail.EARLY_EXIT  # stage2's read past num_valid_ids[0] (S5)
    negative_ids: NegativeIds = NegativeIds.FILTERED  # moe_sorting on ids of -1 (S8)


DEFAULT_CONTRACT = Contract()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def max_num_tokens_padded(tokens: int, topk: int, experts: int, block_m: int) -> int:
    """`topk_ids.numel() + num_experts * block_size - topk` (_moe_sorting_impl, §2)."""
    return tokens * topk + experts * block_m - topk


def max_num_m_blocks(tokens: int, topk: int, experts: int, block_m: int) -> int:
    return cdiv(max_num_tokens_padded(tokens, topk, experts, block_m), block_m)


def sorted_size(tokens: int, topk: int, experts: int, block_m: int) -> int:
    """Rows of the stage1 grid: `min(token_num*topk*block_m, sorted_token_ids.shape[0])` (§1.1)."""
    return min(tokens * topk * block_m, max_num_tokens_padded(tokens, topk, experts, block_m))


def padding_row(tokens: int, topk: int) -> int:
    """Scatter row of the padding id `(topk << 24) | T`: `T*topk + topk` (§2 decoding)."""
    return tokens * topk + topk


def kbatch(model_dim: int, splitk: int, k_per_block: int) -> int:
    """CK's KBatch = K / (splitk * KPerBlock): k-tiles per split, 1 without split-K (§3.1)."""
    return model_dim // (splitk * k_per_block) if splitk > 1 else 1


def get_padded_m(tokens: int) -> int:
    """aiter get_padded_M: next power of two below 32768, then tiers 32768 and 131072."""
    if tokens <= 32768:
        return 1 << max(tokens - 1, 0).bit_length()
    return 131072


def get_ksplit(token: int, topk: int, expert: int, inter_dim: int, model_dim: int, cu_num: int) -> int:
    """aiter get_ksplit (§1.5); token is the padded M."""
    if token * topk > expert:
        return 0
    tg_num = cdiv(inter_dim, 128) * token * topk
    if tg_num >= cu_num:
        return 0
    for i in range(cdiv(cu_num, tg_num), 1, -1):
        if model_dim % i == 0 and (model_dim // i) % 256 == 0:
            return i
    return 0


def get_block_size_m(token: int, topk: int, expert: int, inter_dim: int, cu_num: int) -> int:
    """aiter get_block_size_M: the el in (32, 64, 128) minimising (rounds, idle CUs)."""
    tg_n = cdiv(inter_dim, 128)

    def cost(el: int) -> tuple[int, int]:
        tg_num = tg_n * cdiv(token * topk + expert * el - topk, el)
        return cdiv(tg_num, cu_num), cu_num - tg_num % cu_num

    return min((32, 64, 128), key=cost)


def heuristic_block_m(token: int, topk: int, expert: int, inter_dim: int, quant: Quant, cu_num: int) -> int:
    """get_2stage_cfgs without a tuned CSV hit: per_1x128 takes 16 up to 32 tokens, else 64."""
    if quant is Quant.PER_1X128:
        return 64 if token > 32 else 16
    return get_block_size_m(token, topk, expert, inter_dim, cu_num)


def heuristic_splitk(token: int, topk: int, expert: int, inter_dim: int, model_dim: int, quant: Quant,
                     cu_num: int) -> int:
    """aiter asks get_ksplit only for per_1x128 (and per_1x32, which is not modelled here)."""
    if quant is not Quant.PER_1X128:
        return 0
    return get_ksplit(token, topk, expert, inter_dim, model_dim, cu_num)


def is_splitk(quant: Quant, splitk: int, model_dim: int, contract: Contract) -> bool:
    """The wrapper's predicate: `quant_type == per_1x128 and splitk > 1` (+ #3997's KBatch guard)."""
    if contract.predicate is Predicate.IDENTITY:
        return False  # `QuantType is QuantType.per_1x128` is never True (#3050)
    if quant is not Quant.PER_1X128 or splitk <= 1:
        return False
    return not contract.kbatch_guard or kbatch(model_dim, splitk, contract.k_per_block) >= 2


def uses_splitk_instance(quant: Quant, splitk: int) -> bool:
    """Whether the CK instance chosen (by name, from the tuned CSV) is a split-K one."""
    return quant is Quant.PER_1X128 and splitk > 1


class Stage1Mode(str, enum.Enum):
    """Which stage1 path a case takes."""

    SPLIT = "split"  # split-K instance into the policy's buffer, activation afterwards
    IDENTITY = "identity"  # #3050: split-K instance handed the model-dtype out, splitk=0
    FUSED = "fused"  # non-split instance, activation fused, model-dtype out


def stage1_mode(quant: Quant, splitk: int, model_dim: int, contract: Contract) -> Stage1Mode:
    """The wrapper's predicate against the instance the tuned CSV names."""
    if is_splitk(quant, splitk, model_dim, contract):
        return Stage1Mode.SPLIT
    if contract.predicate is Predicate.IDENTITY and uses_splitk_instance(quant, splitk):
        return Stage1Mode.IDENTITY
    return Stage1Mode.FUSED


@dataclass(frozen=True)
class Stage1Buffer:
    """Shape, dtype and initial state of the stage1 output a policy allocates."""

    rows: int  # rows of the kernel's view (row = token*topk + slot)
    width: int  # elements per kernel row
    dtype: str  # "fp32" or the model dtype
    init: str  # "zeros" or "empty"
    view_rows: int  # rows handed to the activation

    @property
    def nbytes(self) -> int:
        return self.rows * self.width * DTYPE_BYTES[self.dtype]


def stage1_buffer(policy: Policy, tokens: int, topk: int, inter: int, sorted_rows: int,
                  model_dtype: str, split: bool) -> Stage1Buffer:
    """What the wrapper allocates for stage1 under `policy` (§1.1, §1.3)."""
    valid = tokens * topk
    if not split:
        # No split-K: tmp_out is `out`, the model-dtype (T, topk, N) buffer.
        return Stage1Buffer(valid, inter, model_dtype, "empty", valid)
    if policy is Policy.ORIGINAL:
        return Stage1Buffer(valid, 2 * inter, "fp32", "zeros", valid)
    if policy is Policy.PR2551:
        return Stage1Buffer(sorted_rows, 2 * inter, "fp32", "empty", valid)
    if policy is Policy.ROWS_PLUS_TOPK:
        return Stage1Buffer(valid + topk + 1, 2 * inter, "fp32", "zeros", valid)
    return Stage1Buffer(valid, 2 * inter, model_dtype, "zeros", valid)


@dataclass(frozen=True)
class Footprint:
    """Predicted bytes of the stage1 output buffer for one case; no kernel runs."""

    sorted_size: int
    alloc_bytes: int
    memset_bytes: int
    scatter_rows: int
    predicted_overflow_bytes: int


def stage1_footprint(policy: Policy, tokens: int, topk: int, experts: int, inter: int, model_dim: int,
                     block_m: int, splitk: int, quant: Quant, model_dtype: str, contract: Contract) -> Footprint:
    """Bytes allocated against bytes the stage1 kernel (memset + scatter) touches."""
    rows = sorted_size(tokens, topk, experts, block_m)
    mode = stage1_mode(quant, splitk, model_dim, contract)
    buf = stage1_buffer(policy, tokens, topk, inter, rows, model_dtype, mode is Stage1Mode.SPLIT)
    valid = tokens * topk
    if mode is not Stage1Mode.FUSED:
        # A split-K instance writes fp32 rows 2N wide (model dtype only for cktile's bf16 atomics).
        elem = DTYPE_BYTES[buf.dtype] if mode is Stage1Mode.SPLIT else 4
        row_bytes = 2 * inter * elem
        kb = kbatch(model_dim, splitk if mode is Stage1Mode.SPLIT else 0, contract.k_per_block)
        memset_rows = rows if contract.memset_rows is MemsetRows.SORTED_SIZE else valid
        memset = memset_rows * row_bytes if kb > 1 and policy is not Policy.CKTILE else 0
    else:
        row_bytes = inter * DTYPE_BYTES[model_dtype]
        memset = 0
    scatter = padding_row(tokens, topk) + 1 if contract.padding is Padding.UNMASKED else valid
    written = max(memset, scatter * row_bytes)
    return Footprint(rows, buf.nbytes, memset, scatter, max(written - buf.nbytes, 0))
