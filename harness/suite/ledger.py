"""The ledger of known failures, a scenario folder's ledger.yaml: every entry cites an issue or a PR.

An entry names scenario cases (`scenario`, `variant`, `sizes`) or a test that uses the `graph_guard` fixture
(`test`, its pytest node id). A `tolerated` one still runs and must keep failing (an unexpected pass fails,
so the entry is removed once fixed). A `quarantined` one, for crash classes, never launches in the pytest
process: it runs in a child process, so a segfault cannot take a worker down.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, ValidationError, model_validator

from graph_harness.errors import bad_value, display_path, show
from graph_harness.schema import Count, Frozen, Text, bad_entry, read_yaml, rule
from graph_harness.suite.files import Scenario

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


def _node_id(text: str) -> str:
    if "::" not in text:
        raise rule("a pytest node id, path::test_name")
    return text


class LedgerEntry(Frozen):
    """One known failure: which cases (or which fixture test), what to do with them, and where it is tracked."""

    scenario: str | None = None
    variant: str | None = None
    sizes: Annotated[tuple[Count, ...] | None, BeforeValidator(_all_or_list)] = None  # None: all
    test: Annotated[str, AfterValidator(_node_id)] | None = None
    status: Literal["tolerated", "quarantined"]
    cites: Annotated[str, AfterValidator(_cited)]
    why: Text

    @model_validator(mode="after")
    def _cases_or_test(self) -> LedgerEntry:
        if self.test is None and (self.scenario is None or self.variant is None):
            missing = "scenario" if self.scenario is None else "variant"
            raise rule("scenario and variant (scenario cases), or test (a graph_guard test)", missing, "nothing")
        if self.test is not None and (self.scenario, self.variant, self.sizes) != (None, None, None):
            raise rule("test alone, or scenario, variant and sizes", "test", repr(self.test),
                       "an entry names scenario cases or a test, not both")
        return self

    def covers(self, scenario: str, variant: str, tokens: int) -> bool:
        return (self.scenario == scenario and self.variant == variant
                and (self.sizes is None or tokens in self.sizes))


class _File(Frozen):
    entries: list[LedgerEntry] = []


@dataclass(frozen=True)
class Ledger:
    """The validated entries; `find` answers for one case, `for_test` for one fixture test."""

    entries: tuple[LedgerEntry, ...] = ()

    def find(self, scenario: str, variant: str, tokens: int) -> LedgerEntry | None:
        return next((e for e in self.entries if e.covers(scenario, variant, tokens)), None)

    def for_test(self, node_id: str) -> LedgerEntry | None:
        return next((e for e in self.entries if e.test == node_id), None)

    def __add__(self, other: Ledger) -> Ledger:
        return Ledger(self.entries + other.entries)


def load_ledger(path: Path, known: Mapping[str, Scenario]) -> Ledger:
    """Read and validate a ledger against its folder's scenarios; a missing file is an empty ledger."""
    if not path.exists():
        return Ledger()
    where = display_path(path)
    try:
        parsed = _File.model_validate(read_yaml(path, "a mapping with an entries list"))
    except ValidationError as err:
        raise bad_entry(where, err, _File) from None
    for i, entry in enumerate(parsed.entries):
        if entry.test is not None:
            continue
        assert entry.scenario is not None
        assert entry.variant is not None
        if entry.scenario not in known:
            raise bad_value(where, f"entries[{i}].scenario", show(entry.scenario), ", ".join(known) or "none here")
        scenario = known[entry.scenario]
        if entry.variant not in scenario.variant_names():
            raise bad_value(where, f"entries[{i}].variant", show(entry.variant), ", ".join(scenario.variant_names()),
                            f"the variants of {entry.scenario}")
        sizes = scenario.capture_sizes
        if entry.sizes is not None and (stray := sorted(set(entry.sizes) - set(sizes))):
            raise bad_value(where, f"entries[{i}].sizes", show(stray), ", ".join(map(str, sizes)) + " or all",
                            f"the capture sizes of {entry.scenario}")
    return Ledger(tuple(parsed.entries))
