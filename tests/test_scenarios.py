"""Scenario files: every shipped YAML resolves on both profiles; bad input gives one exact line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from graph_harness.errors import BadInput
from graph_harness.kernels.contracts import kbatch, uses_splitk_instance
from graph_harness.moe.footprint import footprint_row
from graph_harness.moe.scenario import MoEScenario, resolve
from graph_harness.schema import VLLM_DEFAULT_SIZES
from graph_harness.suite.files import builtin_scenario_dir, load_scenarios, scenario_files

SHIPPED = load_scenarios(scenario_files(builtin_scenario_dir()))


@pytest.mark.parametrize("scenario_id", sorted(k for k, s in SHIPPED.items() if isinstance(s, MoEScenario)))
def test_shipped_scenario_resolves_on_both_profiles(scenario_id: str) -> None:
    scenario = SHIPPED[scenario_id]
    assert set(scenario.sizes("cpu")) <= set(scenario.sizes("gpu"))
    for tokens in scenario.capture_sizes:
        gpu = resolve(scenario_id, scenario, tokens, "gpu")
        cpu = resolve(scenario_id, scenario, tokens, "cpu")
        assert [c.policy for c in gpu] == [c.policy for c in cpu] == [p for p in scenario.policies]
        for g, c in zip(gpu, cpu, strict=True):
            same = ("tokens", "topk", "experts", "block_m", "splitk", "inter", "full_hidden", "expect")
            assert [getattr(c, f) for f in same] == [getattr(g, f) for f in same]
            assert g.hidden == scenario.model.hidden >= c.hidden
            assert (g.weights, c.weights) == ("distinct", "aliased")
            kpb = c.contract.k_per_block
            if uses_splitk_instance(c.quant, c.splitk):
                assert c.hidden % (c.splitk * kpb) == 0
                # KBatch > 1 vs == 1 decides the memset: the cpu K keeps that side.
                assert (kbatch(c.hidden, c.splitk, kpb) > 1) == (kbatch(g.hidden, g.splitk, kpb) > 1)
            gpu_row, cpu_row = footprint_row(g), footprint_row(c)
            assert cpu_row == gpu_row


def test_shipped_scenarios_cover_the_required_ids() -> None:
    required = {"deepseek-v3-ep-decode", "deepseek-v3-tp8-decode", "kimi-k2-tp8", "qwen3-235b-tp8",
                "qwen3-30b-tp8", "minimax-m2-tp8", "gpt-oss-120b-tp8", "mixtral-tp8", "llama4-maverick-tp8",
                "aiter-2551-padding"}
    assert required <= set(SHIPPED)
    assert any(s.contract.predicate.value == "identity" for s in SHIPPED.values())
    assert list(SHIPPED) == sorted(SHIPPED)


def test_vllm_default_expands_to_51_sizes() -> None:
    assert len(VLLM_DEFAULT_SIZES) == 51
    assert VLLM_DEFAULT_SIZES[:6] == (1, 2, 4, 8, 16, 24)
    assert VLLM_DEFAULT_SIZES[-3:] == (480, 496, 512)
    scenario = MoEScenario.model_validate(_body(capture_sizes="vllm-default", splitk=2, cpu_sizes=[1]))
    assert scenario.capture_sizes == VLLM_DEFAULT_SIZES


def test_sizes_sorted_and_deduplicated_and_cpu_default() -> None:
    scenario = MoEScenario.model_validate(_body(capture_sizes=[8, 1, 4, 2, 1], splitk=2))
    assert scenario.capture_sizes == (1, 2, 4, 8)
    assert scenario.sizes("cpu") == (1, 2, 4)
    assert scenario.sizes("gpu") == (1, 2, 4, 8)


def test_device_cu_num_skips_the_footprint_check_and_fails_on_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # At T=2 cu256 would give splitk 0 (oob-write wrong): unchecked, "device" is unknown until run time.
    scenarios = _load(tmp_path, monkeypatch, _body(cu_num="device", capture_sizes=[1, 2]))
    with pytest.raises(BadInput) as err:
        resolve("s1", scenarios["s1"], 1, "gpu")
    assert str(err.value) == ("x.yaml: s1: cu_num: got 'device'; allowed: integer >= 1; "
                              "no CUDA device to resolve 'device' on this machine")
    (original, _) = resolve("s1", scenarios["s1"], 1, "gpu", cu_num_override=256)
    assert (original.cu_num, original.splitk) == (256, 2)


DECLARED = "graph-harness"
WANTED = "a mapping of scenario id to scenario, with `graph-harness: scenarios`"
DSV3 = {"hidden": 7168, "inter": 2048, "experts": 256, "topk": 8}


def _body(**fields: Any) -> dict[str, Any]:
    """A valid DSV3 EP scenario (splitk 2 at T=1 on cu256); fields override or, as None, delete keys."""
    body: dict[str, Any] = {
        "why": "test", "model": DSV3,
        "dtype": "bf16", "quant": "per_1x128", "block_m": "auto", "splitk": "auto", "cu_num": 256,
        "capture_sizes": [1], "policies": {"original": "oob-write", "pr2551": "clean"},
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def _load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: Any,
          text: str | None = None) -> dict[str, MoEScenario]:
    """Write scenario s1 (or raw text) to x.yaml and load it from inside tmp_path, so paths print short."""
    monkeypatch.chdir(tmp_path)
    text = yaml.safe_dump({DECLARED: "scenarios", "s1": body}) if text is None else text
    (tmp_path / "x.yaml").write_text(text)
    return load_scenarios([Path("x.yaml")])


def _error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: Any = None, text: str | None = None) -> str:
    with pytest.raises(BadInput) as err:
        _load(tmp_path, monkeypatch, body, text)
    message = str(err.value)
    assert "\n" not in message
    return message


ALL_FIELDS = "why, capture_sizes, cpu_sizes, seed, hang_after, fuzzed_inputs, model, dtype, quant, activation, " \
             "block_m, splitk, cu_num, contract, policies, expect_bytes, idle_tokens, reads_past"
VERDICTS = ("hang, capture-error, crash, oob-write, use-after-free, oob-read, uninit-read, replay-state, "
            "stale-capture, mismatch, clean")

BAD_BODIES = [  # (id, entry body, the whole message)
    ("missing-why", _body(why=None), "x.yaml: s1: why: got nothing; allowed: required field"),
    ("blank-why", _body(why="  "), "x.yaml: s1: why: got '  '; allowed: non-empty string"),
    ("unknown-field", _body(colour="red"), f"x.yaml: s1: colour: got unknown field; allowed: {ALL_FIELDS}"),
    ("unknown-model-field", _body(model={**DSV3, "layers": 61}),
     "x.yaml: s1: model.layers: got unknown field; allowed: hidden, inter, experts, topk, tp"),
    ("unknown-contract-field", _body(contract={"paddin": "masked"}),
     "x.yaml: s1: contract.paddin: got unknown field; "
     "allowed: padding, stage2_padding, memset_rows, predicate, kbatch_guard, k_per_block, sorted_tail, "
     "negative_ids; did you mean padding?"),
    ("bad-negative-ids", _body(contract={"negative_ids": "dropped"}),
     "x.yaml: s1: contract.negative_ids: got 'dropped'; allowed: filtered, unfiltered"),
    ("expect-bytes-on-clean", _body(expect_bytes={"pr2551": {"buffer": "x", "side": "overflow", "extent": 4}}),
     "x.yaml: s1: expect_bytes.pr2551: got pr2551 (clean); allowed: a policy the scenario expects to be oob-write"),
    ("expect-bytes-unknown-field",
     _body(expect_bytes={"original": {"buffer": "x", "side": "overflow", "extent": 4, "rows": 1}}),
     "x.yaml: s1: expect_bytes.original.rows: got unknown field; allowed: buffer, side, extent"),
    ("expect-bytes-bad-side", _body(expect_bytes={"original": {"buffer": "x", "side": "left", "extent": 4}}),
     "x.yaml: s1: expect_bytes.original.side: got 'left'; allowed: overflow, underflow"),
    ("expect-bytes-zero-extent", _body(expect_bytes={"original": {"buffer": "x", "side": "overflow", "extent": 0}}),
     "x.yaml: s1: expect_bytes.original.extent: got 0; allowed: integer >= 1"),
    ("idle-above-size", _body(idle_tokens=2),
     "x.yaml: s1: idle_tokens: got 2; allowed: integer <= the smallest capture size (1)"),
    ("bad-padding", _body(contract={"padding": "sideways"}),
     "x.yaml: s1: contract.padding: got 'sideways'; allowed: clipped, unmasked, masked"),
    ("bad-dtype", _body(dtype="fp8"), "x.yaml: s1: dtype: got 'fp8'; allowed: bf16, fp16"),
    ("bad-quant", _body(quant="per_token"), "x.yaml: s1: quant: got 'per_token'; allowed: none, per_1x128"),
    ("bad-policy", _body(policies={"fixed": "clean"}),
     "x.yaml: s1: policies.fixed: got 'fixed'; allowed: original, pr2551, rows_plus_topk, cktile"),
    ("bad-verdict", _body(policies={"original": "boom"}),
     f"x.yaml: s1: policies.original: got 'boom'; allowed: {VERDICTS}"),
    ("no-policies", _body(policies={}), "x.yaml: s1: policies: got {}; allowed: at least 1 item(s)"),
    ("bad-block-m", _body(block_m=48), "x.yaml: s1: block_m: got 48; allowed: 16, 32, 64, 128, auto"),
    ("bad-splitk", _body(splitk="lots"), "x.yaml: s1: splitk: got 'lots'; allowed: integer >= 0 or auto"),
    ("bad-cu-num", _body(cu_num=0), "x.yaml: s1: cu_num: got 0; allowed: integer >= 1 or device"),
    ("negative-topk", _body(model={**DSV3, "topk": -1}),
     "x.yaml: s1: model.topk: got -1; allowed: integer >= 1"),
    ("float-topk", _body(model={**DSV3, "topk": 8.5}), "x.yaml: s1: model.topk: got 8.5; allowed: integer"),
    ("topk-above-experts", _body(model={**DSV3, "experts": 4}),
     "x.yaml: s1: model.topk: got 8; allowed: integer <= model.experts (4)"),
    ("tp-not-divisor", _body(model={**DSV3, "tp": 3}),
     "x.yaml: s1: model.tp: got 3; allowed: a divisor of model.inter (2048)"),
    ("hidden-not-quant-group", _body(model={**DSV3, "hidden": 2880}),
     "x.yaml: s1: model.hidden: got 2880; allowed: multiple of 128 with quant per_1x128; 2880 % 128 = 64"),
    ("splitk-indivisible", _body(splitk=3),
     "x.yaml: s1: splitk: got 3; allowed: integer with K % (splitk*KPerBlock) == 0, or auto; "
     "K % (splitk*KPerBlock) != 0: 7168 % (3*256) = 256"),
    ("splitk-without-quant", _body(quant="none", splitk=2, policies={"original": "clean"}),
     "x.yaml: s1: splitk: got 2; allowed: 0, 1 or auto with quant none; "
     "aiter enables split-K only for per_1x128"),
    ("bad-k-per-block", _body(contract={"k_per_block": 100}),
     "x.yaml: s1: contract.k_per_block: got 100; allowed: positive multiple of 128"),
    ("bad-sizes-word", _body(capture_sizes="all"),
     "x.yaml: s1: capture_sizes: got 'all'; allowed: list of integers >= 1, or vllm-default"),
    ("zero-size", _body(capture_sizes=[1, 0]), "x.yaml: s1: capture_sizes[1]: got 0; allowed: integer >= 1"),
    ("cpu-sizes-not-subset", _body(cpu_sizes=[2]),
     "x.yaml: s1: cpu_sizes: got [2]; allowed: subset of capture_sizes [1]"),
    ("oob-write-without-overflow", _body(capture_sizes=[1, 2]),
     "x.yaml: s1: policies.original: got oob-write; allowed: a verdict other than oob-write "
     "(footprint model); at T=2 predicted_overflow_bytes = 0 (splitk resolves to 0 at T=2: no split-K, "
     "no memset; block_m 16, alloc 65,536 B, memset 0 B, scatter 16 rows)"),
    ("clean-with-overflow", _body(policies={"original": "clean"}),
     "x.yaml: s1: policies.original: got clean; allowed: a verdict other than clean (footprint model); "
     "at T=1 predicted_overflow_bytes = 1,966,080 (splitk 2, KBatch 7168/(2*256) = 14; block_m 16, "
     "alloc 131,072 B, memset 2,097,152 B, scatter 8 rows)"),
    ("empty-entry", None, "x.yaml: s1: got null; allowed: mapping"),
]


@pytest.mark.parametrize(("body", "message"), [pytest.param(b, m, id=i) for i, b, m in BAD_BODIES])
def test_bad_scenario_is_one_exact_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: Any,
                                        message: str) -> None:
    assert _error(tmp_path, monkeypatch, body) == message


BAD_TEXTS = [  # (id, file text, the whole message)
    ("unclosed-flow", "s1:\n  why: a\n  model: {hidden: 1\n",
     "x.yaml:4: invalid YAML: expected ',' or '}', but got '<stream end>'"),
    ("bad-indent", "s1:\n  why: a\n   model: 3\n",
     "x.yaml:3: invalid YAML: mapping values are not allowed here"),
    ("duplicate-key", "s1:\n  why: a\n  why: b\n", "x.yaml:3: invalid YAML: duplicate key 'why'"),
    ("top-level-list", "- s1\n", f"x.yaml: got ['s1']; allowed: {WANTED}"),
    ("empty-file", "", f"x.yaml: got null; allowed: {WANTED}"),
    ("undeclared", "s1: {}\n", "x.yaml: graph-harness: got null; allowed: 'scenarios'; the line that declares a "
                                "scenario file"),
    ("bad-id", "graph-harness: scenarios\nBad Id: {}\n",
     "x.yaml: scenario id: got 'Bad Id'; allowed: lowercase letters, digits, '.', '_', '-'"),
    ("op-and-model", "graph-harness: scenarios\ns1: {op: 'a:b', model: {}}\n",
     "x.yaml: s1: op: got op and model together; allowed: op (an op of your own) or model (an MoE layer), not both"),
]


@pytest.mark.parametrize(("text", "message"), [pytest.param(t, m, id=i) for i, t, m in BAD_TEXTS])
def test_bad_yaml_is_one_line_with_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                                 message: str) -> None:
    assert _error(tmp_path, monkeypatch, text=text) == message


def test_duplicate_id_across_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump({DECLARED: "scenarios", "s1": _body()}))
    with pytest.raises(BadInput) as err:
        load_scenarios(scenario_files(Path(".")))
    assert str(err.value) == ("b.yaml: s1: scenario id: got a duplicate; allowed: ids unique across files; "
                              "first defined in a.yaml")


def test_scenario_remembers_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scenarios = _load(tmp_path, monkeypatch, _body())
    assert scenarios["s1"].source == Path("x.yaml")


def test_folder_without_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput) as err:
        scenario_files(Path("empty"))
    assert str(err.value) == ("empty: got no YAML file; allowed: a folder of scenario files, each with the top-level "
                              "line `graph-harness: scenarios`")
    (tmp_path / "empty" / "other.yaml").write_text("tool: other\n")
    with pytest.raises(BadInput) as err:
        scenario_files(Path("empty"))
    assert str(err.value).startswith("empty: got 1 YAML file(s), none declaring `graph-harness: scenarios`; ")


def test_expect_bytes_stands_in_for_the_footprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An oob-write outside stage1 (no predicted overflow) loads only when it names its buffer and bytes."""
    body = _body(quant="none", splitk=0, block_m=16, policies={"pr2551": "oob-write"}, idle_tokens=1,
                 contract={"negative_ids": "unfiltered"})
    assert "predicted_overflow_bytes = 0" in _error(tmp_path, monkeypatch, body)
    stated = {"pr2551": {"buffer": "counts", "side": "underflow", "extent": 4}}
    scenario = _load(tmp_path, monkeypatch, {**body, "expect_bytes": stated})["s1"]
    (case,) = resolve("s1", scenario, 1, "cpu")
    assert case.idle_tokens == 1
    assert case.expect_bytes is not None
    assert (case.expect_bytes.buffer, case.expect_bytes.side, case.expect_bytes.extent) == ("counts", "underflow", 4)
    assert case.footprint().predicted_overflow_bytes == 0


def test_only_files_that_declare_themselves_are_scenario_files(tmp_path: Path) -> None:
    """The registry, the ledger and another tool's YAML share the folder; a declaration in a comment or nested
    under a key does not count."""
    for name in ("a.yaml", "z.yml"):
        (tmp_path / name).write_text("# scenarios\ngraph-harness: scenarios  # this file\n")
    for name in ("bugs.yaml", "ledger.yaml", "other-tool.yaml"):
        (tmp_path / name).write_text("# graph-harness: scenarios\nkey:\n  graph-harness: scenarios\n")
    (tmp_path / "broken.yaml").write_text("{{ not: yaml\n")
    assert [p.name for p in scenario_files(tmp_path)] == ["a.yaml", "z.yml"]
    assert "bugs.yaml" not in {p.name for p in scenario_files(builtin_scenario_dir())}
