"""Results as a tidy pandas DataFrame, one row per case with its environment and timestamp, and back."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

# No pandas-stubs or pyarrow stubs among the dev dependencies: both are Any here, and these ignores go quiet
# (unused-ignore) once stubs are installed.
import pandas as pd  # type: ignore[import-untyped,unused-ignore]
from pyarrow.lib import ArrowException  # type: ignore[import-untyped,unused-ignore]

from graph_harness.core.results import COLUMNS as FIELD_COLUMNS
from graph_harness.core.results import JSON_COLUMNS, CaseResult

# Columns of CaseResult properties, not fields (`outside_bytes`: the sum over violations), there for filtering:
# written from the property, neither required nor read back.
DERIVED: dict[str, str] = {"outside_bytes": "int64"}
# Column -> dtype: the timestamp, then every CaseResult field (env flattened to env_*; lists and mappings as
# JSON text, so that a CSV row holds a whole case as a parquet row does), from the one schema in
# graph_harness.core.results, then the DERIVED columns.
COLUMNS: dict[str, str] = {"timestamp": "datetime64[us, UTC]", **FIELD_COLUMNS, **DERIVED}


def results_frame(results: Sequence[CaseResult], timestamps: Sequence[datetime]) -> pd.DataFrame:
    """One row per case, in order: its fields, its environment and timestamp."""
    if len(timestamps) != len(results):
        raise ValueError(f"{len(results)} results but {len(timestamps)} timestamps")
    rows: list[dict[str, Any]] = []
    for result, stamp in zip(results, timestamps, strict=True):
        record = result.record()
        env = record.pop("env")
        for name in JSON_COLUMNS:
            record[name] = json.dumps(record[name])
        rows.append({"timestamp": stamp, **record, **{f"env_{k}": v for k, v in env.items()},
                     **{name: getattr(result, name) for name in DERIVED}})
    columns = {name: pd.Series([row[name] for row in rows], dtype=dtype) for name, dtype in COLUMNS.items()}
    return pd.DataFrame(columns)


def frame_results(frame: pd.DataFrame) -> list[CaseResult]:
    """The results a frame holds; ValueError names a missing column or the first bad row."""
    missing = [c for c in FIELD_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    results = []
    for index, row in enumerate(frame.to_dict("records")):
        record = {k: _plain(row[k]) for k in FIELD_COLUMNS}
        try:
            for name in JSON_COLUMNS:
                record[name] = json.loads(record[name]) if record[name] is not None else None
            record["env"] = {c.removeprefix("env_"): record.pop(c) for c in FIELD_COLUMNS if c.startswith("env_")}
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
