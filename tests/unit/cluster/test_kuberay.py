"""KubeRay manifests: rendered from the pools, committed as rendered, valid against the v1.7
CRDs (schema, no unknown fields, the operator's own rules)."""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

from railyard.cli.kuberay import kuberay_app
from railyard.cluster.kuberay import (
    MANIFEST_FILES,
    SECRET_NAME,
    SERVE_IMPORT_PATH,
    default_manifest_dir,
    dump_manifest,
    render_manifests,
    rendered_texts,
)
from railyard.cluster.kuberay_validation import (
    CRDS_ENV,
    crd_dir,
    load_schema,
    validate_file,
    validate_manifest,
)
from railyard.cluster.pools import POOL_LABEL, load_pools


@pytest.fixture(scope="session")
def rendered():
    """The default manifests, rendered once; tests mutate deep copies."""
    return render_manifests(load_pools())


def _problems(manifest):
    return [str(p) for p in validate_manifest(manifest)]


def _paths(manifest):
    return {p.path for p in validate_manifest(manifest)}


def test_crds_found_next_to_the_repo():
    assert (crd_dir() / "ray.io_rayclusters.yaml").is_file()
    schema = load_schema("RayCluster")
    assert "workerGroupSpecs" in schema["properties"]["spec"]["properties"]


@pytest.mark.parametrize("name", MANIFEST_FILES)
def test_committed_manifest_is_valid(name):
    assert [str(p) for p in validate_file(default_manifest_dir() / name)] == []


@pytest.mark.parametrize("name", MANIFEST_FILES)
def test_committed_manifest_equals_a_fresh_render(name):
    committed = (default_manifest_dir() / name).read_text()
    assert committed == rendered_texts(load_pools())[name], (
        f"kuberay/{name} is stale: run `railyard kuberay render --out kuberay/`")


def test_render_is_deterministic(rendered):
    again = render_manifests(load_pools())
    assert [dump_manifest(m) for m in again.values()] == [
        dump_manifest(m) for m in rendered.values()]


