"""Frozen results of harness runs: one `CaseResult` per (scenario, policy, capture size, seed)."""

from __future__ import annotations

import functools
import math
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.guard import Violation
from harness.scenario import Verdict

# Verdicts by precedence: a case that both overruns and mismatches is an oob-write.
VERDICTS: tuple[Verdict, ...] = ("capture-error", "crash", "oob-write", "oob-read", "uninit-read", "mismatch",
                                 "clean")


@dataclass(frozen=True)
class Environment:
    """Where a result was measured."""

    device: str
    driver: str
    torch: str
    triton: str
    python: str
    commit: str


@dataclass(frozen=True)
class CaseResult:
    """What the harness found for one case, and whether that is what the scenario expects."""

    scenario: str
    policy: str
    capture_size: int
    seed: int
    block_m: int
    splitk: int  # the split aiter picks (or the scenario forces) at this size; 0 or 1: no split
    backend: str  # "cuda-graph", or "reexec" on CPU (see harness.capture)
    verdict: Verdict
    expected: Verdict
    passed: bool
    reason: str  # one line: why the case passed or failed
    violations: tuple[Violation, ...]
    max_rel_err: float | None  # worst relative L2 error of any eager run or replay against the reference
    tolerance: float
    eager_us: float | None
    replay_us: float | None
    predicted_overflow_bytes: int
    error: str | None  # the CUDA or Python message of a capture-error or crash
    notes: tuple[str, ...]  # what was not fully guarded, attribution runs, and the like
    env: Environment

    @property
    def worst(self) -> Violation | None:
        """The violation reaching farthest from its buffer, if any."""
        return self.violations[0] if self.violations else None

    @property
    def outside_bytes(self) -> int:
        """Bytes written outside all buffers, summed over violations."""
        return sum(v.bytes for v in self.violations)

    def record(self) -> dict[str, Any]:
        """The JSON object of this result (graph-harness run --json); a non-finite error is null."""
        record = asdict(self)
        if self.max_rel_err is not None and not math.isfinite(self.max_rel_err):
            record["max_rel_err"] = None
        record["violations"] = [
            {k: getattr(v, k) for k in ("buffer", "site", "side", "first_offset", "last_offset", "bytes", "rows",
                                        "buffer_bytes", "op", "phases")}
            for v in self.violations]
        record["notes"] = list(self.notes)
        return record


@functools.cache
def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


@functools.cache
def environment() -> Environment:
    """This process's device, driver, versions and commit."""
    import torch
    import triton

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
        driver = f"cuda {torch.version.cuda}"
        try:
            from cuda.bindings import runtime

            _, version = runtime.cudaDriverGetVersion()
            driver = f"driver {version // 1000}.{version % 1000 // 10}, {driver}"
        except ImportError:
            pass
    else:
        device, driver = f"cpu ({platform.machine()}, triton interpreter)", "none"
    return Environment(device, driver, torch.__version__, triton.__version__, platform.python_version(), _commit())
