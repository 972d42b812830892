"""Scenarios: parse scenarios/*.yaml into frozen models and resolve each into runnable cases."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

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
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from harness.errors import BadInput, bad_value, display_path, one_line, show
from kernels.contracts import (
    QUANT_GROUP,
    Activation,
    Contract,
    Footprint,
    Policy,
    Quant,
    get_padded_m,
    heuristic_block_m,
    heuristic_splitk,
    kbatch,
    stage1_footprint,
    uses_splitk_instance,
)

Verdict = Literal["clean", "oob-write", "oob-read", "uninit-read", "mismatch", "capture-error", "crash"]
Profile = Literal["gpu", "cpu"]
DType = Literal["bf16", "fp16"]
Weights = Literal["distinct", "aliased"]

# vLLM _set_cudagraph_sizes at max 512 (moe-contracts.md §6.1): 1, 2, 4, 8..248 by 8, 256..512 by 16 = 51.
VLLM_DEFAULT_SIZES: tuple[int, ...] = (1, 2, 4, *range(8, 256, 8), *range(256, 513, 16))

# Default cpu profile: at most 3 capture sizes, all <= 4 tokens, so that a CPU run stays in seconds.
_CPU_MAX_TOKENS = 4
_CPU_MAX_SIZES = 3

# Ids name pytest items, repro commands and CLI arguments: keep them shell- and path-safe.
ID_PATTERN = r"[a-z0-9][a-z0-9._-]*"
_ID = re.compile(ID_PATTERN + r"\Z")

_BAD = "bad_value"  # PydanticCustomError type whose ctx carries the allowed text (and field/got overrides)


def rule(allowed: str, field: str = "", got: str = "", reason: str = "") -> PydanticCustomError:
    """A validation error that already knows its allowed values (read back by bad_entry)."""
    ctx = {"allowed": allowed, "field": field, "got": got, "reason": reason}
    return PydanticCustomError(_BAD, "got {got}; allowed: {allowed}", ctx)


def _int_or(word: str, minimum: int) -> BeforeValidator:
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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelDims(_Frozen):
    """The MoE layer's shape as the model card gives it; N per rank is derived, never written."""

    hidden: Count  # K = model_dim
    inter: Count  # per-expert moe_intermediate, full size (before TP)
    experts: Count  # global E, fused shared expert included
    topk: Count
    tp: Count = 1

    @property
    def inter_per_rank(self) -> int:
        """N, the stage1 inter_dim on one rank: inter // tp."""
        return self.inter // self.tp


class ExpectBytes(_Frozen):
    """The guard violation a buggy policy must show when the stage1 footprint does not predict it."""

    buffer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]  # the guarded buffer's name
    side: Literal["overflow", "underflow"]
    extent: Count  # bytes from the buffer's edge through the farthest corrupted byte


