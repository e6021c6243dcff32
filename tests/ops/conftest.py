"""Fixtures of the compiled-op tests: poisoned outputs and fresh random inputs."""
import secrets

import pytest
import torch

from ganinv_core.ops import _ext


@pytest.fixture
def _poison(monkeypatch):
    """Every output the kernels allocate starts as NaN, so an element they forget to write cannot pass (used by
    the kernel-vs-reference modules through `pytestmark`)."""
    monkeypatch.setenv('GANINV_DEBUG_POISON', '1')
    ok, reason = _ext.available('cpu')
    assert ok, reason


@pytest.fixture
def gen():
    """A torch.Generator seeded afresh for each test (inputs are drawn anew on every run)."""
    return torch.Generator().manual_seed(secrets.randbits(31))
