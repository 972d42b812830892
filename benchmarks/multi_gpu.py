"""The scenario matrix under `pytest -n 1` and `-n N` on one host: wall time, devices, verdicts.

    python benchmarks/multi_gpu.py --workers 2 1 2 --out mg [-- PYTEST_ARGS ...]

Each run is `python -m pytest scenarios -n W --harness-json OUT/I-nW.json` plus PYTEST_ARGS, in the
order given. It prints, per run, the wall time and its speed-up over the first `-n 1` run, the
outcome counts and the device every worker used (from the plugin's `worker gwI: device cuda:J`
lines), then the cases whose verdict differs from that run's. Exit status 1 when a verdict
differs, a GPU served two workers of one run, or a run's pytest failed; the logs are kept in OUT.

Triton compiles each kernel specialisation once per machine and caches it on disk, so the first
run of a fresh machine pays every compile. `--workers 2 1 2` lets the first run warm the cache:
the `-n 1` and the last `-n 2` then compare the matrix alone, and the first row shows the cold cost.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# `worker gw0: device cuda:0; 208 cases, 61.2 s`: the device, the cases and their summed call time.
_WORKER_LINE = re.compile(r"^worker (gw\d+): device ([^;]+); (\d+) cases?, ([\d.]+) s$")
_OUTCOMES = re.compile(r"(\d+) (passed|failed|skipped|xfailed|xpassed|error|errors)\b")


def run(index: int, workers: int, out: Path, pytest_args: list[str]) -> dict[str, object]:
    results = out / f"{index}-n{workers}.json"
    argv = [sys.executable, "-m", "pytest", "scenarios", "-n", str(workers), "-p", "no:cacheprovider",
            "--harness-json", str(results), *pytest_args]
    start = time.perf_counter()
    child = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    (out / f"{index}-n{workers}.log").write_text(child.stdout + child.stderr)
    lines = child.stdout.splitlines()
    found = [m.groups() for m in map(_WORKER_LINE.match, lines) if m]
    devices = {w: device for w, device, _, _ in found}
    busy = {w: f"{cases} cases, {float(seconds):.0f} s" for w, _, cases, seconds in found}
    summary = next((line for line in reversed(lines) if _OUTCOMES.search(line)), "")
    verdicts = {(r["scenario"], r["variant"], r["capture_size"]): r["verdict"]
                for r in (json.loads(results.read_text()) if results.exists() else [])}
    return {"workers": workers, "wall_s": wall, "rc": child.returncode, "devices": devices, "busy": busy,
            "outcomes": dict((kind, int(n)) for n, kind in _OUTCOMES.findall(summary)), "verdicts": verdicts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("multi_gpu"))
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    runs = [run(i, w, args.out, args.pytest_args) for i, w in enumerate(args.workers, 1)]
    baseline = next((r for r in runs if r["workers"] == 1), runs[0])
    base = baseline["wall_s"]
    failed = False
    print(f"| run | workers | wall s | speed-up over -n {baseline['workers']} | outcomes | worker: device (cases, "
          "time in them) |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(runs, 1):
        devices = r["devices"]
        shared = [d for d, n in Counter(devices.values()).items() if n > 1 and d.startswith("cuda")]
        failed |= bool(shared) or r["rc"] != 0
        outcomes = ", ".join(f"{n} {kind}" for kind, n in r["outcomes"].items())
        mapping = ", ".join(f"{w}: {d} ({r['busy'][w]})" for w, d in sorted(devices.items()))
        print(f"| {i} | {r['workers']} | {r['wall_s']:.1f} | {base / r['wall_s']:.2f}x | {outcomes} (rc {r['rc']}) | "
              f"{mapping}{' (shared: ' + ', '.join(shared) + ')' if shared else ''} |")
    first = baseline["verdicts"]
    for i, r in enumerate(runs, 1):
        if r is baseline:
            continue
        differ = sorted(k for k in first.keys() | r["verdicts"].keys() if first.get(k) != r["verdicts"].get(k))
        failed |= bool(differ)
        print(f"\n{len(first)} cases at -n {baseline['workers']}, {len(r['verdicts'])} in run {i} (-n {r['workers']}); "
              f"verdicts that differ: {len(differ)}")
        for key in differ:
            print(f"  {key}: {first.get(key)} vs {r['verdicts'].get(key)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
