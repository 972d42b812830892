"""Where a matrix run's time goes, per phase of the protocol, summed over its cases and per case.

    python benchmarks/bench_matrix.py [SCENARIO ...] [graph-harness run's options: --policy P --sizes T ...]
    python benchmarks/bench_matrix.py --pytest [pytest arguments: scenarios/qwen3.yaml -k tp8 ...]
    python benchmarks/bench_matrix.py --sync ...  (either form, each phase's GPU work counted as its own)

Runs `graph-harness run` in this process on the scenarios given (default: qwen3-30b-tp8 and
deepseek-v3-tp8-decode with --policy pr2551, the profile of issue 18), its tables silenced, and prints each
phase's seconds (a phase inside another counts as its own: `guards` is every arm and check, wherever it ran),
per case, how often it was entered and its share of the wall time. `startup` is the imports and the loading of
the scenario files before the first case; `other` is what no phase covers (printing, the CLI's own work). On a
GPU and on CPU alike; the figures go into benchmarks/NOTES.md. With `--pytest` it runs pytest in this process
instead, one worker, the way `pytest scenarios -n 1` runs the matrix: one case an item, each in a slab of its own.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import contextlib  # noqa: E402  (the clock starts before the imports: they are part of what is measured)
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

DEFAULT = ["qwen3-30b-tp8", "deepseek-v3-tp8-decode", "--policy", "pr2551"]


def main(argv: list[str]) -> int:
    from graph_harness.cli import main as cli
    from graph_harness.core import phases

    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    args = argv or DEFAULT
    if args[0] == "--sync":  # each phase waits for the GPU at its ends: its device work is its own
        import torch

        if torch.cuda.is_available():
            phases.attribute_device_time(torch.cuda.synchronize)
        args = args[1:] or DEFAULT
    under_pytest = args[0] == "--pytest"
    if under_pytest:
        args = args[1:]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "results.json"
        with contextlib.redirect_stdout(io.StringIO()):
            if under_pytest:
                import pytest

                code = int(pytest.main([*args, "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "--harness-json",
                                        str(out)]))
            else:
                code = cli(["run", *args, "--json", str(out)])
        wall = time.perf_counter() - START
        if code not in (0, 1):  # 1: a case failed its expectation, which is measured all the same
            print(f"{'pytest' if under_pytest else 'graph-harness run'} {' '.join(args)}: exit {code}",
                  file=sys.stderr)
            return code
        if not out.exists():  # the command ran no case (its own help, say): nothing to break down
            print(f"{'pytest' if under_pytest else 'graph-harness run'} {' '.join(args)}: no case ran", file=sys.stderr)
            return 2
        cases = len(json.loads(out.read_text()))
    totals = phases.totals()
    first = phases.first_entered()
    rows = [("startup", (first if first is not None else time.perf_counter()) - START, 1)]
    rows += [(name, *totals[name]) for name in phases.PHASES if name in totals]
    rows += [(name, *value) for name, value in totals.items() if name not in phases.PHASES]
    rows.append(("other", wall - sum(seconds for _, seconds, _ in rows), 1))
    print(f"{'pytest' if under_pytest else 'graph-harness run'} {' '.join(args)}: {cases} cases, {wall:.1f} s wall")
    print(f"{'phase':12} {'total s':>9} {'per case ms':>12} {'entered':>8} {'share':>6}")
    for name, seconds, entered in rows:
        print(f"{name:12} {seconds:9.2f} {1e3 * seconds / max(cases, 1):12.1f} {entered:8d} "
              f"{100 * seconds / wall:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
