"""What a report says of its results: the summary counts, and the comparison against a baseline run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from rich.table import Table
from rich.text import Text

from graph_harness.core.results import CaseResult, Environment
from graph_harness.core.verdict import Verdict
from graph_harness.reports.timing import comparable

DEFAULT_LATENCY_THRESHOLD = 10.0  # percent

# A case's identity across runs; a second seed of the same case is the same case.
Key = tuple[str, str, int]


def case_key(result: CaseResult) -> Key:
    """(scenario, variant, capture size): what a baseline case is matched on."""
    return result.scenario, result.variant, result.capture_size


def splitk_of(result: CaseResult) -> int:
    """The split-K a case ran with (an MoE case's `splitk` parameter); 0 for a case without one."""
    value = result.params.get("splitk", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# A case's outcome against its scenario's expectation, which the heatmap colours (the verdict is the cell's text).
Outcome = Literal["passed", "failed", "detection regression"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "failed", "detection regression")


def outcome(result: CaseResult) -> Outcome:
    """`passed`; `detection regression` when the case found less than its expectation promised (an oob-write
    variant that came out clean, or only a mismatch); `failed` for any other failure (a clean variant that
    corrupted a guard, a crash)."""
    if result.passed:
        return "passed"
    if result.expected != Verdict.CLEAN and result.verdict.rank > result.expected.rank:
        return "detection regression"
    return "failed"


@dataclass(frozen=True)
class Summary:
    """Counts over one report's results, in the order a reader wants them."""

    cases: int
    passed: int
    failed: int
    verdicts: tuple[tuple[str, int], ...]  # (verdict, cases) in precedence order, verdicts seen only
    scenarios: tuple[str, ...]
    variants: tuple[str, ...]
    environments: tuple[Environment, ...]
    failures: tuple[CaseResult, ...]
    planned: int | None = None  # the cases the run was to make, where known
    interrupted: bool = False  # the run stopped before its plan was done (Ctrl-C)

    @property
    def incomplete(self) -> bool:
        """Whether fewer cases ran than were planned: never a green nightly, whatever passed."""
        return self.interrupted or (self.planned is not None and self.cases < self.planned)


def summarize(results: Sequence[CaseResult], planned: int | None = None, interrupted: bool = False) -> Summary:
    """Pass/fail and verdict counts, the scenarios, variants and environments, and the failed cases; `planned`
    cases were to run, and an `interrupted` run stopped before they had."""
    counts = Counter(r.verdict for r in results)
    failures = tuple(r for r in results if not r.passed)
    return Summary(
        cases=len(results), passed=len(results) - len(failures), failed=len(failures),
        verdicts=tuple((v.value, counts[v]) for v in Verdict if counts[v]),
        scenarios=tuple(dict.fromkeys(r.scenario for r in results)),
        variants=tuple(dict.fromkeys(r.variant for r in results)),
        environments=tuple(dict.fromkeys(r.env for r in results)), failures=failures, planned=planned,
        interrupted=interrupted)


@dataclass(frozen=True)
class CaseChange:
    """One case whose outcome changed against the baseline."""

    scenario: str
    variant: str
    capture_size: int
    expected: str
    before: str | None  # the baseline's verdict; None when the baseline did not run the case
    before_passed: bool | None
    after: str
    after_passed: bool
    reason: str  # why the case passes or fails now


@dataclass(frozen=True)
class LatencyChange:
    """One case whose replay time grew past the threshold."""

    scenario: str
    variant: str
    capture_size: int
    splitk: int
    before_us: float
    after_us: float

    @property
    def percent(self) -> float:
        """Growth of the replay time over the baseline's, in percent."""
        return (self.after_us - self.before_us) / self.before_us * 100


@dataclass(frozen=True)
class BaselineDiff:
    """The current results against a baseline's; a detection regression is also a new failure."""

    compared: int  # cases present in both
    added: int  # cases the baseline did not run
    dropped: int  # baseline cases not run now
    new_failures: tuple[CaseChange, ...]  # passed (or absent) in the baseline, fail now
    fixed: tuple[CaseChange, ...]  # failed in the baseline, pass now
    detection_regressions: tuple[CaseChange, ...]  # a buggy variant's violation found in the baseline, missed now
    latency_regressions: tuple[LatencyChange, ...]
    threshold_pct: float
    timed: int = 0  # cases whose replay times compared: GPU graph replays on a device of the same name both times

    @property
    def failing(self) -> bool:
        """Whether the nightly job fails: a new failure or a detection regression."""
        return bool(self.new_failures or self.detection_regressions)


def worse(a: CaseResult, b: CaseResult) -> CaseResult:
    """Of two seeds of one case, the failing one, else the higher-precedence verdict; `a` on a tie."""
    return min(a, b, key=lambda r: (r.passed, r.verdict.rank))


def by_case(results: Iterable[CaseResult]) -> dict[Key, CaseResult]:
    """Each case once, in first-seen order; of several seeds, the `worse`, so a failure is never hidden by a pass."""
    keyed: dict[Key, CaseResult] = {}
    for r in results:
        key = case_key(r)
        held = keyed.get(key)
        keyed[key] = r if held is None else worse(held, r)
    return keyed


def compare(current: Sequence[CaseResult], baseline: Sequence[CaseResult],
            threshold_pct: float = DEFAULT_LATENCY_THRESHOLD) -> BaselineDiff:
    """New failures, fixed cases, detection regressions and replay-time growth over `threshold_pct` percent."""
    now, before = by_case(current), by_case(baseline)
    new_failures: list[CaseChange] = []
    fixed: list[CaseChange] = []
    detection: list[CaseChange] = []
    latency: list[LatencyChange] = []
    timed = 0
    for key, r in now.items():
        old = before.get(key)
        change = CaseChange(r.scenario, r.variant, r.capture_size, r.expected, None if old is None else old.verdict,
                            None if old is None else old.passed, r.verdict, r.passed, r.reason)
        if not r.passed and (old is None or old.passed):
            new_failures.append(change)
            if old is not None and r.expected != "clean":
                detection.append(change)
        elif r.passed and old is not None and not old.passed:
            fixed.append(change)
        if old is not None and old.replay_us and r.replay_us is not None and comparable(old, r):
            timed += 1
            moved = LatencyChange(r.scenario, r.variant, r.capture_size, splitk_of(r), old.replay_us, r.replay_us)
            if moved.percent > threshold_pct:
                latency.append(moved)
    return BaselineDiff(
        compared=len(now.keys() & before.keys()), added=len(now.keys() - before.keys()),
        dropped=len(before.keys() - now.keys()), new_failures=tuple(new_failures), fixed=tuple(fixed),
        detection_regressions=tuple(detection), latency_regressions=tuple(latency), threshold_pct=threshold_pct,
        timed=timed)


def plural(count: int, noun: str) -> str:
    """`1 new failure`, `2 new failures`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def diff_headline(diff: BaselineDiff) -> str:
    """One line: the counts of every kind of change, and whether they fail the job."""
    verdict = "FAIL" if diff.failing else "ok"
    latency = (f"{plural(len(diff.latency_regressions), 'replay latency regression')} over "
               f"{diff.threshold_pct:g}% ({diff.timed} timed on the same GPU both runs)" if diff.timed else
               "replay latency not compared (no case ran on the same GPU both runs)")
    return (f"{verdict}: {plural(len(diff.new_failures), 'new failure')} "
            f"({plural(len(diff.detection_regressions), 'detection regression')}), {len(diff.fixed)} fixed, "
            f"{latency}; {plural(diff.compared, 'case')} compared, {diff.added} new, {diff.dropped} not run")


def _outcome(verdict: str | None, passed: bool | None) -> str:
    if verdict is None:
        return "absent"
    return f"{verdict} {'ok' if passed else 'FAIL'}"


# What a row of `diff_rows` is, strongest first; the HTML class and console style of each live with their format.
ChangeKind = Literal["detection regression", "new failure", "fixed", "latency"]
DiffRow = tuple[ChangeKind, tuple[str, str, str, str, str, str]]  # (kind, cells under DIFF_HEADERS)


def _change_cells(label: str, change: CaseChange) -> tuple[str, str, str, str, str, str]:
    return (label, change.scenario, change.variant, f"{change.capture_size:,}",
            _outcome(change.before, change.before_passed), _outcome(change.after, change.after_passed))


def diff_rows(diff: BaselineDiff) -> list[DiffRow]:
    """(kind, (change, scenario, variant, T, baseline, now)) per change: detection regressions, other new failures,
    fixes, then latency; a detection regression, also a new failure, is listed once, as the stronger."""
    detected = set(diff.detection_regressions)
    rows: list[DiffRow] = [("detection regression", _change_cells("detection regression", c))
                           for c in diff.new_failures if c in detected]
    rows += [("new failure", _change_cells("new failure", c)) for c in diff.new_failures if c not in detected]
    rows += [("fixed", _change_cells("fixed", c)) for c in diff.fixed]
    for moved in diff.latency_regressions:
        split = f"splitk {moved.splitk}" if moved.splitk > 1 else "ksplit 1"
        rows.append(("latency", (f"latency ({split})", moved.scenario, moved.variant, f"{moved.capture_size:,}",
                                 f"{moved.before_us:,.1f} us", f"{moved.after_us:,.1f} us ({moved.percent:+.1f}%)")))
    return rows


_STYLE: dict[ChangeKind, str] = {"detection regression": "red bold", "new failure": "red", "fixed": "green",
                                 "latency": "yellow"}


def diff_table(diff: BaselineDiff) -> Table:
    """Every change against the baseline, one line each (its counts are `diff_headline`)."""
    table = Table(title="changes against the baseline")
    for header in ("change", "scenario", "variant"):
        table.add_column(header, no_wrap=True)
    table.add_column("T", justify="right")
    table.add_column("baseline", no_wrap=True)
    table.add_column("now", no_wrap=True)
    for kind, (label, *rest) in diff_rows(diff):
        table.add_row(Text(label, style=_STYLE[kind]), *rest)
    return table


def job_failed(summary: Summary, diff: BaselineDiff | None) -> bool:
    """Whether the nightly job fails: when it did not run all it planned; against a baseline, on its verdict;
    without one, on any failure (every failure is new)."""
    if summary.incomplete:
        return True
    return diff.failing if diff is not None else summary.failed > 0
