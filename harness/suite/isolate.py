"""A group of cases in a child process, watched from outside: `graph-harness run --isolate`, and every case the
ledger quarantines.

Inside, every run has its bound (graph_harness.core.capture): a hang of host code is stopped by an alarm, a
hang on the GPU is found by polling, and the child writes its results. What neither catches (a C call that never
returns, a kernel that keeps the child at exit) the parent does: the child writes the run in progress and its
bound to a file (`PROGRESS_ENV`), and a run that goes on past its bound and a grace gets the child killed and
its cases a `hang` result that names the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from graph_harness.core.capture import HANG_FLOOR_S, PROGRESS_ENV
from graph_harness.core.results import CaseResult, environment
from graph_harness.core.verdict import Verdict
from graph_harness.suite.plan import Group, Selection

CHILD_ENV = "GRAPH_HARNESS_QUARANTINED"  # set in the child: there the case runs in-process
_POLL_S = 0.2


def child_argv(group: Group, selection: Selection, json_path: Path) -> list[str]:
    """The `graph-harness run` command line that runs the group's cases and writes their records to `json_path`."""
    argv = [sys.executable, "-m", "graph_harness.cli", "run", group.scenario_id, "--variant", group.variant,
            "--sizes", *map(str, group.sizes), "--json", str(json_path)]
    if selection.seed is not None:
        argv += ["--seed", str(selection.seed)]
    if selection.replays is not None:
        argv += ["--replays", str(selection.replays)]
    if selection.guard_budget is not None:
        argv += ["--guard-budget", repr(selection.guard_budget / (1 << 30))]
    source = group.scenario.source
    if source is not None:
        argv += ["--scenarios", str(source.parent)]
    return argv


def run_isolated(group: Group, selection: Selection, floor: float) -> list[CaseResult]:
    """Run the group in a child process; its results, or for the sizes it did not finish, a `hang` result (the
    child was killed past a run's bound) or a `crash` one (it died)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, progress = Path(tmp) / "results.json", Path(tmp) / "progress"

        env = {**os.environ, CHILD_ENV: "1", PROGRESS_ENV: str(progress)}
        started = time.time()
        with subprocess.Popen(child_argv(group, selection, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env) as child:
            overdue = _watch(child, progress, started, floor)
            stderr = child.stderr.read() if child.stderr else ""
        records = json.loads(out.read_text()) if out.exists() and out.stat().st_size else []
    results = [CaseResult.from_record(r) for r in records]
    done = {r.capture_size for r in results}
    missing = [t for t in group.sizes if t not in done]
    if overdue is not None:
        what = f"the child process was killed: {overdue}"
        return results + _unfinished(group, selection, missing, Verdict.HANG, what)
    if missing:
        last = (stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1]
        return results + _unfinished(group, selection, missing, Verdict.CRASH,
                                     f"the child process exited {child.returncode} with no result: {last}")
    return results


def _watch(child: subprocess.Popen[str], progress: Path, started: float, floor: float) -> str | None:
    """Wait for the child; kill it when the run in progress is past its bound and a grace (as long again as the
    floor). None when it ended by itself, else what it was running."""
    while child.poll() is None:
        time.sleep(_POLL_S)
        # before its first run the child imports torch and triton: not a hang, however short the floor
        what, bound, since = _read(progress) or ("starting up", max(floor, HANG_FLOOR_S), started)
        if time.time() - since > bound + floor:
            child.kill()
            child.wait()
            return f"{what} had not finished {time.time() - since:.3g} s after it began (its bound: {bound:.3g} s)"
    return None


def _read(progress: Path) -> tuple[str, float, float] | None:
    try:
        what, bound, since = progress.read_text(encoding="utf-8").rstrip("\n").split("\t")
        return what, float(bound), float(since)
    except (OSError, ValueError):
        return None


def _unfinished(group: Group, selection: Selection, sizes: Sequence[int], verdict: Verdict,
                error: str) -> list[CaseResult]:
    """Results for the sizes a child process did not finish, judged against their scenario's expected verdict."""
    expected = group.scenario.expected(group.variant)
    seed = selection.seed if selection.seed is not None else group.scenario.seed
    passed = verdict is expected
    reason = (f"detected {verdict} as expected: {error}" if passed else f"expected {expected}, got {verdict}: {error}")
    return [CaseResult(scenario=group.scenario_id, variant=group.variant, capture_size=t, seed=seed,
                       backend="child process", verdict=verdict, expected=expected, expectation=str(expected),
                       passed=passed, reason=reason, violations=(), max_rel_err=None, tolerance=0.0, eager_us=None,
                       replay_us=None, error=error, notes=(), limits=("the case did not finish: only its verdict is "
                                                                      "known",),
                       params={}, repro=group.scenario.repro(group.scenario_id, group.variant, t, seed),
                       env=environment()) for t in sizes]
