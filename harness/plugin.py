"""pytest plugin: each scenario YAML is a pytest.File, each case (scenario x policy x size) an Item.

Registered as the `graph_harness` pytest11 entry point. Node ids read
`scenarios/deepseek_v3.yaml::deepseek-v3-ep-decode[original-T1]`. Collection reads YAML only
and never touches CUDA; cu_num "device" and the kernels are resolved when an item runs. Results
cross xdist on `user_properties`, and the controller prints one summary table at the end.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.bugs import load_registry, registry_path
from harness.errors import BadInput
from harness.ledger import Ledger, LedgerEntry, load_ledger
from harness.results import CaseResult, repro_command, run_command
from harness.scenario import (
    LEDGER_FILE,
    NOT_SCENARIOS,
    Profile,
    Scenario,
    capture_sizes,
    find_scenario_dir,
    load_scenarios,
)
from kernels.contracts import Policy

_PROPERTY = "graph_harness"  # the user_properties key a result travels under
_DEVICE_PROPERTY = "graph_harness_device"
_SUMMARY_WIDTH = 120
_SLOW_TOKENS = 64  # capture sizes above this are `slow`: each runs seconds on a GPU, minutes on CPU


def _gpu_present() -> bool:
    """Whether a GPU is visible, asked through NVML: collection must not initialise CUDA."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return bool(torch.cuda.is_available())


def _profile() -> Profile:
    return "gpu" if _gpu_present() else "cpu"


# -- device pinning ---------------------------------------------------------------------------------

def worker_device(worker: str | None, device_count: int) -> int | None:
    """The GPU an xdist worker (`gw3`) keeps to: worker index modulo the visible GPUs; None alone."""
    if worker is None or device_count < 2 or not worker.startswith("gw"):
        return None
    return int(worker[2:]) % device_count


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("graph-harness").addoption(
        "--harness-json", type=Path, metavar="FILE",
        help="write every case's result as a JSON list (graph-harness run --json's format; the "
             "controller writes it under xdist), for graph-harness report --from-json")


