"""Footprint model: stage1 bytes per capture size and policy, predicted from contract arithmetic alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from graph_harness.kernels.contracts import Policy
from graph_harness.moe.scenario import CaseSpec, MoEScenario, resolve

# The JSON record of a row: exactly these fields, in this order (graph-harness footprint --json).
RECORD_FIELDS: tuple[str, ...] = (
    "scenario", "capture_size", "policy", "sorted_size", "alloc_bytes", "memset_bytes", "scatter_rows",
    "predicted_overflow_bytes",
)


@dataclass(frozen=True)
class FootprintRow:
    """Predicted stage1 buffer bytes for one (scenario, capture size, policy); no kernel runs."""

    scenario: str
    capture_size: int
    policy: Policy
    sorted_size: int
    alloc_bytes: int
    memset_bytes: int
    scatter_rows: int
    predicted_overflow_bytes: int
    block_m: int  # table only, not in the record
    splitk: int  # table only, not in the record

    @property
    def ratio(self) -> float | None:
        """Bytes touched (memset or scatter) over bytes allocated; None when nothing is memset or overrun."""
        if self.predicted_overflow_bytes:
            return (self.alloc_bytes + self.predicted_overflow_bytes) / self.alloc_bytes
        return self.memset_bytes / self.alloc_bytes if self.memset_bytes else None

    def record(self) -> dict[str, int | str]:
        """The JSON object of this row: the RECORD_FIELDS, policy as its string value."""
        record: dict[str, int | str] = {name: getattr(self, name) for name in RECORD_FIELDS}
        record["policy"] = self.policy.value
        return record


def footprint_row(case: CaseSpec) -> FootprintRow:
    """The footprint of one resolved case."""
    fp = case.footprint()
    return FootprintRow(case.scenario, case.tokens, case.policy, fp.sorted_size, fp.alloc_bytes,
                        fp.memset_bytes, fp.scatter_rows, fp.predicted_overflow_bytes,
                        block_m=case.block_m, splitk=case.splitk)


def footprint_rows(scenario_id: str, scenario: MoEScenario, sizes: Sequence[int] | None = None,
                   cu_num_override: int | None = None) -> tuple[FootprintRow, ...]:
    """Rows for every size (default: the scenario's capture sizes) and expected policy, at full K."""
    return tuple(
        footprint_row(case)
        for tokens in (scenario.capture_sizes if sizes is None else sizes)
        for case in resolve(scenario_id, scenario, tokens, "gpu", cu_num_override)
    )
