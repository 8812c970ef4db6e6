"""The promotion gate (spec ``promotion``) and the job's registration in the model registry.

In the evaluate phase :func:`decide` loads the model the alias points at now (the incumbent),
checked against the digests its job recorded, scores it with its own workflow on **this job's
holdout rows** and compares it with the candidate's score (higher is better for AUC, lower for
RMSE...: railyard.spec.promotion). The decision goes on the job as ``metrics.promotion``
``{alias, metric, candidate, incumbent, incumbent_version, promoted, reason}``. An incumbent
that cannot score the new holdout (a feature missing, a fan-out model) is a decision too:
``promoted`` false with the reason, never a failed job.

Once the job is SUCCEEDED, :func:`register_and_promote` registers its model as the next
version of (owner, model_name) (idempotent per job) and, when the gate promoted it, moves the
alias to that version as a ``gate`` move, with an event on the job's timeline.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from railyard.artifacts.integrity import check_digest, checked_copy, read_files
from railyard.errors import NotFoundError, RailyardError
from railyard.jobstore import jobs, registry
from railyard.jobstore.retrying_store import call_with_db_retry
from railyard.spec import TrainingSpec
from railyard.spec.promotion import PromotionSpec, higher_is_better

if TYPE_CHECKING:
    from railyard.training.workflow import TrainingData

log = logging.getLogger("railyard.execution.driver")
GATE_ACTOR = "gate"


class CannotScore(Exception):
    """The incumbent model cannot be scored on this holdout (the reason is the message)."""


def decide(engine: Engine, spec: TrainingSpec, data: TrainingData,
           candidate_metrics: dict[str, float]) -> dict[str, Any] | None:
    """The gate's decision for a job with ``spec.promotion`` (None without one)."""
    gate = spec.promotion
    if gate is None:
        return None
    decision: dict[str, Any] = {"alias": gate.alias, "metric": gate.metric,
                                "min_delta": gate.min_delta,
                                "candidate": candidate_metrics.get(gate.metric),
                                "incumbent": None, "incumbent_version": None}
    if decision["candidate"] is None or not math.isfinite(decision["candidate"]):
        return {**decision, "promoted": False,
                "reason": f"this job's holdout has no {gate.metric!r} "
                          f"(it has {', '.join(sorted(candidate_metrics)) or 'no metrics'})"}
    alias = registry.get_alias(engine, owner=spec.owner, name=spec.model_name, alias=gate.alias)
    if alias is None:
        return {**decision, "promoted": True,
                "reason": f"no model holds {gate.alias!r} yet"}
    decision["incumbent_version"] = alias.version
    try:
        incumbent = score_incumbent(engine, spec=spec, version=alias.version, data=data)
    except CannotScore as exc:
        return {**decision, "promoted": False,
                "reason": f"the incumbent (version {alias.version}) cannot be scored on this "
                          f"holdout: {exc}"}
    decision["incumbent"] = incumbent.get(gate.metric)
    return {**decision, **compare(gate, decision["candidate"], decision["incumbent"])}


def not_scored(spec: TrainingSpec, plan: str) -> dict[str, Any]:
    """The decision of a gate whose job ran a plan that keeps no holdout table in the driver
    to score the incumbent on (streamed, fan-out): the alias stays where it is."""
    assert spec.promotion is not None
    return {"alias": spec.promotion.alias, "metric": spec.promotion.metric,
            "min_delta": spec.promotion.min_delta, "candidate": None, "incumbent": None,
            "incumbent_version": None, "promoted": False,
            "reason": f"the {plan} plan keeps no holdout rows in the driver to score the "
                      "incumbent on; the alias is unchanged (move it by hand, or train a "
                      "smaller read that runs gathered)"}


def compare(gate: PromotionSpec, candidate: float, incumbent: float | None) -> dict[str, Any]:
    """``{"promoted", "reason"}``: does ``candidate`` beat ``incumbent`` by ``min_delta``?"""
    if incumbent is None or not math.isfinite(incumbent):
        return {"promoted": True, "reason": f"the incumbent has no {gate.metric!r} on this "
                                            "holdout"}
    higher = higher_is_better(gate.metric)
    gain = candidate - incumbent if higher else incumbent - candidate
    promoted = gain >= gate.min_delta if gate.min_delta > 0 else gain > 0
    word = "higher" if higher else "lower"
    verdict = "beats" if promoted else "does not beat"
    return {"promoted": promoted,
            "reason": f"candidate {gate.metric} {candidate:.6g} {verdict} the incumbent's "
                      f"{incumbent:.6g} ({word} is better; needs a gain "
                      f"{'>= ' + format(gate.min_delta, 'g') if gate.min_delta > 0 else '> 0'},"
                      f" got {gain:.6g})"}