def _is_worker(config: pytest.Config) -> bool:
    """Whether this process is an xdist worker. Not from PYTEST_XDIST_WORKER: a pytest run inside a
    worker (pytester's) inherits that variable and is a controller all the same."""
    return hasattr(config, "workerinput")


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_cores(workers: int, cores: int, environ: MutableMapping[str, str]) -> None:
    """Give each of `workers` xdist workers its share of the cores, unless the user chose.

    The workers inherit the controller's environment. OpenMP (torch) and OpenBLAS (numpy, the
    Triton interpreter) otherwise start a thread per core in every worker, and their spinning
    threads fight: two workers on 2 cores ran a DeepSeek-V3 TP8 case in 36 s, against 15 s each
    with one thread.
    """
    threads = str(max(1, cores // workers))
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environ.setdefault(variable, threads)


def pytest_configure(config: pytest.Config) -> None:
    """Share the cores among xdist workers, register the markers, check the --harness-json path;
    on a multi-GPU host pin this worker's device before any CUDA call."""
    workers = getattr(config.option, "numprocesses", None)  # an int once xdist has resolved `auto`
    if isinstance(workers, int) and workers > 0 and not _is_worker(config):
        share_cores(workers, usable_cores(), os.environ)
    for line in ("gpu: needs a GPU (skipped without one)", "cpu: runs on the CPU profile",
                 "slow: a capture size above 64 tokens",
                 "bug(id): a variant of a registered bug; select one with -m \"bug(id='aiter-2508')\"",
                 "tolerated(cite): a known failure from the ledger; it must still fail"):
        config.addinivalue_line("markers", line)
    path = config.getoption("harness_json")
    if path is not None and not _is_worker(config):
        try:
            path.write_text("[]\n", encoding="utf-8")  # a bad path fails now, not after the run
        except OSError as err:
            raise pytest.UsageError(f"--harness-json {path}: {err.strerror}; allowed: a writable file path") from None
    if _gpu_present():
        import torch

        index = worker_device(os.environ.get("PYTEST_XDIST_WORKER"), torch.cuda.device_count())
        if index is not None:
            torch.cuda.set_device(index)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Hardware needs, resolved in one place: `gpu` items skip without a GPU."""
    if _gpu_present():
        return
    skip = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- collection -------------------------------------------------------------------------------------

def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Scenario YAML files under the scenario folder become ScenarioFiles."""
    if file_path.suffix != ".yaml" or file_path.name in NOT_SCENARIOS:
        return None
    try:
        scenario_dir = find_scenario_dir().resolve()
    except BadInput:
        return None
    if file_path.resolve().parent != scenario_dir:
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


class ScenarioFile(pytest.File):
    """One scenarios/*.yaml: its cases, in sorted, deterministic order (xdist workers must agree)."""

    def collect(self) -> Iterator[pytest.Item]:
        try:
            scenarios = load_scenarios([self.path])
        except BadInput as err:
            raise self.CollectError(str(err)) from None
        ledger = _ledger(self.config)
        profile = _profile()
        for scenario_id in sorted(scenarios):
            scenario = scenarios[scenario_id]
            for policy in (p for p in Policy if p in scenario.policies):
                for tokens in capture_sizes(scenario, profile):
                    item = CaseItem.from_parent(self, name=f"{scenario_id}[{policy.value}-T{tokens}]",
                                                scenario_id=scenario_id, scenario=scenario, policy=policy,
                                                tokens=tokens, profile=profile)
                    item.add_marker(pytest.mark.gpu if profile == "gpu" else pytest.mark.cpu)
                    if tokens > _SLOW_TOKENS:
                        item.add_marker(pytest.mark.slow)
                    for bug_id in _bugs(self.config).get((scenario_id, policy.value, tokens), ()):
                        item.add_marker(pytest.mark.bug(id=bug_id))
                    entry = ledger.find(scenario_id, policy.value, tokens)
                    if entry is not None:
                        item.ledger_entry = entry
                        if entry.status == "tolerated":
                            item.add_marker(pytest.mark.tolerated(entry.cites))
                    yield item


class CaseFailure(Exception):
    """A case that did not meet its expectation; carries its result for the report."""

    def __init__(self, result: CaseResult) -> None:
        super().__init__(result.reason)
        self.result = result


class CaseItem(pytest.Item):
    """One case: scenario x policy x capture size, at the scenario's seed."""

    def __init__(self, *, scenario_id: str, scenario: Scenario, policy: Policy, tokens: int, profile: Profile,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario_id = scenario_id
        self.scenario = scenario
        self.policy = policy
        self.tokens = tokens
        self.profile = profile
        self.ledger_entry: LedgerEntry | None = None

    def runtest(self) -> None:
        result = self._quarantined() if self._is_quarantined() else self._in_process()
        self.user_properties.append((_PROPERTY, json.dumps(result.record())))
        tolerated = self.ledger_entry is not None and self.ledger_entry.status == "tolerated"
        if tolerated and result.passed:
            raise CaseFailure(_with_reason(result, f"tolerated by the ledger ({self.ledger_entry.cites}) "  # type: ignore[union-attr]
                                                   "but it passed: remove the entry"))
        if tolerated:
            pytest.xfail(f"tolerated ({self.ledger_entry.cites}): {result.reason}")  # type: ignore[union-attr]
        if not result.passed:
            raise CaseFailure(result)

    def _is_quarantined(self) -> bool:
        return self.ledger_entry is not None and self.ledger_entry.status == "quarantined"

    def _in_process(self) -> CaseResult:
        from harness.run import resolve_cases, run_cases
        from kernels._triton import device

        dev = device()
        self.user_properties.append((_DEVICE_PROPERTY, str(dev)))
        (case,) = resolve_cases(self.scenario_id, self.scenario, self.policy, [self.tokens], self.profile)
        (result,) = run_cases([case], dev)
        return result

    def _quarantined(self) -> CaseResult:
        """A crash class never launches in-process: the case runs in a child process."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            argv = [sys.executable, "-m", "harness.cli", "run", self.scenario_id, "--policy", self.policy.value,
                    "--sizes", str(self.tokens), "--json", str(out)]
            if self.scenario.source is not None:
                argv += ["--scenarios", str(self.scenario.source.parent)]
            child = subprocess.run(argv, capture_output=True, text=True, check=False)
            records = json.loads(out.read_text()) if out.exists() and out.stat().st_size else []
        if records:
            return CaseResult.from_record(records[0])
        raise CaseCrash(f"quarantined case exited {child.returncode} with no result: "
                        f"{(child.stderr.strip().splitlines() or [''])[-1]}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """A compact table of the violations and diagnostics, and one repro line; no traceback."""
        if isinstance(excinfo.value, CaseFailure):
            return _failure_text(excinfo.value.result)
        if isinstance(excinfo.value, CaseCrash):
            return f"{excinfo.value}\n{self.repro()}"
        return str(super().repr_failure(excinfo))

    def repro(self) -> str:
        return f"repro: {run_command(self.scenario_id, self.policy.value, self.tokens, self.scenario.seed)}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.scenario_id} {self.policy.value} T={self.tokens}"


class CaseCrash(Exception):
    """A quarantined case's child process died without writing a result."""


def _with_reason(result: CaseResult, reason: str) -> CaseResult:
    import dataclasses

    return dataclasses.replace(result, passed=False, reason=reason)


def _failure_text(result: CaseResult) -> str:
    from reports.tables import violation_table

    console = Console(width=_SUMMARY_WIDTH, no_color=True, record=True, file=io.StringIO())
    lines = [f"{result.scenario} {result.policy} T={result.capture_size}: expected {result.expected}, "
             f"verdict {result.verdict} ({result.backend} on {result.env.device})", result.reason]
    if result.violations:
        console.print(violation_table(result))
        lines.append(console.export_text().rstrip())
    if result.max_rel_err is not None:
        lines.append(f"max rel L2 error {result.max_rel_err:.3e} (tolerance {result.tolerance:g})")
    lines.extend(f"note: {note}" for note in result.notes)
    if result.error:
        lines.append(f"error: {result.error}")
    lines.append(f"repro: {repro_command(result)}")
    return "\n".join(lines)


# -- the ledger and the bug registry --------------------------------------------------------------

def _bugs(config: pytest.Config) -> dict[tuple[str, str, int], list[str]]:
    """(scenario, policy, size) -> the ids of the registered bugs it is a variant of (buggy or fixed)."""
    cached = getattr(config, "_graph_harness_bugs", None)
    if cached is None:
        directory = find_scenario_dir()
        cached = {}
        if registry_path(directory).is_file():
            for bug_id, bug in load_registry(directory)[1].items():
                for variant in (bug.buggy, bug.fixed):
                    cached.setdefault((variant.scenario, variant.policy.value, bug.size), []).append(bug_id)
        config._graph_harness_bugs = cached  # type: ignore[attr-defined]
    return cached


def _ledger(config: pytest.Config) -> Ledger:
    cached = getattr(config, "_graph_harness_ledger", None)
    if cached is None:
        try:
            cached = load_ledger(find_scenario_dir() / LEDGER_FILE)
        except BadInput as err:
            raise pytest.UsageError(str(err)) from None
        config._graph_harness_ledger = cached  # type: ignore[attr-defined]
    return cached


# -- results across xdist, and the summary --------------------------------------------------------

class _Collector:
    """Gathers results from every report (the controller's under xdist) for the summary."""

    def __init__(self) -> None:
        self.results: list[CaseResult] = []
        self.devices: dict[str, set[str]] = {}
        self.busy: dict[str, tuple[int, float]] = {}  # worker -> (cases, seconds in their call phase)
        self.gpu_items = 0
        self.gpu_ran = 0

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.skipped):
            if "gpu" in report.keywords:
                self.gpu_items += 1
                self.gpu_ran += not report.skipped
        if report.when != "call":
            return
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        worker = str(gateway.id if gateway else "main")
        for key, value in report.user_properties:
            if key == _PROPERTY:
                self.results.append(CaseResult.from_record(json.loads(str(value))))
                cases, seconds = self.busy.get(worker, (0, 0.0))
                self.busy[worker] = cases + 1, seconds + report.duration
            elif key == _DEVICE_PROPERTY:
                self.devices.setdefault(worker, set()).add(str(value))

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        from reports.tables import run_table

        console = Console(width=_SUMMARY_WIDTH, file=terminalreporter._tw, force_terminal=False, no_color=True)
        terminalreporter.section("graph-harness")
        for scenario_id in sorted({r.scenario for r in self.results}):
            rows = sorted((r for r in self.results if r.scenario == scenario_id), key=_case_order)
            console.print(run_table(rows, title=f"{scenario_id} on {rows[0].env.device}, {rows[0].backend}"))
        for worker, devices in sorted(self.devices.items()):
            cases, seconds = self.busy.get(worker, (0, 0.0))
            terminalreporter.write_line(f"worker {worker}: device {', '.join(sorted(devices))}; "
                                        f"{cases} case{'s' * (cases != 1)}, {seconds:.1f} s")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if _is_worker(session.config):
            return  # workers report; the controller decides
        path = session.config.getoption("harness_json")
        if path is not None:
            records = [r.record() for r in sorted(self.results, key=_case_order)]
            path.write_text(json.dumps(records, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        if _gpu_present() and self.gpu_items and not self.gpu_ran:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"graph-harness: all {self.gpu_items} GPU items skipped on a GPU machine", red=True)


def _case_order(result: CaseResult) -> tuple[str, int, int]:
    return result.scenario, list(Policy).index(Policy(result.policy)), result.capture_size


def pytest_sessionstart(session: pytest.Session) -> None:
    """Validate the ledger before collecting (a bad one is a usage error), and start gathering results."""
    _ledger(session.config)
    session.config.pluginmanager.register(_Collector(), "graph_harness_results")