class Scenario(_Frozen):
    """One `scenarios/*.yaml` entry; its id is the YAML key, never a field."""

    why: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    model: ModelDims
    dtype: DType
    quant: Quant
    activation: Activation = Activation.SILU
    block_m: Literal[16, 32, 64, 128, "auto"]
    splitk: Annotated[int | Literal["auto"], _int_or("auto", 0)]
    # 256 replays an MI355X decision, 132 an H100/H200; "device" asks the GPU at run time.
    cu_num: Annotated[int | Literal["device"], _int_or("device", 1)]
    capture_sizes: Sizes
    cpu_sizes: Sizes | None = None
    contract: Contract = Contract()
    policies: Annotated[dict[Policy, Verdict], Field(min_length=1)]
    # Bugs outside stage1 (S8, S12) name the buffer and bytes their oob-write must show instead.
    expect_bytes: dict[Policy, ExpectBytes] = Field(default_factory=dict)
    # Trailing tokens routed to -1, sglang's idle-batch marker (rocm-libraries #6242).
    idle_tokens: Annotated[int, Strict(), Field(ge=0)] = 0
    seed: Annotated[int, Strict(), Field(ge=0)] = 0

    _source: Path | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        """Remember the file this entry came from (validation context `file`), for messages."""
        if isinstance(context, dict) and isinstance(context.get("file"), Path):
            self._source = context["file"]

    @property
    def source(self) -> Path | None:
        """The YAML file this scenario was loaded from, if any."""
        return self._source

    @model_validator(mode="after")
    def _cross_check(self, info: ValidationInfo) -> Scenario:
        """Checks that span fields: divisibility, split-K legality, and expectations vs the footprint."""
        m, kpb = self.model, self.contract.k_per_block
        if m.inter % m.tp:
            raise rule(f"a divisor of model.inter ({m.inter})", "model.tp", str(m.tp))
        if m.topk > m.experts:
            raise rule(f"integer <= model.experts ({m.experts})", "model.topk", str(m.topk))
        if self.quant is Quant.PER_1X128 and m.hidden % QUANT_GROUP:
            raise rule(f"multiple of {QUANT_GROUP} with quant per_1x128", "model.hidden", str(m.hidden),
                       f"{m.hidden} % {QUANT_GROUP} = {m.hidden % QUANT_GROUP}")
        if kpb < QUANT_GROUP or kpb % QUANT_GROUP:
            raise rule(f"positive multiple of {QUANT_GROUP}", "contract.k_per_block", str(kpb))
        if isinstance(self.splitk, int) and self.splitk > 1:
            if self.quant is Quant.NONE:
                raise rule("0, 1 or auto with quant none", "splitk", str(self.splitk),
                           "aiter enables split-K only for per_1x128")
            if reason := _indivisible(m.hidden, self.splitk, kpb):
                raise rule("integer with K % (splitk*KPerBlock) == 0, or auto", "splitk", str(self.splitk),
                           reason)
        if self.cpu_sizes is not None and not set(self.cpu_sizes) <= set(self.capture_sizes):
            raise rule(f"subset of capture_sizes {list(self.capture_sizes)}", "cpu_sizes",
                       show(list(self.cpu_sizes)))
        if self.idle_tokens > min(self.capture_sizes):
            raise rule(f"integer <= the smallest capture size ({min(self.capture_sizes)})", "idle_tokens",
                       str(self.idle_tokens))
        for policy in self.expect_bytes:
            if self.policies.get(policy) != "oob-write":
                raise rule("a policy the scenario expects to be oob-write", f"expect_bytes.{policy.value}",
                           f"{policy.value} ({self.policies.get(policy, 'not in policies')})")
        if isinstance(self.cu_num, int):
            scenario_id = (info.context or {}).get("id", "")
            for tokens in self.capture_sizes:
                _check_expectations(scenario_id, self, tokens, self.cu_num)
        return self


def _indivisible(hidden: int, splitk: int, k_per_block: int) -> str:
    """Why CK rejects this split (TORCH_CHECK(KBatch*KPerBlock*SplitK == K), §3.1); empty if it does not."""
    step = splitk * k_per_block
    if splitk <= 1 or hidden % step == 0:
        return ""
    return f"K % (splitk*KPerBlock) != 0: {hidden} % ({splitk}*{k_per_block}) = {hidden % step}"


def _check_expectations(scenario_id: str, scenario: Scenario, tokens: int, cu_num: int) -> None:
    """oob-write needs predicted overflow > 0 at this size, unless expect_bytes names its bytes; clean needs 0."""
    _, splitk = dispatch(scenario, tokens, cu_num)
    if reason := _indivisible(scenario.model.hidden, splitk, scenario.contract.k_per_block):
        raise rule("integer with K % (splitk*KPerBlock) == 0 at every capture size", "splitk",
                   f"auto (resolves to {splitk} at T={tokens})", reason)
    for case in resolve(scenario_id, scenario, tokens, "gpu", cu_num):
        fp = case.footprint()
        overflow = fp.predicted_overflow_bytes
        stated = case.policy in scenario.expect_bytes
        if (case.expect == "oob-write" and overflow == 0 and not stated) or (case.expect == "clean" and overflow > 0):
            raise rule(f"a verdict other than {case.expect} (footprint model)",
                       f"policies.{case.policy.value}", case.expect,
                       f"at T={tokens} predicted_overflow_bytes = {overflow:,} ({_explain(case, fp)})")


def _explain(case: CaseSpec, fp: Footprint) -> str:
    """The numbers behind a footprint prediction, for a message a reader can check by hand."""
    kpb = case.contract.k_per_block
    if not uses_splitk_instance(case.quant, case.splitk):
        cause = f"splitk resolves to {case.splitk} at T={case.tokens}: no split-K, no memset"
    else:
        kb = kbatch(case.full_hidden, case.splitk, kpb)
        cause = f"splitk {case.splitk}, KBatch {case.full_hidden}/({case.splitk}*{kpb}) = {kb}"
    return (f"{cause}; block_m {case.block_m}, alloc {fp.alloc_bytes:,} B, memset {fp.memset_bytes:,} B, "
            f"scatter {fp.scatter_rows} rows")


