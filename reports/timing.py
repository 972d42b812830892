"""Which replay times mean anything, and how to print them.

A GPU case's replay time is a CUDA graph's, in microseconds. A CPU case's is the Triton interpreter running the
same kernels in Python, seconds to minutes, and it tells nothing about the kernel: it is shown in seconds, and
never compared. Two times compare only when both are graph replays on devices of the same name: an H100's
against an H200's is a different machine, not a regression.
"""

from __future__ import annotations

from graph_harness.core.results import CaseResult

GRAPH_BACKEND = "cuda-graph"  # the backend whose replays are GPU graph replays (graph_harness.core.capture)


def on_gpu(result: CaseResult) -> bool:
    """Whether the case's replay time is a GPU graph replay's."""
    return result.backend == GRAPH_BACKEND and result.replay_us is not None


def comparable(before: CaseResult, after: CaseResult) -> bool:
    """Whether two runs' replay times may be compared: both GPU graph replays, on devices of one name."""
    return on_gpu(before) and on_gpu(after) and before.env.device == after.env.device


def fmt_replay(result: CaseResult) -> str:
    """`37.2 us` on a GPU, `22.3 s (cpu)` under the interpreter; `-` when the case was not replayed."""
    if result.replay_us is None:
        return "-"
    if on_gpu(result):
        us = result.replay_us
        return f"{us:,.1f} us" if us < 1000 else f"{us:,.0f} us"
    seconds = result.replay_us / 1e6
    if seconds >= 1:
        return f"{seconds:,.0f} s (cpu)" if seconds >= 100 else f"{seconds:.1f} s (cpu)"
    return f"{seconds * 1e3:.1f} ms (cpu)"
