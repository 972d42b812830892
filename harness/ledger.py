"""The ledger of known failures, scenarios/ledger.yaml: every entry cites an issue or a PR.

A `tolerated` case still runs and must keep failing (an unexpected pass fails, so the entry is
removed once fixed). A `quarantined` case, for crash classes, never launches in the pytest
process: it runs in a child process, so a segfault cannot take a worker down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError

from harness.errors import bad_value, display_path, show
from harness.scenario import Count, bad_entry, load_scenarios, read_yaml, rule, scenario_files
from kernels.contracts import Policy

# A URL, or owner/repo#N: somewhere a reader can see why the failure is known.
_CITE = re.compile(r"^(https?://\S+|[\w.-]+/[\w.-]+#\d+)$")


def _all_or_list(value: object) -> object:
    """`all` (kept as None) or a list of capture sizes."""
    if value == "all":
        return None
    if isinstance(value, list):
        return value
    raise rule("list of integers >= 1, or all")


def _cited(text: str) -> str:
    if not _CITE.match(text):
        raise rule("a URL or owner/repo#N")
    return text


class LedgerEntry(BaseModel):
    """One known failure: which cases, what to do with them, and where it is tracked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str
    policy: Policy
    sizes: Annotated[tuple[Count, ...] | None, BeforeValidator(_all_or_list)] = None  # None: all
    status: Literal["tolerated", "quarantined"]
    cites: Annotated[str, AfterValidator(_cited)]
    why: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

    def covers(self, scenario: str, policy: str, tokens: int) -> bool:
        return (self.scenario == scenario and self.policy.value == policy
                and (self.sizes is None or tokens in self.sizes))


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: list[LedgerEntry] = []


@dataclass(frozen=True)
class Ledger:
    """The validated entries; `find` answers for one case."""

    entries: tuple[LedgerEntry, ...] = ()

    def find(self, scenario: str, policy: str, tokens: int) -> LedgerEntry | None:
        return next((e for e in self.entries if e.covers(scenario, policy, tokens)), None)


def load_ledger(path: Path) -> Ledger:
    """Read and validate a ledger; a missing file is an empty ledger. Bad entries raise BadInput."""
    if not path.exists():
        return Ledger()
    where = display_path(path)
    try:
        parsed = _File.model_validate(read_yaml(path, "a mapping with an entries list"))
    except ValidationError as err:
        raise bad_entry(where, err, _File) from None
    known = load_scenarios(scenario_files(path.parent))
    for i, entry in enumerate(parsed.entries):
        if entry.scenario not in known:
            raise bad_value(where, f"entries[{i}].scenario", show(entry.scenario), ", ".join(known))
        if entry.policy not in known[entry.scenario].policies:
            allowed = ", ".join(p.value for p in known[entry.scenario].policies)
            raise bad_value(where, f"entries[{i}].policy", show(entry.policy.value), allowed,
                            f"the policies of {entry.scenario}")
        sizes = known[entry.scenario].capture_sizes
        if entry.sizes is not None and (stray := sorted(set(entry.sizes) - set(sizes))):
            raise bad_value(where, f"entries[{i}].sizes", show(stray), ", ".join(map(str, sizes)) + " or all",
                            f"the capture sizes of {entry.scenario}")
    return Ledger(tuple(parsed.entries))
