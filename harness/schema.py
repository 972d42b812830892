"""What every graph-harness YAML file shares: the reader, the one-line error for a bad entry, ids, and the
field types scenario files of every kind use (capture sizes, counts). No scenario kind lives here."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from graph_harness.core.verdict import Verdict
from graph_harness.errors import BadInput, bad_value, display_path, one_line, show

if TYPE_CHECKING:
    from graph_harness.core.check import Prepared
    from graph_harness.core.results import CaseResult

Profile = Literal["gpu", "cpu"]  # which sizes a run takes: all of them on a GPU, the CPU subset under the interpreter


def profile_of(device: Any) -> Profile:
    """Full sizes on a GPU; the CPU subset under the interpreter."""
    return "gpu" if device.type == "cuda" else "cpu"


# vLLM _set_cudagraph_sizes at max 512 (docs/moe-contracts.md §6.1): 1, 2, 4, 8..248 by 8, 256..512 by 16 = 51.
VLLM_DEFAULT_SIZES: tuple[int, ...] = (1, 2, 4, *range(8, 256, 8), *range(256, 513, 16))

# Ids name pytest items, repro commands and CLI arguments: keep them shell- and path-safe.
ID_PATTERN = r"[a-z0-9][a-z0-9._-]*"
_ID = re.compile(ID_PATTERN + r"\Z")

_BAD = "bad_value"  # PydanticCustomError type whose ctx carries the allowed text (and field/got overrides)


def rule(allowed: str, field: str = "", got: str = "", reason: str = "") -> PydanticCustomError:
    """A validation error that already knows its allowed values (read back by bad_entry)."""
    ctx = {"allowed": allowed, "field": field, "got": got, "reason": reason}
    return PydanticCustomError(_BAD, "got {got}; allowed: {allowed}", ctx)


def int_or(word: str, minimum: int) -> BeforeValidator:
    """Accept `word` or an integer >= minimum (bool excluded), with one error naming both."""

    def check(value: object) -> object:
        if value == word or (type(value) is int and value >= minimum):
            return value
        raise rule(f"integer >= {minimum} or {word}")

    return BeforeValidator(check)


def _expand_sizes(value: object) -> object:
    """`vllm-default` stands for VLLM_DEFAULT_SIZES; anything else must already be a list."""
    if value == "vllm-default":
        return VLLM_DEFAULT_SIZES
    if isinstance(value, list | tuple):
        return value
    raise rule("list of integers >= 1, or vllm-default")


def _sorted_unique(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(sizes)))


Count = Annotated[int, Strict(), Field(ge=1)]
Sizes = Annotated[
    tuple[Count, ...], BeforeValidator(_expand_sizes), AfterValidator(_sorted_unique), Field(min_length=1),
    WithJsonSchema({"anyOf": [{"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
                              {"const": "vllm-default"}]}),
]


class Frozen(BaseModel):
    """A validated, immutable YAML entry that refuses unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")



def file_schema(models: Sequence[type[BaseModel]], title: str,
                declaration: tuple[str, str] | None = None) -> dict[str, Any]:
    """JSON Schema (2020-12) of a YAML file that maps ids to entries of any of `models`, for editors to validate;
    `declaration` is the (key, value) the file must also hold to declare what it is."""
    defs: dict[str, Any] = {}
    for model in models:
        entry = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(entry.pop("$defs", {}))
        defs[model.__name__] = entry
    for definition in defs.values():  # every model and dataclass here refuses unknown fields (Contract too)
        if "properties" in definition:
            definition.setdefault("additionalProperties", False)
    refs = [{"$ref": f"#/$defs/{model.__name__}"} for model in models]
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, "type": "object",
        "propertyNames": {"pattern": f"^{ID_PATTERN}$"},
        "additionalProperties": refs[0] if len(refs) == 1 else {"anyOf": refs}, "$defs": defs}
    if declaration is not None:
        key, value = declaration
        schema["properties"] = {key: {"const": value}}
        schema["required"] = [key]
        schema["propertyNames"] = {"anyOf": [{"const": key}, {"pattern": f"^{ID_PATTERN}$"}]}
    return schema


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML would keep the last silently)."""


def _unique_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key_node.value!r}",
                                                        key_node.start_mark)
            seen.add(key_node.value)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


# YAML 1.2 §5.2 (https://yaml.org/spec/1.2.2/#52-character-encodings): a byte-order mark, or the NULs an
# ASCII first character leaves, names a UTF-16 or UTF-32 file. UTF-32 first: its LE mark starts with UTF-16's.
_WIDE_MARKS: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"),
)


def wide_encoding(data: bytes) -> str | None:
    """The UTF-16 or UTF-32 codec a file's first bytes name (`utf-16-le`, ...); None for anything else."""
    for mark, codec in _WIDE_MARKS:
        if data.startswith(mark):
            return codec
    head = data[:4]
    ascii_first = [0 < b < 0x80 for b in head]
    if len(head) == 4 and head[:3] == b"\0\0\0" and ascii_first[3]:
        return "utf-32-be"
    if len(head) == 4 and ascii_first[0] and head[1:] == b"\0\0\0":
        return "utf-32-le"
    if len(head) >= 2 and head[0] == 0 and ascii_first[1]:
        return "utf-16-be"
    if len(head) >= 2 and ascii_first[0] and head[1] == 0:
        return "utf-16-le"
    return None


