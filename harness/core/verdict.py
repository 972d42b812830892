"""The verdict vocabulary, written once, and how a protocol outcome is classified into one verdict."""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graph_harness.core.capture import SizeOutcome
    from graph_harness.core.violation import Violation


class Verdict(str, enum.Enum):
    """What the harness found in one case. Members are in precedence order: the first that applies wins.

    Each carries what every presenter needs (`short` for heatmap cells, `colour` for figures, `style` for
    rich) and a one-line `meaning` for the README and the schema, so no presenter keeps a list of its own.
    """

    HANG = ("hang", "hang", "#4b0082", "red bold",
            "a warm-up, eager run, capture or replay did not finish within its bound (from the op's eager time, "
            "with a floor in seconds)")
    CAPTURE_ERROR = ("capture-error", "cap", "#7f0000", "red bold",
                     "capture or instantiation failed, e.g. \"invalid argument\" for a memset past its allocation")
    CRASH = ("crash", "crash", "#000000", "red bold", "the op raised in an eager run or a replay")
    OOB_WRITE = ("oob-write", "oobW", "#d62728", "red",
                 "a write outside its buffer: a guard byte changed, or (interpreter) a store lane outside its view")
    USE_AFTER_FREE = ("use-after-free", "uaf", "#8c564b", "red",
                      "a replay wrote or read memory the op had released (handed to a poisoned stranger between "
                      "replays): a graph still points at it")
    OOB_READ = ("oob-read", "oobR", "#ff7f0e", "red",
                "a read outside its buffer: (interpreter) a load lane outside its view, or an output that is wrong "
                "and right again when the guards hold zeros instead of NaN")
    UNINIT_READ = ("uninit-read", "uninit", "#e377c2", "magenta",
                   "the output changes when `empty` buffers hold another poison: it reads bytes nobody wrote")
    REPLAY_STATE = ("replay-state", "state", "#9467bd", "magenta",
                    "the same inputs replayed again give another output, or leave the graph's state otherwise: "
                    "a counter, semaphore or flag zeroed only once")
    STALE_CAPTURE = ("stale-capture", "stale", "#17becf", "yellow",
                     "a replay disagrees with eager on the same inputs while eager agrees with the reference: a "
                     "host-side decision baked in at capture")
    MISMATCH = ("mismatch", "mism", "#bcbd22", "yellow", "the output differs from eager or from the reference")
    CLEAN = ("clean", "clean", "#2ca02c", "green", "every guard intact and every output right")

    short: str
    colour: str
    style: str
    meaning: str

    def __new__(cls, value: str, short: str, colour: str, style: str, meaning: str) -> Verdict:
        member = str.__new__(cls, value)
        member._value_ = value
        member.short, member.colour, member.style, member.meaning = short, colour, style, meaning
        return member

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @property
    def rank(self) -> int:
        """Its place in the precedence order: 0 is the strongest."""
        return list(Verdict).index(self)


def classify(outcome: SizeOutcome, violations: tuple[Violation, ...]) -> Verdict:
    """One verdict, by precedence: hang, capture-error, crash, oob-write, use-after-free, oob-read, uninit-read,
    replay-state, stale-capture, mismatch, clean."""
    if outcome.error_kind == "hang":
        return Verdict.HANG
    if outcome.error_kind == "capture-error":
        return Verdict.CAPTURE_ERROR
    if outcome.error_kind == "crash":
        return Verdict.CRASH
    if any(v.access == "write" for v in violations):
        return Verdict.OOB_WRITE
    if outcome.state is Verdict.USE_AFTER_FREE:
        return Verdict.USE_AFTER_FREE
    # Reads outside a view are the cause, unless the output also changed with the `empty` poison: then bytes
    # nobody wrote (an index, a count) drove those reads, and uninit-read names the cause.
    if violations and outcome.attribution is not Verdict.UNINIT_READ:
        return Verdict.OOB_READ
    if outcome.attribution is not None:
        return outcome.attribution
    if outcome.state is not None:
        return outcome.state
    if not outcome.numerically_ok:
        return Verdict.MISMATCH
    return Verdict.CLEAN


def max_rel_err(outcome: SizeOutcome) -> float | None:
    """The worst relative L2 error against the reference over eager runs and replays; None if none ran."""
    errors = [c.rel_l2 for name, c in outcome.comparisons if name.endswith("vs reference")]
    if not errors:
        return None
    worst = max(errors, key=lambda e: math.inf if math.isnan(e) else e)
    return math.inf if math.isnan(worst) else worst
