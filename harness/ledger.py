"""The ledger of known failures, scenarios/ledger.yaml: every entry cites an issue or a PR.

A `tolerated` case still runs and must keep failing (an unexpected pass fails, so the entry is
removed once fixed). A `quarantined` case, for crash classes, never launches in the pytest
process: it runs in a child process, so a segfault cannot take a worker down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from harness.errors import BadInput, display_path, one_line
from harness.scenario import load_scenarios, scenario_files
from kernels.contracts import Policy

# A URL, or owner/repo#N: somewhere a reader can see why the failure is known.
_CITE = r"^(https?://\S+|[\w.-]+/[\w.-]+#\d+)$"


class LedgerEntry(BaseModel):
    """One known failure: which cases, what to do with them, and where it is tracked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scenario: str
    policy: Policy
    sizes: list[Annotated[int, Field(ge=1)]] | Literal["all"] = "all"
    status: Literal["tolerated", "quarantined"]
    cites: Annotated[str, StringConstraints(pattern=_CITE)]
    why: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

    def covers(self, scenario: str, policy: str, tokens: int) -> bool:
        return (self.scenario == scenario and self.policy.value == policy
                and (self.sizes == "all" or tokens in self.sizes))


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
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = _File.model_validate(data)
    except yaml.YAMLError as err:
        raise BadInput(one_line(f"{where}: not valid YAML: {err}")) from None
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        allowed = ("a URL or owner/repo#N" if field.endswith("cites")
                   else "tolerated, quarantined" if field.endswith("status") else first["msg"])
        raise BadInput(one_line(f"{where}: {field}: got {first.get('input')!r}; allowed: {allowed}")) from None
    known = load_scenarios(scenario_files(path.parent))
    for i, entry in enumerate(parsed.entries):
        if entry.scenario not in known:
            raise BadInput(f"{where}: entries.{i}.scenario: got {entry.scenario!r}; allowed: {', '.join(known)}")
        if entry.policy not in known[entry.scenario].policies:
            allowed = ", ".join(p.value for p in known[entry.scenario].policies)
            raise BadInput(f"{where}: entries.{i}.policy: got {entry.policy.value!r}; allowed: {allowed}")
    return Ledger(tuple(parsed.entries))
