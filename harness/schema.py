"""What every graph-harness YAML file shares: the reader, the one-line error for a bad entry, ids, and the
field types scenario files of every kind use (capture sizes, counts). No scenario kind lives here."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
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
    from graph_harness.core.results import CaseResult

Profile = Literal["gpu", "cpu"]  # which sizes a run takes: all of them on a GPU, the CPU subset under the interpreter


def profile_of(device: Any) -> Profile:
    """Full sizes on a GPU; the CPU subset under the interpreter."""
    return "gpu" if device.type == "cuda" else "cpu"


# vLLM _set_cudagraph_sizes at max 512 (moe-contracts.md §6.1): 1, 2, 4, 8..248 by 8, 256..512 by 16 = 51.
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


def read_yaml(path: Path, what: str) -> dict[Any, Any]:
    """Parse one file into a mapping; syntax errors become one line with file and line number."""
    shown = display_path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except OSError as err:
        raise bad_value(shown, "", "an unreadable file", "a readable YAML file", err.strerror or "") from err
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


def _field_names(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    """Fields allowed at a location: walk the root's nested models, dicts and lists of models, and dataclasses."""
    owner: Any = root
    for part in loc:  # Scenario -> ModelDims / Contract, or expect_bytes -> (policy key) -> ExpectBytes
        if get_origin(owner) in (dict, list):
            owner = get_args(owner)[-1]
            continue
        owner = owner.model_fields[part].annotation
    if issubclass(owner, BaseModel):
        return ", ".join(owner.model_fields)
    return ", ".join(f.name for f in dataclasses.fields(owner))


def _field_path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p != "[key]").lstrip(".")


def _allowed(err: ErrorDetails, root: type[BaseModel]) -> str:
    """What a pydantic error allows, in the words a YAML author uses."""
    kind, ctx = err["type"], err.get("ctx", {})
    if kind in ("enum", "literal_error"):
        return _choices(str(ctx["expected"]))
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return _field_names(err["loc"][:-1], root)
    words = {
        "missing": "required field", "greater_than_equal": f"integer >= {ctx.get('ge')}",
        "too_short": f"at least {ctx.get('min_length')} item(s)", "string_too_short": "non-empty string",
        "string_type": "string", "bool_type": "true or false", "bool_parsing": "true or false",
        "list_type": "list", "tuple_type": "list", "dict_type": "mapping", "model_type": "mapping",
        "model_attributes_type": "mapping", "dataclass_type": "mapping",
    }
    return words.get(kind, "integer" if kind.startswith("int_") else err["msg"])


def bad_entry(where: str, error: ValidationError, root: type[BaseModel]) -> BadInput:
    """The first pydantic error as one line: where, field path, bad value, allowed values."""
    err = error.errors()[0]
    ctx = err.get("ctx", {})
    loc = err["loc"]
    if err["type"] == _BAD:
        # A nested model's own check names its field relative to that model: prefix where it sits.
        field = ".".join(part for part in (_field_path(loc), str(ctx["field"])) if part)
        got = str(ctx["got"]) or show(err["input"])
        return bad_value(where, field, got, str(ctx["allowed"]), str(ctx["reason"]))
    if err["type"] == "missing":
        got = "nothing"
    elif err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        got = "unknown field"
    else:
        got = show(err["input"])
    return bad_value(where, _field_path(loc), got, _allowed(err, root))


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

    _source: Path | None = PrivateAttr(default=None)

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

    def expected(self, variant: str) -> Verdict:
        """The verdict a variant must get."""
        raise NotImplementedError

    def sizes(self, profile: Profile) -> tuple[int, ...]:
        """The capture sizes a profile runs: all on a GPU, `cpu_sizes` (or the kind's default) on CPU."""
        if profile == "gpu" or self.cpu_sizes is None:
            return self.capture_sizes
        return self.cpu_sizes

    def stated_bytes(self, scenario_id: str, variant: str, size: int) -> tuple[str | None, int | None, int] | None:
        """(buffer, its bytes, extent) an oob-write variant must show at `size`, where the scenario knows them."""
        raise NotImplementedError

    def run(self, scenario_id: str, variant: str, sizes: Sequence[int], *, seed: int | None = None,
            budget: int | None = None, replays: int | None = None) -> list[CaseResult]:
        """Run one variant's cases at these sizes (one slab, one seed: the scenario's unless given)."""
        raise NotImplementedError

    def _check_cpu_sizes(self) -> None:
        if self.cpu_sizes is not None and not set(self.cpu_sizes) <= set(self.capture_sizes):
            raise rule(f"subset of capture_sizes {list(self.capture_sizes)}", "cpu_sizes", show(list(self.cpu_sizes)))
