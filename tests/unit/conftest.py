"""Fixtures the unit tests share (opt-in: ``pytestmark = pytest.mark.usefixtures(...)``)."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="module")
def one_thread():
    """One thread for torch and OpenMP (xgboost, HistGradientBoosting) in a module's tests:
    deterministic, and faster on two shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)
