"""scale_shift under graph-harness's `graph_guard` fixture: the planted off-by-one is found, to the byte, and
the fixed op is clean. The same op also runs from scenarios/own_op.yaml, as pytest items."""

import functools

import pytest
from own_op.scale_shift import default_device, make_inputs, reference, scale_shift, weights

import graph_harness as gh

SIZES = [1, 2, 4]


@pytest.fixture
def constants():
    return weights(device=default_device())


def test_the_fixed_op_is_clean(graph_guard, constants):
    results = graph_guard.check(scale_shift, make_inputs(device=default_device()), SIZES, reference=reference,
                                constants=constants, tolerance=1e-5)
    assert [(r.capture_size, r.verdict) for r in results] == [(t, "clean") for t in SIZES]
    assert all(r.checked_fully for r in results)


def test_the_off_by_one_is_found_with_its_exact_bytes(graph_guard, constants):
    buggy = functools.partial(scale_shift, off_by_one=True)
    results = graph_guard.check(buggy, make_inputs(device=default_device()), SIZES, reference=reference,
                                constants=constants, tolerance=1e-5,
                                expect=gh.expect.oob_write("out", side="overflow", first=0, last=3, bytes=4))
    for r in results:
        (v,) = r.violations
        assert (v.buffer, v.side, v.first_offset, v.last_offset, v.bytes, v.buffer_bytes) == (
            "out", "overflow", 0, 3, 4, r.capture_size * 300 * 4)
        assert v.op == "_scale_shift_kernel"  # the kernel that wrote it, named without any help from the op