def test_raycluster_shape(rendered):
    spec = rendered["raycluster.yaml"]["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert sorted(groups) == ["cpu", "gpu", "highmem"]
    for name, group in groups.items():
        assert group["labels"][POOL_LABEL] == name
        assert "labels" not in group["rayStartParams"]
        container = group["template"]["spec"]["containers"][0]
        # Secrets come as a read-only mounted Secret, never as environment variables.
        assert "envFrom" not in container
        mounted = {m["name"]: m for m in container["volumeMounts"]}[SECRET_NAME]
        assert mounted["readOnly"] is True
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["RAILYARD_SECRETS_DIR"] == mounted["mountPath"]
        # the standby supervisor worker starts with Ray's job supervisor imported
        assert env["RAY_preload_python_modules"] == "ray.dashboard.modules.job.job_supervisor"
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        assert volumes[SECRET_NAME]["secret"]["secretName"] == SECRET_NAME
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    gpu_pod = groups["gpu"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_rayservice_and_rayjob_shape(rendered):
    service = rendered["rayservice.yaml"]["spec"]
    app = yaml.safe_load(service["serveConfigV2"])["applications"][0]
    assert app["import_path"] == SERVE_IMPORT_PATH and app["route_prefix"] == "/"
    assert len(service["rayClusterConfig"]["workerGroupSpecs"]) == 3
    job = rendered["rayjob.yaml"]
    assert job["spec"]["clusterSelector"] == {
        "ray.io/cluster": rendered["raycluster.yaml"]["metadata"]["name"]}
    assert "railyard.execution.driver" in job["spec"]["entrypoint"]


def test_render_from_a_pools_file_is_valid(tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text("pools:\n  gpu: null\n"
                    "  arm: {cpus: 4, memory_gib: 8, resources: {pool-arm: 100}}\n")
    manifests = render_manifests(load_pools(path), image="example.com/railyard:1",
                                 namespace="ml", cluster_name="training")
    for manifest in manifests.values():
        assert _problems(manifest) == []
    groups = manifests["raycluster.yaml"]["spec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["arm", "cpu", "highmem"]
    assert groups[0]["resources"] == {"pool-arm": "100"}


def test_misspelled_workergroupspecs_is_caught(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    manifest["spec"]["workerGroupSpec"] = manifest["spec"].pop("workerGroupSpecs")
    problems = validate_manifest(manifest)
    assert any(p.path == "spec.workerGroupSpec" and "unknown field" in p.message
               and "'workerGroupSpecs'" in p.message for p in problems)


def test_misspelled_raystartparams_is_caught(rendered):
    manifest = copy.deepcopy(rendered["rayservice.yaml"])
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["rayStartParam"] = head.pop("rayStartParams")
    assert "spec.rayClusterConfig.headGroupSpec.rayStartParam" in _paths(manifest)


def test_unknown_field_deep_in_the_pod_template_is_caught(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    container = manifest["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    assert "spec.workerGroupSpecs[0].template.spec.containers[0].resource" in _paths(manifest)


def test_unknown_metadata_field_is_caught(rendered):
    manifest = copy.deepcopy(rendered["rayjob.yaml"])
    manifest["metadata"]["label"] = {"a": "b"}
    assert "metadata.label" in _paths(manifest)


def test_schema_type_errors_are_caught(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    manifest["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "ten"
    manifest["spec"]["autoscalerOptions"]["version"] = "v3"
    paths = _paths(manifest)
    assert "spec.workerGroupSpecs[0].maxReplicas" in paths
    assert "spec.autoscalerOptions.version" in paths


def test_duplicate_list_map_key_is_caught(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    ports = manifest["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    ports.append(dict(ports[0]))
    problems = validate_manifest(manifest)
    assert any("duplicate entry" in p.message and p.path.endswith(f"ports[{len(ports) - 1}]")
               for p in problems)


def test_labels_in_raystartparams_are_rejected(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    group = manifest["spec"]["workerGroupSpecs"][0]
    group["rayStartParams"]["labels"] = "railyard.io/pool=cpu"
    problems = validate_manifest(manifest)
    assert [p.path for p in problems] == ["spec.workerGroupSpecs[0].rayStartParams.labels"]
    assert "top-level labels field" in problems[0].message


def test_both_resource_styles_are_rejected(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    head = manifest["spec"]["headGroupSpec"]             # has resources: {CPU: "0"}
    head["rayStartParams"]["num-cpus"] = "0"
    problems = validate_manifest(manifest)
    assert [p.path for p in problems] == ["spec.headGroupSpec.resources"]
    assert "num-cpus" in problems[0].message


def test_bad_group_label_is_rejected(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    manifest["spec"]["workerGroupSpecs"][1]["labels"]["railyard.io/pool"] = "not valid!"
    assert "spec.workerGroupSpecs[1].labels" in _paths(manifest)


def test_autoscaler_v2_rules(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    spec = manifest["spec"]
    spec["workerGroupSpecs"][0]["template"]["spec"]["restartPolicy"] = "Always"
    spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "RAY_enable_autoscaler_v2", "value": "1"})
    paths = _paths(manifest)
    assert "spec.workerGroupSpecs[0].template.spec.restartPolicy" in paths
    assert "spec.autoscalerOptions.version" in paths


def test_rayjob_without_cluster_is_rejected(rendered):
    manifest = copy.deepcopy(rendered["rayjob.yaml"])
    del manifest["spec"]["clusterSelector"]
    problems = validate_manifest(manifest)
    assert [p.path for p in problems] == ["spec"]
    assert "clusterSelector['ray.io/cluster']" in problems[0].message

    manifest["spec"]["clusterSelector"] = {"app": "railyard"}
    assert [p.path for p in validate_manifest(manifest)] == ["spec.clusterSelector"]


def test_rayjob_with_its_own_cluster_spec_is_checked(rendered):
    manifest = copy.deepcopy(rendered["rayjob.yaml"])
    del manifest["spec"]["clusterSelector"]
    manifest["spec"]["rayClusterSpec"] = copy.deepcopy(rendered["raycluster.yaml"]["spec"])
    assert _problems(manifest) == []
    manifest["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["labels"] = "a=b"
    assert _paths(manifest) == {"spec.rayClusterSpec.headGroupSpec.rayStartParams.labels"}


def test_name_rules(rendered):
    manifest = copy.deepcopy(rendered["rayservice.yaml"])
    manifest["metadata"]["name"] = "Railyard_API"
    assert "metadata.name" in _paths(manifest)
    manifest["metadata"]["name"] = "r" * 48
    assert "metadata.name" in _paths(manifest)


def test_wrong_kind_or_api_version(rendered):
    manifest = copy.deepcopy(rendered["raycluster.yaml"])
    manifest["apiVersion"] = "ray.io/v1alpha1"
    assert "apiVersion" in _paths(manifest)
    assert _paths({"kind": "Deployment"}) == {"kind"}


def test_crd_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(CRDS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=CRDS_ENV):
        crd_dir()


def test_cli_render_check_and_validate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "kuberay"
    result = runner.invoke(kuberay_app, ["render", "--out", str(out), "--namespace", "ml"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(MANIFEST_FILES)
    assert runner.invoke(kuberay_app, ["render", "--out", str(out), "--namespace", "ml",
                                       "--check"]).exit_code == 0
    assert runner.invoke(kuberay_app, ["render", "--out", str(out), "--check"]).exit_code == 1

    result = runner.invoke(kuberay_app, ["validate", str(out)])
    assert result.exit_code == 0, result.output

    broken = yaml.safe_load((out / "raycluster.yaml").read_text())
    broken["spec"]["headGroupSpec"]["rayStartParams"]["labels"] = "a=b"
    (out / "raycluster.yaml").write_text(yaml.safe_dump(broken))
    result = runner.invoke(kuberay_app, ["validate", str(out)])
    assert result.exit_code == 1
    assert "rayStartParams.labels" in result.output
