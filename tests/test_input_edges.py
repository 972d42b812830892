"""Input edges (issue 15): YAML that is not UTF-8, unknown fields with their close match, one --sizes spelling
with its bounds on every subcommand, and citations a reader can open."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from graph_harness.cli import build_parser, main
from graph_harness.errors import BadInput
from graph_harness.suite.files import builtin_scenario_dir, declares
from graph_harness.suite.ledger import load_ledger
from tests.test_cli import _bad_input_line

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "graph-harness: error: "

MOE = """\
graph-harness: scenarios
s1:
  why: the founding shape
  model: {hidden: 7168, inter: 2048, experts: 256, topk: 8}
  dtype: bf16
  quant: per_1x128
  block_m: auto
  splitk: auto
  cu_num: 256
  capture_sizes: [1]
  policies: {original: oob-write, pr2551: clean}
"""

OP = """\
graph-harness: scenarios
my-op:
  why: a kernel of our own
  op: own_op.scenarios:scale_op
  capture_size: [1, 2]
  variants:
    fixed: {expect: clean}
"""

MOE_FIELDS = ("why, capture_sizes, cpu_sizes, seed, hang_after, fuzzed_inputs, model, dtype, quant, activation, "
              "block_m, splitk, cu_num, contract, policies, expect_bytes, idle_tokens, reads_past")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty scenario folder `sc`, with the working directory above it so that messages name `sc/...`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sc").mkdir()
    return Path("sc")


@pytest.fixture
def builtin_copy(folder: Path) -> Path:
    """The built-in scenario folder, copied to `sc` for one file of it to be spoilt."""
    shutil.copytree(builtin_scenario_dir(), folder, dirs_exist_ok=True)
    return folder


def _list_error(folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`graph-harness list --scenarios folder` fails as bad input: its one line, without the prefix."""
    assert main(["list", "--scenarios", str(folder)]) == 2
    return _bad_input_line(capsys).removeprefix(PREFIX)


# 1. YAML that is not UTF-8 -----------------------------------------------------------------------------------

def test_scenario_file_with_latin1_bytes_names_the_byte(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "scn.yaml").write_bytes(MOE.replace("founding", "fondée").encode("latin-1"))
    assert _list_error(folder, capsys) == ("sc/scn.yaml: got bytes that are not UTF-8 (byte 0xe9 at offset 44, "
                                           "line 3); allowed: a UTF-8 YAML file")


