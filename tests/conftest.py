"""Test-wide settings: the CLI's allocator, deterministic seeds and a NaN-poisoning fixture
for fast paths."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import poisoned_empty


@pytest.fixture(scope="session", autouse=True)
def _allocator():
    """The allocator every mobileattn command runs with (mobileattn.cli calls
    keep_freed_memory first). Tests that call the CLI set it too, and it is part of every
    timing's cache key (bench.latency.runtime_info): without this, a test that times, calls
    the CLI and times again sees two keys, depending on which tests ran before it."""
    from bench.machine import keep_freed_memory

    keep_freed_memory()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def poison_empty():
    """Makes torch.empty / torch.empty_like return NaN-filled floating tensors so that an
    output element a kernel never writes cannot pass a comparison."""
    with poisoned_empty():
        yield
