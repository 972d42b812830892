"""Footprint model against docs/moe-contracts.md §8.1 (sizes at block_m 16) and §8.2 (get_ksplit), exactly."""

from __future__ import annotations

from typing import Any

import pytest

from graph_harness.kernels.contracts import Policy, max_num_tokens_padded, padding_row
from graph_harness.moe.footprint import RECORD_FIELDS, FootprintRow, footprint_rows
from graph_harness.moe.scenario import MoEScenario, dispatch
from graph_harness.suite.files import builtin_scenario_dir, load_scenarios, scenario_files


def _scenario(hidden: int, inter: int, experts: int, topk: int, tokens: int, **fields: Any) -> MoEScenario:
    """A per_1x128 bf16 scenario at one capture size on cu256; fields override the rest."""
    body: dict[str, Any] = {
        "why": "§8.1/§8.2 figures",
        "model": {"hidden": hidden, "inter": inter, "experts": experts, "topk": topk},
        "dtype": "bf16", "quant": "per_1x128", "block_m": "auto", "splitk": "auto", "cu_num": 256,
        "capture_sizes": [tokens], "policies": {"pr2551": "clean"},
    }
    return MoEScenario.model_validate(body | fields)


def _by_policy(rows: tuple[FootprintRow, ...]) -> dict[Policy, FootprintRow]:
    return {row.policy: row for row in rows}


# §8.1: (T, topk, E, N per rank, K of the model) -> max_padded, sorted_size, rows*, old B, memset B, ratio.
# Split-K is forced (splitk 2: KBatch = K/512 >= 4, so the memset runs) as the table's hypothetical rows say.
TABLE_8_1 = [
    pytest.param(1, 8, 256, 2048, 7168, 4096, 128, 17, 131_072, 2_097_152, 16.0, id="dsv3-ep"),
    pytest.param(1, 9, 257, 256, 7168, 4112, 144, 19, 18_432, 294_912, 16.0, id="dsv3-tp8-shared"),
    pytest.param(32, 9, 257, 256, 7168, 4391, 4391, 298, 589_824, 8_992_768, 15.2, id="dsv3-tp8-shared-t32"),
    pytest.param(8, 9, 385, 256, 7168, 6223, 1152, 82, 147_456, 2_359_296, 16.0, id="kimi-k2-tp8-shared"),
    pytest.param(32, 8, 128, 192, 4096, 2296, 2296, 265, 393_216, 3_526_656, 9.0, id="qwen3-235b-tp8-t32"),
    pytest.param(1, 8, 128, 96, 2048, 2048, 128, 17, 6_144, 98_304, 16.0, id="qwen3-30b-tp8"),
    pytest.param(8, 8, 256, 192, 3072, 4152, 1024, 73, 98_304, 1_572_864, 16.0, id="minimax-m2-tp8"),
    pytest.param(1, 4, 128, 384, 3072, 2048, 64, 9, 12_288, 196_608, 16.0, id="gpt-oss-120b-tp8"),
    pytest.param(8, 2, 8, 1792, 4096, 142, 142, 19, 229_376, 2_035_712, 8.9, id="mixtral-tp8"),
    pytest.param(1, 1, 128, 1024, 5120, 2048, 16, 3, 8_192, 131_072, 16.0, id="llama4-maverick-tp8"),
]


@pytest.mark.parametrize(("tokens", "topk", "experts", "n", "hidden", "max_padded", "sorted_rows",
                          "rows_star", "old", "memset", "ratio"), TABLE_8_1)
def test_sizes_at_block_m_16(tokens: int, topk: int, experts: int, n: int, hidden: int, max_padded: int,
                             sorted_rows: int, rows_star: int, old: int, memset: int, ratio: float) -> None:
    scenario = _scenario(hidden, n, experts, topk, tokens, block_m=16, splitk=2,
                         policies={"original": "oob-write", "pr2551": "clean", "rows_plus_topk": "oob-write"})
    rows = _by_policy(footprint_rows("t", scenario))
    original = rows[Policy.ORIGINAL]
    assert max_num_tokens_padded(tokens, topk, experts, 16) == max_padded
    assert {row.sorted_size for row in rows.values()} == {sorted_rows}
    assert padding_row(tokens, topk) + 1 == rows_star
    assert rows[Policy.ROWS_PLUS_TOPK].alloc_bytes == rows_star * 2 * n * 4
    assert original.alloc_bytes == old
    assert original.memset_bytes == memset
    assert original.predicted_overflow_bytes == memset - old
    assert round(memset / old, 1) == ratio
    assert original.ratio is not None
    assert round(original.ratio, 1) == ratio
    # In general ratio = min(block_m, max_padded / (T*topk)) (§8.1).
    assert memset / old == min(16, max_padded / (tokens * topk))
    # pr2551 allocates sorted_size rows: the memset fits exactly.
    assert rows[Policy.PR2551].alloc_bytes == memset
    assert rows[Policy.PR2551].predicted_overflow_bytes == 0


