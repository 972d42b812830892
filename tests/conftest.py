"""Shared fixtures for the self-tests: the device the kernels run on and a fresh seed per test."""

from __future__ import annotations

import random

import pytest
import torch

from kernels._triton import device as kernel_device


@pytest.fixture
def device() -> torch.device:
    return kernel_device()


@pytest.fixture
def seed() -> int:
    """A fresh seed per test, printed on failure so the case can be replayed."""
    value = random.SystemRandom().randrange(2**31)
    print(f"seed={value}")
    return value


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`backend`: every replay backend this machine has; CUDA graphs only where there is a GPU."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["reexec", "cuda-graph"] if torch.cuda.is_available() else ["reexec"])
