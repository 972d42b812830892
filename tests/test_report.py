"""graph-harness report: records back to results, the tidy frame, the baseline diff, figures, Markdown, HTML, CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import struct
import subprocess
from datetime import datetime, timedelta, timezone
from html import escape
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from rich.console import Console

from graph_harness.cli import main
from graph_harness.core.guard import GuardBudgetError, Violation
from graph_harness.core.results import CaseResult, Environment
from graph_harness.core.verdict import Verdict
from graph_harness.reports.baseline import compare, diff_headline, diff_table, outcome, summarize
from graph_harness.reports.frame import (
    COLUMNS,
    DERIVED,
    csv_text,
    frame_results,
    parquet_bytes,
    read_csv,
    read_parquet,
    results_frame,
)
from graph_harness.reports.html import report_html
from graph_harness.reports.markdown import report_markdown
from graph_harness.reports.plots import latency_figure, latency_plot, verdict_heatmap
from graph_harness.reports.summary import diagnosis_rows
from graph_harness.reports.tables import run_table
from graph_harness.reports.timing import fmt_replay

ENV = Environment(device="cpu (x86_64, triton interpreter)", driver="none", torch="2.13.0", triton="3.5.0",
                  python="3.11.7", commit="c93abc6f00aa")
H200 = dataclasses.replace(ENV, device="NVIDIA H200", driver="driver 13.0, cuda 13.0")
STAMP = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
OVERRUN = Violation(buffer="tmp_out", site="kernels/fused_moe.py:88 in fused_moe_2stages", side="overflow",
                    first_offset=0, last_offset=1_966_079, bytes=1_966_080, rows=120, buffer_bytes=131_072,
                    op="moe_stage1", phases=("eager", "replay"))


def case(scenario: str = "dsv3", variant: str = "original", size: int = 1, *, verdict: str = "oob-write",
         expected: str = "oob-write", passed: bool = True, replay_us: float | None = 100.0, splitk: int = 2,
         reason: str = "expected oob-write found", limits: tuple[str, ...] = (), gpu: Environment | None = None,
         ) -> CaseResult:
    """A hand-made result; a buggy variant's violation is the founding 16x overrun. On CPU (the interpreter)
    unless `gpu` names the GPU environment its graph replays ran in."""
    return CaseResult(
        scenario=scenario, variant=variant, capture_size=size, seed=3, backend="cuda-graph" if gpu else "reexec",
        verdict=Verdict(verdict),
        expected=Verdict(expected), expectation=expected, passed=passed, reason=reason,
        violations=(OVERRUN,) if verdict == "oob-write" else (), max_rel_err=2.5e-3, tolerance=3e-2,
        eager_us=None if replay_us is None else replay_us * 2, replay_us=replay_us, error=None,
        notes=("tmp_out: attribution",) if verdict == "oob-write" else (), limits=limits,
        params={"block_m": 16, "splitk": splitk,
                "predicted_overflow_bytes": 1_966_080 if expected == "oob-write" else 0},
        repro=f"graph-harness run {scenario} --variant {variant} --sizes {size} --seed 3", env=gpu or ENV)


def matrix() -> list[CaseResult]:
    """Two scenarios x two policies x T=1,2,4,8 on CPU (interpreter replays of 10 to 81 s): splitk 4/2 at T=1/2,
    none above; one failure (b original T=8)."""
    results = []
    for scenario in ("a", "b"):
        for policy, expect in (("original", "oob-write"), ("pr2551", "clean")):
            for size, splitk in ((1, 4), (2, 2), (4, 1), (8, 1)):
                missed = scenario == "b" and policy == "original" and size == 8
                results.append(case(scenario, policy, size, verdict="clean" if missed else expect, expected=expect,
                                    passed=not missed, splitk=splitk,
                                    replay_us=1e6 * (10.0 * size + (policy == "pr2551")),
                                    reason="expected oob-write, found clean" if missed else "as expected"))
    return results


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("graph-harness: error: ")
    return lines[0]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR, the first chunk
    return width, height


def _write_json(path: Path, results: list[CaseResult]) -> Path:
    path.write_text(json.dumps([r.record() for r in results]), encoding="utf-8")
    return path


# Records back to results


def test_from_record_inverts_record() -> None:
    results = [*matrix(), dataclasses.replace(case(replay_us=None), error="invalid argument", max_rel_err=None)]
    assert [CaseResult.from_record(json.loads(json.dumps(r.record()))) for r in results] == results


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.pop("verdict"), "missing field verdict"),
    (lambda r: r.update(verdict="bogus"), "verdict: got 'bogus'; allowed: hang, capture-error, crash, oob-write"),
    (lambda r: r.update(capture_size="1"), "capture_size: got '1'; allowed: an integer"),
    (lambda r: r.update(passed=1), "passed: got 1; allowed: true or false"),
    (lambda r: r["env"].pop("commit"), "missing field env.commit"),
    (lambda r: r["violations"][0].update(side="left"), "violations[0].side: got 'left'; allowed: underflow, overflow"),
    (lambda r: r.update(notes="x"), "notes: got 'x'; allowed: a list"),
    (lambda r: r.update(params={"splitk": [2]}), "params.splitk: got [2]; allowed: "),
])
def test_from_record_names_the_bad_field(edit, message: str) -> None:
    record = case().record()
    edit(record)
    with pytest.raises(ValueError, match=re.escape(message)):
        CaseResult.from_record(record)


def test_from_record_names_the_bad_item_of_a_string_list() -> None:
    record = case().record()
    record["violations"][0]["phases"] = ["eager", 3]
    with pytest.raises(ValueError, match=re.escape("violations[0].phases[1]: got 3; allowed: a string")):
        CaseResult.from_record(record)
    record = case().record()
    record["notes"] = [None]
    with pytest.raises(ValueError, match=re.escape("notes[0]: got None; allowed: a string")):
        CaseResult.from_record(record)


# The tidy frame


def test_frame_is_one_row_per_case_with_environment_and_timestamp() -> None:
    results = matrix()
    frame = results_frame(results, [STAMP] * len(results))
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 16
    row = frame.iloc[0]
    assert (row["scenario"], row["variant"], row["capture_size"], json.loads(row["params"])["splitk"],
            row["verdict"]) == ("a", "original", 1, 4, "oob-write")
    assert (row["outside_bytes"], row["env_device"], row["env_commit"]) == (1_966_080, ENV.device, ENV.commit)
    assert row["timestamp"] == pd.Timestamp("2025-03-04T05:06:07Z")
    assert json.loads(row["violations"])[0]["bytes"] == 1_966_080
    assert frame["passed"].sum() == 15


def test_frame_columns_are_every_result_field() -> None:
    # A CaseResult field added without a column would be dropped by the frame, and fail to read back.
    result_fields = {f.name for f in dataclasses.fields(CaseResult)} - {"env"}
    env_columns = {f"env_{f.name}" for f in dataclasses.fields(Environment)}
    assert set(COLUMNS) == {"timestamp", *result_fields, *DERIVED, *env_columns}
    assert all(isinstance(getattr(CaseResult, name), property) for name in DERIVED)


def test_frame_round_trips_through_parquet_and_csv() -> None:
    results = [*matrix(), dataclasses.replace(case(replay_us=None), error="invalid argument", max_rel_err=None,
                                              reason="NA, with a comma")]
    frame = results_frame(results, [STAMP] * len(results))
    assert frame_results(read_parquet(parquet_bytes(frame))) == results
    text = csv_text(frame)
    assert text.splitlines()[1].startswith("2025-03-04T05:06:07+00:00,a,original,1,3,reexec,oob-write,oob-write,")
    back = read_csv(text)
    assert frame_results(back) == results
    assert back["timestamp"].iloc[0] == pd.Timestamp("2025-03-04T05:06:07Z")


def test_frame_results_names_a_missing_column() -> None:
    frame = results_frame([case()], [STAMP]).drop(columns=["verdict", "env_commit"])
    with pytest.raises(ValueError, match="^missing columns verdict, env_commit$"):
        frame_results(frame)


# Against a baseline


def test_compare_sorts_changes_by_kind() -> None:
    before = [
        case("s", "original", 1),  # detected before, missed now: a detection regression (and a new failure)
        case("s", "pr2551", 1, verdict="clean", expected="clean"),  # clean before, mismatch now: a new failure
        case("s", "original", 2, verdict="clean", passed=False),  # missed before, found now: fixed
        case("s", "original", 4, replay_us=100.0, gpu=H200),  # 12% slower now
        case("s", "original", 8, replay_us=100.0, gpu=H200),  # 8% slower now: under the 10% threshold
        case("s", "original", 16),  # not run now
    ]
    now = [
        case("s", "original", 1, verdict="clean", passed=False),
        case("s", "pr2551", 1, verdict="mismatch", expected="clean", passed=False),
        case("s", "original", 2),
        case("s", "original", 4, replay_us=112.0, splitk=1, gpu=H200),
        case("s", "original", 8, replay_us=108.0, gpu=H200),
        case("t", "original", 1, verdict="clean", passed=False),  # absent before, fails now: a new failure
    ]
    diff = compare(now, before, threshold_pct=10)
    assert [(c.scenario, c.variant, c.capture_size, c.before, c.after) for c in diff.new_failures] == [
        ("s", "original", 1, "oob-write", "clean"), ("s", "pr2551", 1, "clean", "mismatch"),
        ("t", "original", 1, None, "clean")]
    assert [(c.variant, c.capture_size) for c in diff.detection_regressions] == [("original", 1)]
    assert [(c.variant, c.capture_size, c.before_passed, c.after_passed) for c in diff.fixed] == [
        ("original", 2, False, True)]
    (slower,) = diff.latency_regressions
    assert (slower.capture_size, slower.before_us, slower.after_us, slower.percent) == (4, 100.0, 112.0,
                                                                                        pytest.approx(12.0))
    assert (diff.compared, diff.added, diff.dropped, diff.failing, diff.timed) == (5, 1, 1, True, 2)
    assert compare(now, before, threshold_pct=5).latency_regressions[1].capture_size == 8
    assert not compare(before[3:5], before[3:5]).failing


GOLDEN_DIFF = """\
                            changes against the baseline
