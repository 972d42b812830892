"""Shared fixtures for the self-tests: the device the kernels run on and a fresh seed per test."""

from __future__ import annotations

import random

import pytest
import torch

from graph_harness.core.triton_env import device as kernel_device


@pytest.fixture(autouse=True)
def _pipe_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's width is the pipe's (120) unless a test sets COLUMNS: pytest-xdist's workers inherit COLUMNS=80."""
    monkeypatch.delenv("COLUMNS", raising=False)


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
    """`backend`: the replay backend of the kernels' device: CUDA graphs on a GPU, the CPU tape elsewhere (it
    records interpreted launches and torch ops, and a raw CUDA memset is neither)."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["cuda-graph"] if torch.cuda.is_available() else ["reexec"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """This suite's own `@pytest.mark.gpu` tests skip without a GPU (the plugin skips only its scenario cases)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
