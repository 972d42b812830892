"""Fuzz a scenario's variant (`graph-harness fuzz`), and the reproduction of what it found: a scenario file
beside the saved inputs, which `graph-harness run` replays exactly."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from graph_harness.core.verdict import Verdict
from graph_harness.errors import bad_value, display_path
from graph_harness.suite.files import DECLARE_KEY, DECLARE_VALUE, Scenario

if TYPE_CHECKING:
    from graph_harness.core.fuzz import FuzzRun, Progress


def fuzz_variant(scenario: Scenario, scenario_id: str, variant: str | None) -> str:
    """The variant to fuzz: the one asked for, else the scenario's first that must be clean (fuzzing a variant
    that must fail finds its known fault at once)."""
    names = scenario.variant_names()
    if variant is not None:
        if variant not in names:
            raise bad_value(scenario.where(scenario_id), "--variant", variant, ", ".join(names))
        return variant
    clean = [v for v in names if scenario.expected(v) is Verdict.CLEAN]
    if not clean:
        raise bad_value(scenario.where(scenario_id), "--variant", "none given", ", ".join(names),
                        "no variant of it must be clean: name the one to fuzz")
    return clean[0]


def fuzz_scenario(scenario_id: str, scenario: Scenario, variant: str, sizes: Sequence[int], *, seed: int | None = None,
                  budget: int | None = None, replays: int | None = None, seconds: float | None = None,
                  progress: Progress | None = None) -> FuzzRun:
    """Fuzz one variant of a scenario at these sizes, in one slab (see `graph_harness.core.fuzz`)."""
    from graph_harness.core.capture import default_backend
    from graph_harness.core.fuzz import fuzz_workloads
    from graph_harness.core.guard import sharing_guards

    with sharing_guards():  # a check after every replay: each guard byte read once
        ready = scenario.prepared(scenario_id, variant, sizes, seed=seed, budget=budget)
    with scenario.usage_reported(scenario_id, variant, sizes):
        return fuzz_workloads(ready.workloads, ready.guards, default_backend(ready.device), seed=ready.cases[0].seed,
                              name=scenario_id, variant=variant, replays=replays, seconds=seconds,
                              hang_after=scenario.hang_floor(), progress=progress)


@dataclass(frozen=True)
class Reproduction:
    """The files that replay a fuzz finding under `graph-harness run`, and the command that does."""

    scenario_id: str
    yaml_text: str
    inputs: bytes
    command: str

    def files(self, folder: Path) -> tuple[Path, Path]:
        """(scenario file, inputs file) in `folder`."""
        return folder / f"{self.scenario_id}.yaml", folder / f"{self.scenario_id}.pt"


def reproduction(scenario_id: str, scenario: Scenario, run: FuzzRun, folder: Path) -> Reproduction:
    """A scenario of the found case alone (its size, the fuzz seed, the inputs of the capture and of the replay
    that found it, saved beside it), to be written into `folder`."""
    from graph_harness.core.expect import describe
    from graph_harness.core.fuzz import save_inputs

    found = run.finding
    assert found is not None
    new_id = f"{scenario_id}-fuzz-{found.seed}"
    entry: dict[str, Any] = _plain(scenario.model_dump(exclude_defaults=True))
    entry.pop("cpu_sizes", None)
    for body in entry.get("variants", {}).values():  # an op scenario's expectations per size: the found one's only
        at = {t: e for t, e in body.pop("expect_at", {}).items() if t == found.capture_size}
        if at:
            body["expect_at"] = at
    first = found.violations[0]
    where = f"replay #{found.replay}" if found.replay else found.phase
    entry.update(
        why=f"graph-harness fuzz {scenario_id} --variant {run.variant} --seed {run.seed} found it: {where} at "
            f"T={found.capture_size}, inputs of seed {found.seed}: {describe(first)}",
        capture_sizes=[found.capture_size], seed=run.seed, fuzzed_inputs=f"{new_id}.pt")
    root = getattr(scenario, "package_root", lambda: None)()
    if root is not None:
        entry["import_root"] = str(root.resolve())
    text = (f"# Written by graph-harness fuzz: the inputs of the capture (seed {found.capture_seed}) and of the "
            f"finding (seed {found.seed}) are in {new_id}.pt.\n"
            + yaml.safe_dump({DECLARE_KEY: DECLARE_VALUE, new_id: entry}, sort_keys=False, width=1000))
    command = f"graph-harness run {new_id} --variant {run.variant} --scenarios {display_path(folder)}"
    return Reproduction(new_id, text, save_inputs(found), command)


def _plain(value: Any) -> Any:
    """A model's dump as YAML can write it: enums as their values, tuples as lists; keys kept as they are (a JSON
    dump would turn `expect_at`'s capture sizes into strings)."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value
