"""The pytest plugin, through pytester: collection, outcomes, failure reports, xdist, markers, the ledger."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from graph_harness.core.results import CaseResult
from graph_harness.plugin import share_cores, usable_cores, worker_device

pytest_plugins = ["pytester"]

# Small enough to run a case in about a second on CPU: K=512, N=128, E=8, topk=2, split-K 2,
# KBatch 512/(2*128) = 2, so the original policy's memset overruns and pr2551 is clean.
TINY = """\
graph-harness: scenarios
tiny-split:
  why: a tiny split-K layer, so that the plugin's own tests run in seconds on CPU
  model: {hidden: 512, inter: 128, experts: 8, topk: 2}
  dtype: bf16
  quant: per_1x128
  block_m: 16
  splitk: 2
  cu_num: 256
  capture_sizes: [1, 2]
  contract: {k_per_block: 128}
  policies: {original: oob-write, pr2551: clean}
  seed: 5
"""
IDS = [f"scenarios/tiny.yaml::tiny-split[{p}-T{t}]" for t in (1, 2) for p in ("original", "pr2551")]


@pytest.fixture
def tiny(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "scenarios").mkdir()
    (pytester.path / "scenarios" / "tiny.yaml").write_text(TINY)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytester.runpytest without the cache, and without pytest-benchmark, which errors under xdist."""
    return pytester.runpytest(*args, "-p", "no:cacheprovider", "-p", "no:benchmark")


def _ledger(pytester: pytest.Pytester, body: str) -> None:
    (pytester.path / "scenarios" / "ledger.yaml").write_text(body)


def test_each_case_is_an_item_with_a_readable_sorted_id(tiny: pytest.Pytester) -> None:
    result = _run(tiny, "--collect-only", "-q", "scenarios")
    assert [line for line in result.outlines if "::" in line] == IDS


def test_cases_run_and_the_summary_table_is_printed(tiny: pytest.Pytester) -> None:
    result = _run(tiny, "scenarios")
    result.assert_outcomes(passed=4)
    assert len([line for line in result.outlines if re.fullmatch(r"=+ graph-harness =+", line)]) == 1
    table = "\n".join(result.outlines)
    assert re.search(r"│ original │ 1 │ oob-write │ ok +│ tmp_out", table)
    assert re.search(r"│ pr2551 +│ 2 │ clean +│ ok", table)


def test_under_xdist_the_controller_prints_one_summary_of_all_workers(tiny: pytest.Pytester) -> None:
    result = _run(tiny, "scenarios", "-n", "2", "--harness-json", "results.json")
    result.assert_outcomes(passed=4)
    records = [CaseResult.from_record(r) for r in json.loads((tiny.path / "results.json").read_text())]
    assert [(r.variant, r.capture_size, r.verdict) for r in records] == [
        ("original", 1, "oob-write"), ("original", 2, "oob-write"), ("pr2551", 1, "clean"), ("pr2551", 2, "clean")]
    text = "\n".join(result.outlines)
    assert text.count(f"tiny-split on {records[0].env.device}") == 1
    assert len(re.findall(r"│ (original|pr2551) +│ [12] │", text)) == 4
    workers = [re.fullmatch(r"worker (gw\d): device (\S+); (\d) cases?, \d+\.\d s", line)
               for line in result.outlines if line.startswith("worker gw")]
    assert {(m[1], m[2]) for m in workers if m} == {(w, _device_of(w)) for w in ("gw0", "gw1")}
    assert sum(int(m[3]) for m in workers if m) == 4


