"""Validate KubeRay manifests against the KubeRay v1.7 CRDs, offline.

Three layers, each reported as ``ManifestProblem(path, message)``:

1. **Schema**: ``jsonschema`` Draft 7 against the CRD's ``v1`` ``openAPIV3Schema`` (types,
   enums, required fields, patterns).
2. **Unknown fields**: the CRDs never set ``additionalProperties: false``, so (1) accepts any
   typo. A walk mirrors ``kubectl --validate=strict``: every key must be a declared property,
   or fall under ``additionalProperties`` / ``x-kubernetes-preserve-unknown-fields``. It also
   checks the keys of ``x-kubernetes-list-type: map`` lists are unique.
3. **KubeRay rules** that live only in the operator's Go code
   (``ray-operator/controllers/ray/utils/validation.go``): name lengths, ``rayStartParams``
   ``labels`` rejected in favour of the group's ``labels`` field, Ray resources set in only one
   of ``rayStartParams`` (num-cpus, num-gpus, memory, resources) and the group's ``resources``
   field, autoscaler v2 settings, token auth's Ray version, RayJob cluster selection.

The CRD directory is ``$RAILYARD_KUBERAY_CRDS``, else the KubeRay v1.7.0 CRDs shipped inside this
package (``railyard/cluster/crds/``, see its README). Parsed schemas are cached per process.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from railyard.cluster.pools import label_key_problem, label_value_problem

CRDS_ENV = "RAILYARD_KUBERAY_CRDS"
API_VERSION = "ray.io/v1"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
# validation.go / constant.go: 63 - len("-serve-svc"); RayJob and RayService add 6 characters.
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
RAY_START_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")
MIN_TOKEN_AUTH_RAY_VERSION = (2, 52, 0)

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SchemaLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The CRDs leave the root ``metadata`` as a bare object (the API server validates ObjectMeta
# itself); this is the part of ObjectMeta a manifest may set.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    },
}


@dataclass(frozen=True)
class ManifestProblem:
    """One thing wrong with a manifest, at a dotted path such as ``spec.headGroupSpec``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(root)'}: {self.message}"


SHIPPED_CRDS = Path(__file__).resolve().with_name("crds")


def crd_dir() -> Path:
    """Where the KubeRay CRD YAML files are: ``$RAILYARD_KUBERAY_CRDS`` when set, else the
    ones shipped in the package; FileNotFoundError saying where it looked."""
    override = os.environ.get(CRDS_ENV)
    candidate = Path(override) if override else SHIPPED_CRDS
    if (candidate / CRD_FILES["RayCluster"]).is_file():
        return candidate
    raise FileNotFoundError(
        f"KubeRay CRDs not found in {candidate}; set {CRDS_ENV} to the directory holding "
        + ", ".join(CRD_FILES.values()))


