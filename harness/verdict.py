"""Verdicts: what a protocol outcome means, and whether it is what the scenario expects."""

from __future__ import annotations

import math

from harness.capture import SizeOutcome
from harness.guard import Violation
from harness.scenario import ExpectBytes, Verdict


def classify(outcome: SizeOutcome, violations: tuple[Violation, ...]) -> Verdict:
    """One verdict, by precedence: capture-error, crash, oob-write, oob-read, uninit-read, mismatch, clean."""
    if outcome.error_kind == "capture-error":
        return "capture-error"
    if outcome.error_kind == "crash":
        return "crash"
    if violations:
        return "oob-write"
    if outcome.attribution == "oob-read":
        return "oob-read"
    if outcome.attribution == "uninit-read":
        return "uninit-read"
    if not outcome.numerically_ok:
        return "mismatch"
    return "clean"


def _where(v: Violation) -> str:
    edge = "past its end" if v.side == "overflow" else "before its start"
    return f"{v.buffer}: {v.extent:,} B {edge} ({v.bytes:,} B changed)"


def meets(verdict: Verdict, expected: Verdict, violations: tuple[Violation, ...], predicted_overflow: int,
          outcome: SizeOutcome, expect_bytes: ExpectBytes | None = None) -> tuple[bool, str]:
    """(passed, one-line reason). A buggy policy passes when the expected bug is detected with the
    predicted bytes (the stage1 overflow, or `expect_bytes` where the scenario names them); a fixed one
    only when clean and numerically right."""
    worst = outcome.worst
    err = f"rel L2 {worst.rel_l2:.2e} (tol {worst.tolerance:g})" if worst else "no output"
    if verdict != expected:
        detail = {
            "oob-write": "; ".join(_where(v) for v in violations[:2]),
            "capture-error": outcome.error or "",
            "crash": outcome.error or "",
            "mismatch": str(worst) if worst else "",
        }.get(verdict, "; ".join(outcome.notes))
        return False, f"expected {expected}, got {verdict}: {detail}".rstrip(": ")
    if verdict == "oob-write":
        # The scenario's named bytes, else the stage1 footprint's overflow in whichever buffer holds it.
        buffer, side, extent = ((expect_bytes.buffer, expect_bytes.side, expect_bytes.extent) if expect_bytes
                                else (None, "overflow", predicted_overflow))
        hits = [v for v in violations if buffer in (None, v.buffer) and (v.side, v.extent) == (side, extent)]
        if not hits:
            found = "; ".join(_where(v) for v in violations[:2])
            wanted = f"{buffer} {side} of {extent:,} B" if buffer else f"predicted {extent:,} B overflow"
            return False, f"oob-write detected but not the expected {wanted}: {found}"
        return True, f"detected as expected: {_where(hits[0])}"
    if verdict == "clean":
        return True, f"clean, {err}"
    return True, f"detected {verdict}: " + ("; ".join(outcome.notes) or err)


def max_rel_err(outcome: SizeOutcome) -> float | None:
    """The worst relative L2 error against the reference over eager runs and replays; None if none ran."""
    errors = [c.rel_l2 for name, c in outcome.comparisons if name.endswith("vs reference")]
    if not errors:
        return None
    worst = max(errors, key=lambda e: math.inf if math.isnan(e) else e)
    return math.inf if math.isnan(worst) else worst
