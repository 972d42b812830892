"""What a case must show to pass, stated once for the API, the pytest fixture and the scenario YAML.

    gh.expect.clean()                                   # every guard intact, every output right
    gh.expect.oob_write("ws", side="overflow", first=0, last=511, bytes=512)
    gh.expect.capture_error(match="invalid argument")

An oob-write (or oob-read) expectation names as much of one violation as the author knows: the buffer,
the kernel argument it went through (`arg`, the parameter's name: under the interpreter), the side, the
first and last offset from the edge (overflow offsets count from its end, 0 the first byte past it;
underflow offsets are negative from its start, -1 the last byte before it), the bytes, or the extent
(bytes from the edge through the farthest one). The case passes when one violation of that access matches
every stated field and no other violation was found: an unexpected second overrun is a failure, not noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from graph_harness.core.verdict import Verdict
from graph_harness.core.violation import UNHELD, Side, Violation

if TYPE_CHECKING:
    from graph_harness.core.capture import SizeOutcome

_BYTE_FIELDS = ("buffer", "arg", "side", "first", "last", "bytes", "extent")
_ACCESS = {Verdict.OOB_WRITE: "write", Verdict.OOB_READ: "read"}
_MATCHED = (Verdict.HANG, Verdict.CAPTURE_ERROR, Verdict.CRASH)  # verdicts whose error text `match` looks in


@dataclass(frozen=True)
class Expectation:
    """One verdict, and for oob-write and oob-read what is known of its violation; for capture-error and
    crash, text the error must contain."""

    verdict: Verdict
    buffer: str | None = None
    side: Side | None = None
    first: int | None = None
    last: int | None = None
    bytes: int | None = None
    extent: int | None = None
    match: str | None = None
    arg: str | None = None
    # Further violations the case must also show, each matched to one of its own: a fault that reads past one
    # buffer and writes past another is one expectation of its strongest verdict with the other in `also`.
    also: tuple[Expectation, ...] = ()

    def __post_init__(self) -> None:
        _check(self)

    @property
    def stated(self) -> bool:
        """Whether any figure of a violation is stated."""
        return any(getattr(self, f) is not None for f in _BYTE_FIELDS)

    def __str__(self) -> str:
        stated = [f"{f}={_show(getattr(self, f))}" for f in (*_BYTE_FIELDS, "match") if getattr(self, f) is not None]
        return " ".join([self.verdict.value, *stated]) + "".join(f" and {a}" for a in self.also)

    def matches(self, v: Violation) -> bool:
        """Whether one violation shows every field this expectation states."""
        found = {"buffer": v.buffer, "arg": v.arg, "side": v.side, "first": v.first_offset, "last": v.last_offset,
                 "bytes": v.bytes, "extent": v.extent}
        return v.access == _ACCESS.get(self.verdict) and all(getattr(self, f) in (None, found[f]) for f in _BYTE_FIELDS)

    def judge(self, verdict: Verdict, violations: Sequence[Violation], outcome: SizeOutcome) -> tuple[bool, str]:
        """(passed, one-line reason) for a case with this verdict, these violations and this outcome."""
        worst = outcome.worst
        err = f"rel L2 {worst.rel_l2:.2e} (tol {worst.tolerance:g})" if worst else "no output"
        if verdict != self.verdict:
            detail = {
                Verdict.OOB_WRITE: "; ".join(describe(v) for v in violations[:2]),
                Verdict.OOB_READ: "; ".join(describe(v) for v in violations[:2]) or "; ".join(outcome.notes),
                Verdict.HANG: outcome.error or "",
                Verdict.CAPTURE_ERROR: outcome.error or "",
                Verdict.CRASH: outcome.error or "",
                Verdict.MISMATCH: str(worst) if worst else "",
            }.get(verdict, "; ".join(outcome.notes))
            return False, f"expected {self}, got {verdict}: {detail}".rstrip(": ")
        matchers = [e for e in (self, *self.also) if e.verdict in _ACCESS and (violations or e.stated)]
        if matchers:
            left, found = list(violations), []
            for e in matchers:
                hit = next((v for v in left if e.matches(v)), None)
                if hit is None:
                    seen = "; ".join(describe(v) for v in left[:2]) or "; ".join(outcome.notes)
                    return False, f"{verdict} detected but not the expected {e}: {seen}".rstrip(": ")
                left.remove(hit)
                found.append(hit)
            shown = "; ".join(describe(v) for v in found)
            if left:
                return False, (f"detected as expected: {shown}; but also, unexpected: "
                               + "; ".join(describe(v) for v in left[:2]))
            return True, f"detected as expected: {shown}"
        if self.match is not None and self.match not in (outcome.error or ""):
            return False, f"{verdict} as expected, but its error lacks {self.match!r}: {outcome.error}"
        if verdict is Verdict.CLEAN:
            return True, f"clean, {err}"
        return True, f"detected {verdict}: " + ("; ".join(outcome.notes) or outcome.error or err)


def describe(v: Violation) -> str:
    """`ws: 512 B past its end (512 B changed)`: one violation in words.

    A guard finding that reached the guard's far end says "at least"; a lane checker finding names the kernel
    and its argument, and a view that is part of its buffer by its byte range: `ws[4,096:5,120]`."""
    if v.buffer == UNHELD:
        return (f"{UNHELD}: {v.bytes:,} B changed where no buffer was, slab bytes {v.first_offset:,} to "
                f"{v.last_offset + 1:,} (past every guard; found after every run)")
    edge = "past its end" if v.side == "overflow" else "before its start"
    name = v.buffer if v.at is None else f"{v.buffer}[{v.at:,}:{v.at + v.buffer_bytes:,}]"
    extent = f"at least {v.extent:,}" if v.at_least else f"{v.extent:,}"
    if v.arg is None:
        how = f"{v.bytes:,} B changed"
    else:
        how = f"{v.bytes:,} B {'written' if v.access == 'write' else 'read'} by {v.op} through {v.arg}"
    into = f", into {', '.join(v.hits)}" if v.hits else ""
    return f"{name}: {extent} B {edge} ({how}{into})"


def _show(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _check(e: Expectation) -> None:
    """Refuse an expectation no case could meet, with the field at fault."""
    if not isinstance(e.verdict, Verdict):
        object.__setattr__(e, "verdict", of_verdict(e.verdict))
    stated = [f for f in _BYTE_FIELDS if getattr(e, f) is not None]
    if stated and e.verdict not in _ACCESS:
        raise ValueError(f"{stated[0]}: byte figures go with oob-write or oob-read, not {e.verdict}")
    if e.match is not None and e.verdict not in _MATCHED:
        raise ValueError(f"match: text to find goes with hang, capture-error or crash, not {e.verdict}")
    for name in ("first", "last", "bytes", "extent"):
        value = getattr(e, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name}: got {value!r}; allowed: an integer")
    if e.side not in (None, "overflow", "underflow"):
        raise ValueError(f"side: got {e.side!r}; allowed: overflow, underflow")
    if e.buffer is not None and (not isinstance(e.buffer, str) or not e.buffer):
        raise ValueError(f"buffer: got {e.buffer!r}; allowed: a buffer name")
    for a in e.also:
        if not isinstance(a, Expectation) or a.verdict not in _ACCESS:
            raise ValueError(f"also: got {a}; allowed: oob-write and oob-read expectations")
        if a.verdict.rank < e.verdict.rank:
            raise ValueError(f"also: {a.verdict} is stronger than {e.verdict}; allowed: the strongest first")
    if e.arg is not None and (not isinstance(e.arg, str) or not e.arg):
        raise ValueError(f"arg: got {e.arg!r}; allowed: a kernel parameter's name")
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
    allowed = {f.name for f in fields(Expectation)} - {"verdict", "also"}
    unknown = sorted(set(stated) - allowed)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field; allowed: {', '.join(sorted(allowed))}")
    return Expectation(of_verdict(value), **stated)  # type: ignore[arg-type]


def all_of(*expectations: Expectation) -> Expectation:
    """Several violations in one case, e.g. a read past one buffer and a write past another: each must match a
    violation of its own, and none may be left over. The verdict is the strongest of theirs."""
    if not expectations:
        raise ValueError("all_of: got nothing; allowed: one or more oob-write or oob-read expectations")
    first, *rest = sorted(expectations, key=lambda e: e.verdict.rank)
    return replace(first, also=(*first.also, *rest))


def clean() -> Expectation:
    """Every guard intact, every output right: what a fixed op must show."""
    return Expectation(Verdict.CLEAN)


def oob_write(buffer: str | None = None, *, side: Side | None = None, first: int | None = None,
              last: int | None = None, bytes: int | None = None, extent: int | None = None,  # noqa: A002
              arg: str | None = None) -> Expectation:
    """A write outside `buffer` (any buffer when None), with whatever of its figures are known."""
    return Expectation(Verdict.OOB_WRITE, buffer, side, first, last, bytes, extent, arg=arg)


def oob_read(buffer: str | None = None, *, side: Side | None = None, first: int | None = None,
             last: int | None = None, bytes: int | None = None, extent: int | None = None,  # noqa: A002
             arg: str | None = None) -> Expectation:
    """A read outside `buffer`: with figures, the lane checker's (interpreter); without, any oob-read, also one
    inferred from an output that NaN guards made wrong."""
    return Expectation(Verdict.OOB_READ, buffer, side, first, last, bytes, extent, arg=arg)


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


def hang(match: str | None = None) -> Expectation:
    """A run does not finish within its bound (its message, which names the phase, containing `match`)."""
    return Expectation(Verdict.HANG, match=match)


def use_after_free() -> Expectation:
    """A replay writes or reads memory the op released, which a stranger then held."""
    return Expectation(Verdict.USE_AFTER_FREE)


def replay_state() -> Expectation:
    """State carried from replay to replay: the same inputs give another output, or leave other bytes."""
    return Expectation(Verdict.REPLAY_STATE)


def stale_capture() -> Expectation:
    """A replay disagrees with eager on the same inputs while eager is right: a decision baked in at capture."""
    return Expectation(Verdict.STALE_CAPTURE)
