"""graph-harness: guard every buffer an op allocates, run it eagerly, capture it in a CUDA graph, replay it, and
say exactly what it wrote or read outside its buffers.

    import graph_harness as gh

    results = gh.check(op, inputs, sizes=[1, 2, 4], reference=ref, constants={"w": w})
    results = gh.check(buggy_op, inputs, sizes=[1], expect=gh.expect.oob_write("ws", side="overflow", bytes=4))
    run = gh.fuzz(op, inputs, sizes=[1, 8], seconds=30)  # replays on fresh inputs until one writes out of bounds
    gh.write_results(results, "results.json")        # graph-harness report --from-json results.json

The public names live here; everything under graph_harness.* else is the harness's own. They load on first
use, so that the pytest plugin, which every pytest run in the environment loads, imports nothing heavy.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any


def _gpu_device_nodes() -> bool:
    """Whether this machine shows a GPU device at all (NVIDIA or AMD), without importing torch."""
    for variable in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        if os.environ.get(variable, None) in ("", "-1"):
            return False
    dev = Path("/dev")
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


# Triton decides at `@triton.jit` whether a kernel is interpreted. On a machine with no GPU device, kernels
# defined after graph_harness is imported run on CPU tensors under the interpreter, which is the only way
# they can run there. A value the user set is left alone.
if "TRITON_INTERPRET" not in os.environ and not _gpu_device_nodes():
    os.environ["TRITON_INTERPRET"] = "1"

_PUBLIC = {
    "check": "graph_harness.core.check",
    "expect": None,  # the module graph_harness.core.expect
    "Expectation": "graph_harness.core.expect",
    "CaseResult": "graph_harness.core.results",
    "Environment": "graph_harness.core.results",
    "Violation": "graph_harness.core.violation",
    "Verdict": "graph_harness.core.verdict",
    "UsageError": "graph_harness.core.guard",
    "OpSpec": "graph_harness.suite.op",
    "Piecewise": "graph_harness.core.check",
    "fuzz": "graph_harness.core.fuzz",
    "FuzzRun": "graph_harness.core.fuzz",
    "Finding": "graph_harness.core.fuzz",
    "write_results": "graph_harness.core.results",
    "read_results": "graph_harness.core.results",
}
__all__ = ["CaseResult", "Environment", "Expectation", "Finding", "FuzzRun", "OpSpec", "Piecewise", "UsageError",
           "Verdict", "Violation", "check", "expect", "fuzz", "read_results", "write_results"]

if TYPE_CHECKING:
    from graph_harness.core import expect
    from graph_harness.core.check import Piecewise, check
    from graph_harness.core.expect import Expectation
    from graph_harness.core.fuzz import Finding, FuzzRun, fuzz
    from graph_harness.core.guard import UsageError
    from graph_harness.core.results import CaseResult, Environment, read_results, write_results
    from graph_harness.core.verdict import Verdict
    from graph_harness.core.violation import Violation
    from graph_harness.suite.op import OpSpec


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'graph_harness' has no attribute {name!r}")
    module = import_module("graph_harness.core.expect") if name == "expect" else None
    value = module if module is not None else getattr(import_module(str(_PUBLIC[name])), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
