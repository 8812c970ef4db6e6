"""What every folder of the suite shares: the hypothesis profile, one thread for numeric
libraries, and the local Parquet copies of tests/data_cases.py's TABLE (read by
tests/unit/data/test_sources.py and uploaded by tests/integration/test_data_s3.py). The real
servers' fixtures are in tests/integration/conftest.py."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, settings

from tests.data_cases import TABLE, N, region, year

settings.register_profile("ci", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(scope="module")
def one_thread():
    """One thread for torch and OpenMP (xgboost, HistGradientBoosting) in a module's tests:
    deterministic, and faster on two shared cores (opt-in:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    """TABLE in two files, a.parquet and b.parquet."""
    d = tmp_path_factory.mktemp("table")
    pq.write_table(TABLE.slice(0, 100), d / "a.parquet")
    pq.write_table(TABLE.slice(100), d / "b.parquet")
    return d


@pytest.fixture(scope="module")
def hive_dir(tmp_path_factory):
    """TABLE plus region and year, Hive-partitioned into six files, and a _SUCCESS marker."""
    root = tmp_path_factory.mktemp("hive")
    table = TABLE.append_column("region", pa.array([region(r) for r in range(N)]))
    table = table.append_column("year", pa.array([year(r) for r in range(N)]))
    pads.write_dataset(table, root, format="parquet", partitioning=["region", "year"],
                       partitioning_flavor="hive")
    (root / "_SUCCESS").write_text("")
    return root
