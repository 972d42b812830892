"""`graph-harness report`: the nightly job. Run the matrix (or read a run's JSON); write tables, plots and reports."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from graph_harness.cli.common import (
    EXIT_INTERRUPTED,
    Subparsers,
    add_selection,
    device_profile,
    print_failure,
    print_limits,
    run_with_progress,
    selection,
    write_whole,
)
from graph_harness.core.results import CaseResult
from graph_harness.errors import bad_value, display_path
from graph_harness.reports.baseline import (
    DEFAULT_LATENCY_THRESHOLD,
    compare,
    diff_headline,
    diff_table,
    job_failed,
    plural,
    summarize,
)
from graph_harness.reports.summary import headline
from graph_harness.suite.plan import Plan, make_plan

# pandas and matplotlib (0.3 s) load in the functions that use them, torch and triton (1 s) when a case runs:
# `--help` and a usage error must not wait for them.
if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

EXIT_FAILED = 1
RESULTS_PARQUET, RESULTS_CSV = "results.parquet", "results.csv"
# (caption, file name) of each figure; report.md links the files, report.html inlines the same bytes.
FIGURES = (("outcome against expectation per scenario x capture size, per variant; the text is the verdict",
            "verdicts.png"),
           ("replay latency against capture size: split-K (filled) against ksplit = 1 (hollow)", "latency.png"))
HISTORY_FIGURE = ("failed and detected cases, and the median GPU replay time, per night", "history.png")
_RUN_FLAGS = ("scenarios", "variants", "sizes", "seed", "replays", "guard_budget", "scenario_dir")
_FROM_BASELINE = "a folder written by graph-harness report --out (results.parquet or results.csv)"
_HISTORY = "report --out folders, or folders holding them (one per night)"


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value >= 0 and value != float("inf"):
        return value
    raise argparse.ArgumentTypeError(f"got {text!r}; allowed: percent >= 0")


def add_report(sub: Subparsers) -> None:
    """Register the `report` subcommand, with the selection flags of `run`."""
    parser = sub.add_parser("report", help="run every case (or read a run's JSON); write results, plots, reports")
    add_selection(parser)
    parser.add_argument("--out", type=Path, default=Path("report"), metavar="DIR",
                        help="folder for results.parquet/.csv, report.md, report.html (default: ./report)")
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="an earlier report's --out folder to compare to")
    parser.add_argument("--history", nargs="+", type=Path, metavar="DIR",
                        help="earlier --out folders, or a folder of them, one per night: failures, detections and "
                             "replay time per night, this run last")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="report on a `graph-harness run --json` file instead of running")
    parser.add_argument("--latency-threshold", type=_threshold, default=DEFAULT_LATENCY_THRESHOLD, metavar="PCT",
                        help=f"replay time growth over the baseline reported as a regression "
                             f"(default: {DEFAULT_LATENCY_THRESHOLD:g})")
    parser.set_defaults(command=_report)


def _write(path: Path, data: bytes | str) -> None:
    write_whole(path, data, "--out", "a writable folder")


def _write_results(out: Path, results: Sequence[CaseResult], stamps: Sequence[datetime]) -> None:
    from graph_harness.reports.frame import csv_text, parquet_bytes, results_frame

    frame = results_frame(results, stamps)
    _write(out / RESULTS_PARQUET, parquet_bytes(frame))
    _write(out / RESULTS_CSV, csv_text(frame))


def _results_file(directory: Path) -> Path | None:
    parquet, csv = directory / RESULTS_PARQUET, directory / RESULTS_CSV
    return parquet if parquet.is_file() else csv if csv.is_file() else None


def _read_frame(source: Path, flag: str, allowed: str) -> pd.DataFrame:
    from graph_harness.reports.frame import read_csv, read_parquet

    try:
        if source.suffix == ".parquet":
            return read_parquet(source.read_bytes())
        return read_csv(source.read_text("utf-8"))
    except (OSError, ValueError) as err:  # pandas' parser and empty-data errors are ValueErrors
        raise bad_value(flag, "", display_path(source), allowed, str(err)) from err


def _read_baseline(directory: Path) -> list[CaseResult]:
    shown = display_path(directory)
    if not directory.is_dir():
        raise bad_value("--baseline", "", shown, _FROM_BASELINE, "no such folder")
    source = _results_file(directory)
    if source is None:
        raise bad_value("--baseline", "", shown, _FROM_BASELINE, "it holds neither")
    from graph_harness.reports.frame import frame_results

    try:
        return frame_results(_read_frame(source, "--baseline", _FROM_BASELINE))
    except ValueError as err:
        raise bad_value("--baseline", "", display_path(source), _FROM_BASELINE, str(err)) from err


def _read_history(folders: Sequence[Path], out: Path) -> list[tuple[str, pd.DataFrame]]:
    """(label, frame) per night, oldest first: each folder is a night's --out, or holds such folders. The --out
    this report writes is left out: this run is the last night."""
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    from graph_harness.reports.history import NEEDED

    found: dict[Path, Path] = {}  # night folder -> its results file
    for folder in folders:
        if not folder.is_dir():
            raise bad_value("--history", "", display_path(folder), _HISTORY, "no such folder")
        nights = [folder] if _results_file(folder) else sorted(p for p in folder.iterdir() if p.is_dir())
        held = {night: source for night in nights if (source := _results_file(night)) is not None}
        if not held:
            raise bad_value("--history", "", display_path(folder), _HISTORY,
                            f"neither it nor a folder in it holds {RESULTS_PARQUET} or {RESULTS_CSV}")
        found.update({night: source for night, source in held.items() if night.resolve() != out.resolve()})
    names = [night.name for night in found]
    read = []
    for night, source in found.items():
        frame = _read_frame(source, "--history", _HISTORY)
        missing = [c for c in NEEDED if c not in frame.columns]
        if missing:
            raise bad_value("--history", "", display_path(source), _HISTORY, f"missing columns {', '.join(missing)}")
        read.append((night.name if names.count(night.name) == 1 else display_path(night), frame))
    never = pd.Timestamp.min.tz_localize("UTC")  # a night with no rows sorts first
    return sorted(read, key=lambda night: night[1]["timestamp"].max() if len(night[1]) else never)


def _read_json(path: Path) -> tuple[list[CaseResult], datetime]:
    """The results of a `run --json` file, and when it was last written (its cases' timestamp)."""
    shown, allowed = display_path(path), "a non-empty JSON list written by graph-harness run --json"
    try:
        data = json.loads(path.read_text("utf-8"))
        written = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError as err:
        raise bad_value("--from-json", "", shown, allowed, err.strerror or str(err)) from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise bad_value("--from-json", "", shown, allowed, f"invalid JSON: {err}") from err
    if not isinstance(data, list) or not data:
        raise bad_value("--from-json", "", shown, allowed, f"it holds {'[]' if data == [] else type(data).__name__}")
    results = []
    for index, record in enumerate(data):
        try:
            results.append(CaseResult.from_record(record))
        except ValueError as err:
            raise bad_value("--from-json", "", shown, allowed, f"record {index + 1}: {err}") from err
    return results, written


def _prepare(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise bad_value("--out", "", display_path(out), "a folder that exists or can be made",
                        err.strerror or str(err)) from err


def _run_matrix(args: argparse.Namespace, plan: Plan, results: list[CaseResult], stamps: list[datetime]) -> None:
    """Run every planned scenario-policy group, rewriting the results after each; appends as it goes."""
    chosen = selection(args)
    _prepare(args.out)
    _write_results(args.out, [], [])  # a stale run's rows never pass for this one's, and a bad --out fails now
    for group in run_with_progress(plan, chosen):
        results.extend(group)
        stamps.extend([datetime.now(timezone.utc)] * len(group))
        _write_results(args.out, results, stamps)


def _report(args: argparse.Namespace, console: Console) -> int:
    """Run or read the results; write results, figures and reports; exit 1 on a new failure or lost detection."""
    if args.from_json is not None:
        given = [f for f in _RUN_FLAGS if getattr(args, f) not in (None, [])]
        if given:
            raise bad_value("--from-json", "", f"{display_path(args.from_json)} with {', '.join(given)}",
                            "--from-json with --out, --baseline, --history and --latency-threshold only")
    if args.baseline is not None and args.baseline.resolve() == args.out.resolve():
        raise bad_value("--baseline", "", display_path(args.baseline),
                        "an earlier report's folder, not the --out this report overwrites")
    baseline = _read_baseline(args.baseline) if args.baseline is not None else None
    nights = _read_history(args.history, args.out) if args.history else None  # bad folders fail before the run
    # Bad ids and flags fail here, before anything is written or the report stack loads.
    plan = make_plan(selection(args), device_profile) if args.from_json is None else None
    # The report stack (pandas, matplotlib: 0.3 s) loads once the flags are known good, and before the run, so
    # that a Ctrl-C in its import never loses a finished run.
    from graph_harness.reports.frame import results_frame
    from graph_harness.reports.history import history_frame, history_rows, history_table
    from graph_harness.reports.html import report_html
    from graph_harness.reports.markdown import report_markdown
    from graph_harness.reports.plots import history_plot, latency_plot, verdict_heatmap

    results: list[CaseResult] = []
    stamps: list[datetime] = []
    interrupted = False
    if args.from_json is not None:
        read, written = _read_json(args.from_json)
        _prepare(args.out)
        results, stamps = read, [written] * len(read)
        _write_results(args.out, results, stamps)
    elif plan is not None:
        try:
            _run_matrix(args, plan, results, stamps)
        except KeyboardInterrupt:
            interrupted = True
            _prepare(args.out)  # Ctrl-C while planning: the (empty) report still goes where it was asked
    summary = summarize(results, plan.total if plan is not None else None, interrupted)
    diff = compare(results, baseline, args.latency_threshold) if baseline is not None else None
    generated = datetime.now(timezone.utc)
    figures = [(*FIGURES[0], verdict_heatmap(results)), (*FIGURES[1], latency_plot(results))]
    history = None
    if nights is not None:
        history = history_frame([*nights, (f"{args.out.name} (this run)", results_frame(results, stamps))])
        figures.append((*HISTORY_FIGURE, history_plot(history)))
    for _, name, png in figures:
        _write(args.out / name, png)
    nightly = history_rows(history) if history is not None else ()
    _write(args.out / "report.md", report_markdown(results, summary, diff, generated, history=nightly,
                                                   images=[(caption, name) for caption, name, _ in figures]))
    _write(args.out / "report.html", report_html(results, summary, diff, generated, history=nightly,
                                                 images=[(caption, png) for caption, _, png in figures]))
    if history is not None:
        console.print(history_table(history))
    if diff is not None:
        if diff.new_failures or diff.fixed or diff.latency_regressions:
            console.print(diff_table(diff))
        console.print(diff_headline(diff), markup=False, highlight=False)
    for r in summary.failures:
        print_failure(console, r)
    print_limits(console, results)
    console.print(headline(summary, diff), markup=False, highlight=False)
    console.print(f"wrote {display_path(args.out / 'report.html')}", markup=False, highlight=False)
    if interrupted:
        console.print(f"interrupted: the report holds the {plural(len(results), 'case')} that finished"
                      + (f" of {plan.total:,} planned" if plan is not None else ""), markup=False)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if job_failed(summary, diff) else 0

