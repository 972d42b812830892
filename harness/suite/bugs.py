"""The bug registry: a scenario folder's bugs.yaml parsed into frozen models, each bug a buggy and a fixed side.

A side is (scenario id, variant) at the bug's capture size, for a scenario of any kind (an MoE policy, an
op scenario's variant). The registry states what each side must show, down to the byte: `reproduce` runs
both and compares what was found with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from graph_harness.core.results import CaseResult
from graph_harness.core.verdict import Verdict
from graph_harness.core.violation import Violation
from graph_harness.errors import bad_value, display_path, show
from graph_harness.schema import Frozen, Text, bad_entry, check_id, file_schema, read_yaml, rule
from graph_harness.suite.files import REGISTRY_FILE, Scenario, load_scenarios, scenario_files

Bytes = Annotated[int, Strict(), Field(ge=1)]
Side = Literal["buggy", "fixed"]


class BugSide(Frozen):
    """One side of a bug: a scenario's variant, the verdict it must get and, for oob-write, its bytes."""

    scenario: Text
    variant: Text  # an MoE scenario's policy, or an op scenario's variant
    verdict: Verdict
    buffer: Text | None = None  # the corrupted buffer, as the guards name it
    allocated: Bytes | None = None  # its size in bytes
    written: Bytes | None = None  # bytes from its far edge through the farthest corrupted byte: allocated + extent

    @model_validator(mode="after")
    def _bytes_with_oob_write(self) -> BugSide:
        """Byte figures go with oob-write, and only with it."""
        stated = [f for f in ("buffer", "allocated", "written") if getattr(self, f) is not None]
        if self.verdict == "oob-write" and len(stated) < 3:
            missing = next(f for f in ("buffer", "allocated", "written") if f not in stated)
            raise rule("buffer, allocated and written with verdict oob-write", missing, "nothing")
        if self.verdict != "oob-write" and stated:
            raise rule(f"no byte figures with verdict {self.verdict}", stated[0], show(getattr(self, stated[0])))
        if self.allocated is not None and self.written is not None and self.written <= self.allocated:
            raise rule(f"integer > allocated ({self.allocated:,})", "written", str(self.written))
        return self

    @property
    def extent(self) -> int | None:
        """Bytes past the buffer's edge that the bug reaches (the guard violation's extent)."""
        if self.written is None or self.allocated is None:
            return None
        return self.written - self.allocated


class Bug(Frozen):
    """One `scenarios/bugs.yaml` entry; its id is the YAML key."""

    title: Text
    source: Text  # the PR or issue, e.g. "aiter #2508 / #2551"
    why: Text
    size: Annotated[int, Strict(), Field(ge=1)]  # the capture size both variants run at
    buggy: BugSide
    fixed: BugSide

    @model_validator(mode="after")
    def _against_scenarios(self, info: ValidationInfo) -> Bug:
        """The buggy side finds something, the fixed side is clean, and both agree with their scenarios."""
        if self.buggy.verdict == "clean":
            raise rule("a verdict other than clean", "buggy.verdict", "clean")
        if self.fixed.verdict != "clean":
            raise rule("clean", "fixed.verdict", self.fixed.verdict)
        scenarios: Mapping[str, Scenario] = (info.context or {}).get("scenarios", {})
        for side, variant in (("buggy", self.buggy), ("fixed", self.fixed)):
            scenario = scenarios.get(variant.scenario)
            if scenario is None:
                raise rule(", ".join(scenarios) or "a scenario id", f"{side}.scenario", repr(variant.scenario))
            if variant.variant not in scenario.variant_names():
                raise rule(", ".join(scenario.variant_names()), f"{side}.variant", variant.variant,
                           f"the variants of {variant.scenario}")
            expected = scenario.expected(variant.variant, self.size)
            if variant.verdict != expected:
                raise rule(f"{expected}, as {variant.scenario} expects of {variant.variant}",
                           f"{side}.verdict", variant.verdict)
            if self.size not in scenario.capture_sizes:
                raise rule(f"a capture size of {variant.scenario} ({', '.join(map(str, scenario.capture_sizes))})",
                           "size", str(self.size))
            if variant.verdict == "oob-write":
                _agrees_with_scenario(side, variant, scenario, self.size)
        return self


def _agrees_with_scenario(side: str, variant: BugSide, scenario: Scenario, size: int) -> None:
    """An oob-write side's bytes are the scenario's: what it states of the buffer, its allocation and the extent
    (an MoE scenario's expect_bytes, or else the stage1 footprint's). One truth, checked when the registry loads."""
    stated = scenario.stated_bytes(variant.scenario, variant.variant, size)
    if stated is None:
        return  # the scenario cannot know (cu_num `device`, an expectation without an extent)
    buffer, allocated, extent = stated
    if (buffer or variant.buffer, allocated or variant.allocated, extent) != (variant.buffer, variant.allocated,
                                                                              variant.extent):
        wanted = ", ".join(part for part in (
            f"buffer {buffer}" if buffer else "", f"allocated {allocated:,}" if allocated else "",
            f"written = allocated + {extent:,}" if not allocated else f"written {allocated + extent:,}") if part)
        raise rule(f"{wanted}, as {variant.scenario} {variant.variant} states at T={size}",
                   f"{side}.written", f"{variant.buffer} allocated {show(variant.allocated)}, "
                                      f"written {show(variant.written)}")


def registry_path(directory: Path) -> Path:
    """Where the registry of a scenario folder lives."""
    return directory / REGISTRY_FILE


