"""pytest plugin: scenario files become items, the `graph_guard` fixture checks any op inside a test.

Registered as the `graph_harness` pytest11 entry point, so every pytest run in the environment loads it; it
acts only on its own: the scenario items, and the tests that use `graph_guard`. Scenario folders come from
the ini option `graph_harness_scenarios` (default: `scenarios/` under the rootdir), and in them only files that
declare `graph-harness: scenarios` are collected. Node ids read
`scenarios/deepseek_v3.yaml::deepseek-v3-ep-decode[original-T1]`. Collection reads YAML only and never
touches CUDA. Results cross xdist on `user_properties`, and the controller prints one summary at the end.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from graph_harness.core.fuzz import FuzzRun
    from graph_harness.core.results import CaseResult
    from graph_harness.schema import Profile
    from graph_harness.suite.files import Scenario
    from graph_harness.suite.ledger import Ledger, LedgerEntry

_PROPERTY = "graph_harness"  # the user_properties key a result travels under
_DEVICE_PROPERTY = "graph_harness_device"
_FIXTURE = "graph_guard"
_CHILD = "GRAPH_HARNESS_QUARANTINED"  # set in a quarantined case's child process: there it runs in-process
_SUMMARY_WIDTH = 120
_SLOW_TOKENS = 64  # capture sizes above this are `slow`: each runs seconds on a GPU, minutes on CPU


def _gpu_present() -> bool:
    """Whether a GPU is visible, asked through NVML: collection must not initialise CUDA."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return bool(torch.cuda.is_available())


def _profile() -> Profile:
    return "gpu" if _gpu_present() else "cpu"


# -- options and configuration -------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("graph-harness")
    group.addoption("--harness-json", type=Path, metavar="FILE",
                    help="write every graph-harness result as a JSON list (graph-harness run --json's format; the "
                         "controller writes it under xdist), for graph-harness report --from-json")
    group.addoption("--harness-seed", type=int, metavar="N",
                    help="the seed of graph_guard checks that name none (default: 0)")
    group.addoption("--harness-pin-gpus", action="store_true",
                    help="keep each xdist worker to one GPU even when the run holds no graph-harness test")
    parser.addini("graph_harness_scenarios", type="paths",
                  help="folders of graph-harness scenario files (default: scenarios/ under the rootdir)")
    parser.addini("graph_harness_share_cores", type="bool", default=False,
                  help="give each xdist worker its share of the cores even when no scenario file is configured")


def scenario_dirs(config: pytest.Config) -> list[Path]:
    """The configured scenario folders, resolved: from the ini option, else `scenarios/` under the rootdir."""
    given = config.getini("graph_harness_scenarios")
    folders = [Path(p) for p in given] if given else [config.rootpath / "scenarios"]
    return [p.resolve() for p in folders]


def _has_scenario_files(config: pytest.Config) -> bool:
    from graph_harness.suite.files import declared_files

    return any(declared_files(folder) for folder in scenario_dirs(config))


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


