"""What the harness no longer does twice (issue 18): each check still runs on every case, on the same figures."""

from __future__ import annotations

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
