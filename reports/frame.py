"""Results as a tidy pandas DataFrame, one row per case with its environment and timestamp, and back."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

# No pandas-stubs or pyarrow stubs among the dev dependencies: both are Any here, and these ignores go quiet
# (unused-ignore) once stubs are installed.
import pandas as pd  # type: ignore[import-untyped,unused-ignore]
from pyarrow.lib import ArrowException  # type: ignore[import-untyped,unused-ignore]

from harness.results import CaseResult, Environment

ENV_COLUMNS: tuple[str, ...] = tuple(f"env_{f.name}" for f in fields(Environment))
# Columns of CaseResult properties, not fields (`outside_bytes`: the sum over violations), there for filtering:
# written from the property, neither required nor read back.
DERIVED: tuple[str, ...] = ("outside_bytes",)
# Column -> dtype: the timestamp, every CaseResult field but env, the DERIVED columns, and ENV_COLUMNS
# (tests/test_report.py checks that none is left out). Violations and notes are JSON text, so that a CSV row holds
# a whole case as a parquet row does.
COLUMNS: dict[str, str] = {
    "timestamp": "datetime64[us, UTC]", "scenario": "string", "policy": "string", "capture_size": "int64",
    "seed": "int64", "block_m": "int64", "splitk": "int64", "backend": "string", "verdict": "string",
    "expected": "string", "passed": "bool", "reason": "string", "max_rel_err": "float64", "tolerance": "float64",
    "eager_us": "float64", "replay_us": "float64", "predicted_overflow_bytes": "int64", "outside_bytes": "int64",
    "violations": "string", "error": "string", "notes": "string", **dict.fromkeys(ENV_COLUMNS, "string"),
}


def results_frame(results: Sequence[CaseResult], timestamps: Sequence[datetime]) -> pd.DataFrame:
    """One row per case, in order: its fields, violations and notes as JSON, its environment and timestamp."""
    if len(timestamps) != len(results):
        raise ValueError(f"{len(results)} results but {len(timestamps)} timestamps")
    rows: list[dict[str, Any]] = []
    for result, stamp in zip(results, timestamps, strict=True):
        record = result.record()
        env = record.pop("env")
        record["violations"] = json.dumps(record["violations"])
        record["notes"] = json.dumps(record["notes"])
        rows.append({"timestamp": stamp, **record, **{name: getattr(result, name) for name in DERIVED},
                     **{f"env_{k}": v for k, v in env.items()}})
    columns = {name: pd.Series([row[name] for row in rows], dtype=dtype) for name, dtype in COLUMNS.items()}
    return pd.DataFrame(columns)


def frame_results(frame: pd.DataFrame) -> list[CaseResult]:
    """The results a frame holds; ValueError names a missing column or the first bad row."""
    missing = [c for c in COLUMNS if c not in frame.columns and c not in DERIVED]
    if missing:
        raise ValueError(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    results = []
    for index, row in enumerate(frame.to_dict("records")):
        record = {k: _plain(row[k]) for k in COLUMNS if k != "timestamp" and k not in DERIVED}
        try:
            record["violations"] = json.loads(record["violations"] or "[]")
            record["notes"] = json.loads(record["notes"] or "[]")
            record["env"] = {c.removeprefix("env_"): record.pop(c) for c in ENV_COLUMNS}
            results.append(CaseResult.from_record(record))
        except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"row {index + 1}: {err}") from err
    return results


def _plain(value: Any) -> Any:
    """A cell as the JSON value it came from: NaN and NA as None, numpy scalars as Python ones."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as a parquet file."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()


def csv_text(frame: pd.DataFrame) -> str:
    """The frame as CSV with a header; timestamps in ISO 8601, missing values empty."""
    out = frame.copy()
    out["timestamp"] = out["timestamp"].map(lambda t: t.isoformat())
    return str(out.to_csv(index=False, lineterminator="\n"))


def read_parquet(data: bytes) -> pd.DataFrame:
    """A frame from parquet bytes written by `parquet_bytes`; ValueError when they are not parquet."""
    try:
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except ArrowException as err:  # ArrowInvalid is a ValueError, but ArrowIOError and others are not
        raise ValueError(f"not a parquet file: {err}") from err


def read_csv(text: str) -> pd.DataFrame:
    """A frame from CSV text written by `csv_text`, with the columns' dtypes restored."""
    # Every string column is read as written ("NA" is a reason, not a missing value); only empty cells are missing.
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""],
                        dtype={k: "string" for k, v in COLUMNS.items() if v == "string" or k == "timestamp"})
    if "timestamp" in frame.columns:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame
