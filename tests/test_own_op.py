"""A kernel team's own op, from its own repository: op scenarios in YAML, the `graph_guard` fixture, discovery
from the rootdir, and a plugin that touches nothing but its own items. Every run is a pytester project."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graph_harness.cli import main
from graph_harness.errors import BadInput
from graph_harness.suite.files import load_scenarios

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "own-op"

# An op nobody here wrote: `out = x + 1`, where `extra` stores that many elements past the end.
MYOP = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _add_one(x_ptr, out_ptr, n, EXTRA: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr + offs, x + 1.0, mask=offs < n + EXTRA)


def add_one(inputs, extra=0):
    x = inputs["x"]
    out = torch.empty_like(x)
    _add_one[(triton.cdiv(x.numel() + extra, 64),)](x, out, x.numel(), EXTRA=extra, BLOCK=64)
    return out


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def inputs(size, seed):
    return {"x": torch.randn(size, 50, generator=torch.Generator(DEVICE).manual_seed(seed), device=DEVICE)}


def reference(inputs, **_):
    return inputs["x"].double() + 1


def case(extra=0):
    return (lambda i: add_one(i, extra)), inputs, reference
'''

SCENARIO = '''\
graph-harness: scenarios
add-one:
  why: an off-by-N store and its fix
  op: myop:case
  capture_sizes: [1, 2]
  seed: 4
  variants:
    buggy:
      params: {extra: 3}
      expect: {verdict: oob-write, buffer: out, side: overflow, first: 0, last: 11, bytes: 12}
    fixed:
      expect: clean
'''


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*args, "-p", "no:cacheprovider", "-p", "no:benchmark")


def _write_project(root: Path) -> Path:
    """A repository of its own: the op as a module at its root, one op scenario file."""
    (root / "myop.py").write_text(MYOP)
    (root / "tox.ini").write_text("[pytest]\npythonpath = .\n")
    (root / "scenarios").mkdir()
    (root / "scenarios" / "ops.yaml").write_text(SCENARIO)
    return root


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The project, for in-process pytest runs."""
    _write_project(pytester.path)
    return pytester


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project, for the CLI: no pytester, whose teardown would drop modules the CLI imported for good
    (pyarrow's pandas extension types cannot be registered twice in one process)."""
    monkeypatch.delitem(sys.modules, "myop", raising=False)
    (tmp_path / "repo").mkdir()
    return _write_project(tmp_path / "repo")


# Op scenarios ---------------------------------------------------------------------------------------------

def test_op_scenarios_are_items_that_find_the_bug_to_the_byte(project: pytest.Pytester) -> None:
    result = _run(project, "scenarios", "-v", "--harness-json", "r.json")
    result.assert_outcomes(passed=4)
    assert [line.split(" ")[0] for line in result.outlines if "::" in line and "PASSED" in line] == [
        f"scenarios/ops.yaml::add-one[{v}-T{t}]" for t in (1, 2) for v in ("buggy", "fixed")]
    records = json.loads((project.path / "r.json").read_text())
    buggy = [r for r in records if r["variant"] == "buggy"]
    assert [(r["verdict"], r["violations"][0]["bytes"], r["violations"][0]["op"]) for r in buggy] == [
        ("oob-write", 12, "_add_one")] * 2
    assert buggy[0]["repro"] == "graph-harness run add-one --variant buggy --sizes 1 --seed 4 --scenarios scenarios"


def test_an_op_scenario_runs_from_the_cli_anywhere(project_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The repro line works from another directory: the op's module is found next to the scenario folder."""
    monkeypatch.chdir(tmp_path)
    folder = str(project_dir / "scenarios")
    assert main(["run", "add-one", "--variant", "buggy", "--sizes", "2", "--scenarios", folder,
                 "--json", "r.json"]) == 0
    (record,) = json.loads(Path("r.json").read_text())
    assert (record["scenario"], record["variant"], record["verdict"], record["passed"]) == (
        "add-one", "buggy", "oob-write", True)
    assert "│ buggy   │ 2 │ oob-write │ ok   │ out" in capsys.readouterr().out


def test_the_nightly_report_takes_op_scenarios(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project_dir)
    assert main(["report", "--scenarios", "scenarios", "--variant", "buggy", "--sizes", "1", "--out", "nightly"]) == 0
    report = (project_dir / "nightly" / "report.md").read_text()
    assert "**PASS: 0 of 1 case failed its scenario's expectation; no baseline**" in report
    assert "| buggy | 1 | 0 | oob-write | oob-write | ok | out | 12 |" in report


def test_a_registered_bug_on_an_op_scenario_reproduces(project_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (project_dir / "scenarios" / "bugs.yaml").write_text("""\
add-one-overrun:
  title: the store mask runs 3 elements long
  source: own-op#1
  why: the kernel's mask was n + 3
  size: 2
  buggy: {scenario: add-one, variant: buggy, verdict: oob-write, buffer: out, allocated: 400, written: 412}
  fixed: {scenario: add-one, variant: fixed, verdict: clean}
""")
    monkeypatch.chdir(project_dir)
    assert main(["reproduce", "add-one-overrun", "--scenarios", "scenarios"]) == 0
    printed = capsys.readouterr().out
    assert "│ bytes written   │ 412 " in printed
    (project_dir / "scenarios" / "bugs.yaml").write_text(
        (project_dir / "scenarios" / "bugs.yaml").read_text().replace("written: 412", "written: 416"))
    assert main(["list", "--scenarios", "scenarios"]) == 2
    assert ("buggy.written: got out allocated 400, written 416; allowed: buffer out, written = allocated + 12, "
            "as add-one buggy states at T=2") in capsys.readouterr().err


def test_a_failing_op_scenario_prints_its_violations_and_repro(project: pytest.Pytester) -> None:
    (project.path / "scenarios" / "ops.yaml").write_text(SCENARIO.replace("bytes: 12", "bytes: 8"))
    result = _run(project, "scenarios", "-k", "buggy-T1")
    result.assert_outcomes(failed=1)
    text = "\n".join(result.outlines)
    assert ("add-one buggy T=1: expected oob-write buffer=out side=overflow first=0 last=11 bytes=8, "
            "verdict oob-write") in text
    assert "oob-write detected but not the expected" in text
    assert "repro: graph-harness run add-one --variant buggy --sizes 1 --seed 4 --scenarios scenarios" in text
    assert "Traceback" not in text


def test_a_factory_that_does_not_import_is_one_line(project: pytest.Pytester, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (project.path / "scenarios" / "ops.yaml").write_text(SCENARIO.replace("myop:case", "nosuchmodule:case"))
    result = _run(project, "scenarios", "-k", "fixed-T1")
    result.assert_outcomes(failed=1)
    assert any("scenarios/ops.yaml: add-one: op: got 'nosuchmodule:case'; allowed: an importable module:attribute; "
               "ModuleNotFoundError" in line for line in result.outlines)
    monkeypatch.chdir(project.path)
    assert main(["run", "--scenarios", "scenarios"]) == 2
    assert "ModuleNotFoundError: No module named 'nosuchmodule'" in capsys.readouterr().err


BAD_OP_SCENARIOS = [  # (id, a change to SCENARIO, the whole message)
    ("bad-op", ("myop:case", "myop.case"),
     "ops.yaml: add-one: op: got 'myop.case'; allowed: module.path:attribute, e.g. own_op.scenarios:scale_shift_case"),
    ("unknown-field", ("  seed: 4\n", "  seed: 4\n  colour: red\n"),
     "ops.yaml: add-one: colour: got unknown field; allowed: why, capture_sizes, cpu_sizes, seed, hang_after, "
     "fuzzed_inputs, op, params, tolerance, import_root, variants"),
    ("bad-verdict", ("expect: clean", "expect: fine"),
     "ops.yaml: add-one: variants.fixed.expect.verdict: got 'fine'; allowed: hang, capture-error, crash, oob-write"),
    ("bytes-on-clean", ("expect: clean", "expect: {verdict: clean, bytes: 4}"),
     "ops.yaml: add-one: variants.fixed.expect.bytes: got 4; allowed: byte figures go with oob-write or oob-read, not "
     "clean"),
    ("first-after-last", ("first: 0, last: 11", "first: 12, last: 11"),
     "ops.yaml: add-one: variants.buggy.expect.first: got 12 after last 11; allowed: first <= last"),
    ("no-variants", ("  variants:\n", "  other:\n"),  # the unknown key is named, not only the one it left missing
     "ops.yaml: add-one: other: got unknown field; allowed: why, capture_sizes, cpu_sizes, seed, hang_after, "
     "fuzzed_inputs, op, params, tolerance, import_root, variants"),
    ("expect-at-stray-size", ("      expect: clean\n", "      expect: clean\n      expect_at: {8: clean}\n"),
     "ops.yaml: add-one: variants.fixed.expect_at: got 8; allowed: capture sizes of the scenario (1, 2)"),
    ("bad-variant-id", ("    fixed:", "    Fixed Now:"),
     "ops.yaml: add-one: variants.Fixed Now: got 'Fixed Now'; allowed: lowercase letters, digits, '.', '_', '-'"),
]


@pytest.mark.parametrize(("change", "message"), [pytest.param(c, m, id=i) for i, c, m in BAD_OP_SCENARIOS])
def test_a_bad_op_scenario_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: tuple[str, str],
                                       message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert change[0] in SCENARIO
    Path("ops.yaml").write_text(SCENARIO.replace(*change))
    with pytest.raises(BadInput) as err:
        load_scenarios([Path("ops.yaml")])
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(message), str(err.value)


# The fixture --------------------------------------------------------------------------------------------

FIXTURE_TESTS = '''
import graph_harness as gh
import myop


def test_fixed(graph_guard):
    results = graph_guard.check(myop.add_one, myop.inputs, [1, 2], reference=myop.reference)
    assert [r.verdict for r in results] == ["clean", "clean"]


def test_buggy_as_expected(graph_guard):
    graph_guard.check(lambda i: myop.add_one(i, 1), myop.inputs, [1], reference=myop.reference,
                      expect=gh.expect.oob_write("out", side="overflow", first=0, last=3, bytes=4))


def test_buggy_unexpected(graph_guard):
    graph_guard.check(lambda i: myop.add_one(i, 2), myop.inputs, [1], reference=myop.reference)
'''


def test_the_fixture_fails_a_test_with_the_violations_and_a_repro_line(project: pytest.Pytester) -> None:
    project.makepyfile(test_ops=FIXTURE_TESTS)
    result = _run(project, "test_ops.py", "--harness-json", "r.json", "--harness-seed", "9")
    result.assert_outcomes(passed=2, failed=1)
    text = "\n".join(result.outlines)
    assert "test_buggy_unexpected default T=1: expected clean, verdict oob-write (" in text
    assert "During handling" not in text
    assert "expected clean, got oob-write: out: 8 B past its end (8 B " in text
    # The kernel's argument is named where the lane checker saw the store (the interpreter), not on a GPU.
    op = "_add_one" if torch.cuda.is_available() else "_add_one(out_ptr)"
    assert f"│ out    │ overflow │ write  │     0 │    7 │     8 │    1 │ {op} │ -    │" in text
    assert "repro: pytest 'test_ops.py::test_buggy_unexpected' --harness-seed 9" in text
    assert "Traceback" not in text
    assert "core/check.py" not in text
    records = json.loads((project.path / "r.json").read_text())
    assert sorted((r["scenario"], r["capture_size"], r["verdict"], r["seed"]) for r in records) == [
        ("test_buggy_as_expected", 1, "oob-write", 9), ("test_buggy_unexpected", 1, "oob-write", 9),
        ("test_fixed", 1, "clean", 9), ("test_fixed", 2, "clean", 9)]
    assert "test_fixed on " in text  # the summary table, as for scenario items


def test_the_ledger_tolerates_and_quarantines_fixture_tests(project: pytest.Pytester) -> None:
    project.makepyfile(test_ops=FIXTURE_TESTS + '''

def test_only_in_a_child(graph_guard):
    import os
    assert os.environ.get("GRAPH_HARNESS_QUARANTINED") == "1"
    graph_guard.check(myop.add_one, myop.inputs, [1], reference=myop.reference)
''')
    (project.path / "scenarios" / "ledger.yaml").write_text("""\
entries:
  - {test: "test_ops.py::test_buggy_unexpected", status: tolerated, cites: a/b#1, why: known overrun}
  - {test: "test_ops.py::test_fixed", status: tolerated, cites: a/b#2, why: "fixed since: the ledger must say so"}
  - {test: "test_ops.py::test_only_in_a_child", status: quarantined, cites: a/b#3, why: a crash class}
""")
    result = _run(project, "test_ops.py", "-rxX")
    result.assert_outcomes(passed=2, xfailed=1, failed=1)
    text = "\n".join(result.outlines)
    assert "tolerated by the ledger (a/b#2) but it passed: remove the entry" in text
    assert "XFAIL test_ops.py::test_buggy_unexpected - tolerated (a/b#1)" in text


def test_the_example_project_runs_from_its_own_directory(pytester: pytest.Pytester) -> None:
    """examples/own-op as its README runs it: fixture tests and op scenarios, the bug found to the byte."""
    shutil.copytree(EXAMPLE, pytester.path / "own-op")
    pytester.chdir()
    result = pytester.runpytest("own-op", "-p", "no:cacheprovider", "-p", "no:benchmark", "--rootdir", "own-op",
                                "-c", "own-op/pyproject.toml")
    result.assert_outcomes(passed=8)


# A guest in someone else's test run ---------------------------------------------------------------------

def test_foreign_tests_named_or_marked_gpu_run(pytester: pytest.Pytester) -> None:
    (pytester.path / "gpu").mkdir()
    (pytester.path / "gpu" / "test_kernel.py").write_text("def test_in_a_gpu_folder():\n    assert True\n")
    pytester.makepyfile(test_marked="""
        import pytest

        @pytest.mark.gpu
        def test_marked_gpu():
            assert True
    """)
    result = _run(pytester, "-rs")
    result.assert_outcomes(passed=2)


def test_another_tools_yaml_in_a_scenarios_folder_is_left_alone(pytester: pytest.Pytester) -> None:
    (pytester.path / "scenarios").mkdir()
    (pytester.path / "scenarios" / "k8s.yaml").write_text("apiVersion: v1\nkind: Pod\n")
    (pytester.path / "scenarios" / "broken.yaml").write_text("{{ not: yaml\n")
    pytester.makepyfile(test_a="def test_a():\n    assert True\n")
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK


def test_scenarios_are_found_from_the_rootdir_not_the_working_directory(project: pytest.Pytester) -> None:
    (project.path / "tests").mkdir()
    (project.path / "tests" / "test_x.py").write_text("def test_x():\n    assert True\n")
    project.chdir()  # tox.ini, from the fixture's makeini, marks the rootdir
    import os

    os.chdir(project.path / "tests")
    result = project.runpytest("..", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark")
    assert "scenarios/ops.yaml::add-one[fixed-T1]" in "\n".join(result.outlines)


def test_the_ini_option_names_the_scenario_folders(project: pytest.Pytester) -> None:
    shutil.move(project.path / "scenarios", project.path / "cases")
    project.makeini("[pytest]\npythonpath = .\ngraph_harness_scenarios = cases\n")
    result = _run(project, "--collect-only", "-q")
    assert [line for line in result.outlines if "::" in line] == [
        f"cases/ops.yaml::add-one[{v}-T{t}]" for t in (1, 2) for v in ("buggy", "fixed")]


def test_a_foreign_run_imports_nothing_heavy_and_pins_nothing(pytester: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import graph_harness.plugin

    def no_gpu_question() -> bool:
        raise AssertionError("a run without graph-harness items asked about GPUs")

    monkeypatch.setattr(graph_harness.plugin, "_gpu_present", no_gpu_question)
    pytester.makepyfile(test_a="def test_a():\n    assert True\n")
    _run(pytester, "-n", "2").assert_outcomes(passed=1)  # _run: no pytest-benchmark, which refuses xdist
    loaded = subprocess.run([sys.executable, "-c", "import sys, graph_harness.plugin; "
                             "print(sorted(m for m in ('torch', 'triton', 'pandas', 'pydantic') if m in sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


# The layers ---------------------------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_core_imports_no_domain_no_scenario_and_no_cli() -> None:
    above = ("graph_harness.moe", "graph_harness.kernels", "graph_harness.suite", "graph_harness.schema",
             "graph_harness.cli", "graph_harness.plugin", "graph_harness.reports")
    for path in sorted((REPO / "harness" / "core").glob("*.py")):
        bad = sorted(m for m in _imports(path) if m.startswith(above))
        assert not bad, f"{path.name} imports {bad}"
    for path in sorted((REPO / "harness" / "moe").glob("*.py")):
        bad = sorted(m for m in _imports(path) if m.startswith(("graph_harness.suite", "graph_harness.cli",
                                                                "graph_harness.plugin")))
        assert not bad, f"moe/{path.name} imports {bad}"
    for path in sorted([*(REPO / "harness" / "suite").glob("*.py"), *(REPO / "reports").glob("*.py")]):
        bad = sorted(m for m in _imports(path) if m.startswith(("graph_harness.cli", "graph_harness.plugin")))
        assert not bad, f"{path.parent.name}/{path.name} imports {bad}"
