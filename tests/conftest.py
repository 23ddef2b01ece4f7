"""Test-wide settings: deterministic seeds and a NaN-poisoning fixture for fast paths."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import poisoned_empty


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def poison_empty():
    """Makes torch.empty / torch.empty_like return NaN-filled floating tensors so that an
    output element a kernel never writes cannot pass a comparison."""
    with poisoned_empty():
        yield
