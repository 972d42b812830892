"""What a case must show to pass, stated once for the API, the pytest fixture and the scenario YAML.

    gh.expect.clean()                                   # every guard intact, every output right
    gh.expect.oob_write("ws", side="overflow", first=0, last=511, bytes=512)
    gh.expect.capture_error(match="invalid argument")

An oob-write expectation names as much of one violation as the author knows: the buffer, the side, the
first and last offset from the buffer's edge (overflow offsets count from its end, 0 the first byte past
it; underflow offsets are negative from its start, -1 the last byte before it), the bytes changed, or the
extent (bytes from the edge through the farthest one). The case passes when one violation matches every
stated field and no other violation was found: an unexpected second overrun is a failure, not noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from graph_harness.core.guard import Side, Violation
from graph_harness.core.verdict import Verdict

if TYPE_CHECKING:
    from graph_harness.core.capture import SizeOutcome

_BYTE_FIELDS = ("buffer", "side", "first", "last", "bytes", "extent")


@dataclass(frozen=True)
class Expectation:
    """One verdict, and for oob-write what is known of its violation; for capture-error and crash, text
    the error must contain."""

    verdict: Verdict
    buffer: str | None = None
    side: Side | None = None
    first: int | None = None
    last: int | None = None
    bytes: int | None = None
    extent: int | None = None
    match: str | None = None

    def __post_init__(self) -> None:
        _check(self)

    def __str__(self) -> str:
        stated = [f"{f}={_show(getattr(self, f))}" for f in (*_BYTE_FIELDS, "match") if getattr(self, f) is not None]
        return " ".join([self.verdict.value, *stated])

    def matches(self, v: Violation) -> bool:
        """Whether one violation shows every field this expectation states."""
        found = {"buffer": v.buffer, "side": v.side, "first": v.first_offset, "last": v.last_offset,
                 "bytes": v.bytes, "extent": v.extent}
        return all(getattr(self, f) in (None, found[f]) for f in _BYTE_FIELDS)

    def judge(self, verdict: Verdict, violations: Sequence[Violation], outcome: SizeOutcome) -> tuple[bool, str]:
        """(passed, one-line reason) for a case with this verdict, these violations and this outcome."""
        worst = outcome.worst
        err = f"rel L2 {worst.rel_l2:.2e} (tol {worst.tolerance:g})" if worst else "no output"
        if verdict != self.verdict:
            detail = {
                Verdict.OOB_WRITE: "; ".join(describe(v) for v in violations[:2]),
                Verdict.CAPTURE_ERROR: outcome.error or "",
                Verdict.CRASH: outcome.error or "",
                Verdict.MISMATCH: str(worst) if worst else "",
            }.get(verdict, "; ".join(outcome.notes))
            return False, f"expected {self}, got {verdict}: {detail}".rstrip(": ")
        if verdict is Verdict.OOB_WRITE:
            hits = [v for v in violations if self.matches(v)]
            if not hits:
                found = "; ".join(describe(v) for v in violations[:2])
                return False, f"oob-write detected but not the expected {self}: {found}"
            others = [v for v in violations if v is not hits[0]]
            if others:
                return False, (f"detected as expected: {describe(hits[0])}; but also, unexpected: "
                               + "; ".join(describe(v) for v in others[:2]))
            return True, f"detected as expected: {describe(hits[0])}"
        if self.match is not None and self.match not in (outcome.error or ""):
            return False, f"{verdict} as expected, but its error lacks {self.match!r}: {outcome.error}"
        if verdict is Verdict.CLEAN:
            return True, f"clean, {err}"
        return True, f"detected {verdict}: " + ("; ".join(outcome.notes) or outcome.error or err)


def describe(v: Violation) -> str:
    """`ws: 512 B past its end (512 B changed)`: one violation in words."""
    edge = "past its end" if v.side == "overflow" else "before its start"
    return f"{v.buffer}: {v.extent:,} B {edge} ({v.bytes:,} B changed)"


def _show(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _check(e: Expectation) -> None:
    """Refuse an expectation no case could meet, with the field at fault."""
    if not isinstance(e.verdict, Verdict):
        object.__setattr__(e, "verdict", of_verdict(e.verdict))
    stated = [f for f in _BYTE_FIELDS if getattr(e, f) is not None]
    if stated and e.verdict is not Verdict.OOB_WRITE:
        raise ValueError(f"{stated[0]}: byte figures go with oob-write, not {e.verdict}")
    if e.match is not None and e.verdict not in (Verdict.CAPTURE_ERROR, Verdict.CRASH):
        raise ValueError(f"match: text to find goes with capture-error or crash, not {e.verdict}")
    for name in ("first", "last", "bytes", "extent"):
        value = getattr(e, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name}: got {value!r}; allowed: an integer")
    if e.side not in (None, "overflow", "underflow"):
        raise ValueError(f"side: got {e.side!r}; allowed: overflow, underflow")
    if e.buffer is not None and (not isinstance(e.buffer, str) or not e.buffer):
        raise ValueError(f"buffer: got {e.buffer!r}; allowed: a buffer name")
    for name in ("bytes", "extent"):
        if getattr(e, name) is not None and getattr(e, name) < 1:
            raise ValueError(f"{name}: got {getattr(e, name)}; allowed: an integer >= 1")
    if e.first is not None and e.last is not None and e.first > e.last:
        raise ValueError(f"first: got {e.first} after last {e.last}; allowed: first <= last")
    for name in ("first", "last"):
        value = getattr(e, name)
        if value is not None and e.side == "overflow" and value < 0:
            raise ValueError(f"{name}: got {value}; allowed: >= 0 on the overflow side (0: first byte past the end)")
        if value is not None and e.side == "underflow" and value >= 0:
            raise ValueError(f"{name}: got {value}; allowed: < 0 on the underflow side (-1 is the last byte before it)")


def of_verdict(value: object) -> Verdict:
    """A Verdict from itself or its name; ValueError naming the allowed ones."""
    try:
        return Verdict(value)  # type: ignore[call-arg,arg-type]  # lookup by value, not construction
    except ValueError:
        raise ValueError(f"verdict: got {value!r}; allowed: {', '.join(v.value for v in Verdict)}") from None


def expectation(value: Expectation | Verdict | str) -> Expectation:
    """An Expectation from itself, a Verdict or a verdict's name (`"clean"`)."""
    return value if isinstance(value, Expectation) else Expectation(of_verdict(value))


