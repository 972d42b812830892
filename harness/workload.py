"""What the capture protocol runs: an op, its fresh inputs and its reference.

A `Workload` is any op the harness can guard. `MoEWorkload` wraps `kernels.fused_moe` for one
resolved scenario case; a third-party op only needs the same four members.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

import torch

from harness.compare import tolerance
from harness.scenario import CaseSpec, DType
from kernels.contracts import Quant
from kernels.fused_moe import MoEInputs, fused_moe, fused_moe_ref, make_activations, make_weights

Step = Callable[[str], None]


class Workload(Protocol):
    """An op under test. `run` may allocate freely: the harness guards its factory calls."""

    tolerance: float

    def inputs(self, seed: int) -> dict[str, torch.Tensor]:
        """Fresh random inputs; the harness copies them into guarded static buffers."""
        ...

    def run(self, inputs: Mapping[str, torch.Tensor], step: Step) -> torch.Tensor:
        """Run the op on `inputs`; call `step(name)` after each launch if it can (step mode)."""
        ...

    def reference(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The expected output, any float dtype, on the inputs' device."""
        ...


@dataclass(frozen=True)
class MoEWeights:
    """One layer's weights, shared by every capture size of a scenario, as a model's are."""

    w1: torch.Tensor
    w1_scale: torch.Tensor | None
    w2: torch.Tensor
    w2_scale: torch.Tensor | None

    @classmethod
    def for_case(cls, case: CaseSpec, device: torch.device) -> MoEWeights:
        """Random weights of the case's shape, drawn from its seed.

        The last layer drawn is kept: a pytest worker runs a scenario's items one after another,
        and DeepSeek-V3's 256 experts take seconds to draw and quantise on every one of them.
        """
        return _weights(case.hidden, case.inter, case.experts, case.dtype, case.quant, case.seed, device,
                        case.weights == "aliased")


@functools.lru_cache(maxsize=1)
def _weights(hidden: int, inter: int, experts: int, dtype: DType, quant: Quant, seed: int, device: torch.device,
             aliased: bool) -> MoEWeights:
    return MoEWeights(*make_weights(  # type: ignore[no-untyped-call]
        hidden, inter, experts, dtype, quant, seed, device, aliased=aliased))


class MoEWorkload:
    """`fused_moe` at one capture size, with the case's policy and contract."""

    def __init__(self, case: CaseSpec, weights: MoEWeights, device: torch.device) -> None:
        self.case = case
        self.weights = weights
        self.device = device
        self.tolerance = tolerance(case.dtype, case.quant, case.policy, case.splitk)

    def inputs(self, seed: int) -> dict[str, torch.Tensor]:
        c = self.case
        hidden, ids, weights = make_activations(  # type: ignore[no-untyped-call]
            c.tokens, c.hidden, c.experts, c.topk, c.dtype, seed, self.device, idle_tokens=c.idle_tokens)
        return {"hidden": hidden, "topk_ids": ids, "topk_weights": weights}

    def _layer(self, inputs: Mapping[str, torch.Tensor]) -> MoEInputs:
        w = self.weights
        return MoEInputs(inputs["hidden"], w.w1, w.w2, inputs["topk_ids"], inputs["topk_weights"], w.w1_scale,
                         w.w2_scale)

    def run(self, inputs: Mapping[str, torch.Tensor], step: Step) -> torch.Tensor:
        c = self.case
        out = fused_moe(self._layer(inputs), block_m=c.block_m, splitk=c.splitk, policy=c.policy, quant=c.quant,
                        activation=c.activation, contract=c.contract, on_step=step)
        return cast(torch.Tensor, out)

    def reference(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, fused_moe_ref(self._layer(inputs), self.case.quant, self.case.activation))
