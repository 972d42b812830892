"""Frozen results, one `CaseResult` per (scenario, variant, capture size, seed), and their one schema.

The dataclasses below are the schema. The JSON record (`record`, `from_record`), the JSON Schema
(`result_schema`) and the columns of the report's DataFrame (`COLUMNS`) are all derived from their
fields, so a field added here reaches every format without a second list to keep in step.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from graph_harness.core.verdict import Verdict
from graph_harness.core.violation import Violation

Param = int | float | str | bool


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
    """What the harness found for one case, and whether that is what its expectation asked for."""

    scenario: str  # the scenario id, or the name of an op checked through the API or the fixture
    variant: str  # the scenario's policy or variant ("default" for an op checked with one)
    capture_size: int
    seed: int
    backend: str  # "cuda-graph", or "reexec" on CPU (see graph_harness.core.capture)
    verdict: Verdict
    expected: Verdict
    expectation: str  # the expectation in full: "oob-write buffer=ws side=overflow first=0 last=3 bytes=4"
    passed: bool
    reason: str  # one line: why the case passed or failed
    violations: tuple[Violation, ...]
    max_rel_err: float | None  # worst relative L2 error of any eager run or replay against the reference
    tolerance: float
    eager_us: float | None
    replay_us: float | None
    error: str | None  # the CUDA or Python message of a capture-error or crash
    notes: tuple[str, ...]  # attribution runs, views, and the like
    limits: tuple[str, ...]  # what this case could not check: its verdict holds only within these
    params: dict[str, Param]  # what else determines the case (MoE: block_m, splitk, predicted_overflow_bytes)
    repro: str | None  # the one command that reruns the case
    env: Environment
    # Kernel arguments outside guarded memory and outside the inputs and constants, as `kernel(param): N B`:
    # memory the op did not allocate in the call (a cache, a tensor made before the harness started) or a
    # torch op's result. Without the lane checker an overrun of it is not seen, and `limits` says so.
    unguarded: tuple[str, ...] = ()
    # Buffers the op allocated and still pointed at after it returned (a cached workspace): they keep their
    # arenas and guards across calls and replays, checked like any other.
    persistent: tuple[str, ...] = ()
    # Bytes of every guarded buffer of the case (the op's allocations, its inputs and constants) by name, the
    # largest where a name recurs: a clean result has no violation to say how big the buffer a bug is about was.
    buffers: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def worst(self) -> Violation | None:
        """The violation reaching farthest from its buffer, if any."""
        return self.violations[0] if self.violations else None

    @property
    def outside_bytes(self) -> int:
        """Bytes written outside all buffers, summed over violations."""
        return sum(v.bytes for v in self.violations)

    @property
    def checked_fully(self) -> bool:
        """Whether nothing limited what the harness could check (see `limits`)."""
        return not self.limits

    def record(self) -> dict[str, Any]:
        """The JSON object of this result (`graph-harness run --json`); a non-finite error is null."""
        record: dict[str, Any] = _ADAPTER.dump_python(self, mode="json")
        if self.max_rel_err is not None and not math.isfinite(self.max_rel_err):
            record["max_rel_err"] = None
        return record

    @classmethod
    def from_record(cls, record: object) -> CaseResult:
        """The result a `record()` object describes; ValueError names the missing or mistyped field."""
        if not isinstance(record, Mapping):
            raise ValueError(f"got {type(record).__name__}; allowed: an object")
        try:
            return _ADAPTER.validate_json(json.dumps(record, allow_nan=False), strict=True)
        except ValidationError as err:
            raise _field_error(err) from None
        except (TypeError, ValueError) as err:  # not JSON to begin with: a NaN, an object json cannot write
            raise ValueError(f"not a JSON record: {err}") from None


_ADAPTER: TypeAdapter[CaseResult] = TypeAdapter(CaseResult)


def write_results(results: Sequence[CaseResult], path: str | Path) -> None:
    """Write results as the JSON list `graph-harness run --json` writes, for `graph-harness report --from-json`.
    Written whole to a temporary file and moved into place, so that an interrupted write leaves the old file."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps([r.record() for r in results], indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(partial, target)


