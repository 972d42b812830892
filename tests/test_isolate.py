"""`graph-harness run --isolate`: a case in a child process, watched from outside. A hang the child's own bound
catches comes back as its result; one it cannot catch gets the child killed, and the result names the run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SPINOP = '''
import signal

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _entry_zero(x_ptr, out_ptr, flag_ptr, n, RESET: tl.constexpr, BLOCK: tl.constexpr):
    while tl.atomic_add(flag_ptr, 0) != 0:
        pass
    tl.atomic_add(flag_ptr, 1)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2, mask=mask)
    if RESET:
        tl.atomic_add(flag_ptr, -1)


def inputs(size, seed):
    return {"x": torch.randn(size, 16, generator=torch.Generator().manual_seed(seed)).to(DEVICE)}


def reference(inputs, **_):
    return inputs["x"].double() * 2


def case(reset=True, deaf=False):
    flag = []
    calls = []

    def op(inputs):
        x = inputs["x"]
        calls.append(1)
        if deaf and len(calls) == 2:  # host code that no alarm reaches: only the parent can stop it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            while True:
                pass
        if not flag:
            flag.append(torch.zeros(1, dtype=torch.int32, device=x.device))
        out = torch.empty_like(x)
        _entry_zero[(1,)](x, out, flag[0], x.numel(), RESET=reset, BLOCK=triton.next_power_of_2(x.numel()))
        return out

    return op, inputs, reference
'''

SCENARIOS = '''\
graph-harness: scenarios
entry-zero:
  why: a counter that must be zero when a launch starts, given back or not
  op: spinop:case
  capture_sizes: [1]
  seed: 3
  variants:
    spins:
      params: {reset: false}
      expect: hang
    gives-back:
      expect: clean
    deaf:
      params: {deaf: true}
      expect: hang
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "spinop.py").write_text(SPINOP)
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "ops.yaml").write_text(SCENARIOS)
    return tmp_path


def _run(project: Path, variant: str) -> tuple[int, dict[str, object]]:
    out = project / f"{variant}.json"
    child = subprocess.run([sys.executable, "-m", "graph_harness.cli", "run", "entry-zero", "--variant", variant,
                            "--scenarios", str(project / "scenarios"), "--isolate", "--hang-after", "1",
                            "--json", str(out)], capture_output=True, text=True, check=False, cwd=project)
    (record,) = json.loads(out.read_text())
    return child.returncode, record


def test_a_hang_the_child_catches_is_its_result(project: Path) -> None:
    """The counter is left at 1: the second launch spins. On CPU the child's alarm stops the interpreter; on a GPU
    the child finds the kernel still running by polling, says so and exits without waiting on it."""
    rc, record = _run(project, "spins")
    assert (rc, record["verdict"], record["passed"]) == (0, "hang", True)
    # the second call spins: eager run #2 on CPU, #1 on a GPU (the warm-up took the first call)
    error = str(record["error"])
    # on CPU the alarm stops the interpreter in the kernel; on a GPU the last kernel launched is named
    assert re.match(r"eager T=1 #[12], (in|after) _entry_zero (was launched )?did not finish within its bound of "
                    r"[0-9.]+ s", error), error


def test_a_hang_no_alarm_reaches_gets_the_child_killed(project: Path) -> None:
    rc, record = _run(project, "deaf")
    assert (rc, record["verdict"], record["passed"], record["backend"]) == (0, "hang", True, "child process")
    error = str(record["error"])
    assert re.fullmatch(r"the child process was killed: eager T=1 #[12] had not finished [0-9.]+ s after it began "
                        r"\(its bound: [0-9.]+ s\)", error), error


def test_the_counter_given_back_is_clean_in_its_child(project: Path) -> None:
    rc, record = _run(project, "gives-back")
    assert (rc, record["verdict"], record["passed"]) == (0, "clean", True)
