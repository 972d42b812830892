"""From a selection (scenario ids, variants, sizes, seed) to scenario-variant groups, and their runs.

Shared by `graph-harness run` and `report`; bad ids and flags fail when the plan is made, before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from graph_harness.core.results import CaseResult
from graph_harness.errors import bad_value, display_path
from graph_harness.schema import Profile
from graph_harness.suite.files import Scenario, builtin_scenario_dir, load_scenarios, scenario_files


@dataclass(frozen=True)
class Selection:
    """What to run: every field empty or None means all (or the scenario's own)."""

    scenarios: Sequence[str] = ()
    variants: Sequence[str] = ()
    sizes: Sequence[int] = ()
    seed: int | None = None
    replays: int | None = None
    guard_budget: int | None = None
    scenario_dir: Path | None = None
    isolate: bool = False  # each group in a child process (suite.isolate)


@dataclass(frozen=True)
class Group:
    """One scenario-variant's cases: they run together, in one slab."""

    scenario_id: str
    scenario: Scenario
    variant: str
    sizes: tuple[int, ...]


@dataclass
class Plan:
    """The groups to run, in order; `total` cases."""

    groups: list[Group] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(g.sizes) for g in self.groups)


def pick(directory: Path | None, ids: Sequence[str]) -> dict[str, Scenario]:
    """The requested scenarios of a folder in the order asked, each once (all, when none is asked); unknown
    ids list the known."""
    directory = directory or builtin_scenario_dir()
    known = load_scenarios(scenario_files(directory))
    if not ids:
        return known
    for scenario_id in ids:
        if scenario_id not in known:
            raise bad_value(display_path(directory), "", f"unknown scenario {scenario_id!r}", ", ".join(known))
    return {scenario_id: known[scenario_id] for scenario_id in ids}


def check_sizes(scenario_id: str, scenario: Scenario, sizes: Sequence[int]) -> None:
    """Sizes asked of a named scenario must be among its capture_sizes (`run`, `report` and `footprint` alike)."""
    known = scenario.capture_sizes
    if bad := sorted(set(sizes) - set(known)):
        raise bad_value(scenario.where(scenario_id), "--sizes", ", ".join(map(str, bad)),
                        f"its capture_sizes {', '.join(map(str, known))}")


def make_plan(selection: Selection, profile: Callable[[], Profile]) -> Plan:
    """The groups a selection asks for; named ids, variants and sizes are checked against each scenario.
    `profile` is asked only when a scenario's default sizes are needed, after every id and variant is
    checked: it must know the device, and a bad id should not wait for torch and triton to load."""
    picked = pick(selection.scenario_dir, selection.scenarios)
    every = sorted({v for s in picked.values() for v in s.variant_names()})
    if not selection.scenarios and (stray := [v for v in selection.variants if v not in every]):
        raise bad_value("graph-harness run", "--variant", ", ".join(stray),
                        f"the variants of the scenarios: {', '.join(every)}")
    for scenario_id, scenario in picked.items():
        names = scenario.variant_names()
        if selection.scenarios and selection.variants and not set(selection.variants) <= set(names):
            missing = [v for v in selection.variants if v not in names]
            raise bad_value(scenario.where(scenario_id), "--variant", ", ".join(missing), ", ".join(names))
        if selection.sizes and selection.scenarios:  # unnamed, each scenario runs the sizes it has
            check_sizes(scenario_id, scenario, selection.sizes)
    plan = Plan()
    for scenario_id, scenario in picked.items():
        if selection.sizes:
            sizes = tuple(t for t in scenario.capture_sizes if t in selection.sizes)
        else:
            sizes = scenario.sizes(profile())
        wanted = [v for v in scenario.variant_names() if not selection.variants or v in selection.variants]
        plan.groups.extend(Group(scenario_id, scenario, variant, sizes) for variant in wanted if sizes)
    if not plan.groups:
        raise bad_value("graph-harness run", "", "no case to run", "a scenario, variant and size that exist together")
    return plan


def run_group(group: Group, selection: Selection) -> list[CaseResult]:
    """Run one group's cases with the selection's seed, replays and guard budget, in a child process when the
    selection isolates."""
    if selection.isolate:
        from graph_harness.core.capture import hang_floor
        from graph_harness.suite.isolate import run_isolated

        return run_isolated(group, selection, hang_floor())
    from graph_harness.core.guard import GuardBudgetError

    try:
        return group.scenario.run(group.scenario_id, group.variant, group.sizes, seed=selection.seed,
                                  budget=selection.guard_budget, replays=selection.replays)
    except GuardBudgetError:
        if len(group.sizes) == 1:
            raise
    # Outside the handler, whose traceback held the failed attempt's slab and graphs: let them go, then run the
    # sizes in two slabs, each halved again while it does not fit.
    _release_device_memory()
    half = len(group.sizes) // 2
    results = [r for part in (group.sizes[:half], group.sizes[half:])
               for r in run_group(replace(group, sizes=part), selection)]
    note = (f"{SPLIT_NOTE}: the guard budget did not hold all of the group's sizes in one slab, so they ran in "
            "several slabs of fewer sizes, the graphs of each in a pool of their own")
    return [r if any(n.startswith(SPLIT_NOTE) for n in r.notes) else replace(r, notes=(*r.notes, note))
            for r in results]


SPLIT_NOTE = "slab split"


def _release_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