def _encoding_name(codec: str) -> str:
    """`utf-16-le` as a reader says it: `UTF-16 (little-endian)`."""
    width, _, order = codec.upper().rpartition("-")
    return f"{width} ({'little' if order == 'LE' else 'big'}-endian)"


def _yaml_text(path: Path, data: bytes) -> str:
    """A YAML file's bytes as UTF-8 text (a UTF-8 byte-order mark dropped); anything else is BadInput naming it."""
    shown = display_path(path)
    codec = wide_encoding(data)
    if codec is not None:
        raise bad_value(shown, "", f"{_encoding_name(codec)} text", "a UTF-8 YAML file", "save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise bad_value(shown, "", f"bytes that are not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}, "
                                   f"line {line})", "a UTF-8 YAML file") from None


def read_yaml(path: Path, what: str) -> dict[Any, Any]:
    """Parse one file into a mapping; bytes that are not UTF-8 and syntax errors become one line naming the file."""
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise bad_value(shown, "", "an unreadable file", "a readable YAML file", err.strerror or "") from err
    try:
        data = yaml.load(_yaml_text(path, raw), Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise BadInput(one_line(f"{shown}{line}: invalid YAML: {problem}")) from err
    if not isinstance(data, dict):
        raise bad_value(shown, "", show(data), what)
    return data


def _choices(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" as "a, b, c"."""
    return ", ".join(part.strip("'") for part in re.split(r", | or ", expected))


def _field_names(loc: tuple[int | str, ...], root: type[BaseModel]) -> list[str]:
    """Fields allowed at a location: walk the root's nested models, dicts and lists of models, and dataclasses."""
    owner: Any = root
    for part in loc:  # Scenario -> ModelDims / Contract, or expect_bytes -> (policy key) -> ExpectBytes
        if get_origin(owner) in (dict, list):
            owner = get_args(owner)[-1]
            continue
        owner = owner.model_fields[part].annotation
    if issubclass(owner, BaseModel):
        return list(owner.model_fields)
    return [f.name for f in dataclasses.fields(owner)]


def _field_path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p != "[key]").lstrip(".")


_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")  # a model's, a dataclass's unknown field


def _allowed(err: ErrorDetails, root: type[BaseModel]) -> str:
    """What a pydantic error allows, in the words a YAML author uses."""
    kind, ctx = err["type"], err.get("ctx", {})
    if kind in ("enum", "literal_error"):
        return _choices(str(ctx["expected"]))
    if kind in _UNKNOWN:
        return ", ".join(_field_names(err["loc"][:-1], root))
    words = {
        "missing": "required field", "greater_than_equal": f"integer >= {ctx.get('ge')}",
        "too_short": f"at least {ctx.get('min_length')} item(s)", "string_too_short": "non-empty string",
        "string_type": "string", "bool_type": "true or false", "bool_parsing": "true or false",
        "list_type": "list", "tuple_type": "list", "dict_type": "mapping", "model_type": "mapping",
        "model_attributes_type": "mapping", "dataclass_type": "mapping",
    }
    return words.get(kind, "integer" if kind.startswith("int_") else err["msg"])


def _did_you_mean(err: ErrorDetails, root: type[BaseModel]) -> str:
    """`did you mean capture_sizes?` for an unknown field close to an allowed one (difflib's ratio >= 0.6)."""
    close = difflib.get_close_matches(str(err["loc"][-1]), _field_names(err["loc"][:-1], root), n=1)
    return f"did you mean {close[0]}?" if close else ""


def bad_entry(where: str, error: ValidationError, root: type[BaseModel]) -> BadInput:
    """The first pydantic error as one line: where, field path, bad value, allowed values."""
    errors = error.errors()
    # An unknown field first: a typo (`capture_size:`) also leaves the field it meant missing, and is the cause.
    err = next((e for e in errors if e["type"] in _UNKNOWN), errors[0])
    ctx = err.get("ctx", {})
    loc = err["loc"]
    if err["type"] == _BAD:
        # A nested model's own check names its field relative to that model: prefix where it sits.
        field = ".".join(part for part in (_field_path(loc), str(ctx["field"])) if part)
        got = str(ctx["got"]) or show(err["input"])
        return bad_value(where, field, got, str(ctx["allowed"]), str(ctx["reason"]))
    if err["type"] == "missing":
        return bad_value(where, _field_path(loc), "nothing", _allowed(err, root))
    if err["type"] in _UNKNOWN:
        return bad_value(where, _field_path(loc), "unknown field", _allowed(err, root), _did_you_mean(err, root))
    return bad_value(where, _field_path(loc), show(err["input"]), _allowed(err, root))


def check_id(where: str, key: object, noun: str) -> None:
    """A YAML key that names a scenario or a bug: lowercase letters, digits, '.', '_', '-'."""
    if not isinstance(key, str) or not _ID.match(key):
        raise bad_value(where, noun, show(key), "lowercase letters, digits, '.', '_', '-'")



def builtin_scenario_dir() -> Path:
    """The scenarios that ship with graph-harness: package data in a wheel, the checkout's folder in an editable
    install (setuptools maps `scenarios/` to `graph_harness/scenarios` only when it builds a wheel)."""
    package = Path(__file__).resolve().parent
    shipped = package / "scenarios"
    return shipped if shipped.is_dir() else package.parent / "scenarios"


def run_command(scenario_id: str, variant: str, size: int, seed: int) -> str:
    """`graph-harness run` of one case of a built-in scenario."""
    return f"graph-harness run {scenario_id} --variant {variant} --sizes {size} --seed {seed}"


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Seed = Annotated[int, Strict(), Field(ge=0)]


class ScenarioBase(Frozen):
    """What every kind of scenario has (the MoE layer's, an op's): why it exists, its capture sizes, a seed,
    its variants with what each must show, and how to run a variant's cases. Its id is its YAML key."""

    why: Text
    capture_sizes: Sizes
    cpu_sizes: Sizes | None = None  # the CPU profile's subset
    seed: Seed = 0
    # The floor, in seconds, of every run's bound past which it is a hang (graph_harness.core.capture); a scenario
    # that expects a hang sets a short one. --hang-after (GRAPH_HARNESS_HANG_AFTER) overrides it.
    hang_after: Annotated[float, Strict(), Field(gt=0)] | None = None
    # The inputs a fuzz run saved (`graph-harness fuzz`), a file beside this one: every input set is drawn from
    # it instead of the scenario's own maker, so that `run` replays the finding exactly.
    fuzzed_inputs: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None

    _source: Path | None = PrivateAttr(default=None)

    def hang_floor(self) -> float | None:
        """The floor this scenario's runs get: the environment's when it sets one, else its own (None: default)."""
        return None if os.environ.get("GRAPH_HARNESS_HANG_AFTER") else self.hang_after

    def model_post_init(self, context: Any) -> None:
        """Remember the file this entry came from (validation context `file`), for messages and repro lines."""
        if isinstance(context, dict) and isinstance(context.get("file"), Path):
            self._source = context["file"]

    @property
    def source(self) -> Path | None:
        """The YAML file this scenario was loaded from, if any."""
        return self._source

    def scenarios_flag(self) -> str:
        """` --scenarios DIR` for a repro command, when the scenario is not a built-in one."""
        if self.source is None or self.source.parent.resolve() == builtin_scenario_dir().resolve():
            return ""
        return f" --scenarios {display_path(self.source.parent)}"

    def repro(self, scenario_id: str, variant: str, size: int, seed: int) -> str:
        """The one command that reruns one of this scenario's cases."""
        return run_command(scenario_id, variant, size, seed) + self.scenarios_flag()

    def where(self, scenario_id: str) -> str:
        """`file: id`, the place a message about this scenario names."""
        return f"{display_path(self.source)}: {scenario_id}" if self.source else scenario_id

    def summary(self) -> str:
        """What the scenario runs, in a few words for a table cell."""
        raise NotImplementedError

    def variant_names(self) -> tuple[str, ...]:
        """Its variants' names, in the order they run and print."""
        raise NotImplementedError

    def expected(self, variant: str, size: int | None = None) -> Verdict:
        """The verdict a variant must get (at capture size `size`, where a scenario states one per size)."""
        raise NotImplementedError

    def sizes(self, profile: Profile) -> tuple[int, ...]:
        """The capture sizes a profile runs: all on a GPU, `cpu_sizes` (or the kind's default) on CPU."""
        if profile == "gpu" or self.cpu_sizes is None:
            return self.capture_sizes
        return self.cpu_sizes

    def stated_bytes(self, scenario_id: str, variant: str, size: int) -> tuple[str | None, int | None, int] | None:
        """(buffer, its bytes, extent) an oob-write variant must show at `size`, where the scenario knows them."""
        raise NotImplementedError

    def prepare(self, scenario_id: str, variant: str, sizes: Sequence[int], *, seed: int | None = None,
                budget: int | None = None) -> Prepared:
        """One variant's cases at these sizes made ready to run (one slab, one seed: the scenario's unless given)."""
        raise NotImplementedError

    def prepared(self, scenario_id: str, variant: str, sizes: Sequence[int], *, seed: int | None = None,
                 budget: int | None = None) -> Prepared:
        """`prepare`, with the inputs of `fuzzed_inputs` in place of the maker's where the scenario names a file."""
        with self.usage_reported(scenario_id, variant, sizes):
            ready = self.prepare(scenario_id, variant, sizes, seed=seed, budget=budget)
        if self.fuzzed_inputs is None:
            return ready
        from graph_harness.core.fuzz import Recorded, load_inputs

        path = self._fuzzed_path()
        try:
            sets = load_inputs(path)
        except (OSError, ValueError, RuntimeError) as err:
            raise bad_value(self.where(scenario_id), "fuzzed_inputs", display_path(path),
                            "a file `graph-harness fuzz` wrote", one_line(str(err))) from None
        for case in ready.cases:
            wl = ready.workloads[case.capture_size]
            ready.workloads[case.capture_size] = Recorded(wl, sets, case.seed + 1, ready.device)
        return ready

    def _fuzzed_path(self) -> Path:
        path = Path(self.fuzzed_inputs or "")
        return path if path.is_absolute() or self.source is None else self.source.parent / path

    def run(self, scenario_id: str, variant: str, sizes: Sequence[int], *, seed: int | None = None,
            budget: int | None = None, replays: int | None = None) -> list[CaseResult]:
        """Run one variant's cases at these sizes (one slab, one seed: the scenario's unless given)."""
        from graph_harness.core.capture import default_backend
        from graph_harness.core.check import run_and_judge

        ready = self.prepared(scenario_id, variant, sizes, seed=seed, budget=budget)
        with self.usage_reported(scenario_id, variant, sizes):
            return run_and_judge(ready.cases, ready.workloads, ready.guards, default_backend(ready.device),
                                 replays=replays or 3, hang_after=self.hang_floor())

    @contextmanager
    def usage_reported(self, scenario_id: str, variant: str, sizes: Sequence[int]) -> Iterator[None]:
        """A harness usage error inside (the op returned no tensor, say) as one line of bad input naming the case;
        a slab too small passes through, for the caller to split the sizes into smaller slabs (suite.plan)."""
        from graph_harness.core.guard import GuardBudgetError, UsageError

        try:
            yield
        except GuardBudgetError:
            raise
        except UsageError as err:
            raise BadInput(f"{self.where(scenario_id)}: {variant} T={', '.join(map(str, sizes))}: {err}") from None

    def _check_cpu_sizes(self) -> None:
        if self.cpu_sizes is not None and not set(self.cpu_sizes) <= set(self.capture_sizes):
            raise rule(f"subset of capture_sizes {list(self.capture_sizes)}", "cpu_sizes", show(list(self.cpu_sizes)))
        if self.fuzzed_inputs is not None and len(self.capture_sizes) != 1:
            raise rule("one capture size with fuzzed_inputs (the inputs are of one size's shapes)", "capture_sizes",
                       show(list(self.capture_sizes)))
