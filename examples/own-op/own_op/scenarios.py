"""Factories for op scenarios (scenarios/own_op.yaml names `own_op.scenarios:scale_shift_case`)."""

from __future__ import annotations

import functools

from graph_harness import OpSpec
from own_op.scale_shift import HIDDEN, default_device, make_inputs, reference, scale_shift, weights


def scale_shift_case(hidden: int = HIDDEN, off_by_one: bool = False, seed: int = 0) -> OpSpec:
    """The op, its inputs maker, its reference and its weights, for one variant."""
    device = default_device()
    return OpSpec(op=functools.partial(scale_shift, off_by_one=off_by_one), inputs=make_inputs(hidden, device),
                  reference=reference, constants=weights(hidden, seed, device), tolerance=1e-5)
