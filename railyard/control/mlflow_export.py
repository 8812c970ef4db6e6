"""Every SUCCEEDED job, logged to MLflow (``RAILYARD_MLFLOW_TRACKING_URI``; the
``railyard[mlflow]`` extra, MLflow's own client).

Per job: an MLflow run in experiment ``<owner>/<project>`` named after the job, tagged
``railyard.job_id``, ``railyard.owner``, ``railyard.trainer``, ``railyard.spec_hash`` (and
``railyard.workflow``, ``railyard.version``); its params are the workflow's effective
hyperparameters (the spec's, defaults filled in); its metrics the holdout metrics under the
names of ``metrics.holdout``; the model saved in its MLflow flavour (xgboost, lightgbm,
sklearn, pytorch), so ``mlflow.pyfunc.load_model`` loads it; and a version of the registered
model ``<owner>.<model_name>``, with Railyard's aliases mirrored (at export time, and whenever
an alias moves afterwards).

The exporter runs in the API process on a thread of its own (serve_app.deployment), never in
a job's driver: MLflow being down never fails a training. An attempt that fails is retried
after ``RAILYARD_MLFLOW_RETRY_BASE_S``, doubling (at most an hour), until
``RAILYARD_MLFLOW_MAX_ATTEMPTS``; the state (pending / exported / failed, the error, the run
id) is on ``GET /v1/jobs/{id}/mlflow``. What an attempt created (the run, the version) is kept,
so a retry finishes the export instead of starting another run.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from railyard.config import Settings
from railyard.errors import ConflictError
from railyard.jobstore import jobs, mlflow_exports, registry
from railyard.jobstore.tables import Job, MlflowExport, utcnow

log = logging.getLogger(__name__)

RETRY_MAX_S = 3600.0
# One HTTP call to MLflow gives up quickly and is not retried inside the client: the exporter
# retries whole attempts on its own schedule (MLflow's default retries a call for minutes).
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
MODEL_ARTIFACT_PATH = "model"
TAG_PREFIX = "railyard."
FLAVOUR_TAG = "railyard.model_flavour"    # the flavour the run's model is in; "none": no model
# The package each flavour's saved model needs (its version pinned to the installed one).
FLAVOUR_PACKAGES = {"xgboost": "xgboost", "lightgbm": "lightgbm", "sklearn": "scikit-learn",
                    "torch": "torch"}
# The key of the workflow's loaded model that holds the object each flavour saves.
FLAVOUR_OBJECTS = {"xgboost": "booster", "lightgbm": "booster", "sklearn": "pipeline",
                   "torch": "module"}

# (model directory URI, the job's artifacts) -> the published model (.model, .workflow,
# .manifest): railyard.serving.published.load_published, passed in by the API.
ModelLoader = Callable[[str, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class ExportResult:
    """What one export created in MLflow."""

    run_id: str
    experiment_id: str
    registered_name: str
    version: int | None       # None: the run has no model of a flavour to register


STATE_FIELDS = ("status", "attempts", "error", "run_id", "experiment_id", "registered_name",
                "mlflow_version", "next_attempt_at", "exported_at")


def export_state(engine: Engine, settings: Settings, *, job_id: str) -> dict[str, Any]:
    """A job's export as the API shows it: ``enabled`` (MLflow configured) and the export's
    fields; ``status`` ``none`` with 0 attempts while it has no export."""
    row = mlflow_exports.get(engine, job_id=job_id)
    state: dict[str, Any] = dict.fromkeys(STATE_FIELDS)
    state.update({"status": "none", "attempts": 0})
    if row is not None:
        state.update({k: getattr(row, k) for k in STATE_FIELDS})
    return {"job_id": job_id, "enabled": bool(settings.mlflow_tracking_uri), **state}


def retry_export(engine: Engine, settings: Settings, *, job_id: str) -> dict[str, Any]:
    """Make a failed (or waiting) export pending and due now, its attempts counted afresh;
    the new state. ConflictError when there is nothing to retry: MLflow is off, the job has
    no export (it did not succeed), or it was exported."""
    state = export_state(engine, settings, job_id=job_id)
    if not state["enabled"] or state["status"] in ("none", "exported"):
        why = ("MLflow export is off (RAILYARD_MLFLOW_TRACKING_URI is not set)"
               if not state["enabled"] else
               "the job has no MLflow export (only SUCCEEDED jobs are exported)"
               if state["status"] == "none" else "the job is exported already")
        raise ConflictError(f"nothing to retry for job {job_id}: {why}",
                            details=[{"field": "status", "message": state["status"]}])
    mlflow_exports.retry_now(engine, job_id=job_id)
    return export_state(engine, settings, job_id=job_id)


def retry_delay(attempts: int, base_s: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: base, 2 x base, ...,
    at most an hour."""
    return min(base_s * 2 ** max(attempts - 1, 0), RETRY_MAX_S)