@dataclass(frozen=True)
class CaseSpec:
    """One runnable case, fully determined by scenario id + policy + capture size + seed."""

    scenario: str
    policy: Policy
    tokens: int  # T, the capture size
    hidden: int  # K as run; the cpu profile shrinks it (_run_hidden)
    full_hidden: int  # K of the model, which dispatch always sees
    inter: int  # N per rank
    experts: int
    topk: int
    block_m: int
    splitk: int  # 0 or 1: no split
    dtype: DType
    quant: Quant
    activation: Activation
    contract: Contract
    cu_num: int
    seed: int
    expect: Verdict
    weights: Weights  # "aliased": one weight tensor shared by all experts, to keep the CPU profile small
    idle_tokens: int = 0  # trailing tokens routed to -1
    expect_bytes: ExpectBytes | None = None  # the oob-write's buffer and extent, when not stage1's footprint

    def footprint(self) -> Footprint:
        """Predicted stage1 bytes for this case (kernels.contracts.stage1_footprint), no kernel run."""
        return stage1_footprint(self.policy, self.tokens, self.topk, self.experts, self.inter, self.hidden,
                                self.block_m, self.splitk, self.quant, self.dtype, self.contract)


def dispatch(scenario: Scenario, tokens: int, cu_num: int) -> tuple[int, int]:
    """(block_m, splitk) aiter picks at T tokens: untuned heuristics on get_padded_M(T), always at full K."""
    m = scenario.model
    padded = get_padded_m(tokens)
    n, quant = m.inter_per_rank, scenario.quant
    block_m = scenario.block_m if isinstance(scenario.block_m, int) else heuristic_block_m(
        padded, m.topk, m.experts, n, quant, cu_num)
    splitk = scenario.splitk if isinstance(scenario.splitk, int) else heuristic_splitk(
        padded, m.topk, m.experts, n, m.hidden, quant, cu_num)
    return block_m, splitk


def _run_hidden(scenario: Scenario, splitk: int, profile: Profile) -> int:
    """K to run: full on gpu; on cpu the least K keeping KBatch > 1 vs == 1 (which decides the memset)."""
    hidden, kpb = scenario.model.hidden, scenario.contract.k_per_block
    if profile == "gpu":
        return hidden
    if uses_splitk_instance(scenario.quant, splitk):
        return min(hidden, splitk * kpb * min(kbatch(hidden, splitk, kpb), 2))
    return min(hidden, 2 * kpb)


def _where(scenario_id: str, scenario: Scenario) -> str:
    return f"{display_path(scenario.source)}: {scenario_id}" if scenario.source else scenario_id


def resolve_cu_num(scenario_id: str, scenario: Scenario) -> int:
    """The scenario's cu_num, asking GPU 0 for its multiprocessor count when it says `device`."""
    if isinstance(scenario.cu_num, int):
        return scenario.cu_num
    import torch  # here, not at import: collection and the CPU CLI never touch CUDA

    if not torch.cuda.is_available():
        raise bad_value(_where(scenario_id, scenario), "cu_num", "'device'", "integer >= 1",
                        "no CUDA device to resolve 'device' on this machine")
    return int(torch.cuda.get_device_properties(0).multi_processor_count)


def capture_sizes(scenario: Scenario, profile: Profile) -> tuple[int, ...]:
    """Sizes a profile runs: all capture sizes on gpu; cpu_sizes, or up to 3 sizes <= 4, on cpu."""
    if profile == "gpu":
        return scenario.capture_sizes
    if scenario.cpu_sizes is not None:
        return scenario.cpu_sizes
    return tuple(t for t in scenario.capture_sizes if t <= _CPU_MAX_TOKENS)[:_CPU_MAX_SIZES]