def _device_of(worker: str) -> str:
    """The device a worker's cases run on: its pinned GPU, the only one, or the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{worker_device(worker, torch.cuda.device_count()) or 0}"


def test_markers_select_by_hardware_and_size(tiny: pytest.Pytester) -> None:
    here, other = ("gpu", "cpu") if torch.cuda.is_available() else ("cpu", "gpu")
    assert _run(tiny, "--collect-only", "-q", "-m", here, "scenarios").outlines.count(IDS[0]) == 1
    none = _run(tiny, "--collect-only", "-q", "-m", f"{other} or slow", "scenarios")
    assert not [line for line in none.outlines if "::" in line]


def test_a_failing_case_prints_its_violations_and_one_repro_line_without_traceback(tiny: pytest.Pytester) -> None:
    # The footprint allows any verdict but oob-write and clean to disagree with it: expect a read.
    (tiny.path / "scenarios" / "tiny.yaml").write_text(TINY.replace("original: oob-write", "original: oob-read"))
    result = _run(tiny, "scenarios", "-k", "original-T1")
    result.assert_outcomes(failed=1)
    text = "\n".join(result.outlines)
    assert "tiny-split original T=1: expected oob-read, verdict oob-write" in text
    assert re.search(r"│ tmp_out +│ overflow +│ write +│ +0 │", text)
    assert "repro: graph-harness run tiny-split --variant original --sizes 1 --seed 5 --scenarios scenarios" in text
    assert "Traceback" not in text
    assert "core/capture.py" not in text


def test_a_tolerated_failure_is_xfailed_and_an_unexpected_pass_fails(tiny: pytest.Pytester) -> None:
    (tiny.path / "scenarios" / "tiny.yaml").write_text(TINY.replace("original: oob-write", "original: oob-read"))
    _ledger(tiny, """\
entries:
  - {scenario: tiny-split, variant: original, sizes: [1], status: tolerated, cites: ROCm/aiter#2551,
     why: detection reads this overrun as a write}
  - {scenario: tiny-split, variant: pr2551, sizes: [1], status: tolerated, cites: ROCm/aiter#2551,
     why: fixed since; the ledger must say so}