def experiment_name(job: Job) -> str:
    """``<owner>/<project>``."""
    return f"{job.owner}/{job.project}"


def registered_name(owner: str, model_name: str) -> str:
    """``<owner>.<model_name>``: the MLflow registered model of a Railyard model."""
    return f"{owner}.{model_name}"


def run_tags(job: Job, version: int | None) -> dict[str, str]:
    """The run's ``railyard.*`` tags."""
    tags = {"job_id": job.id, "owner": job.owner, "trainer": job.trainer,
            "spec_hash": job.spec_hash, "workflow": job.workflow_name}
    if version is not None:
        tags["version"] = str(version)
    return {TAG_PREFIX + k: str(v) for k, v in tags.items() if v is not None}


def holdout_metrics(job: Job) -> dict[str, float]:
    """``metrics.holdout`` as MLflow metrics: the finite numbers, under the same names."""
    holdout = (job.metrics or {}).get("holdout") or {}
    out = {}
    for name, value in holdout.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[str(name)] = float(value)
    return out


def effective_params(published: Any, job: Job) -> dict[str, str]:
    """The workflow's hyperparameters as it trained (defaults filled in), as MLflow params;
    the spec's ``custom_params`` when the workflow has no parameter model."""
    params: Any = getattr(getattr(published, "workflow", None), "params", None)
    if params is not None and hasattr(params, "model_dump"):
        values: Mapping[str, Any] = params.model_dump(mode="json")
    else:
        values = ((job.spec or {}).get("train") or {}).get("custom_params") or {}
    return {str(k): _param_text(v) for k, v in values.items() if v is not None}


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def flavour_of(published: Any) -> str | None:
    """The MLflow flavour the published model is saved in (its framework's), or None: a
    fan-out job's models, or a workflow whose model holds no object of a flavour."""
    model = getattr(published, "model", None)
    framework = str((getattr(published, "manifest", None) or {}).get("framework"))
    needed = FLAVOUR_OBJECTS.get(framework)
    if not isinstance(model, Mapping) or needed is None or needed not in model:
        return None
    return framework


def save_flavour(published: Any, directory: Path) -> str:
    """Save the published model in its MLflow flavour under ``directory`` (which must not
    exist); the flavour's name. A model of no flavour (``flavour_of``) is a ValueError."""
    import importlib.metadata

    framework = flavour_of(published)
    if framework is None:
        raise ValueError("the model has no MLflow flavour (a fan-out job's models, or a "
                         "workflow's model that is not an xgboost, lightgbm, scikit-learn or "
                         "torch object)")
    model = published.model
    package = FLAVOUR_PACKAGES[str(framework)]
    requirements = [f"{package}=={importlib.metadata.version(package)}"]
    # How Railyard fed the model (a categorical feature is a pandas category over these
    # categories; the rest float64), in the MLmodel file for whoever calls it.
    manifest = published.manifest
    metadata = {"railyard": {"job_id": manifest.get("job_id"),
                             "workflow": manifest.get("workflow"),
                             "features": manifest.get("features"),
                             "encoding": model.get("encoding")}}
    common: dict[str, Any] = {"pip_requirements": requirements, "metadata": metadata}
    if framework == "xgboost":
        import mlflow.xgboost
        mlflow.xgboost.save_model(model["booster"], str(directory), **common)
    elif framework == "lightgbm":
        import mlflow.lightgbm
        mlflow.lightgbm.save_model(model["booster"], str(directory), **common)
    elif framework == "sklearn":
        import mlflow.sklearn
        predict_fn = "predict" if model.get("task") == "regression" else "predict_proba"
        mlflow.sklearn.save_model(model["pipeline"], str(directory), **common,
                                  pyfunc_predict_fn=predict_fn)
    else:
        import mlflow.pytorch
        mlflow.pytorch.save_model(model["module"].to("cpu"), str(directory), **common)
    return str(framework)