┏━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┓
┃ change               ┃ scenario ┃ variant  ┃ T ┃ baseline     ┃ now               ┃
┡━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━┩
│ detection regression │ s        │ original │ 1 │ oob-write ok │ clean FAIL        │
│ new failure          │ s        │ pr2551   │ 1 │ clean ok     │ mismatch FAIL     │
│ fixed                │ s        │ original │ 2 │ clean FAIL   │ oob-write ok      │
│ latency (splitk 2)   │ s        │ original │ 4 │ 100.0 us     │ 125.0 us (+25.0%) │
└──────────────────────┴──────────┴──────────┴───┴──────────────┴───────────────────┘
"""


def test_diff_table_golden() -> None:
    before = [case("s", "pr2551", 1, verdict="clean", expected="clean"), case("s", "original", 1),
              case("s", "original", 2, verdict="clean", passed=False), case("s", "original", 4, gpu=H200)]
    now = [case("s", "pr2551", 1, verdict="mismatch", expected="clean", passed=False),
           case("s", "original", 1, verdict="clean", passed=False), case("s", "original", 2),
           case("s", "original", 4, replay_us=125.0, gpu=H200)]
    console = Console(width=120, color_system=None, force_terminal=False, record=True, file=io.StringIO())
    diff = compare(now, before)
    console.print(diff_table(diff))
    text = "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())
    assert text == GOLDEN_DIFF
    assert diff_headline(diff) == ("FAIL: 2 new failures (1 detection regression), 1 fixed, 1 replay latency "
                                   "regression over 10% (1 timed on the same GPU both runs); 4 cases compared, 0 "
                                   "new, 0 not run")


def test_cpu_times_and_times_on_another_gpu_are_never_compared() -> None:
    h100 = dataclasses.replace(H200, device="NVIDIA H100 80GB HBM3")
    before = [case("s", "original", 1, replay_us=22_340_571.5), case("s", "original", 2, replay_us=30.0, gpu=h100),
              case("s", "original", 4, replay_us=30.0, gpu=H200)]
    now = [case("s", "original", 1, replay_us=52_340_571.5), case("s", "original", 2, replay_us=90.0, gpu=H200),
           case("s", "original", 4, replay_us=30.0)]  # +134% on CPU; 3x from H100 to H200; a GPU time, then CPU
    diff = compare(now, before)
    assert (diff.latency_regressions, diff.timed) == ((), 0)
    assert diff_headline(diff) == ("ok: 0 new failures (0 detection regressions), 0 fixed, replay latency not "
                                   "compared (no case ran on the same GPU both runs); 3 cases compared, 0 new, "
                                   "0 not run")


@pytest.mark.parametrize(("replay_us", "gpu", "shown"), [
    (22_340_571.5, None, "22.3 s (cpu)"), (312_000_000.0, None, "312 s (cpu)"), (41_500.0, None, "41.5 ms (cpu)"),
    (37.25, H200, "37.2 us"), (1_234.5, H200, "1,234 us"), (None, None, "-")])
def test_replay_times_print_in_the_unit_of_where_they_ran(replay_us: float | None, gpu: Environment | None,
                                                          shown: str) -> None:
    assert fmt_replay(case(replay_us=replay_us, gpu=gpu)) == shown


def test_the_terminal_table_prints_cpu_replays_in_seconds() -> None:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(run_table([case(size=1, replay_us=22_340_571.5), case(size=2, replay_us=37.25, gpu=H200)]))
    rows = [line for line in console.export_text().splitlines() if "original" in line]
    assert [row.split("│")[-2].strip() for row in rows] == ["22.3 s (cpu)", "37.2 us"]


# Figures, Markdown and HTML


def test_figures_are_pngs_sized_by_the_matrix() -> None:
    # 2 policies x 2 scenarios x 4 sizes at 100 dpi: (3.2 + 0.55 x 4) in wide, 2 x (0.9 + 0.32 x 2) + 0.9 in tall.
    assert _png_size(verdict_heatmap(matrix())) == (540, 398)
    # Two scenario panels of 4.2 x 3.0 in, plus 0.5 in and 0.2 in per legend row (one).
    assert _png_size(latency_plot(matrix())) == (840, 370)
    assert _png_size(latency_plot([case(replay_us=None)])) == (600, 150)  # "no replay timings"
    assert verdict_heatmap(matrix()) == verdict_heatmap(matrix())  # no date in the file


def _pixels(png: bytes, colour: str) -> int:
    """How many pixels of a PNG are exactly `colour` (#rrggbb)."""
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    want = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return int(((image[..., :3] * 255).round().astype(int) == want).all(axis=-1).sum())


def test_the_heatmap_colours_outcome_not_verdict() -> None:
    """An expected detection is the passed colour; a missed one the darkest cell; no cell is a verdict's colour."""
    missed = matrix()  # b original T=8 came out clean: a detection regression
    held = [dataclasses.replace(r, verdict=r.expected, passed=True) for r in missed]
    cell = 55 * 32  # one cell at 100 dpi: 0.55 in x 0.32 in, less its box and axes lines
    regression, passed = "#7f0000", "#b7e1a1"
    assert _pixels(verdict_heatmap(missed), regression) - _pixels(verdict_heatmap(held), regression) > cell // 2
    assert _pixels(verdict_heatmap(held), passed) > 15 * cell // 2  # all 16 cells, the 8 oob-write ones too
    assert _pixels(verdict_heatmap(missed), Verdict.OOB_WRITE.colour) == 0
    assert [outcome(r) for r in (missed[11], missed[0], dataclasses.replace(missed[4], verdict=Verdict.OOB_WRITE,
                                                                          passed=False))] == [
        "detection regression", "passed", "failed"]


def test_latency_figure_ticks_sizes_as_integers_with_no_offset_and_its_legend_inside() -> None:
    long = "ksplit1-fused-with-a-long-variant-name"
    results = [dataclasses.replace(r, variant=v) for v in ("original", "pr2551", long) for r in matrix()[:4]]
    figure = latency_figure(results)  # one CPU panel: 22 s replays in seconds, not 2.2e7 us
    assert figure is not None
    figure.canvas.draw()
    (ax,) = [a for a in figure.axes if a.get_title(loc="left")]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert ax.get_ylabel() == "replay s (CPU interpreter, not kernel time)"
    assert max(line.get_ydata().max() for line in ax.get_lines()) == 80.0  # seconds
    (legend,) = figure.legends
    box, page = legend.get_window_extent(), figure.bbox
    assert min(box.x0 - page.x0, box.y0 - page.y0, page.x1 - box.x1, page.y1 - box.y1) >= 0  # none clipped
    gpu = [dataclasses.replace(r, backend="cuda-graph", env=H200, replay_us=30.0 + r.capture_size) for r in results]
    shown = latency_figure(results + gpu)  # GPU replays, in us; CPU times left out of a run that has them
    assert shown is not None
    assert max(line.get_ydata().max() for a in shown.axes for line in a.get_lines() if len(line.get_ydata())) == 38


def test_the_diagnosis_names_op_site_bytes_range_and_error() -> None:
    crash = dataclasses.replace(case("s", "pr2551", 2, verdict="crash", expected="clean", passed=False),
                                error="RuntimeError: CUDA error: an illegal memory access was encountered")
    results = [case("s", "original", 1), crash, matrix()[11], case("s", "pr2551", 1, verdict="clean",
                                                                   expected="clean")]
    site = "kernels/fused_moe.py:88 in fused_moe_2stages"
    assert diagnosis_rows(results) == [
        ("s original T=1", "passed", "oob-write (expected oob-write)", "moe_stage1", "tmp_out", site, "131,072",
         "2,097,152", "131,072 .. 2,097,151 (write past the end)", "-"),
        ("s pr2551 T=2", "failed", "crash (expected clean)", "-", "-", "-", "-", "-", "-",
         "RuntimeError: CUDA error: an illegal memory access was encountered"),
        ("b original T=8", "detection regression", "clean (expected oob-write)", "-", "-", "-", "-", "-", "-",
         "expected oob-write, found clean"),
    ]
    md = report_markdown(results, summarize(results), None, STAMP)
    assert md.index("## Failures") < md.index("## Diagnosis") < md.index("## Results")
    assert (f"| s original T=1 | passed | oob-write (expected oob-write) | moe_stage1 | tmp_out | {site} | 131,072 | "
            "2,097,152 | 131,072 .. 2,097,151 (write past the end) | - |") in md
    html = report_html(results, summarize(results), None, STAMP)
    assert ('<td class="detection-regression">detection regression</td><td>clean (expected oob-write)</td>'
            in html)
    assert "<td>RuntimeError: CUDA error: an illegal memory access was encountered</td>" in html


def test_the_diagnosis_counts_what_it_does_not_list() -> None:
    many = tuple(dataclasses.replace(OVERRUN, buffer=f"b{i}", bytes=4, last_offset=3) for i in range(6))
    (r,) = [dataclasses.replace(case(), violations=many)]
    rows = diagnosis_rows([r])
    assert [row[4] for row in rows] == ["b0", "b1", "b2", "b3", "and 2 more violations: b4, b5"]
    assert rows[0][7:9] == ("131,076", "131,072 .. 131,075 (write past the end)")


def test_markdown_summary_comes_first() -> None:
    results = matrix()
    md = report_markdown(results, summarize(results), None, STAMP, images=[("verdicts", "verdicts.png")])
    head = md.split("\n## Failures")[0]
    assert head == (
        "# graph-harness report\n\n"
        "**FAIL: 1 of 16 cases failed its scenario's expectation; no baseline**\n\n"
        "## Summary\n\n"
        "- generated: 2025-03-04T05:06:07+00:00\n"
        "- cases: 16: 15 passed, 1 failed\n"
        "- verdicts: oob-write 7, clean 9\n"
        "- scenarios: 2: a, b\n"
        "- variants: original, pr2551\n"
        f"- environment: {ENV.device}; none; torch 2.13.0; triton 3.5.0; python 3.11.7; commit c93abc6f00aa\n"
        "- baseline: none given\n")
    assert ("- b original T=8: clean (expected oob-write): expected oob-write, found clean; repro: "
            "`graph-harness run b --variant original --sizes 8 --seed 3`") in md
    assert "![verdicts](verdicts.png)" in md
    assert "| original | 8 | 1 | clean | oob-write | FAIL | - | - | 2.5e-03 | 80.0 s (cpu) |" in md
    assert "| original | 1 | 4 | oob-write | oob-write | ok | tmp_out | 1,966,080 | 2.5e-03 | 10.0 s (cpu) |" in md


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium for this test")
    return found


def test_html_report_renders_its_summary_and_images_in_chromium(tmp_path: Path) -> None:
    results = matrix()
    before = [dataclasses.replace(r, passed=True, verdict=r.expected) for r in results]
    diff = compare(results, before)
    images = [("verdicts", verdict_heatmap(results)), ("latency", latency_plot(results))]
    page = report_html(results, summarize(results), diff, STAMP, images=images)
    assert "src=\"data:image/png;base64," in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # self-contained: nothing to fetch
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r'<body[^>]* data-images-rendered="2"', dom), dom[:2000]
    body = dom[dom.index("<body"):]
    assert body.index('<section id="summary">') < body.index('<section id="baseline">') < body.index(
        '<section id="figures">')
    assert ("FAIL: 1 of 16 cases failed its scenario's expectation; against the baseline 1 new failure, "
            "1 detection regression") in dom
    assert "<dt>cases</dt><dd>16: 15 passed, 1 failed</dd>" in dom


