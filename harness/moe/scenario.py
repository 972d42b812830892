"""MoE scenarios: a model's layer shape x capture sizes x stage1 allocation policies, validated against the
footprint model when the file loads, and resolved into runnable cases (`CaseSpec`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, Strict, StringConstraints, ValidationInfo, model_validator

from graph_harness.core.verdict import Verdict
from graph_harness.errors import bad_value
from graph_harness.kernels.contracts import (
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
from graph_harness.schema import Count, Frozen, Profile, ScenarioBase, Text, int_or, profile_of, rule

if TYPE_CHECKING:
    from graph_harness.core.check import Prepared

DType = Literal["bf16", "fp16"]
Weights = Literal["distinct", "aliased"]

# Default cpu profile: at most 3 capture sizes, all <= 4 tokens, so that a CPU run stays in seconds.
_CPU_MAX_TOKENS = 4
_CPU_MAX_SIZES = 3

class ModelDims(Frozen):
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


class ExpectBytes(Frozen):
    """The guard violation a buggy policy must show when the stage1 footprint does not predict it."""

    buffer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]  # the guarded buffer's name
    side: Literal["overflow", "underflow"]
    extent: Count  # bytes from the buffer's edge through the farthest corrupted byte


class MoEScenario(ScenarioBase):
    """One MoE layer scenario of a `scenarios/*.yaml` file; its id is the YAML key, never a field.

    Its variants are the stage1 allocation policies (aiter's call sites over time), each with its verdict.
    """

    model: ModelDims
    dtype: DType
    quant: Quant
    activation: Activation = Activation.SILU
    block_m: Literal[16, 32, 64, 128, "auto"]
    splitk: Annotated[int | Literal["auto"], int_or("auto", 0)]
    # 256 replays an MI355X decision, 132 an H100/H200; "device" asks the GPU at run time.
    cu_num: Annotated[int | Literal["device"], int_or("device", 1)]
    contract: Contract = Contract()
    policies: Annotated[dict[Policy, Verdict], Field(min_length=1)]
    # Bugs outside stage1 (S8, S12) name the buffer and bytes their oob-write must show instead.
    expect_bytes: dict[Policy, ExpectBytes] = Field(default_factory=dict)
    # Trailing tokens routed to -1, sglang's idle-batch marker (rocm-libraries #6242).
    idle_tokens: Annotated[int, Strict(), Field(ge=0)] = 0
    # Buffers that the contract's padding rows read past, the values then discarded (an unmasked port gathers
    # hidden row T): only the lane checker sees such a read, and there every policy must show it.
    reads_past: tuple[Text, ...] = ()

    def summary(self) -> str:
        """`MoE K/N/E/topk 7168/256/257/9`."""
        m = self.model
        return f"MoE K/N/E/topk {m.hidden}/{m.inter_per_rank}/{m.experts}/{m.topk}"

    def variant_names(self) -> tuple[str, ...]:
        """The policies, in Policy order."""
        return tuple(p.value for p in Policy if p in self.policies)

    def expected(self, variant: str, size: int | None = None) -> Verdict:
        return self.policies[Policy(variant)]

    def sizes(self, profile: Profile) -> tuple[int, ...]:
        """All capture sizes on a GPU; on CPU `cpu_sizes`, or up to 3 sizes <= 4 tokens."""
        if profile == "gpu":
            return self.capture_sizes
        if self.cpu_sizes is not None:
            return self.cpu_sizes
        return tuple(t for t in self.capture_sizes if t <= _CPU_MAX_TOKENS)[:_CPU_MAX_SIZES]

    def stated_bytes(self, scenario_id: str, variant: str, size: int) -> tuple[str | None, int | None, int] | None:
        """The oob-write's buffer, bytes and extent: `expect_bytes` where stated, else the stage1 footprint's
        allocation and overflow (no buffer named); None when cu_num is `device` (it hangs on the GPU)."""
        policy = Policy(variant)
        stated = self.expect_bytes.get(policy)
        if stated is not None:
            return stated.buffer, None, stated.extent
        if not isinstance(self.cu_num, int):
            return None
        (case,) = (c for c in resolve(scenario_id, self, size, "gpu") if c.policy is policy)
        fp = case.footprint()
        return None, fp.alloc_bytes, fp.predicted_overflow_bytes

    def prepare(self, scenario_id: str, variant: str, sizes: Sequence[int], *, seed: int | None = None,
                budget: int | None = None) -> Prepared:
        from graph_harness.core.triton_env import device
        from graph_harness.moe.run import prepare_cases, resolve_cases

        dev = device()
        cases = resolve_cases(scenario_id, self, Policy(variant), sizes, profile_of(dev), seed)
        return prepare_cases(cases, dev, budget=budget, scenarios_flag=self.scenarios_flag())

    @model_validator(mode="after")
    def _cross_check(self, info: ValidationInfo) -> MoEScenario:
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
        self._check_cpu_sizes()
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
    """Why CK rejects this split (TORCH_CHECK(KBatch*KPerBlock*SplitK == K), docs/moe-contracts.md §3.1), or ""."""
    step = splitk * k_per_block
    if splitk <= 1 or hidden % step == 0:
        return ""
    return f"K % (splitk*KPerBlock) != 0: {hidden} % ({splitk}*{k_per_block}) = {hidden % step}"


def _check_expectations(scenario_id: str, scenario: MoEScenario, tokens: int, cu_num: int) -> None:
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
    reads_past: tuple[str, ...] = ()  # buffers the padding rows read past (MoEScenario.reads_past)

    def footprint(self) -> Footprint:
        """Predicted stage1 bytes for this case (graph_harness.kernels.contracts.stage1_footprint), no kernel run."""
        return stage1_footprint(self.policy, self.tokens, self.topk, self.experts, self.inter, self.hidden,
                                self.block_m, self.splitk, self.quant, self.dtype, self.contract)


def dispatch(scenario: MoEScenario, tokens: int, cu_num: int) -> tuple[int, int]:
    """(block_m, splitk) aiter picks at T tokens: untuned heuristics on get_padded_M(T), always at full K."""
    m = scenario.model
    padded = get_padded_m(tokens)
    n, quant = m.inter_per_rank, scenario.quant
    block_m = scenario.block_m if isinstance(scenario.block_m, int) else heuristic_block_m(
        padded, m.topk, m.experts, n, quant, cu_num)
    splitk = scenario.splitk if isinstance(scenario.splitk, int) else heuristic_splitk(
        padded, m.topk, m.experts, n, m.hidden, quant, cu_num)
    return block_m, splitk


def _run_hidden(scenario: MoEScenario, splitk: int, profile: Profile) -> int:
    """K to run: full on gpu; on cpu the least K keeping KBatch > 1 vs == 1 (which decides the memset)."""
    hidden, kpb = scenario.model.hidden, scenario.contract.k_per_block
    if profile == "gpu":
        return hidden
    if uses_splitk_instance(scenario.quant, splitk):
        return min(hidden, splitk * kpb * min(kbatch(hidden, splitk, kpb), 2))
    return min(hidden, 2 * kpb)


def resolve_cu_num(scenario_id: str, scenario: MoEScenario) -> int:
    """The scenario's cu_num, asking GPU 0 for its multiprocessor count when it says `device`."""
    if isinstance(scenario.cu_num, int):
        return scenario.cu_num
    import torch  # here, not at import: collection and the CPU CLI never touch CUDA

    if not torch.cuda.is_available():
        raise bad_value(scenario.where(scenario_id), "cu_num", "'device'", "integer >= 1",
                        "no CUDA device to resolve 'device' on this machine")
    return int(torch.cuda.get_device_properties(0).multi_processor_count)


def resolve(scenario_id: str, scenario: MoEScenario, tokens: int, profile: Profile,
            cu_num_override: int | None = None) -> tuple[CaseSpec, ...]:
    """One CaseSpec per expected policy (in Policy order) at T tokens on a profile."""
    cu_num = resolve_cu_num(scenario_id, scenario) if cu_num_override is None else cu_num_override
    block_m, splitk = dispatch(scenario, tokens, cu_num)
    m = scenario.model
    if reason := _indivisible(m.hidden, splitk, scenario.contract.k_per_block):
        raise bad_value(scenario.where(scenario_id), "splitk",
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
                 expect_bytes=scenario.expect_bytes.get(policy), reads_past=scenario.reads_past)
        for policy in Policy if policy in scenario.policies
    )


