"""Frozen results of harness runs: one `CaseResult` per (scenario, policy, capture size, seed)."""

from __future__ import annotations

import functools
import math
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, cast, get_args

from harness.guard import Side, Violation
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

    @classmethod
    def from_record(cls, record: object) -> Environment:
        """The environment of a record's `env` object; ValueError names a missing or mistyped field."""
        obj = _mapping(record, "env")
        return cls(*(_str(obj, f.name, "env.") for f in fields(cls)))


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

    @classmethod
    def from_record(cls, record: object) -> CaseResult:
        """The result a `record()` object describes; ValueError names a missing or mistyped field."""
        obj = _mapping(record, "record")
        # Kept though each reader below names a missing field too: this names every missing one at once, so a
        # truncated or hand-edited record is mended in one pass; the readers still catch those of env and violations.
        missing = [f.name for f in fields(cls) if f.name not in obj]
        if missing:
            raise ValueError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        violations = _get(obj, "violations")
        if not isinstance(violations, list | tuple):
            raise ValueError(f"violations: got {type(violations).__name__}; allowed: a list of objects")
        return cls(
            scenario=_str(obj, "scenario"), policy=_str(obj, "policy"), capture_size=_int(obj, "capture_size"),
            seed=_int(obj, "seed"), block_m=_int(obj, "block_m"), splitk=_int(obj, "splitk"),
            backend=_str(obj, "backend"), verdict=_verdict(obj, "verdict"), expected=_verdict(obj, "expected"),
            passed=_bool(obj, "passed"), reason=_str(obj, "reason"),
            violations=tuple(_violation(v, f"violations[{i}].") for i, v in enumerate(violations)),
            max_rel_err=_opt_float(obj, "max_rel_err"), tolerance=_float(obj, "tolerance"),
            eager_us=_opt_float(obj, "eager_us"), replay_us=_opt_float(obj, "replay_us"),
            predicted_overflow_bytes=_int(obj, "predicted_overflow_bytes"), error=_opt_str(obj, "error"),
            notes=_str_list(obj, "notes"), env=Environment.from_record(_get(obj, "env")))


def run_command(scenario: str, policy: str, size: int, seed: int) -> str:
    """The one command that reruns a case."""
    return f"graph-harness run {scenario} --policy {policy} --sizes {size} --seed {seed}"


def repro_command(result: CaseResult) -> str:
    """The one command that reruns this result's case."""
    return run_command(result.scenario, result.policy, result.capture_size, result.seed)


# Readers of one field of a JSON object (a `record()` read back): each checks the type it needs, so a
# hand-edited or truncated file names its bad field instead of failing later in a plot. Lists may be tuples,
# as in a `record()` not yet through JSON.
def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{where}: got {type(value).__name__}; allowed: an object")
    return cast(Mapping[str, Any], value)


def _get(obj: Mapping[str, Any], name: str, prefix: str = "") -> Any:
    if name not in obj:
        raise ValueError(f"missing field {prefix}{name}")
    return obj[name]


def _wrong(name: str, prefix: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"{prefix}{name}: got {value!r}; allowed: {allowed}")


def _str(obj: Mapping[str, Any], name: str, prefix: str = "") -> str:
    value = _get(obj, name, prefix)
    if not isinstance(value, str):
        raise _wrong(name, prefix, value, "a string")
    return value


def _opt_str(obj: Mapping[str, Any], name: str, prefix: str = "") -> str | None:
    return None if _get(obj, name, prefix) is None else _str(obj, name, prefix)


def _str_list(obj: Mapping[str, Any], name: str, prefix: str = "") -> tuple[str, ...]:
    value = _get(obj, name, prefix)
    if not isinstance(value, list | tuple):
        raise ValueError(f"{prefix}{name}: allowed: a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _wrong(f"{name}[{i}]", prefix, item, "a string")
    return tuple(value)


def _int(obj: Mapping[str, Any], name: str, prefix: str = "") -> int:
    value = _get(obj, name, prefix)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(name, prefix, value, "an integer")
    return value


def _opt_int(obj: Mapping[str, Any], name: str, prefix: str = "") -> int | None:
    return None if _get(obj, name, prefix) is None else _int(obj, name, prefix)


def _bool(obj: Mapping[str, Any], name: str, prefix: str = "") -> bool:
    value = _get(obj, name, prefix)
    if not isinstance(value, bool):
        raise _wrong(name, prefix, value, "true or false")
    return value


def _float(obj: Mapping[str, Any], name: str, prefix: str = "") -> float:
    value = _get(obj, name, prefix)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(name, prefix, value, "a number")
    return float(value)


def _opt_float(obj: Mapping[str, Any], name: str, prefix: str = "") -> float | None:
    return None if _get(obj, name, prefix) is None else _float(obj, name, prefix)


def _verdict(obj: Mapping[str, Any], name: str, prefix: str = "") -> Verdict:
    value = _str(obj, name, prefix)
    if value not in VERDICTS:
        raise _wrong(name, prefix, value, ", ".join(VERDICTS))
    return value


def _violation(record: object, prefix: str) -> Violation:
    obj = _mapping(record, prefix.rstrip("."))
    side = _str(obj, "side", prefix)
    if side not in get_args(Side):
        raise _wrong("side", prefix, side, ", ".join(get_args(Side)))
    return Violation(
        buffer=_str(obj, "buffer", prefix), site=_str(obj, "site", prefix), side=cast(Side, side),
        first_offset=_int(obj, "first_offset", prefix), last_offset=_int(obj, "last_offset", prefix),
        bytes=_int(obj, "bytes", prefix), rows=_opt_int(obj, "rows", prefix),
        buffer_bytes=_int(obj, "buffer_bytes", prefix), op=_opt_str(obj, "op", prefix),
        phases=_str_list(obj, "phases", prefix))


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
