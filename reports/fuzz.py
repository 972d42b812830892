"""A fuzz run in lines of text: what it did, what it checked and what it found. Pure: nothing prints here."""

from __future__ import annotations

from graph_harness.core.expect import describe
from graph_harness.core.fuzz import FuzzRun


def rate_text(replays: int, seconds: float) -> str:
    """`2,431 checked replays/s`, with digits enough for a slow CPU run (`0.215 checked replays/s`)."""
    if not replays or seconds <= 0:
        return "no replay checked"
    rate = replays / seconds
    return f"{rate:,.0f} checked replays/s" if rate >= 100 else f"{rate:.3g} checked replays/s"


def fuzz_lines(run: FuzzRun) -> list[str]:
    """The run's summary, its checks and limits, and its finding with what the eager step rerun named."""
    sizes = ",".join(map(str, run.sizes))
    lines = [f"fuzz {run.name} {run.variant} T={sizes} on {run.env.device}, {run.backend}: {run.replays:,} replays "
             f"in {run.seconds:.1f} s, {rate_text(run.replays, run.seconds)}"]
    lines += [f"checked: {check}" for check in run.checks]
    lines += [f"limit: {limit}" for limit in run.limits]
    if run.interrupted:
        lines.append("interrupted: what was found so far is below" if run.finding else
                     "interrupted: nothing found so far")
    if run.error is not None:
        lines.append(f"ERROR {run.name} {run.variant} {run.error}")
    found = run.finding
    if found is None:
        if run.error is None and not run.interrupted:
            lines.append("clean: no replay accessed memory outside a buffer")
        return lines
    where = f"replay #{found.replay}" if found.replay else found.phase
    lines.append(f"FOUND {run.name} {run.variant} T={found.capture_size}: {where}, inputs of seed {found.seed}")
    lines += [f"  {describe(v)}" for v in found.violations]
    if found.replay:
        if found.stepped:
            lines.append(f"  the same inputs run eagerly in step mode: {', '.join(found.ops) or 'no kernel named'}")
            lines += [f"    {describe(v)}" + (f", by {v.op}" if v.op and v.arg is None else "") for v in found.stepped]
        else:
            lines.append("  the same inputs run eagerly in step mode found nothing: only the graph's replay of them "
                         "does")
    return lines