def verdict(value: Verdict | str, **stated: object) -> Expectation:
    """Any verdict with the fields that go with it: `verdict("oob-write", buffer="ws", bytes=4)`."""
    allowed = {f.name for f in fields(Expectation)} - {"verdict"}
    unknown = sorted(set(stated) - allowed)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field; allowed: {', '.join(sorted(allowed))}")
    return Expectation(of_verdict(value), **stated)  # type: ignore[arg-type]


def clean() -> Expectation:
    """Every guard intact, every output right: what a fixed op must show."""
    return Expectation(Verdict.CLEAN)


def oob_write(buffer: str | None = None, *, side: Side | None = None, first: int | None = None,
              last: int | None = None, bytes: int | None = None, extent: int | None = None) -> Expectation:  # noqa: A002
    """A write outside `buffer` (any buffer when None), with whatever of its figures are known."""
    return Expectation(Verdict.OOB_WRITE, buffer, side, first, last, bytes, extent)


def oob_read() -> Expectation:
    """A read outside a buffer that reaches the output."""
    return Expectation(Verdict.OOB_READ)


def uninit_read() -> Expectation:
    """A read of bytes no one wrote, that reaches the output."""
    return Expectation(Verdict.UNINIT_READ)


def mismatch() -> Expectation:
    """An output that differs from eager or the reference, with every guard intact."""
    return Expectation(Verdict.MISMATCH)


def capture_error(match: str | None = None) -> Expectation:
    """Capture or instantiation fails (its message containing `match`, when given)."""
    return Expectation(Verdict.CAPTURE_ERROR, match=match)


def crash(match: str | None = None) -> Expectation:
    """The op raises (its message containing `match`, when given)."""
    return Expectation(Verdict.CRASH, match=match)
