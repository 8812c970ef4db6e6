"""The cluster tests read the built-in pools, never an operator's RAILYARD_POOLS_FILE."""

from __future__ import annotations

import pytest

from railyard.cluster.pools import POOLS_FILE_ENV


@pytest.fixture(autouse=True)
def _no_pools_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POOLS_FILE_ENV, raising=False)