def load_registry(directory: Path) -> tuple[dict[str, Scenario], dict[str, Bug]]:
    """A scenario folder's scenarios, and its registry's bugs checked against them."""
    scenarios = load_scenarios(scenario_files(directory))
    return scenarios, load_bugs(registry_path(directory), scenarios)


def load_bugs(path: Path, scenarios: Mapping[str, Scenario]) -> dict[str, Bug]:
    """Every bug of the registry file, keyed by id in file order; each checked against `scenarios`."""
    shown = display_path(path)
    if not path.is_file():
        raise bad_value(shown, "", "no such file", "a bug registry YAML file")
    found: dict[str, Bug] = {}
    for key, body in read_yaml(path, "a mapping of bug id to bug").items():
        check_id(shown, key, "bug id")
        try:
            found[key] = Bug.model_validate(body, context={"scenarios": scenarios})
        except ValidationError as err:
            raise bad_entry(f"{shown}: {key}", err, Bug) from None
    if not found:
        raise bad_value(shown, "", "no bugs", "a mapping of bug id to bug")
    return found


def pick_bug(bugs: Mapping[str, Bug], bug_id: str, path: Path) -> Bug:
    """The bug named `bug_id`; an unknown id lists the known ones."""
    if bug_id not in bugs:
        raise bad_value(display_path(path), "", f"unknown bug {bug_id!r}", ", ".join(bugs))
    return bugs[bug_id]


@dataclass(frozen=True)
class Figures:
    """What one variant's run showed: the verdict, the size of the buffer the bug is about (clean or not) and,
    when it was corrupted, by how much and by which op."""

    verdict: Verdict
    buffer: str | None
    allocated: int | None
    written: int | None  # allocated + extent
    first: int | None  # corrupted range, in bytes from the buffer's start (negative: before it)
    last: int | None
    op: str | None = None  # the op whose launch made the violation
    arg: str | None = None  # the kernel's parameter it went through, where the lane checker saw it

    @property
    def ratio(self) -> float | None:
        """Bytes written over bytes allocated: 16.0 for aiter #2508's memset."""
        if self.written is None or not self.allocated:
            return None
        return self.written / self.allocated


def _pick_violation(buffer: str | None, violations: tuple[Violation, ...]) -> Violation | None:
    """The violation of the registry's buffer if there is one, else the farthest-reaching."""
    named = [v for v in violations if v.buffer == buffer]
    if named:
        return named[0]
    return violations[0] if violations else None


def figures(variant: BugSide, result: CaseResult, buffer: str | None = None) -> Figures:
    """The figures of a variant's result, read off the violation of the buffer the registry names for it (else
    `buffer`: a clean side names none); with no violation, that buffer's size as the guards carved it."""
    name = variant.buffer or buffer
    v = _pick_violation(name, result.violations)
    if v is None:
        allocated = result.buffers.get(name) if name else None
        return Figures(result.verdict, name if allocated is not None else None, allocated, None, None, None)
    if v.side == "overflow":
        first, last = v.buffer_bytes + v.first_offset, v.buffer_bytes + v.last_offset
    else:
        first, last = v.first_offset, v.last_offset
    return Figures(result.verdict, v.buffer, v.buffer_bytes, v.buffer_bytes + v.extent, first, last, v.op, v.arg)


def matches(variant: BugSide, found: Figures) -> bool:
    """Whether a run shows exactly what the registry states: the verdict, and the bytes for oob-write."""
    if found.verdict != variant.verdict:
        return False
    if variant.verdict != "oob-write":
        return True
    return (found.buffer, found.allocated, found.written) == (variant.buffer, variant.allocated, variant.written)


@dataclass(frozen=True)
class Reproduction:
    """Both variants of one bug, run: detected in the buggy one, clean in the fixed one, or not."""

    bug_id: str
    bug: Bug
    buggy: CaseResult
    fixed: CaseResult

    def figures(self, side: Side) -> Figures:
        """What one side showed of the buffer the bug is about: the registry's for the buggy side, and the same
        buffer on the fixed side, which the registry (a clean verdict states no bytes) cannot name."""
        if side == "buggy":
            return figures(self.bug.buggy, self.buggy)
        return figures(self.bug.fixed, self.fixed, self.bug.buggy.buffer)

    def findings(self) -> list[str]:
        """What the buggy side's verdict rests on where no violation has bytes to show (a hang, a graph's state,
        a read the guards' fill gave away): its notes and error that name the verdict."""
        result = self.buggy
        if result.violations:
            return []
        verdict = f"{result.verdict}: "
        found = [n for n in result.notes if n.startswith(verdict)]
        return found or ([f"{verdict}{result.error}"] if result.error else [])

    @property
    def detected(self) -> bool:
        """The buggy variant met its scenario's expectation, and shows the registry's verdict and bytes."""
        return self.buggy.passed and matches(self.bug.buggy, self.figures("buggy"))

    @property
    def clean(self) -> bool:
        """The fixed variant is clean and numerically right."""
        return self.fixed.verdict == "clean" and self.fixed.passed

    @property
    def reproduced(self) -> bool:
        """What `reproduce` exits 0 on."""
        return self.detected and self.clean

    def record(self) -> dict[str, Any]:
        """The JSON object of `reproduce --json`."""
        return {"bug": self.bug_id, "source": self.bug.source, "detected": self.detected, "clean": self.clean,
                "reproduced": self.reproduced, "buggy": self.buggy.record(), "fixed": self.fixed.record()}

def registry_schema() -> dict[str, Any]:
    """The JSON Schema of scenarios/bugs.yaml."""
    return file_schema([Bug], "graph-harness bug registry: bug id -> bug")