def score_incumbent(engine: Engine, *, spec: TrainingSpec, version: int,
                    data: TrainingData) -> dict[str, float]:
    """The holdout metrics of version ``version`` of the spec's model on ``data``'s holdout,
    computed by that model's own workflow; CannotScore when it cannot be."""
    from railyard.spec import TrainSpec
    from railyard.training.manifest import MANIFEST_FILE, PartitionedManifest, read_manifest
    from railyard.training.registry import get_workflow
    from railyard.training.workflow import TrainingData

    row = registry.get_version(engine, owner=spec.owner, name=spec.model_name, version=version)
    if row is None:
        raise CannotScore(f"version {version} is not registered")
    try:
        artifacts = jobs.get_job(engine, job_id=row.job_id).artifacts or {}
    except NotFoundError:
        raise CannotScore(f"its job {row.job_id} is no longer in the job database (pruned?)") \
            from None
    model_dir, digest = artifacts.get("model_dir"), artifacts.get("manifest_sha256")
    if not model_dir or not digest:
        raise CannotScore(f"job {row.job_id} recorded no model directory and manifest digest")
    try:
        files = read_files(str(model_dir))
        if MANIFEST_FILE not in files:
            raise CannotScore(f"{model_dir} has no {MANIFEST_FILE}")
        check_digest(f"{model_dir}/{MANIFEST_FILE}", files[MANIFEST_FILE], str(digest))
        manifest = read_manifest(files[MANIFEST_FILE])
    except (RailyardError, OSError, ValueError) as exc:   # gone, tampered with, unreadable
        raise CannotScore(f"its model at {model_dir} cannot be read: {exc}") from None
    if isinstance(manifest, PartitionedManifest):
        raise CannotScore("it is a fan-out model (one model per partition)")
    features = list(manifest.features or [])
    label = manifest.label or spec.train.label
    missing = [c for c in [*features, label] if c not in data.holdout.column_names]
    if missing:
        raise CannotScore(f"the holdout lacks column(s) {', '.join(missing)} it was trained "
                          "on")
    try:
        workflow = get_workflow(manifest.workflow)(TrainSpec(
            workflow_name=manifest.workflow, classifier_features=features or ["_"],
            label=label, custom_params=dict(manifest.custom_params or {})))
    except Exception as exc:  # noqa: BLE001 - an unknown or changed workflow is a decision
        raise CannotScore(f"its workflow {manifest.workflow!r} cannot be set up: {exc}") \
            from None
    expected = {**(manifest.digests or {}), MANIFEST_FILE: str(digest)}
    with tempfile.TemporaryDirectory(prefix="railyard-incumbent-") as tmp:
        try:
            directory = checked_copy(str(model_dir), files, expected, Path(tmp) / "model")
            model = workflow.load(directory)
            return workflow.evaluate(model, TrainingData(
                train=data.train, holdout=data.holdout, features=features, label=label))
        except Exception as exc:  # noqa: BLE001 - e.g. a column of another type: recorded
            raise CannotScore(f"{type(exc).__name__}: {exc}") from None


def register_and_promote(engine: Engine, *, job_id: str, deadline_s: float = 300.0) -> int:
    """Register SUCCEEDED job ``job_id``'s model (the next version of its model, once) and
    apply its gate's decision to the alias (railyard.jobstore.registry.register_succeeded),
    retrying while the database is unreachable; the version."""
    job = call_with_db_retry(lambda: jobs.get_job(engine, job_id=job_id), deadline_s=deadline_s)
    row = call_with_db_retry(lambda: registry.register_succeeded(engine, job=job,
                                                                 gate_actor=GATE_ACTOR),
                             deadline_s=deadline_s)
    log.info("registered as %s/%s version %d", job.owner, job.model_name, row.version)
    return row.version