def worker_device(worker: str | None, device_count: int) -> int | None:
    """The GPU an xdist worker (`gw3`) keeps to: worker index modulo the visible GPUs; None alone."""
    if worker is None or device_count < 2 or not worker.startswith("gw"):
        return None
    return int(worker[2:]) % device_count


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; check the --harness-json path; share the cores among xdist workers when this
    project runs scenario files (the workers' threads must be set before they start)."""
    for line in ("gpu: a graph-harness scenario case on the GPU profile (skipped without a GPU)",
                 "cpu: a graph-harness scenario case on the CPU profile",
                 "slow: a graph-harness scenario case above 64 tokens",
                 "bug(id): a variant of a registered bug; select one with -m \"bug(id='aiter-2508')\"",
                 "tolerated(cite): a known failure from the graph-harness ledger; it must still fail"):
        config.addinivalue_line("markers", line)
    if _is_worker(config):
        return
    path = config.getoption("harness_json")
    if path is not None:
        try:
            path.write_text("[]\n", encoding="utf-8")  # a bad path fails now, not after the run
        except OSError as err:
            raise pytest.UsageError(f"--harness-json {path}: {err.strerror}; allowed: a writable file path") from None
    workers = getattr(config.option, "numprocesses", None)  # an int once xdist has resolved `auto`
    if isinstance(workers, int) and workers > 0 and (
            config.getini("graph_harness_share_cores") or _has_scenario_files(config)):
        share_cores(workers, usable_cores(), os.environ)


def _ours(item: pytest.Item) -> bool:
    """A scenario case, or a test that asks for the graph_guard fixture."""
    return isinstance(item, CaseItem) or _FIXTURE in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For graph-harness's own items only: `gpu` cases skip without a GPU; and, when the run holds any (or the
    user asks), each xdist worker keeps to one GPU."""
    mine = [item for item in items if _ours(item)]
    if not mine and not config.getoption("harness_pin_gpus"):
        return
    if not _gpu_present():
        skip = pytest.mark.skip(reason="needs a GPU")
        for item in mine:
            if isinstance(item, CaseItem) and item.profile == "gpu":
                item.add_marker(skip)
        return
    import torch

    index = worker_device(os.environ.get("PYTEST_XDIST_WORKER"), torch.cuda.device_count())
    if index is not None:
        torch.cuda.set_device(index)


# -- collection -------------------------------------------------------------------------------------

def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Scenario files of the configured folders become ScenarioFiles; no other file is touched."""
    if file_path.suffix not in (".yaml", ".yml") or file_path.resolve().parent not in scenario_dirs(parent.config):
        return None
    from graph_harness.suite.files import declares

    if not declares(file_path):
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


class ScenarioFile(pytest.File):
    """One scenario file: its cases, in sorted, deterministic order (xdist workers must agree)."""

    def collect(self) -> Iterator[pytest.Item]:
        from graph_harness.errors import BadInput
        from graph_harness.suite.files import load_scenarios

        try:
            scenarios = load_scenarios([self.path])
        except BadInput as err:
            raise self.CollectError(str(err)) from None
        ledger = _ledger(self.config)
        bugs = _bugs(self.config, self.path.parent)
        profile = _profile()
        for scenario_id in sorted(scenarios):
            scenario = scenarios[scenario_id]
            # size by size, each size's variants one after another: they share the layer and the input sets, so
            # a reference computed for one is served to the next (variant by variant, a 51-size scenario's 204
            # cases computed each of theirs anew: 42 s of the H200's 120 s matrix)
            for tokens in scenario.sizes(profile):
                for variant in scenario.variant_names():
                    item = CaseItem.from_parent(self, name=f"{scenario_id}[{variant}-T{tokens}]",
                                                scenario_id=scenario_id, scenario=scenario, variant=variant,
                                                tokens=tokens, profile=profile)
                    item.add_marker(pytest.mark.gpu if profile == "gpu" else pytest.mark.cpu)
                    if tokens > _SLOW_TOKENS:
                        item.add_marker(pytest.mark.slow)
                    for bug_id in bugs.get((scenario_id, variant, tokens), ()):
                        item.add_marker(pytest.mark.bug(id=bug_id))
                    entry = ledger.find(scenario_id, variant, tokens)
                    if entry is not None:
                        item.ledger_entry = entry
                        if entry.status == "tolerated":
                            item.add_marker(pytest.mark.tolerated(entry.cites))
                    yield item


def _child_timeout() -> float:
    """Seconds a quarantined case's child process may run: ten bounds of its runs' floor. Inside, each run has its
    own bound; this one stops a child whose hang its own watch could not (a GPU kernel that keeps it at exit)."""
    from graph_harness.core.capture import hang_floor

    return 10 * hang_floor()


class CaseFailure(Exception):
    """Cases that did not meet their expectation; carries their results for the report."""

    def __init__(self, results: Sequence[CaseResult]) -> None:
        super().__init__("; ".join(r.reason for r in results))
        self.results = tuple(results)


class CaseCrash(Exception):
    """A quarantined case's child process died without writing a result, or a case could not run at all."""