@pytest.mark.parametrize(("tokens", "topk", "experts", "n", "hidden", "old"),
                         [pytest.param(*p.values[:5], p.values[8], id=p.id) for p in TABLE_8_1])
def test_post_5225_memset_equals_old(tokens: int, topk: int, experts: int, n: int, hidden: int,
                                     old: int) -> None:
    scenario = _scenario(hidden, n, experts, topk, tokens, block_m=16, splitk=2,
                         contract={"memset_rows": "tokens_topk"}, policies={"original": "clean"})
    (row,) = footprint_rows("t", scenario)
    assert row.alloc_bytes == row.memset_bytes == old
    assert row.predicted_overflow_bytes == 0


# §8.2: (K, N per rank, E, topk), cu_num, T -> get_ksplit on get_padded_M(T).
DSV3_TP8 = (7168, 256, 257, 9)
DSV3_EP = (7168, 2048, 256, 8)
QWEN3_235B_TP8 = (4096, 192, 128, 8)
MINIMAX_M2_TP8 = (3072, 192, 256, 8)
LLAMA4_TP8 = (5120, 1024, 128, 1)
KSPLIT_8_2 = [
    *[(DSV3_TP8, 256, t, s) for t, s in ((1, 14), (2, 7), (4, 4), (8, 2), (16, 0))],
    *[(DSV3_TP8, 132, t, s) for t, s in ((1, 7), (2, 4), (4, 2))],
    *[(DSV3_EP, 256, t, s) for t, s in ((1, 2), (2, 0), (4, 0), (8, 0))],
    *[(DSV3_EP, 304, t, s) for t, s in ((1, 2), (2, 2))],
    *[(QWEN3_235B_TP8, 256, t, s) for t, s in ((1, 16), (2, 8), (4, 4), (8, 2))],
    *[(MINIMAX_M2_TP8, 256, t, s) for t, s in ((1, 12), (2, 6), (4, 4), (8, 2))],
    *[(LLAMA4_TP8, 256, t, s) for t, s in ((1, 20), (2, 10), (4, 5), (8, 4), (16, 2))],
]


@pytest.mark.parametrize(("dims", "cu_num", "tokens", "splitk"), KSPLIT_8_2,
                         ids=[f"{d[0]}x{d[1]}-E{d[2]}-k{d[3]}-cu{c}-T{t}" for d, c, t, _ in KSPLIT_8_2])
def test_get_ksplit(dims: tuple[int, int, int, int], cu_num: int, tokens: int, splitk: int) -> None:
    hidden, n, experts, topk = dims
    scenario = _scenario(hidden, n, experts, topk, tokens, cu_num=cu_num)
    assert dispatch(scenario, tokens, cu_num) == (16, splitk)


@pytest.fixture(scope="module")
def scenarios() -> dict[str, MoEScenario]:
    return load_scenarios(scenario_files(builtin_scenario_dir()))


def test_dsv3_ep_decode_figures(scenarios: dict[str, MoEScenario]) -> None:
    rows = _by_policy(footprint_rows("deepseek-v3-ep-decode", scenarios["deepseek-v3-ep-decode"], [1]))
    original, pr2551 = rows[Policy.ORIGINAL], rows[Policy.PR2551]
    assert (original.sorted_size, original.alloc_bytes, original.memset_bytes,
            original.predicted_overflow_bytes) == (128, 131_072, 2_097_152, 1_966_080)
    assert (original.block_m, original.splitk) == (16, 2)
    assert pr2551.predicted_overflow_bytes == 0
    assert tuple(original.record()) == RECORD_FIELDS
    assert original.record()["policy"] == "original"


def test_unmasked_padding_scatters_one_row_past_the_padding_row(scenarios: dict[str, MoEScenario]) -> None:
    scenario = scenarios["aiter-2551-padding"]
    topk = scenario.model.topk
    for row in footprint_rows("aiter-2551-padding", scenario):
        assert row.scatter_rows == padding_row(row.capture_size, topk) + 1
        assert row.scatter_rows == row.capture_size * topk + topk + 1
