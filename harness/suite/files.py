"""Scenario folders and files: the built-in folder, which YAML files are graph-harness scenario files, and
loading them into scenarios of every kind (an MoE layer, or an op of the user's own).

A scenario file declares itself with one top-level line, `graph-harness: scenarios`. Any other YAML file
in a scenario folder (another tool's, the bug registry, the ledger) is not a scenario file, and is left
alone: a folder can be shared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from graph_harness.errors import bad_value, display_path, show
from graph_harness.moe.scenario import MoEScenario
from graph_harness.schema import (
    ScenarioBase,
    bad_entry,
    builtin_scenario_dir,
    check_id,
    file_schema,
    read_yaml,
    wide_encoding,
)
from graph_harness.suite.op import OpScenario

DECLARE_KEY, DECLARE_VALUE = "graph-harness", "scenarios"
_DECLARED = re.compile(rf"^{DECLARE_KEY}:[ \t]*{DECLARE_VALUE}[ \t]*(#.*)?$", re.MULTILINE)
REGISTRY_FILE = "bugs.yaml"  # the bug registry of a folder (graph_harness.suite.bugs)
LEDGER_FILE = "ledger.yaml"  # its known failures (graph_harness.suite.ledger)

Scenario = ScenarioBase  # a scenario of any kind: MoEScenario or OpScenario
__all__ = ["Scenario", "builtin_scenario_dir", "load_scenarios", "scenario_files"]


def declares(path: Path) -> bool:
    """Whether a YAML file declares itself a graph-harness scenario file; read as text, so that a file that is
    not YAML at all is never parsed (an unreadable one is not ours either)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    # A UTF-16 or UTF-32 file (a Windows editor's "Unicode") that declares itself is ours, refused when it loads
    # (read_yaml names the file and its encoding): skipped here, its scenarios would vanish without a word. A
    # byte-order mark would hide a declaration on the first line.
    text = data.decode(wide_encoding(data) or "utf-8", errors="replace").removeprefix("\ufeff")
    return bool(_DECLARED.search(text))


def yaml_files(directory: Path) -> tuple[Path, ...]:
    """The *.yaml and *.yml files of a folder, sorted so that xdist workers agree."""
    if not directory.is_dir():
        return ()
    return tuple(sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))


def declared_files(directory: Path) -> tuple[Path, ...]:
    """The scenario files of a folder, sorted; none when it has none (or is no folder)."""
    return tuple(p for p in yaml_files(directory) if declares(p))


def scenario_files(directory: Path) -> tuple[Path, ...]:
    """The scenario files of a folder; BadInput when it has none, naming what it holds instead."""
    found = yaml_files(directory)
    files = declared_files(directory)
    if not files:
        held = (f"{len(found)} YAML file(s), none declaring `{DECLARE_KEY}: {DECLARE_VALUE}`" if found
                else "no YAML file")
        raise bad_value(display_path(directory), "", held,
                        f"a folder of scenario files, each with the top-level line `{DECLARE_KEY}: {DECLARE_VALUE}`")
    return files


def _kind(body: object) -> type[ScenarioBase]:
    return OpScenario if isinstance(body, Mapping) and "op" in body else MoEScenario


def load_scenarios(paths: Sequence[Path]) -> dict[str, Scenario]:
    """Every scenario of the given files, keyed by id in sorted order; ids must be unique across files."""
    found: dict[str, Scenario] = {}
    for path in paths:
        shown = display_path(path)
        data = read_yaml(path, f"a mapping of scenario id to scenario, with `{DECLARE_KEY}: {DECLARE_VALUE}`")
        if data.get(DECLARE_KEY) != DECLARE_VALUE:
            raise bad_value(shown, DECLARE_KEY, show(data.get(DECLARE_KEY)), repr(DECLARE_VALUE),
                            "the line that declares a scenario file")
        for key, body in data.items():
            if key == DECLARE_KEY:
                continue
            check_id(shown, key, "scenario id")
            if key in found:
                first = found[key].source
                raise bad_value(f"{shown}: {key}", "scenario id", "a duplicate", "ids unique across files",
                                f"first defined in {display_path(first) if first else '?'}")
            kind = _kind(body)
            if isinstance(body, Mapping) and "op" in body and "model" in body:
                raise bad_value(f"{shown}: {key}", "op", "op and model together",
                                "op (an op of your own) or model (an MoE layer), not both")
            try:
                found[key] = kind.model_validate(body, context={"id": key, "file": path})
            except ValidationError as err:
                raise bad_entry(f"{shown}: {key}", err, kind) from None
    return dict(sorted(found.items()))


def scenario_file_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file: an entry with `op` is an op scenario, any other an MoE layer's."""
    schema = file_schema([MoEScenario, OpScenario], "graph-harness scenario file: scenario id -> scenario",
                         declaration=(DECLARE_KEY, DECLARE_VALUE))
    schema["additionalProperties"] = {"if": {"required": ["op"]}, "then": {"$ref": "#/$defs/OpScenario"},
                                      "else": {"$ref": "#/$defs/MoEScenario"}}
    # An expectation is a verdict alone (`expect: clean`) or a mapping; pydantic sees only the mapping.
    either = {"anyOf": [{"$ref": "#/$defs/Verdict"}, {"$ref": "#/$defs/ExpectSpec"}]}
    variant = schema["$defs"]["OpVariant"]["properties"]
    variant["expect"] = {**either, "default": "clean"}
    variant["expect_at"]["additionalProperties"] = either
    return schema