class CaseItem(pytest.Item):
    """One case: scenario x variant x capture size, at the scenario's seed."""

    def __init__(self, *, scenario_id: str, scenario: Scenario, variant: str, tokens: int, profile: Profile,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario_id = scenario_id
        self.scenario = scenario
        self.variant = variant
        self.tokens = tokens
        self.profile = profile
        self.ledger_entry: LedgerEntry | None = None

    def runtest(self) -> None:
        result = self._quarantined() if self._is_quarantined() else self._in_process()
        _judge([result], self, self.ledger_entry)

    def _is_quarantined(self) -> bool:
        """Quarantined by the ledger, or expected to hang (a hung GPU kernel cannot be stopped in-process)."""
        if _CHILD in os.environ:
            return False
        from graph_harness.core.verdict import Verdict

        return (self.ledger_entry is not None and self.ledger_entry.status == "quarantined"
                or self.scenario.expected(self.variant) is Verdict.HANG)

    def _in_process(self) -> CaseResult:
        from graph_harness.core.triton_env import device
        from graph_harness.errors import BadInput

        self.user_properties.append((_DEVICE_PROPERTY, str(device())))
        try:
            (result,) = self.scenario.run(self.scenario_id, self.variant, [self.tokens])
        except BadInput as err:  # the op scenario's factory would not import, say: one line, no traceback
            raise CaseCrash(str(err)) from None
        return result

    def _quarantined(self) -> CaseResult:
        """A crash class never launches in-process: the case runs in a child process, killed if it hangs."""
        from graph_harness.core.capture import hang_floor
        from graph_harness.suite.isolate import run_isolated
        from graph_harness.suite.plan import Group, Selection

        group = Group(self.scenario_id, self.scenario, self.variant, (self.tokens,))
        (result,) = run_isolated(group, Selection(), self.scenario.hang_floor() or hang_floor())
        return result

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """A compact table of the violations and diagnostics, and one repro line; no traceback."""
        if isinstance(excinfo.value, CaseFailure):
            return failure_text(excinfo.value.results)
        if isinstance(excinfo.value, CaseCrash):
            return f"{excinfo.value}\n{self.repro()}"
        return str(super().repr_failure(excinfo))

    def repro(self) -> str:
        return f"repro: {self.scenario.repro(self.scenario_id, self.variant, self.tokens, self.scenario.seed)}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.scenario_id} {self.variant} T={self.tokens}"


def _judge(results: Sequence[CaseResult], node: pytest.Item, entry: LedgerEntry | None) -> None:
    """Record the results on the node for the summary, then pass, xfail (a tolerated failure) or fail."""
    import dataclasses

    for result in results:
        node.user_properties.append((_PROPERTY, json.dumps(result.record())))
    failed = [r for r in results if not r.passed]
    if entry is not None and entry.status == "tolerated":
        if not failed:
            reason = f"tolerated by the ledger ({entry.cites}) but it passed: remove the entry"
            raise CaseFailure([dataclasses.replace(r, passed=False, reason=reason) for r in results])
        pytest.xfail(f"tolerated ({entry.cites}): {failed[0].reason}")
    if failed:
        raise CaseFailure(failed)


def failure_text(results: Sequence[CaseResult]) -> str:
    """What a failed case shows in pytest: the verdict against the expectation, the violations as a table, the
    error, notes and limits, and the one command that reruns it."""
    from rich.console import Console

    from graph_harness.reports.tables import violation_table

    blocks = []
    for result in results:
        console = Console(width=_SUMMARY_WIDTH, no_color=True, record=True, file=io.StringIO())
        lines = [f"{result.scenario} {result.variant} T={result.capture_size}: expected {result.expectation}, "
                 f"verdict {result.verdict} ({result.backend} on {result.env.device})", result.reason]
        if result.violations:
            console.print(violation_table(result))
            lines.append(console.export_text().rstrip())
        if result.max_rel_err is not None:
            lines.append(f"max rel L2 error {result.max_rel_err:.3e} (tolerance {result.tolerance:g})")
        lines.extend(f"note: {note}" for note in result.notes)
        lines.extend(f"limit: {limit}" for limit in result.limits)
        if result.error:
            lines.append(f"error: {result.error}")
        if result.repro:
            lines.append(f"repro: {result.repro}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- the fixture ------------------------------------------------------------------------------------

class GraphGuard:
    """`graph_guard.check(...)` takes `graph_harness.check`'s arguments and fails the test, with the violations
    as a table and a repro line (no traceback through the harness), when a size does not meet its expectation.
    Its results join the plugin's summary, `--harness-json` and the ledger (`test:` entries)."""

    def __init__(self, node: pytest.Item) -> None:
        self.node = node

    def check(self, op: Callable[..., Any], inputs: Callable[[int, int], Mapping[str, Any]],
              sizes: Sequence[int] = (1,), *, seed: int | None = None, name: str | None = None,
              **options: Any) -> list[CaseResult]:
        import graph_harness as gh

        config = self.node.config
        if seed is None:
            seed = config.getoption("harness_seed") or 0
        problem: str | None = None
        try:
            results = gh.check(op, inputs, sizes, seed=seed, name=name or self.node.name,
                               repro=f"pytest '{self.node.nodeid}' --harness-seed {seed}", **options)
        except gh.UsageError as err:
            problem = f"graph-harness: {err}"
        if problem is not None:  # failed outside the handler: no "during handling" chain in the report
            pytest.fail(problem, pytrace=False)
        from graph_harness.core.triton_env import device

        self.node.user_properties.append((_DEVICE_PROPERTY, str(options.get("device") or device())))
        try:
            _judge(results, self.node, _ledger(config).for_test(self.node.nodeid))
        except CaseFailure as failure:
            problem = failure_text(failure.results)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        return results

    def fuzz(self, op: Callable[..., Any], inputs: Callable[[int, int], Mapping[str, Any]],
             sizes: Sequence[int] = (1,), *, seed: int | None = None, name: str | None = None,
             **options: Any) -> FuzzRun:
        """`graph_harness.fuzz` with its arguments; fails the test at a finding (or an error of the op), with the
        kernel the step rerun named and the command that finds it again."""
        import graph_harness as gh
        from graph_harness.reports.fuzz import fuzz_lines

        if seed is None:
            seed = self.node.config.getoption("harness_seed") or 0
        problem: str | None = None
        try:
            run = gh.fuzz(op, inputs, sizes, seed=seed, name=name or self.node.name, **options)
        except gh.UsageError as err:
            problem = f"graph-harness: {err}"
        if problem is None and (run.finding is not None or run.error is not None):
            rerun = f"pytest '{self.node.nodeid}' --harness-seed {seed}"
            problem = "\n".join([*fuzz_lines(run), f"repro: {rerun} (the same seed draws the same inputs)"])
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        return run


@pytest.fixture
def graph_guard(request: pytest.FixtureRequest) -> GraphGuard:
    """Check an op under graph capture with every buffer guarded: `graph_guard.check(op, inputs, sizes, ...)`."""
    return GraphGuard(request.node)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A graph_guard test the ledger quarantines runs in a child pytest process, never in this one."""
    if _FIXTURE not in pyfuncitem.fixturenames or _CHILD in os.environ:
        return None
    entry = _ledger(pyfuncitem.config).for_test(pyfuncitem.nodeid)
    if entry is None or entry.status != "quarantined":
        return None
    from graph_harness.core.results import CaseResult

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        argv = [sys.executable, "-m", "pytest", pyfuncitem.nodeid, "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                "--harness-json", str(out), "--rootdir", str(pyfuncitem.config.rootpath)]
        if pyfuncitem.config.getoption("harness_seed") is not None:
            argv += ["--harness-seed", str(pyfuncitem.config.getoption("harness_seed"))]
        try:
            child = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=pyfuncitem.config.rootpath,
                                   timeout=_child_timeout(), env={**os.environ, _CHILD: "1"})
        except subprocess.TimeoutExpired:
            pytest.fail(f"quarantined test ({entry.cites}) hung: its child process ran past {_child_timeout():g} s "
                        "and was killed", pytrace=False)
        records = json.loads(out.read_text()) if out.exists() and out.stat().st_size else []
    for record in records:
        pyfuncitem.user_properties.append((_PROPERTY, json.dumps(CaseResult.from_record(record).record())))
    if child.returncode != 0:
        tail = "\n".join(child.stdout.strip().splitlines()[-20:])
        pytest.fail(f"quarantined test ({entry.cites}) failed in its child process, exit {child.returncode}:\n{tail}",
                    pytrace=False)
    return True


# -- the ledger and the bug registry --------------------------------------------------------------

def _bugs(config: pytest.Config, folder: Path) -> dict[tuple[str, str, int], list[str]]:
    """(scenario, variant, size) -> the ids of the registered bugs it is a side of, from a folder's registry."""
    cache: dict[Path, dict[tuple[str, str, int], list[str]]] = config.stash.setdefault(_BUGS, {})
    if folder not in cache:
        from graph_harness.suite.bugs import load_registry, registry_path

        found: dict[tuple[str, str, int], list[str]] = {}
        if registry_path(folder).is_file():
            for bug_id, bug in load_registry(folder)[1].items():
                for side in (bug.buggy, bug.fixed):
                    found.setdefault((side.scenario, side.variant, bug.size), []).append(bug_id)
        cache[folder] = found
    return cache[folder]


def _ledger(config: pytest.Config) -> Ledger:
    """Every configured folder's ledger, validated against that folder's scenarios; a bad one is a usage error."""
    if _LEDGER not in config.stash and not any(folder.is_dir() for folder in scenario_dirs(config)):
        from graph_harness.suite.ledger import Ledger

        config.stash[_LEDGER] = Ledger()  # no scenario folder: no ledger, and nothing more to import
    if _LEDGER not in config.stash:
        from graph_harness.errors import BadInput
        from graph_harness.suite.files import LEDGER_FILE, declared_files, load_scenarios
        from graph_harness.suite.ledger import Ledger, load_ledger

        ledger = Ledger()
        try:
            for folder in scenario_dirs(config):
                if (folder / LEDGER_FILE).is_file():
                    known = load_scenarios(declared_files(folder))
                    ledger = ledger + load_ledger(folder / LEDGER_FILE, known)
        except BadInput as err:
            raise pytest.UsageError(str(err)) from None
        config.stash[_LEDGER] = ledger
    return config.stash[_LEDGER]


_LEDGER = pytest.StashKey["Ledger"]()
_BUGS = pytest.StashKey[dict[Path, dict[tuple[str, str, int], list[str]]]]()


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
            if "gpu" in report.keywords and _SCENARIO_CASE in report.keywords:
                self.gpu_items += 1
                self.gpu_ran += not report.skipped
        if report.when != "call":
            return
        if not any(key in (_PROPERTY, _DEVICE_PROPERTY) for key, _ in report.user_properties):
            return  # a foreign test: nothing of ours to gather, and nothing heavy imported for it
        from graph_harness.core.results import CaseResult

        gateway = getattr(getattr(report, "node", None), "gateway", None)
        worker = str(gateway.id if gateway else "main")
        for key, value in report.user_properties:
            if key == _PROPERTY:
                self.results.append(CaseResult.from_record(json.loads(str(value))))
            elif key == _DEVICE_PROPERTY:
                self.devices.setdefault(worker, set()).add(str(value))
        if any(key == _PROPERTY for key, _ in report.user_properties):
            cases, seconds = self.busy.get(worker, (0, 0.0))
            count = sum(key == _PROPERTY for key, _ in report.user_properties)
            self.busy[worker] = cases + count, seconds + report.duration

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        from rich.console import Console

        from graph_harness.reports.tables import run_table

        console = Console(width=_SUMMARY_WIDTH, file=terminalreporter._tw, force_terminal=False, no_color=True)
        terminalreporter.section("graph-harness")
        for scenario_id in dict.fromkeys(r.scenario for r in sorted(self.results, key=_case_order)):
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
        if self.gpu_items and not self.gpu_ran and _gpu_present():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"graph-harness: all {self.gpu_items} GPU items skipped on a GPU machine", red=True)


_SCENARIO_CASE = "graph_harness_case"  # a keyword only scenario cases carry, so that the GPU count is of ours


def _case_order(result: CaseResult) -> tuple[str, str, int]:
    return result.scenario, result.variant, result.capture_size


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A scenario item's slab is kept for the next one; any other test finds the device as it would without the
    harness. (Its modules are loaded only where a scenario item ran.)"""
    if "graph_harness.core.guard" in sys.modules or isinstance(item, CaseItem):
        from graph_harness.core.guard import keep_slabs

        keep_slabs(isinstance(item, CaseItem))


def pytest_itemcollected(item: pytest.Item) -> None:
    if isinstance(item, CaseItem):
        item.keywords[_SCENARIO_CASE] = True


def pytest_sessionstart(session: pytest.Session) -> None:
    """Validate the ledgers before collecting (a bad one is a usage error), and start gathering results."""
    _ledger(session.config)
    session.config.pluginmanager.register(_Collector(), "graph_harness_results")