def test_binary_bugs_yaml(builtin_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (builtin_copy / "bugs.yaml").write_bytes(b"\xff\x00\x13binary")
    assert _list_error(builtin_copy, capsys) == ("sc/bugs.yaml: got bytes that are not UTF-8 (byte 0xff at offset 0, "
                                                 "line 1); allowed: a UTF-8 YAML file")


def test_binary_ledger_yaml(folder: Path) -> None:
    (folder / "ledger.yaml").write_bytes(b"entries: []\n\x80")
    with pytest.raises(BadInput) as caught:
        load_ledger(folder / "ledger.yaml", {})
    assert str(caught.value) == ("sc/ledger.yaml: got bytes that are not UTF-8 (byte 0x80 at offset 12, line 2); "
                                 "allowed: a UTF-8 YAML file")


@pytest.mark.parametrize(("encoding", "named"), [
    ("utf-16", "UTF-16 (little-endian)"),  # Python writes a byte-order mark, as Windows editors do
    ("utf-16-be", "UTF-16 (big-endian)"),  # no mark: told by the NUL before the first ASCII character
    ("utf-32", "UTF-32 (little-endian)"),
    ("utf-32-be", "UTF-32 (big-endian)"),
])
def test_wide_scenario_file_is_reported_not_skipped(encoding: str, named: str, folder: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "scn.yaml").write_bytes(MOE.encode(encoding))
    assert declares(folder / "scn.yaml")
    assert _list_error(folder, capsys) == f"sc/scn.yaml: got {named} text; allowed: a UTF-8 YAML file; save it as UTF-8"


def test_wide_file_that_does_not_declare_itself_is_left_alone(folder: Path) -> None:
    (folder / "other.yaml").write_bytes("tool: another one's\n".encode("utf-16"))
    (folder / "binary.yaml").write_bytes(b"\xff\xd8\xff\xe0 a JPEG under a YAML name")
    assert not declares(folder / "other.yaml")
    assert not declares(folder / "binary.yaml")


def test_utf8_byte_order_mark_is_utf8(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "scn.yaml").write_bytes(MOE.encode("utf-8-sig"))
    assert declares(folder / "scn.yaml")
    assert main(["footprint", "s1", "--scenarios", str(folder)]) == 0
    assert "s1: K=7168 N=2048 E=256 topk=8" in capsys.readouterr().out


# 2. An unknown field names itself and its close match --------------------------------------------------------

def test_typo_in_moe_scenario_wins_over_the_missing_field(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "scn.yaml").write_text(MOE.replace("capture_sizes:", "capture_size:"))
    assert _list_error(folder, capsys) == (f"sc/scn.yaml: s1: capture_size: got unknown field; allowed: {MOE_FIELDS}; "
                                           "did you mean capture_sizes?")


def test_typo_in_op_scenario(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "scn.yaml").write_text(OP)
    assert _list_error(folder, capsys) == (
        "sc/scn.yaml: my-op: capture_size: got unknown field; allowed: why, capture_sizes, cpu_sizes, seed, "
        "hang_after, fuzzed_inputs, op, params, tolerance, import_root, variants; did you mean capture_sizes?")


@pytest.mark.parametrize(("typo", "message"), [
    pytest.param(("hidden:", "hiden:"),
                 "model.hiden: got unknown field; allowed: hidden, inter, experts, topk, tp; did you mean hidden?",
                 id="nested-model"),
    pytest.param(("cu_num: 256\n", "cu_num: 256\n  contract: {paddin: unmasked}\n"),
                 "contract.paddin: got unknown field; allowed: padding, stage2_padding, memset_rows, predicate, "
                 "kbatch_guard, k_per_block, sorted_tail, negative_ids; did you mean padding?",
                 id="nested-dataclass"),
    pytest.param(("cu_num: 256\n", "cu_num: 256\n  colour: blue\n"),
                 f"colour: got unknown field; allowed: {MOE_FIELDS}", id="no-close-match"),
])
def test_typo_in_a_nested_field(typo: tuple[str, str], message: str, folder: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "scn.yaml").write_text(MOE.replace(*typo))
    assert _list_error(folder, capsys) == f"sc/scn.yaml: s1: {message}"


def test_typo_in_bugs_yaml(builtin_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = builtin_copy / "bugs.yaml"
    registry.write_text(registry.read_text().replace("  title: split-K memset", "  titel: split-K memset", 1))
    assert _list_error(builtin_copy, capsys) == (
        "sc/bugs.yaml: aiter-2508: titel: got unknown field; allowed: title, source, why, size, buggy, fixed; "
        "did you mean title?")


def test_typo_in_ledger_yaml(folder: Path) -> None:
    (folder / "ledger.yaml").write_text(
        "entries:\n  - {test: 'tests/t.py::t', status: tolerated, cite: 'o/r#1', why: known}\n")
    with pytest.raises(BadInput) as caught:
        load_ledger(folder / "ledger.yaml", {})
    assert str(caught.value) == ("sc/ledger.yaml: entries[0].cite: got unknown field; allowed: scenario, variant, "
                                 "sizes, test, status, cites, why; did you mean cites?")


# 3. One spelling of capture sizes: --sizes T [T ...], and --size T (repeatable) ------------------------------

def _footprint_sizes(argv: list[str], tmp_path: Path) -> list[int]:
    out = tmp_path / "fp.json"
    assert main(["footprint", "deepseek-v3-tp8-decode", *argv, "--json", str(out)]) == 0
    return sorted({r["capture_size"] for r in json.loads(out.read_text())})


@pytest.mark.parametrize(("argv", "sizes"), [
    pytest.param(["--size", "1", "--size", "2"], [1, 2], id="size-repeated"),
    pytest.param(["--sizes", "1", "2"], [1, 2], id="sizes"),
    pytest.param(["--sizes", "1", "--size", "4", "--sizes", "2", "1"], [1, 2, 4], id="mixed-union"),
])
def test_footprint_takes_both_spellings(argv: list[str], sizes: list[int], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert _footprint_sizes(argv, tmp_path) == sizes


@pytest.mark.parametrize("command", ["run", "report"])
@pytest.mark.parametrize(("argv", "sizes"), [
    pytest.param(["--size", "4"], [4], id="size"),
    pytest.param(["--sizes", "1", "2", "--size", "4"], [1, 2, 4], id="mixed"),
])
def test_run_and_report_take_both_spellings(command: str, argv: list[str], sizes: list[int]) -> None:
    assert build_parser().parse_args([command, *argv]).sizes == sizes


@pytest.mark.parametrize("command", ["footprint", "run", "report"])
def test_help_shows_sizes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # as argparse wraps it at any width
    assert "[--sizes T [T ...]]" in out
    assert "--size T adds one, and may repeat" in out


@pytest.mark.parametrize("flag", ["--size", "--sizes"])
@pytest.mark.parametrize("command", ["footprint", "run"])
def test_bad_size_names_the_flag_as_typed(flag: str, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "deepseek-v3-tp8-decode", flag, "0"]) == 2
    assert _bad_input_line(capsys) == f"{PREFIX}argument {flag}: got '0'; allowed: integer >= 1"


# 4. Sizes outside a named scenario's capture_sizes, for footprint as for run ---------------------------------

@pytest.mark.parametrize("command", ["footprint", "run"])
@pytest.mark.parametrize(("argv", "bad"), [
    pytest.param(["--size", "100000"], "100000", id="size"),
    pytest.param(["--sizes", "1", "3", "100000"], "3, 100000", id="sizes"),
])
def test_sizes_outside_capture_sizes(command: str, argv: list[str], bad: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    assert main([command, "deepseek-v3-tp8-decode", *argv]) == 2
    assert _bad_input_line(capsys) == (f"{PREFIX}scenarios/deepseek_v3.yaml: deepseek-v3-tp8-decode: --sizes: got "
                                       f"{bad}; allowed: its capture_sizes 1, 2, 4, 8")


def test_footprint_checks_every_scenario_before_printing(capsys: pytest.CaptureFixture[str]) -> None:
    # deepseek-v3-ep-decode has capture size 1 alone; the tp8 layer, 1, 2, 4 and 8.
    assert main(["footprint", "deepseek-v3-tp8-decode", "deepseek-v3-ep-decode", "--sizes", "2"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.endswith("deepseek-v3-ep-decode: --sizes: got 2; allowed: its capture_sizes 1\n")


# 5. Every citation names something a reader can open ---------------------------------------------------------

_SKIP_DIRS = {"build", "__pycache__", "out", "report"}  # and every dot-folder: .git, caches
_HISTORICAL = {ROOT / "benchmarks" / "NOTES.md"}  # a dated log: what it cites stays as it was written
_SECTION = r"§\d+(?:\.\d+)*"
# `docs/moe-contracts.md §7, §8.3`, or `§7/§8.3`, or `§8.1 (...) and §8.2`: the file and each section.
_CITATION = re.compile(rf"([\w./-]+\.md) ({_SECTION}(?:[^§\n]{{0,40}}?(?:,|/|and) ?{_SECTION})*)")
_REFERENCE_NOTE = re.compile(r"[\w./-]*\b(?:moe-contracts|oob-detection|style-anchors|anchors)\.md")


def _sources() -> list[Path]:
    """The repository's .py, .yaml and .md files, build output and the historical log left out."""
    return sorted(p for p in ROOT.rglob("*") if p.suffix in (".py", ".yaml", ".md") and p.is_file()
                  and not any(part in _SKIP_DIRS or part.startswith(".") for part in p.relative_to(ROOT).parts[:-1])
                  and not any(part.endswith(".egg-info") for part in p.parts) and p not in _HISTORICAL)


def _has_section(document: Path, section: str) -> bool:
    """Whether `section` (`8.3`, `7`) heads a section of a Markdown file: `## 7.` or `### 8.3 ...`."""
    return re.search(rf"^#+ {re.escape(section)}[. ]", document.read_text(encoding="utf-8"), re.MULTILINE) is not None


def test_every_section_citation_opens_in_the_repository() -> None:
    seen, wrong = 0, []
    for path in _sources():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in _CITATION.finditer(line):
                seen += 1
                where = f"{path.relative_to(ROOT)}:{lineno}: {match.group(0)}"
                document = ROOT / match.group(1)
                if not document.is_file():
                    wrong.append(f"{where}: no file {match.group(1)} in the repository")
                    continue
                wrong += [f"{where}: no heading {s} in {match.group(1)}"
                          for s in re.findall(r"§(\d+(?:\.\d+)*)", match.group(2)) if not _has_section(document, s)]
    assert seen >= 20  # the kernels' docstrings, the scenario files' headers, the README
    assert wrong == []


def test_reference_notes_are_named_by_their_path_in_the_repository() -> None:
    wrong = [f"{path.relative_to(ROOT)}: {name}" for path in _sources()
             for name in _REFERENCE_NOTE.findall(path.read_text(encoding="utf-8")) if not (ROOT / name).is_file()]
    assert wrong == []


def test_list_cites_no_file_outside_the_repository(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no cell wraps a path in two
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out
    cited = set(re.findall(r"[\w./-]+\.md\b", out))
    assert {name for name in cited if not (ROOT / name).is_file()} == set()
    bare = [line for line in _CITATION.sub("", out).splitlines() if "§" in line]  # a section of which file?
    assert bare == []
    assert "vLLM #19515 / #50845 (S5)" in out  # a bug's source leads with the upstream issue