def read_results(path: str | Path) -> list[CaseResult]:
    """The results of a JSON list written by `write_results`, `run --json` or `--harness-json`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: got {type(data).__name__}; allowed: a JSON list of result records")
    results = []
    for index, record in enumerate(data):
        try:
            results.append(CaseResult.from_record(record))
        except ValueError as err:
            raise ValueError(f"{path}: record {index + 1}: {err}") from None
    return results


def result_schema() -> dict[str, Any]:
    """The JSON Schema of one result record."""
    return _ADAPTER.json_schema(mode="serialization")


# -- errors in words: `violations[0].side: got 'left'; allowed: underflow, overflow` ------------------

_ALLOWED = {"int_type": "an integer", "int_parsing": "an integer", "bool_type": "true or false",
            "string_type": "a string", "float_type": "a number", "list_type": "a list", "tuple_type": "a list",
            "dict_type": "an object", "dataclass_type": "an object", "model_type": "an object",
            "union_tag_invalid": "an integer, number, string or boolean"}


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith(("int", "float", "str", "bool", "function")):  # union branch names
            text += f".{part}" if text else part
    return text


def _field_error(err: ValidationError) -> ValueError:
    errors = err.errors()
    missing = [_path(e["loc"]) for e in errors if e["type"] == "missing"]
    if missing:
        return ValueError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    first = errors[0]
    return ValueError(f"{_path(first['loc'])}: got {first['input']!r}; allowed: {_allowed(first)}")


def _allowed(error: ErrorDetails) -> str:
    if error["type"] in ("enum", "literal_error"):
        expected = str(error.get("ctx", {}).get("expected", ""))
        return ", ".join(part.strip("'") for part in expected.replace(" or ", ", ").split(", "))
    return _ALLOWED.get(error["type"], error["msg"])


# -- the DataFrame's columns, from the same fields ------------------------------------------------------

def _column_dtype(hint: Any) -> str:
    """The pandas dtype of a field: scalars as themselves (nullable where None is allowed), the rest JSON text."""
    args = get_args(hint)
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if optional:
        (hint,) = (a for a in args if a is not type(None))
    if hint is bool:
        return "boolean" if optional else "bool"
    if hint is int:
        return "Int64" if optional else "int64"
    if hint is float:
        return "float64"
    if hint is str or (isinstance(hint, type) and issubclass(hint, str)):
        return "string"
    return "json"  # tuples, dicts, nested records: JSON text in a string column, so a CSV row holds a whole case


def _columns() -> tuple[dict[str, str], frozenset[str]]:
    hints = typing.get_type_hints(CaseResult)
    columns: dict[str, str] = {}
    for f in dataclasses.fields(CaseResult):
        if f.name == "env":
            columns.update({f"env_{e.name}": "string" for e in dataclasses.fields(Environment)})
        else:
            columns[f.name] = _column_dtype(hints[f.name])
    json_columns = frozenset(name for name, dtype in columns.items() if dtype == "json")
    return {name: "string" if dtype == "json" else dtype for name, dtype in columns.items()}, json_columns


# Field name (env flattened to env_*) -> pandas dtype, in field order; and the fields kept as JSON text.
COLUMNS, JSON_COLUMNS = _columns()


# -- where a result was measured ------------------------------------------------------------------------

@functools.cache
def _commit() -> str:
    root = Path(__file__).resolve().parent.parent.parent
    if not (root / ".git").exists():  # an installed wheel: no checkout to name, so its version
        try:
            return f"graph-harness {importlib.metadata.version('graph-harness')}"
        except importlib.metadata.PackageNotFoundError:
            return "unknown"
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

    if torch.cuda.is_available() and torch.version.hip is not None:  # ROCm: torch.cuda is HIP
        device, driver = torch.cuda.get_device_name(), f"hip {torch.version.hip}"
    elif torch.cuda.is_available():
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