# The command


def test_report_from_json_writes_results_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = [r for r in matrix() if r.passed]
    out = tmp_path / "nightly"
    assert main(["report", "--from-json", str(_write_json(tmp_path / "r.json", results)), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["latency.png", "report.html", "report.md", "results.csv",
                                                     "results.parquet", "verdicts.png"]
    assert frame_results(read_parquet((out / "results.parquet").read_bytes())) == results
    assert frame_results(read_csv((out / "results.csv").read_text())) == results
    assert "**PASS: 0 of 15 cases failed its scenario's expectation; no baseline**" in (out / "report.md").read_text()
    assert "PASS: 0 of 15 cases failed" in capsys.readouterr().out


def test_report_against_a_baseline_fails_on_a_detection_regression(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [dataclasses.replace(r, passed=True, verdict=r.expected) for r in matrix()]
    assert main(["report", "--from-json", str(_write_json(tmp_path / "good.json", good)),
                 "--out", str(tmp_path / "base")]) == 0
    capsys.readouterr()
    (tmp_path / "base" / "results.parquet").unlink()  # the CSV alone is a baseline too
    argv = ["report", "--from-json", str(_write_json(tmp_path / "now.json", matrix())), "--out",
            str(tmp_path / "now"), "--baseline", str(tmp_path / "base")]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert re.search(r"│ detection regression │ b +│ original │ 8 │ oob-write ok +│ clean FAIL +│", printed)
    assert "repro: graph-harness run b --variant original --sizes 8 --seed 3" in printed
    assert "1 new failure (1 detection regression), 0 fixed" in printed
    assert "1 detection regression" in (tmp_path / "now" / "report.html").read_text()


def test_report_latency_regression_is_reported_but_does_not_fail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [case("s", "original", 1, replay_us=100.0, gpu=H200)]
    assert main(["report", "--from-json", str(_write_json(tmp_path / "b.json", base)), "--out",
                 str(tmp_path / "base")]) == 0
    slower = _write_json(tmp_path / "n.json", [case("s", "original", 1, replay_us=120.0, gpu=H200)])
    capsys.readouterr()
    assert main(["report", "--from-json", str(slower), "--baseline", str(tmp_path / "base"), "--out",
                 str(tmp_path / "n")]) == 0
    assert "│ latency (splitk 2) │ s        │ original │ 1 │ 100.0 us │ 120.0 us (+20.0%) │" in capsys.readouterr().out
    assert main(["report", "--from-json", str(slower), "--baseline", str(tmp_path / "base"), "--out",
                 str(tmp_path / "n"), "--latency-threshold", "25"]) == 0
    assert "0 replay latency regressions over 25%" in capsys.readouterr().out


def _night(tmp_path: Path, name: str, results: list[CaseResult], when: datetime) -> list[str]:
    """A `report --from-json` argv of results written at `when` (a JSON file's time is its cases' timestamp)."""
    path = _write_json(tmp_path / f"{name}.json", results)
    os.utime(path, (when.timestamp(), when.timestamp()))
    return ["report", "--from-json", str(path)]


def test_history_shows_failures_detections_and_gpu_replay_per_night(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nightly = tmp_path / "nightly"
    day = timedelta(days=1)
    first = [case("s", "original", 1, replay_us=30.0, gpu=H200), case("s", "pr2551", 1, verdict="clean",
                                                                      expected="clean", replay_us=50.0, gpu=H200)]
    assert main([*_night(tmp_path, "a", first, STAMP), "--out", str(nightly / "zz-first")]) == 0
    cpu = [case("s", "original", 1, verdict="clean", passed=False), case("s", "pr2551", 1, verdict="clean",
                                                                          expected="clean")]
    assert main([*_night(tmp_path, "b", cpu, STAMP + day), "--out", str(nightly / "aa-second")]) == 1
    now = [case("s", "original", 1, replay_us=40.0, gpu=H200)]
    capsys.readouterr()
    out = nightly / "third"
    (out).mkdir()
    (out / "results.csv").write_text("an earlier third run, replaced by this one")
    assert main([*_night(tmp_path, "c", now, STAMP + 2 * day), "--out", str(out), "--history", str(nightly)]) == 0
    md = (out / "report.md").read_text()
    assert ("| night | last case at | cases | failed | detected | median replay |\n|---|---|---|---|---|---|\n"
            "| zz-first | 2025-03-04T05:06:07+00:00 | 2 | 0 | 1 | 40.0 us on NVIDIA H200 |\n"
            "| aa-second | 2025-03-05T05:06:07+00:00 | 2 | 1 | 0 | - (cpu) |\n"
            "| third (this run) | 2025-03-06T05:06:07+00:00 | 1 | 0 | 1 | 40.0 us on NVIDIA H200 |\n") in md
    assert "![failed and detected cases, and the median GPU replay time, per night](history.png)" in md
    assert _png_size((out / "history.png").read_bytes())[0] >= 600
    assert '<section id="history">' in (out / "report.html").read_text()
    printed = capsys.readouterr().out
    assert re.search(r"│ aa-second +│ 2025-03-05T05:06:07\+00:00 │ +2 │ +1 │ +0 │ - \(cpu\) +│", printed)
    # One night's folder, named alone, is a history too.
    assert main([*_night(tmp_path, "c", now, STAMP + 2 * day), "--out", str(tmp_path / "fourth"), "--history",
                 str(nightly / "aa-second")]) == 0
    assert "| aa-second | 2025-03-05T05:06:07+00:00 | 2 | 1 | 0 | - (cpu) |" in (
        tmp_path / "fourth" / "report.md").read_text()


@pytest.mark.parametrize(("history", "expected"), [
    ("nowhere", "--history: got {tmp}/nowhere; allowed: report --out folders, or folders holding them (one per "
                "night); no such folder"),
    ("empty", "--history: got {tmp}/empty; allowed: report --out folders, or folders holding them (one per night); "
              "neither it nor a folder in it holds results.parquet or results.csv"),
    ("old", "--history: got {tmp}/old/results.csv; allowed: report --out folders, or folders holding them (one per "
            "night); missing columns timestamp, verdict, passed"),
])
def test_a_bad_history_folder_is_one_line_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], history: str, expected: str) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.csv").write_text("scenario,backend,replay_us,env_device\ns,reexec,1.0,cpu\n")
    out = tmp_path / "out"
    assert main(["report", *_EP, "--out", str(out), "--history", str(tmp_path / history)]) == 2
    assert _one_line(capsys).endswith(expected.format(tmp=tmp_path))
    assert not out.exists()


@pytest.mark.parametrize(("argv", "expected"), [
    (["report", "nope"], "got unknown scenario 'nope'; allowed: "),
    (["report", "--bogus"], "unrecognized arguments: --bogus"),
    (["report", "--latency-threshold", "-1"], "argument --latency-threshold: got '-1'; allowed: percent >= 0"),
    (["report", "--from-json", "{tmp}/missing.json"],
     "--from-json: got {tmp}/missing.json; allowed: a non-empty JSON list written by graph-harness run --json; "
     "No such file or directory"),
    (["report", "--from-json", "{tmp}/bad.json"], "; invalid JSON: Expecting value: line 1 column 1 (char 0)"),
    (["report", "--from-json", "{tmp}/obj.json"], "; it holds dict"),
    (["report", "--from-json", "{tmp}/partial.json"], "; record 2: missing field verdict"),
    (["report", "--from-json", "{tmp}/good.json", "dsv3"], "--from-json: got {tmp}/good.json with scenarios; "
                                                            "allowed: --from-json with --out"),
    (["report", "--from-json", "{tmp}/good.json", "--baseline", "{tmp}/nowhere"],
     "--baseline: got {tmp}/nowhere; allowed: a folder written by graph-harness report --out (results.parquet or "
     "results.csv); no such folder"),
    (["report", "--from-json", "{tmp}/good.json", "--baseline", "{tmp}"], "; it holds neither"),
    (["report", "--from-json", "{tmp}/good.json", "--baseline", "{tmp}/garbled"],
     "--baseline: got {tmp}/garbled/results.parquet; allowed: a folder written by graph-harness report --out "
     "(results.parquet or results.csv); not a parquet file: "),
    (["report", "--from-json", "{tmp}/good.json", "--baseline", "{tmp}/columns"],
     "columns/results.csv; allowed: a folder written by graph-harness report --out (results.parquet or "
     "results.csv); missing columns"),
])
def test_report_bad_input_is_one_line_and_keeps_what_was_written(
        argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_json(tmp_path / "good.json", [case()])
    (tmp_path / "bad.json").write_text("")
    (tmp_path / "obj.json").write_text("{}")
    partial = [case().record(), case().record()]
    del partial[1]["verdict"]
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "results.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "columns").mkdir()
    (tmp_path / "columns" / "results.csv").write_text("scenario,policy\na,b\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("earlier")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--out", str(out)]) == 2
    assert expected.replace("{tmp}", str(tmp_path)) in _one_line(capsys)
    assert [p.name for p in out.iterdir()] == ["results.csv"]
    assert (out / "results.csv").read_text() == "earlier"


def _fake_runs(monkeypatch: pytest.MonkeyPatch, second: BaseException) -> list[str]:
    """A scenario run that finishes the first scenario-variant group by hand and raises `second` on the next."""
    calls: list[str] = []

    def run(self, scenario_id, variant, sizes, **_):
        calls.append(variant)
        if len(calls) > 1:
            raise second
        return [case(scenario_id, variant, t) for t in sizes]

    monkeypatch.setattr("graph_harness.schema.ScenarioBase.run", run)
    return calls


def test_interrupted_report_keeps_the_finished_cases(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls = _fake_runs(monkeypatch, KeyboardInterrupt())
    argv = ["report", "deepseek-v3-ep-decode", "--policy", "original", "--policy", "pr2551", "--policy", "cktile",
            "--sizes", "1", "--out", str(tmp_path)]
    assert main(argv) == 130
    assert calls == ["original", "pr2551"]
    kept = frame_results(read_parquet((tmp_path / "results.parquet").read_bytes()))
    assert [(r.scenario, r.variant, r.capture_size) for r in kept] == [("deepseek-v3-ep-decode", "original", 1)]
    md = (tmp_path / "report.md").read_text()
    headline = "INCOMPLETE (1 of 3 cases run, interrupted): 0 of those 1 case failed its scenario's expectation"
    assert md.startswith(f"# graph-harness report\n\n**{headline}; no baseline**")
    assert "- cases: 1: 1 passed, 0 failed; INCOMPLETE: 1 of 3 planned ran, the run was interrupted" in md
    html = (tmp_path / "report.html").read_text()
    assert f'<p class="status fail">{escape(headline)}; no baseline</p>' in html  # never a green nightly
    out = capsys.readouterr().out
    assert f"{headline}; no baseline" in out
    assert "interrupted: the report holds the 1 case that finished of 3 planned" in out


_EP = ["deepseek-v3-ep-decode", "--policy", "original", "--policy", "pr2551", "--policy", "cktile", "--sizes", "1"]


def test_an_interrupted_run_prints_what_finished_keeps_its_json_and_exits_130(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_runs(monkeypatch, KeyboardInterrupt())
    saved = tmp_path / "r.json"
    saved.write_text("earlier")
    assert main(["run", *_EP, "--json", str(saved)]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "│ original │ 1 │" in captured.out  # the finished case's table
    assert captured.out.rstrip().splitlines()[-1] == (
        "interrupted: 1 of 3 cases ran; not run: deepseek-v3-ep-decode pr2551 T=1, deepseek-v3-ep-decode cktile T=1")
    assert [r["variant"] for r in json.loads(saved.read_text())] == ["original"]
    assert not saved.with_name("r.json.partial").exists()


def test_a_run_interrupted_before_its_first_case_leaves_an_existing_json_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def run(self, scenario_id, variant, sizes, **_):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr("graph_harness.schema.ScenarioBase.run", run)
    saved = tmp_path / "r.json"
    saved.write_text("[earlier results]")
    assert main(["run", *_EP, "--json", str(saved)]) == 130
    assert saved.read_text() == "[earlier results]"
    assert "interrupted: 0 of 3 cases ran; not run: " in capsys.readouterr().out


def test_a_report_whose_out_is_its_baseline_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.csv").write_text("earlier")
    assert main(["report", *_EP, "--out", str(tmp_path), "--baseline", str(tmp_path / ".")]) == 2
    assert "--baseline: got " in _one_line(capsys)
    assert (tmp_path / "results.csv").read_text() == "earlier"


def test_guard_budget_error_mid_run_is_bad_input_and_keeps_the_finished_cases(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_runs(monkeypatch, GuardBudgetError("tmp_out needs 4 MiB of guards"))
    argv = ["report", "deepseek-v3-ep-decode", "--policy", "original", "--policy", "pr2551", "--sizes", "1",
            "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--guard-budget: got the default; allowed: a budget the case fits in" in _one_line(capsys)
    assert len(read_csv((tmp_path / "results.csv").read_text())) == 1


def test_report_runs_the_founding_case_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The one real run: aiter's original stage1 at T=1 overruns tmp_out by 1,966,080 bytes, as expected."""
    argv = ["report", "deepseek-v3-ep-decode", "--policy", "original", "--sizes", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    (result,) = frame_results(read_parquet((tmp_path / "results.parquet").read_bytes()))
    assert (result.scenario, result.variant, result.capture_size, result.verdict, result.passed) == (
        "deepseek-v3-ep-decode", "original", 1, "oob-write", True)
    assert result.outside_bytes == 1_966_080
    frame = read_csv((tmp_path / "results.csv").read_text())
    assert frame["outside_bytes"].tolist() == [1_966_080]
    assert "PASS: 0 of 1 case failed" in capsys.readouterr().out
    # oob-write*: a GPU shared by xdist workers may leave no room to copy the weights, and the result says so.
    assert re.search(r"\| original \| 1 \| 2 \| oob-write\*? \| oob-write \| ok \| tmp_out \| 1,966,080 \|",
                     (tmp_path / "report.md").read_text())


def test_an_interrupted_reproduce_says_which_side_did_not_finish_and_exits_130(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_runs(monkeypatch, KeyboardInterrupt())
    saved = tmp_path / "r.json"
    saved.write_text("earlier")
    assert main(["reproduce", "aiter-2508", "--json", str(saved)]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert captured.out.rstrip().splitlines()[-1] == (
        f"interrupted: aiter-2508's fixed side did not finish; buggy kept in {saved}")
    assert set(json.loads(saved.read_text())) == {"bug", "buggy"}