""")
    result = _run(tiny, "scenarios", "-k", "T1", "-rxX")
    result.assert_outcomes(xfailed=1, failed=1)
    assert "tolerated by the ledger (ROCm/aiter#2551) but it passed: remove the entry" in "\n".join(result.outlines)


def test_a_quarantined_case_runs_in_a_child_process(tiny: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _ledger(tiny, """\
entries:
  - {scenario: tiny-split, variant: original, sizes: all, status: quarantined,
     cites: https://github.com/ROCm/aiter/pull/2508, why: a crash class is never run in-process}
""")
    import graph_harness.plugin

    def no_in_process(self):  # type: ignore[no-untyped-def]
        raise AssertionError("a quarantined case ran in-process")

    monkeypatch.setattr(graph_harness.plugin.CaseItem, "_in_process", no_in_process)
    result = _run(tiny, "scenarios", "-k", "original-T1")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(("body", "message"), [
    ("entries:\n  - {scenario: tiny-split, variant: original, status: tolerated, cites: soon, why: x}\n",
     "scenarios/ledger.yaml: entries[0].cites: got 'soon'; allowed: a URL or owner/repo#N"),
    ("entries:\n  - {scenario: nope, variant: original, status: tolerated, cites: a/b#1, why: x}\n",
     "scenarios/ledger.yaml: entries[0].scenario: got 'nope'; allowed: tiny-split"),
    ("entries:\n  - {scenario: tiny-split, variant: original, status: ignored, cites: a/b#1, why: x}\n",
     "scenarios/ledger.yaml: entries[0].status: got 'ignored'; allowed: tolerated, quarantined"),
    ("entries:\n  - {scenario: tiny-split, variant: original, sizes: [0], status: tolerated, cites: a/b#1, why: x}\n",
     "scenarios/ledger.yaml: entries[0].sizes[0]: got 0; allowed: integer >= 1"),
    ("entries:\n  - {scenario: tiny-split, variant: original, sizes: 1, status: tolerated, cites: a/b#1, why: x}\n",
     "scenarios/ledger.yaml: entries[0].sizes: got 1; allowed: list of integers >= 1, or all"),
    ("entries:\n  - {scenario: tiny-split, variant: original, status: tolerated, cites: a/b#1, why: x, by: me}\n",
     "scenarios/ledger.yaml: entries[0].by: got unknown field; allowed: scenario, variant, sizes, test, status, cites, "
     "why"),
    ("entries:\n  - {scenario: tiny-split, variant: original, sizes: [2, 3], status: tolerated, cites: a/b#1,"
     " why: x}\n",
     "scenarios/ledger.yaml: entries[0].sizes: got [3]; allowed: 1, 2 or all; the capture sizes of tiny-split"),
    ("entries: {scenario: tiny-split}\n", "scenarios/ledger.yaml: entries: got {'scenario': 'tiny-split'}; "
     "allowed: list"),
])
def test_a_bad_ledger_is_one_line(tiny: pytest.Pytester, body: str, message: str) -> None:
    _ledger(tiny, body)
    result = _run(tiny, "--collect-only", "scenarios")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in "\n".join(result.errlines)


def test_a_bad_scenario_file_is_a_one_line_collection_error(tiny: pytest.Pytester) -> None:
    (tiny.path / "scenarios" / "tiny.yaml").write_text(TINY.replace("topk: 2", "topk: two"))
    result = _run(tiny, "--collect-only", "scenarios")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert any(line.startswith("scenarios/tiny.yaml: tiny-split: model.topk: got 'two'") for line in result.outlines)


@pytest.mark.parametrize(("worker", "gpus", "expected"), [
    (None, 2, None), ("gw0", 1, None), ("gw0", 2, 0), ("gw1", 2, 1), ("gw5", 2, 1), ("gw3", 8, 3), ("main", 2, None)])
def test_each_worker_keeps_to_one_gpu(worker: str | None, gpus: int, expected: int | None) -> None:
    assert worker_device(worker, gpus) == expected


def test_variants_of_a_registered_bug_carry_its_marker(pytester: pytest.Pytester) -> None:
    # The repository's folder and its bug registry, named by the ini option.
    scenarios = Path(__file__).resolve().parent.parent / "scenarios"
    pytester.makeini(f"[pytest]\ngraph_harness_scenarios = {scenarios}\n")
    result = _run(pytester, "--collect-only", "-q", "-m", "bug(id='aiter-2508')", str(scenarios))
    assert [line.split("::")[1] for line in result.outlines if "::" in line] == [
        "deepseek-v3-ep-decode[original-T1]", "deepseek-v3-ep-decode[pr2551-T1]"]


def test_a_harness_json_path_that_cannot_be_written_is_a_usage_error(tiny: pytest.Pytester) -> None:
    result = _run(tiny, "scenarios", "--harness-json", "no/such/dir/results.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--harness-json no/such/dir/results.json: No such file or directory; allowed: a writable file path" in (
        result.errlines[0])


def test_xdist_workers_share_the_cores(tiny: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    share = max(1, usable_cores() // 2)
    tiny.makepyfile(test_threads=f"""
        import os
        import torch

        def test_threads():
            assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "{share}"
            assert torch.get_num_threads() == {share}
    """)
    _run(tiny, "test_threads.py", "-n", "2").assert_outcomes(passed=1)


def test_a_thread_count_the_user_chose_is_kept() -> None:
    environ = {"OMP_NUM_THREADS": "3"}
    share_cores(4, 32, environ)
    assert environ == {"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "8"}
    share_cores(8, 2, environ)
    assert environ["OPENBLAS_NUM_THREADS"] == "8"
    fresh: dict[str, str] = {}
    share_cores(8, 2, fresh)
    assert fresh == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def test_on_a_gpu_machine_a_run_whose_gpu_items_all_skipped_fails(tiny: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import graph_harness.plugin

    monkeypatch.setattr(graph_harness.plugin, "_gpu_present", lambda: True)
    tiny.makeconftest("""
        import pytest

        def pytest_collection_modifyitems(items):
            for item in items:
                item.add_marker(pytest.mark.skip(reason="the driver went away"))
    """)
    result = _run(tiny, "scenarios")
    result.assert_outcomes(skipped=4)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "graph-harness: all 4 GPU items skipped on a GPU machine" in result.outlines
