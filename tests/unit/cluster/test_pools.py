"""Pool definitions: defaults, YAML overrides, placement for Ray Jobs / Train / `ray start`."""

from __future__ import annotations

import pytest

from railyard.cluster.pools import (
    GIB,
    POOL_LABEL,
    POOLS_FILE_ENV,
    choose_pool,
    get_pool,
    job_placement,
    load_pools,
    local_node_args,
    worker_placement,
)
from railyard.errors import RailyardError, SpecError
from railyard.spec import ResourcesSpec


def test_default_pools():
    pools = load_pools()
    assert sorted(pools) == ["cpu", "gpu", "highmem"]
    for name, pool in pools.items():
        assert pool.labels[POOL_LABEL] == name
    assert pools["gpu"].gpus >= 1 and pools["cpu"].gpus == 0
    assert pools["highmem"].memory_gib > pools["cpu"].memory_gib
    assert pools["gpu"].container_limits()["nvidia.com/gpu"] == str(pools["gpu"].gpus)
    assert any(t.key == "nvidia.com/gpu" for t in pools["gpu"].tolerations)


def test_yaml_override_merges_adds_and_removes(tmp_path, monkeypatch):
    path = tmp_path / "pools.yaml"
    path.write_text(
        "pools:\n"
        "  cpu: {cpus: 32, max_replicas: 20}\n"
        "  gpu: null\n"
        "  arm:\n"
        "    cpus: 8\n"
        "    memory_gib: 16\n"
        "    labels: {railyard.io/arch: arm64}\n"
        "    resources: {pool-arm: 1000}\n"
        "    node_selector: {kubernetes.io/arch: arm64}\n")
    monkeypatch.setenv(POOLS_FILE_ENV, str(path))
    pools = load_pools()
    assert sorted(pools) == ["arm", "cpu", "highmem"]
    assert pools["cpu"].cpus == 32 and pools["cpu"].max_replicas == 20
    assert pools["cpu"].memory_gib == 32          # untouched default field kept
    assert pools["arm"].labels == {"railyard.io/arch": "arm64", POOL_LABEL: "arm"}


def test_yaml_replace_defaults(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text("replace_defaults: true\npools:\n  small: {cpus: 2, memory_gib: 4}\n")
    assert list(load_pools(path)) == ["small"]


def test_bad_pools_file_names_the_field(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text("pools:\n  cpu: {cpu_count: 4}\n")
    with pytest.raises(RailyardError, match=r"pools\.cpu\.cpu_count"):
        load_pools(path)
    path.write_text("pools:\n  cpu: {min_replicas: 5, max_replicas: 2}\n")
    with pytest.raises(RailyardError, match="min_replicas 5 > max_replicas 2"):
        load_pools(path)
    path.write_text("pools:\n  cpu: {labels: {ray.io/pool: x}}\n")
    with pytest.raises(RailyardError, match="reserved"):
        load_pools(path)


def test_unknown_pool_is_a_spec_error_naming_the_field():
    with pytest.raises(SpecError) as info:
        get_pool("tpu")
    assert info.value.status_code == 422
    assert "train.resources.pool" in info.value.message
    assert "cpu, gpu, highmem" in info.value.message


def test_job_placement_is_submit_job_kwargs():
    assert job_placement("cpu") == {"entrypoint_label_selector": {POOL_LABEL: "cpu"}}
    assert job_placement(get_pool("gpu"), cpus=2) == {
        "entrypoint_label_selector": {POOL_LABEL: "gpu"}, "entrypoint_num_cpus": 2}


def test_job_placement_with_custom_resources(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text("pools:\n  cpu: {resources: {pool-cpu: 1000}}\n")
    pool = load_pools(path)["cpu"]
    assert job_placement(pool)["entrypoint_resources"] == {"pool-cpu": 1.0}


def test_worker_placement_is_a_label_selector():
    assert worker_placement("highmem") == {"label_selector": {POOL_LABEL: "highmem"}}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own imports
def test_local_node_args_parse_as_ray_start_options(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text("pools:\n  gpu: {labels: {railyard.io/accel: t4}, resources: {pool-gpu: 10}}\n")
    pool = load_pools(path)["gpu"]
    args = local_node_args(pool, scale_cpus=1, num_gpus=0)
    assert args == ["--labels=railyard.io/accel=t4,railyard.io/pool=gpu", "--num-cpus=1",
                    "--num-gpus=0", '--resources={"pool-gpu": 10}']

    # Parse them with Ray 2.60's own `ray start` command and label parser (nothing is started).
    from ray._private.label_utils import parse_node_labels_string
    from ray.scripts.scripts import start

    params = start.make_context("start", list(args)).params
    assert parse_node_labels_string(params["labels"]) == pool.labels
    assert params["num_cpus"] == 1 and params["num_gpus"] == 0
    assert params["resources"] == '{"pool-gpu": 10}'


def test_local_node_args_default_to_the_pool_size():
    assert local_node_args("cpu") == ["--labels=railyard.io/pool=cpu", "--num-cpus=16",
                                      "--num-gpus=0"]


def test_choose_pool():
    pools = load_pools()
    threshold = pools["cpu"].memory_bytes // 4
    assert choose_pool(ResourcesSpec(), 10 * 1024 ** 2) == "cpu"
    assert choose_pool(None, threshold + 1) == "highmem"
    assert choose_pool(ResourcesSpec(memory_per_worker=100 * GIB), 0) == "highmem"
    assert choose_pool(ResourcesSpec(gpus_per_worker=1), threshold * 10) == "gpu"
    assert choose_pool(ResourcesSpec(pool="highmem"), 0) == "highmem"


def test_choose_pool_rejects_impossible_requests(tmp_path):
    with pytest.raises(SpecError, match="train.resources.pool"):
        choose_pool(ResourcesSpec(pool="nope"), 0)
    with pytest.raises(SpecError, match="train.resources.gpus_per_worker"):
        choose_pool(ResourcesSpec(pool="cpu", gpus_per_worker=1), 0)
    path = tmp_path / "pools.yaml"
    path.write_text("pools:\n  gpu: null\n")
    with pytest.raises(SpecError, match="no gpu pool"):
        choose_pool(ResourcesSpec(gpus_per_worker=1), 0, pools=load_pools(path))
