"""What the lane checker costs on CPU: the same cases with it on and off (GRAPH_HARNESS_LANES=0), each in a
fresh process so that neither run warms the other.

    python benchmarks/bench_lanes.py [--scenarios deepseek-v3-tp8-decode aiter-2551-padding ...] [--rounds 1]

Prints each scenario's wall time both ways and the ratio, and the lanes the checker saw. CPU only (the
checker runs under the Triton interpreter).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from statistics import median

DEFAULT = ("deepseek-v3-tp8-decode", "aiter-2551-padding", "stage2-padding-nan", "qwen3-235b-tp8-bs1")


def _seconds(scenario: str, lanes: bool) -> float:
    env = {**os.environ, "GRAPH_HARNESS_LANES": "1" if lanes else "0", "TRITON_INTERPRET": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "graph_harness.cli", "run", scenario], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode not in (0, 1):  # 1: a case failed its expectation, which the off run may
        raise SystemExit(f"{scenario}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(DEFAULT))
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    total = {True: 0.0, False: 0.0}
    print(f"{'scenario':32} {'off s':>8} {'on s':>8} {'ratio':>6}")
    for scenario in args.scenarios:
        seconds = {lanes: median(_seconds(scenario, lanes) for _ in range(args.rounds)) for lanes in (False, True)}
        for lanes, s in seconds.items():
            total[lanes] += s
        print(f"{scenario:32} {seconds[False]:8.1f} {seconds[True]:8.1f} {seconds[True] / seconds[False]:6.2f}x")
    print(f"{'all':32} {total[False]:8.1f} {total[True]:8.1f} {total[True] / total[False]:6.2f}x")


if __name__ == "__main__":
    main()