class MlflowExporter:
    """Exports SUCCEEDED jobs to the MLflow server at ``settings.mlflow_tracking_uri`` and
    mirrors Railyard's aliases there; ``run`` is its loop, ``tick`` one pass."""

    def __init__(self, engine: Engine, settings: Settings, *, load_model: ModelLoader,
                 poll_interval_s: float = 1.0) -> None:
        if not settings.mlflow_tracking_uri:
            raise ValueError("RAILYARD_MLFLOW_TRACKING_URI is not set")
        for name, value in CLIENT_ENV.items():
            os.environ.setdefault(name, value)
        from mlflow import MlflowClient

        self.engine, self.settings, self.load_model = engine, settings, load_model
        self.poll_interval_s = poll_interval_s
        self.uri = settings.mlflow_tracking_uri
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self._alias_cursor = 0       # alias events seen (0: resync every model once)

    def run(self, stop: threading.Event, leading: Callable[[], bool] = lambda: True) -> None:
        """Export and mirror until ``stop`` is set, while ``leading`` (one replica exports)."""
        while not stop.wait(self.poll_interval_s):
            if not leading():
                continue
            try:
                self.tick()
            except Exception:  # the database or MLflow is down: the next pass tries again
                log.exception("MLflow export pass failed")

    def tick(self) -> int:
        """One pass: enqueue newly registered jobs, attempt the due exports, mirror alias
        moves; the number of exports that succeeded."""
        mlflow_exports.enqueue_new(self.engine)
        done = sum(self.attempt(row) for row in mlflow_exports.due(self.engine))
        self.mirror_alias_moves()
        return done

    def attempt(self, row: MlflowExport) -> bool:
        """Try ``row``'s export once; record the outcome (exported, retry later, failed)."""
        try:
            self.export(row)
        except Exception as exc:  # noqa: BLE001 - MLflow down or refusing: retry later
            error = f"{type(exc).__name__}: {exc}"
            if row.attempts + 1 >= self.settings.mlflow_max_attempts:
                log.warning("MLflow export of %s failed for good: %s", row.job_id, error)
                mlflow_exports.mark_failed(self.engine, job_id=row.job_id, error=error)
            else:
                delay = retry_delay(row.attempts + 1, self.settings.mlflow_retry_base_s)
                log.info("MLflow export of %s failed (retry in %.0f s): %s", row.job_id,
                         delay, error)
                mlflow_exports.mark_retry(self.engine, job_id=row.job_id, error=error,
                                          next_attempt_at=utcnow() + timedelta(seconds=delay))
            return False
        mlflow_exports.mark_exported(self.engine, job_id=row.job_id)
        return True

    def export(self, row: MlflowExport) -> ExportResult:
        """Log ``row``'s job as a run with its model and register it (reusing what an earlier
        attempt created), then mirror the model's aliases."""
        job = jobs.get_job(self.engine, job_id=row.job_id)
        version = registry.version_of_job(self.engine, job_id=job.id)
        name = registered_name(job.owner, job.model_name)
        experiment_id = row.experiment_id or self._experiment(experiment_name(job))
        run_id = row.run_id
        if run_id is None:
            run_id = self._log_run(job, experiment_id, version.version if version else None)
            mlflow_exports.record_progress(self.engine, job_id=job.id, run_id=run_id,
                                           experiment_id=experiment_id, registered_name=name)
        mlflow_version = row.mlflow_version
        if mlflow_version is None and self._has_model(run_id):
            mlflow_version = self._register(name, run_id, job,
                                            version.version if version else None)
            mlflow_exports.record_progress(self.engine, job_id=job.id, registered_name=name,
                                           mlflow_version=mlflow_version)
        if mlflow_version is not None:
            self.mirror_aliases(job.owner, job.model_name)
        return ExportResult(run_id=run_id, experiment_id=experiment_id, registered_name=name,
                            version=mlflow_version)

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except MlflowException:      # created meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def _log_run(self, job: Job, experiment_id: str, version: int | None) -> str:
        """Create the run: tags, params, metrics, the model's flavour; its id."""
        from mlflow.entities import Metric, Param, RunTag

        artifacts = dict(job.artifacts or {})
        if not artifacts.get("model_dir"):
            raise ValueError(f"job {job.id} published no model (no artifacts.model_dir)")
        published = self.load_model(str(artifacts["model_dir"]), artifacts)
        start_ms = int(job.started_at.timestamp() * 1000) if job.started_at else None
        run = self.client.create_run(experiment_id, start_time=start_ms, run_name=job.id,
                                     tags=run_tags(job, version))
        run_id = str(run.info.run_id)
        step_ms = int((job.finished_at or utcnow()).timestamp() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, step_ms, 0) for k, v in holdout_metrics(job).items()],
            params=[Param(k, v) for k, v in effective_params(published, job).items()],
            tags=[RunTag("mlflow.note.content",
                         f"Railyard job {job.id} ({job.workflow_name}) of model "
                         f"{job.owner}/{job.model_name}")])
        if flavour_of(published) is not None:
            with tempfile.TemporaryDirectory(prefix="railyard-mlflow-") as tmp:
                local = Path(tmp) / MODEL_ARTIFACT_PATH
                save_flavour(published, local)
                self.client.log_artifacts(run_id, str(local), MODEL_ARTIFACT_PATH)
        self.client.set_tag(run_id, FLAVOUR_TAG, flavour_of(published) or "none")
        end_ms = int(job.finished_at.timestamp() * 1000) if job.finished_at else None
        self.client.set_terminated(run_id, "FINISHED", end_time=end_ms)
        return run_id

    def _has_model(self, run_id: str) -> bool:
        """Whether the run logged a model of a flavour (its ``railyard.model_flavour`` tag)."""
        return self.client.get_run(run_id).data.tags.get(FLAVOUR_TAG, "none") != "none"

    def _register(self, name: str, run_id: str, job: Job, version: int | None) -> int:
        """The registered model version of ``run_id`` (created unless it exists)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(
                name, description=f"Railyard model {job.owner}/{job.model_name}")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if existing:
            return int(existing[0].version)
        tags = {"railyard.job_id": job.id}
        if version is not None:
            tags["railyard.version"] = str(version)
        created = self.client.create_model_version(
            name, source=f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}", run_id=run_id, tags=tags)
        return int(created.version)

    def mirror_aliases(self, owner: str, name: str) -> None:
        """Make the MLflow model's aliases Railyard's (for the versions that were exported):
        set the ones Railyard has, delete the ones it no longer has."""
        exported = mlflow_exports.exported_versions(self.engine, owner=owner, name=name)
        if not exported:
            return
        target = registered_name(owner, name)
        wanted = {alias: exported[v][1] for alias, v in
                  registry.aliases_of(self.engine, owner=owner, name=name).items()
                  if v in exported}
        current = dict(self.client.get_registered_model(target).aliases or {})
        for alias, mlflow_version in wanted.items():
            if int(current.get(alias, -1)) != mlflow_version:
                self.client.set_registered_model_alias(target, alias, str(mlflow_version))
        for alias in set(current) - set(wanted):
            self.client.delete_registered_model_alias(target, alias)

    def mirror_alias_moves(self) -> None:
        """Mirror the aliases of every model whose aliases moved since the last pass."""
        models, last = mlflow_exports.alias_moves_after(self.engine, after_id=self._alias_cursor)
        for owner, name in sorted(models):
            self.mirror_aliases(owner, name)
        self._alias_cursor = last
