"""What the per-launch write set and the check of the slab no buffer holds cost: the same groups run with both
and without, in one process (the second way warm from the first, so run with --rounds 2 and read the last).

    python benchmarks/bench_write_set.py [--scenarios deepseek-v3-tp8-decode deepseek-v3-ep-decode] [--rounds 2]

Prints each scenario's wall time both ways, the snapshots taken and the bytes they held, and whether every
verdict is the same both ways. Meant for a GPU, where the write set runs; on CPU it runs with
GRAPH_HARNESS_LANES=0 (the lane checker off), which is what the write set stands in for.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

os.environ.setdefault("GRAPH_HARNESS_LANES", "0")

import graph_harness.core.capture as capture  # noqa: E402
from graph_harness.core.guard import Guards  # noqa: E402
from graph_harness.schema import Profile  # noqa: E402
from graph_harness.suite.plan import Selection, make_plan, run_group  # noqa: E402

DEFAULT = ("deepseek-v3-tp8-decode", "deepseek-v3-ep-decode", "qwen3-235b-tp8-bs1")
_taken = {"snapshots": 0, "bytes": 0}


@contextmanager
def _without() -> Iterator[None]:
    """The protocol with neither the write set nor the free slab's fill and check."""
    saved = capture._write_sets, Guards.check_free, Guards._fill_free
    capture._write_sets = lambda guards, stepped: nullcontext()  # type: ignore[assignment]
    Guards.check_free = lambda self: None  # type: ignore[method-assign]
    Guards._fill_free = lambda self, ranges: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        capture._write_sets, Guards.check_free, Guards._fill_free = saved  # type: ignore[method-assign]


def _counted() -> None:
    snapshot = Guards.snapshot

    def counted(self: Guards) -> bool:
        taken = snapshot(self)
        _taken["snapshots"] += taken
        _taken["bytes"] += 4 * sum(hi - lo for lo, hi, _ in self._watched_words()) if taken else 0
        return taken

    Guards.snapshot = counted  # type: ignore[method-assign]


def _run(scenario: str, profile: Profile) -> tuple[float, list[tuple[str, int, str]]]:
    selection = Selection(scenarios=(scenario,))
    start = time.perf_counter()
    verdicts = []
    for group in make_plan(selection, profile).groups:
        verdicts += [(r.variant, r.capture_size, str(r.verdict)) for r in run_group(group, selection)]
    return time.perf_counter() - start, verdicts


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(DEFAULT))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    profile: Profile = "gpu" if torch.cuda.is_available() else "cpu"
    _counted()
    print(f"{'scenario':28} {'without s':>10} {'with s':>8} {'ratio':>6} {'snapshots':>9} {'GiB':>7} same")
    for scenario in args.scenarios:
        for _ in range(args.rounds):
            with _without():
                off, off_verdicts = _run(scenario, profile)
            _taken.update(snapshots=0, bytes=0)
            on, on_verdicts = _run(scenario, profile)
        print(f"{scenario:28} {off:10.2f} {on:8.2f} {on / off:6.2f}x {_taken['snapshots']:9} "
              f"{_taken['bytes'] / 2**30:7.2f} {'yes' if on_verdicts == off_verdicts else 'NO'}")
        for (variant, size, a), (_, _, b) in zip(off_verdicts, on_verdicts, strict=True):
            if a != b:
                print(f"  {variant} T={size}: {a} without, {b} with")


if __name__ == "__main__":
    main()
