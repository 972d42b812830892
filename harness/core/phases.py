"""Wall time per phase of the protocol, summed over every case a process runs: what benchmarks/bench_matrix.py
prints. A phase entered inside another is its own, not its parent's (a guard check inside a replay counts as
`guards`), so the phases add up to the time the cases took.

    with phases.timed("capture"):
        ...
    phases.totals()  # {"capture": (seconds, times entered), ...}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# In the order a case goes through them.
PHASES = ("weights", "inputs", "reference", "warm-up", "eager", "capture", "audit", "replay", "guards", "results")

_seconds: dict[str, float] = {}
# Set by `attribute_device_time`: each phase waits for the device at its start and its end, so that the device
# work it queued is its own time, not that of the next phase to wait (the runs overlap no more: a slower total).
_sync: Callable[[], None] | None = None
_entered: dict[str, int] = {}
_stack: list[list[float]] = []  # per open phase: [its start, the time its inner phases took]
_first: list[float] = []  # when a phase was first entered: the end of a process's startup


@contextmanager
def timed(name: str) -> Iterator[None]:
    if _sync is not None:
        _sync()
    start = time.perf_counter()
    if not _first:
        _first.append(start)
    frame = [start, 0.0]
    _stack.append(frame)
    try:
        yield
    finally:
        if _sync is not None:
            _sync()
        _stack.pop()
        took = time.perf_counter() - start
        _seconds[name] = _seconds.get(name, 0.0) + took - frame[1]
        _entered[name] = _entered.get(name, 0) + 1
        if _stack:
            _stack[-1][1] += took


def totals() -> dict[str, tuple[float, int]]:
    """Seconds spent in each phase (its inner phases excluded) and how often it was entered, since `reset`."""
    return {name: (_seconds[name], _entered[name]) for name in _seconds}


def first_entered() -> float | None:
    """`time.perf_counter()` when the first phase began, since `reset`."""
    return _first[0] if _first else None


def reset() -> None:
    _seconds.clear()
    _entered.clear()
    _first.clear()


def attribute_device_time(wait: Callable[[], None]) -> None:
    """From now on every phase calls `wait` (the device's synchronize) when it starts and when it ends."""
    global _sync
    _sync = wait
