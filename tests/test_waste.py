"""What the harness no longer does twice (issue 18): each check still runs on every case, on the same figures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graph_harness.kernels.contracts import Policy
from graph_harness.moe import workload
from graph_harness.moe.run import resolve_cases
from graph_harness.moe.scenario import MoEScenario
from graph_harness.moe.workload import MoEWeights, MoEWorkload
from graph_harness.schema import profile_of
from graph_harness.suite.files import builtin_scenario_dir, load_scenarios, scenario_files


def test_a_reference_is_computed_once_for_equal_inputs_of_the_same_layer(
        device: torch.device, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = load_scenarios(scenario_files(builtin_scenario_dir()))["qwen3-30b-tp8"]
    assert isinstance(scenario, MoEScenario)
    calls: list[int] = []
    real = workload.fused_moe_ref

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(workload, "fused_moe_ref", counted)
    monkeypatch.setattr(workload, "_REFERENCES", {})
    size = scenario.sizes(profile_of(device))[0]
    made = {}
    for policy in (Policy.ORIGINAL, Policy.PR2551):
        (case,) = resolve_cases("qwen3-30b-tp8", scenario, policy, [size], profile_of(device), seed=seed % 1000)
        made[policy] = MoEWorkload(case, MoEWeights.for_case(case, device), device)
    first, second = made[Policy.ORIGINAL], made[Policy.PR2551]
    x = first.inputs(seed % 1000 + 1)
    ref = first.reference(x)
    assert len(calls) == 1
    again = second.reference(second.inputs(seed % 1000 + 1))  # another policy, the same layer and inputs: kept
    assert len(calls) == 1
    assert torch.equal(again, ref)
    other = second.inputs(seed % 1000 + 2)
    assert not torch.equal(other["hidden"], x["hidden"])
    fresh = second.reference(other)
    assert len(calls) == 2  # other inputs: computed
    assert not torch.equal(fresh, ref)
    x["hidden"][0, 0] += 1  # one element differs: computed again, not served
    changed = first.reference(x)
    assert len(calls) == 3
    assert torch.equal(changed, real(first._layer(x), first.case.quant, first.case.activation))


def test_a_case_s_input_sets_are_referenced_in_one_pass_with_each_set_s_own_figures(
        device: torch.device, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = load_scenarios(scenario_files(builtin_scenario_dir()))["deepseek-v3-tp8-decode"]
    assert isinstance(scenario, MoEScenario)
    monkeypatch.setattr(workload, "_REFERENCES", {})
    (case,) = resolve_cases("deepseek-v3-tp8-decode", scenario, Policy.PR2551, [2], profile_of(device),
                            seed=seed % 1000)
    wl = MoEWorkload(case, MoEWeights.for_case(case, device), device)
    sets = [wl.inputs(seed % 1000 + 1 + r) for r in range(3)]
    sets[2]["topk_ids"][1] = -1  # an idle token in one set only
    together = wl.references(sets)
    for x, ref in zip(sets, together, strict=True):
        alone = workload.fused_moe_ref(wl._layer(x), case.quant, case.activation)
        assert ref.shape == alone.shape
        assert torch.allclose(ref, alone, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(together[0], together[1])
    assert bool((together[2][1] == 0).all())  # the idle token's output row



# Six sizes, two policies: more sizes than a count-bounded cache of four sizes' references held.
SIX_SIZES = """\
graph-harness: scenarios
six-sizes:
  why: a tiny split-K layer at six capture sizes
  model: {hidden: 512, inter: 128, experts: 8, topk: 2}
  dtype: bf16
  quant: per_1x128
  block_m: 16
  splitk: 2
  cu_num: 256
  capture_sizes: [1, 2, 3, 4, 5, 6]
  cpu_sizes: [1, 2, 3, 4, 5, 6]
  contract: {k_per_block: 128}
  policies: {original: oob-write, pr2551: clean}
  seed: 5
"""


def test_a_second_policy_finds_the_reference_of_every_size_the_first_ran(
        tmp_path: Path, device: torch.device, monkeypatch: pytest.MonkeyPatch) -> None:
    """`graph-harness run` goes policy by policy, each policy's sizes in turn (pytest items size by size): the
    second policy finds all six sizes' references, computed once a size with its two input sets stacked."""
    (tmp_path / "six.yaml").write_text(SIX_SIZES)
    scenario = load_scenarios([tmp_path / "six.yaml"])["six-sizes"]
    assert isinstance(scenario, MoEScenario)
    calls: list[int] = []
    real = workload.fused_moe_ref

    def counted(x, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(x.hidden.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(workload, "fused_moe_ref", counted)
    monkeypatch.setattr(workload, "_REFERENCES", {})
    sizes = (1, 2, 3, 4, 5, 6)
    refs = {}
    for policy in (Policy.ORIGINAL, Policy.PR2551):
        for t in sizes:
            (case,) = resolve_cases("six-sizes", scenario, policy, [t], profile_of(device))
            made = MoEWorkload(case, MoEWeights.for_case(case, device), device)
            refs[policy, t] = made.references([made.inputs(case.seed + 1), made.inputs(case.seed + 2)])
    assert calls == [2 * t for t in sizes]  # none for the second policy
    for t in sizes:
        assert all(torch.equal(a, b) for a, b in zip(refs[Policy.ORIGINAL, t], refs[Policy.PR2551, t], strict=True))