def resolve(scenario_id: str, scenario: Scenario, tokens: int, profile: Profile,
            cu_num_override: int | None = None) -> tuple[CaseSpec, ...]:
    """One CaseSpec per expected policy (in Policy order) at T tokens on a profile."""
    cu_num = resolve_cu_num(scenario_id, scenario) if cu_num_override is None else cu_num_override
    block_m, splitk = dispatch(scenario, tokens, cu_num)
    m = scenario.model
    if reason := _indivisible(m.hidden, splitk, scenario.contract.k_per_block):
        raise bad_value(_where(scenario_id, scenario), "splitk",
                        f"{scenario.splitk} (resolves to {splitk} at T={tokens})",
                        "integer with K % (splitk*KPerBlock) == 0", reason)
    hidden = _run_hidden(scenario, splitk, profile)
    weights: Weights = "distinct" if profile == "gpu" else "aliased"
    return tuple(
        CaseSpec(scenario=scenario_id, policy=policy, tokens=tokens, hidden=hidden, full_hidden=m.hidden,
                 inter=m.inter_per_rank, experts=m.experts, topk=m.topk, block_m=block_m, splitk=splitk,
                 dtype=scenario.dtype, quant=scenario.quant, activation=scenario.activation,
                 contract=scenario.contract, cu_num=cu_num, seed=scenario.seed,
                 expect=scenario.policies[policy], weights=weights, idle_tokens=scenario.idle_tokens,
                 expect_bytes=scenario.expect_bytes.get(policy))
        for policy in Policy if policy in scenario.policies
    )


def file_schema(model: type[BaseModel], title: str) -> dict[str, Any]:
    """JSON Schema (2020-12) of a YAML file that maps ids to `model` entries, for editors to validate."""
    entry = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = entry.pop("$defs", {})
    defs[model.__name__] = entry
    for definition in defs.values():  # every model and dataclass here refuses unknown fields (Contract too)
        if "properties" in definition:
            definition.setdefault("additionalProperties", False)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, "type": "object",
            "propertyNames": {"pattern": f"^{ID_PATTERN}$"},
            "additionalProperties": {"$ref": f"#/$defs/{model.__name__}"}, "$defs": defs}


def scenario_file_schema() -> dict[str, Any]:
    """The JSON Schema of a scenarios/*.yaml file."""
    return file_schema(Scenario, "graph-harness scenario file: scenario id -> scenario")


def find_scenario_dir() -> Path:
    """`./scenarios` when it exists, else the scenarios/ folder next to the harness package."""
    here = Path.cwd() / "scenarios"
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / "scenarios"


# Files of the scenario folder that hold something else: the bug registry and the known-failure ledger.
REGISTRY_FILE = "bugs.yaml"  # the bug registry (harness/bugs.py)
LEDGER_FILE = "ledger.yaml"  # known failures (harness/ledger.py)
NOT_SCENARIOS = frozenset({REGISTRY_FILE, LEDGER_FILE})


def scenario_files(directory: Path) -> tuple[Path, ...]:
    """The scenario *.yaml files of a folder (not NOT_SCENARIOS), sorted so that xdist workers agree."""
    found = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    files = tuple(p for p in found if p.name not in NOT_SCENARIOS)
    if not files:
        raise bad_value(display_path(directory), "", "no *.yaml files", "a folder of scenario YAML files")
    return files


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


def read_yaml(path: Path, what: str = "a mapping of scenario id to scenario") -> dict[Any, Any]:
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


def bad_entry(where: str, error: ValidationError, root: type[BaseModel] | None = None) -> BadInput:
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
    return bad_value(where, _field_path(loc), got, _allowed(err, root or Scenario))


def check_id(where: str, key: object, noun: str) -> None:
    """A YAML key that names a scenario or a bug: lowercase letters, digits, '.', '_', '-'."""
    if not isinstance(key, str) or not _ID.match(key):
        raise bad_value(where, noun, show(key), "lowercase letters, digits, '.', '_', '-'")


def load_scenarios(paths: Sequence[Path]) -> dict[str, Scenario]:
    """Every scenario of the given files, keyed by id in sorted order; ids must be unique across files."""
    found: dict[str, Scenario] = {}
    for path in paths:
        shown = display_path(path)
        for key, body in read_yaml(path).items():
            check_id(shown, key, "scenario id")
            if key in found:
                first = found[key].source
                raise bad_value(f"{shown}: {key}", "scenario id", "a duplicate", "ids unique across files",
                                f"first defined in {display_path(first) if first else '?'}")
            try:
                found[key] = Scenario.model_validate(body, context={"id": key, "file": path})
            except ValidationError as err:
                raise bad_entry(f"{shown}: {key}", err) from None
    return dict(sorted(found.items()))
