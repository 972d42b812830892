"""The nights a team kept: detections, failures and replay time per nightly `--out` folder. Pure: frames in (as
`graph_harness.reports.frame` writes them), one row per night out; `plots.history_plot` draws it."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd  # type: ignore[import-untyped,unused-ignore]
from rich.table import Table

from graph_harness.reports.timing import GRAPH_BACKEND

HISTORY_HEADERS: tuple[str, ...] = ("night", "last case at", "cases", "failed", "detected", "median replay")
# The columns a night's frame must hold; every results.parquet/csv since the first wave has them.
NEEDED = ("timestamp", "verdict", "passed", "backend", "replay_us", "env_device")


def history_frame(nights: Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """One row per night, in the order given: its label, last timestamp, cases, failures, detections (cases whose
    verdict is not clean) and, per GPU device, the median replay time of its graph replays (CPU interpreter
    times are no kernel's time and are left out)."""
    rows = []
    for label, frame in nights:
        gpu = frame[(frame["backend"] == GRAPH_BACKEND) & frame["replay_us"].notna()]
        medians = gpu.groupby("env_device", sort=True)["replay_us"].median()
        rows.append({"night": label, "last": frame["timestamp"].max() if len(frame) else pd.NaT,
                     "cases": len(frame), "failed": int((~frame["passed"].astype(bool)).sum()),
                     "detected": int((frame["verdict"] != "clean").sum()),
                     "replay_us": {str(device): float(us) for device, us in medians.items()}})
    return pd.DataFrame(rows, columns=["night", "last", "cases", "failed", "detected", "replay_us"])


def history_rows(history: pd.DataFrame) -> list[tuple[str, ...]]:
    """The table's rows under HISTORY_HEADERS; a night with no GPU replay shows `- (cpu)` for its time."""
    rows: list[tuple[str, ...]] = []
    for night in history.itertuples(index=False):
        timed = "; ".join(f"{us:,.1f} us on {device}" for device, us in night.replay_us.items()) or "- (cpu)"
        stamp = "-" if pd.isna(night.last) else night.last.isoformat(timespec="seconds")
        rows.append((night.night, stamp, f"{night.cases:,}", f"{night.failed:,}", f"{night.detected:,}", timed))
    return rows


def history_table(history: pd.DataFrame) -> Table:
    """The nights as a rich table, oldest first, this run last."""
    table = Table(title="history: one row per night")
    for header in HISTORY_HEADERS:
        table.add_column(header, justify="right" if header in ("cases", "failed", "detected") else "left",
                         overflow="fold")
    for row in history_rows(history):
        table.add_row(*row)
    return table