@functools.lru_cache(maxsize=8)
def _load_schema(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        crd = yaml.load(fh, Loader=_SchemaLoader)
    versions = [v for v in crd["spec"]["versions"] if v.get("name") == "v1"]
    if not versions:
        raise ValueError(f"{path}: no v1 entry in spec.versions")
    schema = dict(versions[0]["schema"]["openAPIV3Schema"])
    schema["properties"] = {**schema["properties"], "metadata": _OBJECT_META}
    return schema


def load_schema(kind: str, directory: Path | None = None) -> dict[str, Any]:
    """The ``v1`` openAPIV3Schema of ``kind`` (parsed once per process; do not mutate)."""
    if kind not in CRD_FILES:
        raise KeyError(f"unknown kind {kind!r}; expected one of {', '.join(CRD_FILES)}")
    return _load_schema(str((directory or crd_dir()) / CRD_FILES[kind]))


@functools.lru_cache(maxsize=8)
def _validator(path: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_load_schema(path))


def _dotted(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


# ---------------------------------------------------------------- layer 2: unknown fields


def _walk(value: Any, schema: dict[str, Any], path: str, out: list[ManifestProblem]) -> None:
    if value is None or not isinstance(schema, dict):
        return
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in sorted(value, key=str):
            child = f"{path}.{key}" if path else str(key)
            if key in props:
                _walk(value[key], props[key], child, out)
            elif isinstance(extra, dict):
                _walk(value[key], extra, child, out)
            elif extra is True or preserve:
                continue
            else:
                hint = difflib.get_close_matches(str(key), list(props), n=1)
                where = f"; did you mean {hint[0]!r}?" if hint else (
                    f"; known fields: {', '.join(sorted(props))}" if props else
                    "; this object takes no fields")
                out.append(ManifestProblem(child, f"unknown field {key!r}{where}"))
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _walk(item, items, f"{path}[{i}]", out)
        _check_list_keys(value, schema, path, out)


def _check_list_keys(value: list[Any], schema: dict[str, Any], path: str,
                     out: list[ManifestProblem]) -> None:
    kind = schema.get("x-kubernetes-list-type")
    if kind == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: set[tuple[Any, ...]] = set()
        for i, item in enumerate(value):
            if isinstance(item, dict):
                key = tuple(repr(item.get(k)) for k in keys)
                if key in seen:
                    out.append(ManifestProblem(
                        f"{path}[{i}]", f"duplicate entry for {', '.join(keys)} = "
                        f"{', '.join(str(item.get(k)) for k in keys)}"))
                seen.add(key)
    elif kind == "set":
        reprs = [repr(v) for v in value]
        for i, r in enumerate(reprs):
            if r in reprs[:i]:
                out.append(ManifestProblem(f"{path}[{i}]", f"duplicate value {value[i]!r}"))


# ---------------------------------------------------------------- layer 3: KubeRay rules


def _env_value(container: dict[str, Any], name: str) -> tuple[bool, str | None]:
    for var in container.get("env") or []:
        if isinstance(var, dict) and var.get("name") == name:
            return True, var.get("value")
    return False, None


def _containers(group: dict[str, Any]) -> list[Any]:
    spec = ((group.get("template") or {}).get("spec") or {})
    return spec.get("containers") or []


def _version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(x or 0) for x in match.groups()) if match else None


def _group_rules(group: Any, name: str, path: str, out: list[ManifestProblem]) -> None:
    if not isinstance(group, dict):
        return
    params = group.get("rayStartParams") or {}
    if not _containers(group):
        out.append(ManifestProblem(f"{path}.template.spec.containers",
                                   f"{name} group needs at least one container"))
    if "labels" in params:
        out.append(ManifestProblem(
            f"{path}.rayStartParams.labels",
            f"rayStartParams['labels'] is not supported for {name} group; "
            "use the group's top-level labels field instead"))
    set_params = [p for p in RAY_START_RESOURCE_PARAMS if params.get(p)]
    if set_params and group.get("resources"):
        out.append(ManifestProblem(
            f"{path}.resources",
            f"Ray resources for {name} group are set both in rayStartParams "
            f"({', '.join(set_params)}) and in the resources field; use only one"))
    for key, value in (group.get("labels") or {}).items():
        problem = label_key_problem(str(key)) or label_value_problem(str(value))
        if problem:
            out.append(ManifestProblem(f"{path}.labels", f"{name} group: {problem}"))


def cluster_spec_problems(spec: Any, path: str = "spec") -> list[ManifestProblem]:
    """KubeRay's RayCluster spec rules (also applied to RayJob/RayService cluster specs)."""
    out: list[ManifestProblem] = []
    if not isinstance(spec, dict):
        return out
    head = spec.get("headGroupSpec") or {}
    _group_rules(head, "Head", f"{path}.headGroupSpec", out)
    workers = spec.get("workerGroupSpecs") or []
    for i, group in enumerate(workers):
        gname = group.get("groupName", f"#{i}") if isinstance(group, dict) else f"#{i}"
        _group_rules(group, str(gname), f"{path}.workerGroupSpecs[{i}]", out)

    head_containers = _containers(head)
    head_container = head_containers[0] if head_containers and isinstance(
        head_containers[0], dict) else {}
    has_v2_env, v2_env = _env_value(head_container, "RAY_enable_autoscaler_v2")
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    options = spec.get("autoscalerOptions") or {}
    if not autoscaling and v2_env in ("1", "true"):
        out.append(ManifestProblem(
            f"{path}.enableInTreeAutoscaling",
            f"RAY_enable_autoscaler_v2={v2_env} needs enableInTreeAutoscaling: true"))
    if autoscaling:
        for i, group in enumerate(workers):
            if isinstance(group, dict) and group.get("suspend"):
                out.append(ManifestProblem(f"{path}.workerGroupSpecs[{i}].suspend",
                                           "a worker group cannot be suspended with the "
                                           "autoscaler enabled"))
        if options.get("version") and has_v2_env:
            out.append(ManifestProblem(
                f"{path}.autoscalerOptions.version",
                "both autoscalerOptions.version and the head env RAY_enable_autoscaler_v2 are "
                "set; use only autoscalerOptions.version"))
        if options.get("version") == "v2" or v2_env in ("1", "true"):
            groups = [(f"{path}.headGroupSpec", head)] + [
                (f"{path}.workerGroupSpecs[{i}]", g) for i, g in enumerate(workers)]
            for gpath, group in groups:
                policy = (((group or {}).get("template") or {}).get("spec") or {}).get(
                    "restartPolicy") if isinstance(group, dict) else None
                if policy not in (None, "", "Never"):
                    out.append(ManifestProblem(f"{gpath}.template.spec.restartPolicy",
                                               "must be Never or unset with autoscaler v2"))
    auth = spec.get("authOptions") or {}
    if auth.get("mode") == "token":
        version = _version_tuple(str(spec.get("rayVersion") or ""))
        if version is None:
            out.append(ManifestProblem(f"{path}.rayVersion",
                                       "authOptions.mode token needs rayVersion 2.52.0 or later"))
        elif version < MIN_TOKEN_AUTH_RAY_VERSION:
            out.append(ManifestProblem(f"{path}.rayVersion",
                                       f"authOptions.mode token needs Ray 2.52.0 or later, "
                                       f"got {spec.get('rayVersion')}"))
    return out


def _rayjob_problems(spec: dict[str, Any]) -> list[ManifestProblem]:
    out: list[ManifestProblem] = []
    selector = spec.get("clusterSelector") or {}
    mode = spec.get("submissionMode") or "K8sJobMode"
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    ttl = spec.get("ttlSecondsAfterFinished") or 0
    if spec.get("suspend") and not shutdown:
        out.append(ManifestProblem("spec.suspend", "a RayJob with shutdownAfterJobFinishes "
                                                   "false cannot be suspended"))
    if isinstance(ttl, int) and ttl < 0:
        out.append(ManifestProblem("spec.ttlSecondsAfterFinished", "must not be negative"))
    elif not shutdown and isinstance(ttl, int) and ttl > 0:
        out.append(ManifestProblem("spec.ttlSecondsAfterFinished",
                                   "needs shutdownAfterJobFinishes: true"))
    if spec.get("rayClusterSpec") is None and not selector:
        out.append(ManifestProblem(
            "spec", "a RayJob needs rayClusterSpec or clusterSelector['ray.io/cluster']"))
    if selector:
        if not selector.get("ray.io/cluster"):
            out.append(ManifestProblem("spec.clusterSelector",
                                       "clusterSelector needs a non-empty 'ray.io/cluster'"))
        if spec.get("suspend"):
            out.append(ManifestProblem("spec.suspend",
                                       "the clusterSelector mode cannot be suspended"))
        if mode == "SidecarMode":
            out.append(ManifestProblem("spec.submissionMode",
                                       "clusterSelector is not supported in SidecarMode"))
    backoff = spec.get("backoffLimit")
    if mode == "InteractiveMode" and isinstance(backoff, int) and backoff > 0:
        out.append(ManifestProblem("spec.backoffLimit",
                                   "backoffLimit is incompatible with InteractiveMode"))
    if isinstance(backoff, int) and backoff < 0:
        out.append(ManifestProblem("spec.backoffLimit", "must not be negative"))
    if mode == "SidecarMode":
        for field in ("submitterPodTemplate", "submitterConfig"):
            if spec.get(field) is not None:
                out.append(ManifestProblem(f"spec.{field}", f"SidecarMode does not support "
                                                            f"{field}"))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        out.append(ManifestProblem("spec.activeDeadlineSeconds", "must be positive"))
    if spec.get("runtimeEnvYAML"):
        try:
            env = yaml.safe_load(spec["runtimeEnvYAML"])
            if env is not None and not isinstance(env, dict):
                raise yaml.YAMLError("not a mapping")
        except yaml.YAMLError as exc:
            out.append(ManifestProblem("spec.runtimeEnvYAML",
                                       f"not a YAML mapping: {_short(str(exc), 120)}"))
    if spec.get("rayClusterSpec") is not None:
        out += cluster_spec_problems(spec["rayClusterSpec"], "spec.rayClusterSpec")
    return out


def _rayservice_problems(spec: dict[str, Any]) -> list[ManifestProblem]:
    path = "spec.rayClusterConfig"
    cluster = spec.get("rayClusterConfig") or {}
    out = cluster_spec_problems(cluster, path)
    head_service = (cluster.get("headGroupSpec") or {}).get("headService") or {}
    if (head_service.get("metadata") or {}).get("name"):
        out.append(ManifestProblem(f"{path}.headGroupSpec.headService.metadata.name",
                                   "must not be set for a RayService"))
    strategy = (spec.get("upgradeStrategy") or {}).get("type")
    if strategy is not None and strategy not in ("NewClusterWithIncrementalUpgrade",
                                                 "NewCluster", "None"):
        out.append(ManifestProblem("spec.upgradeStrategy.type", f"invalid value {strategy!r}"))
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if isinstance(delay, int) and delay < 0:
        out.append(ManifestProblem("spec.rayClusterDeletionDelaySeconds",
                                   "must not be negative"))
    # Not a CRD rule: the operator only finds out when it deploys the config.
    if spec.get("serveConfigV2"):
        try:
            config = yaml.safe_load(spec["serveConfigV2"])
        except yaml.YAMLError as exc:
            config = None
            out.append(ManifestProblem("spec.serveConfigV2",
                                       f"not valid YAML: {_short(str(exc), 120)}"))
        else:
            if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
                out.append(ManifestProblem("spec.serveConfigV2",
                                           "must be a Serve config with an applications list"))
    return out


def kuberay_rule_problems(manifest: dict[str, Any]) -> list[ManifestProblem]:
    """The operator-side rules for one manifest (schema problems are not repeated here)."""
    kind = manifest.get("kind")
    out: list[ManifestProblem] = []
    name = (manifest.get("metadata") or {}).get("name")
    if isinstance(name, str):
        limit = MAX_NAME_LENGTH.get(str(kind), 63)
        if len(name) > limit:
            out.append(ManifestProblem("metadata.name",
                                       f"{kind} name must be at most {limit} characters"))
        if not _DNS1035.match(name):
            out.append(ManifestProblem("metadata.name",
                                       f"{name!r} is not a DNS-1035 label (lowercase letters, "
                                       "digits, '-', starting with a letter)"))
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        return out
    if kind == "RayCluster":
        out += cluster_spec_problems(spec)
    elif kind == "RayJob":
        out += _rayjob_problems(spec)
    elif kind == "RayService":
        out += _rayservice_problems(spec)
    return out


# ---------------------------------------------------------------- entry points


def validate_manifest(manifest: Any, *, crds: Path | None = None) -> list[ManifestProblem]:
    """Every problem with one manifest (RayCluster, RayJob or RayService); [] if valid."""
    if not isinstance(manifest, dict):
        return [ManifestProblem("", "a manifest must be a mapping")]
    kind = manifest.get("kind")
    if kind not in CRD_FILES:
        return [ManifestProblem("kind", f"expected one of {', '.join(CRD_FILES)}, got {kind!r}")]
    out: list[ManifestProblem] = []
    if manifest.get("apiVersion") != API_VERSION:
        out.append(ManifestProblem("apiVersion", f"expected {API_VERSION!r}, got "
                                                 f"{manifest.get('apiVersion')!r}"))
    if not (manifest.get("metadata") or {}).get("name"):
        out.append(ManifestProblem("metadata.name", "required"))
    path = str((crds or crd_dir()) / CRD_FILES[kind])
    schema = _load_schema(path)
    errors = sorted(_validator(path).iter_errors(manifest),
                    key=lambda e: [str(p) for p in e.absolute_path])
    out += [ManifestProblem(_dotted(e.absolute_path), _short(e.message)) for e in errors]
    _walk(manifest, schema, "", out)
    out += kuberay_rule_problems(manifest)
    return out


def validate_yaml_text(text: str, *, crds: Path | None = None) -> list[ManifestProblem]:
    """Validate every document of a YAML stream; paths are prefixed ``docN:`` when several."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return [ManifestProblem("", f"not valid YAML: {_short(str(exc))}")]
    if not docs:
        return [ManifestProblem("", "no manifest in the file")]
    out: list[ManifestProblem] = []
    for i, doc in enumerate(docs):
        for problem in validate_manifest(doc, crds=crds):
            prefix = f"doc{i}:" if len(docs) > 1 else ""
            out.append(ManifestProblem(prefix + problem.path, problem.message))
    return out


def validate_file(path: str | Path, *, crds: Path | None = None) -> list[ManifestProblem]:
    """Validate one manifest file."""
    return validate_yaml_text(Path(path).read_text(), crds=crds)


def validate_directory(directory: str | Path, *,
                       crds: Path | None = None) -> dict[str, list[ManifestProblem]]:
    """Problems of every ``*.yaml``/``*.yml`` file in ``directory``, by file name."""
    files = sorted(p for p in Path(directory).iterdir() if p.suffix in (".yaml", ".yml"))
    return {p.name: validate_file(p, crds=crds) for p in files}
