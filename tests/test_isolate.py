"""`graph-harness run --isolate`: a case in a child process, watched from outside. A hang the child's own bound
catches comes back as its result; one it cannot catch gets the child killed, and the result names the run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

# An op whose second call blocks SIGALRM and spins in host code: no alarm reaches it, only the parent can stop it.
DEAFOP = '''
import signal

import torch


def case():
    calls = []

    def op(inputs):
        calls.append(1)
        if len(calls) == 2:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            while True:
                pass
        return inputs["x"] * 2

    def inputs(size, seed):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return {"x": torch.randn(size, 16, generator=torch.Generator().manual_seed(seed)).to(device)}

    return op, inputs, lambda inputs, **_: inputs["x"].double() * 2
'''

# The split-K GEMM's semaphore zeroed once (aiter #4494): the second launch waits on it for ever.
SCENARIOS = '''\
graph-harness: scenarios
entry-zero:
  why: a split-K counter that must be zero when a launch starts, zeroed once or every call
  op: graph_harness.kernels.splitk_gemm:case
  capture_sizes: [1]
  seed: 3
  variants:
    spins:
      params: {semaphore: zeroed_once, arrival: wait}
      expect: hang
    gives-back:
      params: {semaphore: per_launch, arrival: wait}
      expect: clean
deaf:
  why: host code no alarm reaches
  op: deafop:case
  capture_sizes: [1]
  seed: 3
  variants:
    deaf:
      expect: hang
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "deafop.py").write_text(DEAFOP)
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "ops.yaml").write_text(SCENARIOS)
    return tmp_path


def _run(project: Path, variant: str, scenario: str = "entry-zero") -> tuple[int, dict[str, object]]:
    out = project / f"{variant}.json"
    child = subprocess.run([sys.executable, "-m", "graph_harness.cli", "run", scenario, "--variant", variant,
                            "--scenarios", str(project / "scenarios"), "--isolate", "--hang-after", "1",
                            "--json", str(out)], capture_output=True, text=True, check=False, cwd=project)
    (record,) = json.loads(out.read_text())
    return child.returncode, record


def test_a_hang_the_child_catches_is_its_result(project: Path) -> None:
    """The counter is left at the split count: the second launch waits on it. On CPU the child's alarm stops the
    interpreter; on a GPU the child finds the kernel still running by polling, says so and exits without waiting
    on it."""
    rc, record = _run(project, "spins")
    assert (rc, record["verdict"], record["passed"]) == (0, "hang", True)
    # the second call spins: eager run #2 on CPU, #1 on a GPU (the warm-up took the first call)
    error = str(record["error"])
    # on CPU the alarm stops the interpreter in the kernel; on a GPU the last kernel launched is named
    assert re.match(r"eager T=1 #[12], (in|after) _splitk_kernel (was launched )?did not finish within its bound of "
                    r"[0-9.]+ s", error), error


def test_a_hang_no_alarm_reaches_gets_the_child_killed(project: Path) -> None:
    rc, record = _run(project, "deaf", "deaf")
    assert (rc, record["verdict"], record["passed"], record["backend"]) == (0, "hang", True, "child process")
    error = str(record["error"])
    assert re.fullmatch(r"the child process was killed: eager T=1 #[12] had not finished [0-9.]+ s after it began "
                        r"\(its bound: [0-9.]+ s\)", error), error


def test_the_counter_given_back_is_clean_in_its_child(project: Path) -> None:
    rc, record = _run(project, "gives-back")
    assert (rc, record["verdict"], record["passed"]) == (0, "clean", True)
