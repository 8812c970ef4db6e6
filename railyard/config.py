"""Settings read from the environment (prefix ``RAILYARD_``), built on demand, never at import.

| variable                     | default                                  |
| ---------------------------- | ---------------------------------------- |
| RAILYARD_HOME                | ~/.railyard                              |
| RAILYARD_DATABASE_URL        | sqlite:///$RAILYARD_HOME/railyard.db         |
| RAILYARD_ARTIFACT_ROOT       | $RAILYARD_HOME/artifacts (or s3://...)   |
| RAILYARD_RAY_ADDRESS         | http://127.0.0.1:8265 (Ray Jobs API)     |
| RAILYARD_API_URL             | http://127.0.0.1:8000 (CLI and SDK)      |
| RAILYARD_MAX_BODY_BYTES      | 1048576                                  |
| RAILYARD_MAX_JSON_DEPTH      | 64 (nesting of a request body's arrays and objects) |
| RAILYARD_MAX_JSON_INT_DIGITS | 20 (digits of an integer in a request body: any 64-bit one) |
| RAILYARD_MAX_SWEEP_TRIALS    | 10000 (trials a train.tune sweep expands to) |
| RAILYARD_MAX_PARTITIONS      | 10000 (models of one train.partition_by job) |
| RAILYARD_IN_PROCESS_READ_MAX_BYTES | 268435456 (0: always Ray Data)     |
| RAILYARD_PENDING_TIMEOUT_S   | 600 (max: RAILYARD_MAX_PENDING_TIMEOUT_S, 86400) |
| RAILYARD_RUN_TIMEOUT_S       | 86400 (max: RAILYARD_MAX_RUN_TIMEOUT_S, 604800)  |
| RAILYARD_RECONCILE_INTERVAL_S | 5 (background status reconciliation)    |
| RAILYARD_TOKEN_CACHE_TTL_S   | 5 (seconds a Serve replica trusts a checked API token; 0: off) |
| RAILYARD_MODEL_ALIAS_POLL_S  | 10 (seconds between a served alias's lookups: it follows moves) |
| RAILYARD_SQL_CONNECTIONS     | {} (JSON {"name": "postgresql://..."}; specs use the names) |
| RAILYARD_SQL_STATEMENT_TIMEOUT_S | 600 (a SQL read's statement_timeout on Postgres) |
| RAILYARD_ALLOWED_DATA_PREFIXES | empty: any path (else comma-separated prefixes; 403 outside) |
| RAILYARD_BROADCAST_JOIN_MAX_BYTES | 268435456 (Ray: broadcast a smaller joined source) |
| RAILYARD_TOKEN               | API token of the CLI and SDK (else $RAILYARD_HOME/token) |
| RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM | 10 (an owner's jobs on Ray at once; more wait    |
|                              | QUEUED; 0: no limit)                     |
| RAILYARD_MAX_CPUS_PER_TEAM   | 0 (CPUs of an owner's jobs on Ray at once; 0: no limit) |
| RAILYARD_PREEMPTION          | false (a priority >= 90 job may stop a full pool's lowest) |
| RAILYARD_HEARTBEAT_TIMEOUT_S | 420 (> RAILYARD_DB_RETRY_WINDOW_S, 300, + the interval) |
| RAILYARD_SECRETS_DIR         | $RAILYARD_HOME/secrets (railyard.secrets: one file per secret) |
| RAILYARD_RAY_TOKEN_AUTH      | true (a local cluster runs with Ray's token authentication) |
| RAILYARD_RAY_REQUEST_TIMEOUT_S | 30 (every call from the API to Ray's dashboard)  |
| RAILYARD_WEBHOOK_ALLOWED_HOSTS | empty (comma-separated webhook hosts allowed on private, |
|                              | loopback or link-local addresses; refused otherwise) |
| RAILYARD_WEBHOOK_TIMEOUT_S   | 10 (one webhook delivery attempt gives up after this long) |
| RAILYARD_WEBHOOK_RETRY_BASE_S | 10 (first retry's delay; doubles, with jitter, up to the max) |
| RAILYARD_WEBHOOK_RETRY_MAX_S | 3600 (the longest wait between two attempts) |
| RAILYARD_WEBHOOK_RETRY_WINDOW_S | 86400 (a delivery is retried this long, then failed) |
| RAILYARD_WEBHOOK_SECRET_KEY  | unset: secrets dir/webhook-secrets.key, made on first use (a |
|                              | Fernet key; encrypts the webhooks' signing secrets) |
| RAILYARD_UI_SESSION_KEY      | unset: derived (signs the web UI's session cookies) |
| RAILYARD_MLFLOW_TRACKING_URI | unset: no export (else every SUCCEEDED job is logged to MLflow) |
| RAILYARD_MLFLOW_RETRY_BASE_S | 10 (first retry of a failed export; doubles, up to 3600) |
| RAILYARD_MLFLOW_MAX_ATTEMPTS | 10 (then the export is failed; the job is not) |

``AWS_ENDPOINT_URL`` (standard AWS variable) points boto3 and pyarrow's S3 filesystem at any
S3-compatible store.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from railyard import secrets


class Settings(BaseSettings):
    """Server, runner and client configuration."""

    model_config = SettingsConfigDict(env_prefix="RAILYARD_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".railyard")
    database_url: str | None = None
    artifact_root: str | None = None
    ray_address: str = "http://127.0.0.1:8265"
    api_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 1_048_576
    # A request body is refused (422) past this nesting of arrays and objects, or with an
    # integer of more digits (serve_app.json_body, before any route or pydantic sees it).
    max_json_depth: int = Field(default=64, ge=1, le=1000)
    max_json_int_digits: int = Field(default=20, ge=1, le=4000)
    # The trials a sweep may expand to (grid combinations x num_samples): more is a 422.
    max_sweep_trials: int = Field(default=10_000, ge=1)
    # The partitions (models) a train.partition_by job may train: more fails the job.
    max_partitions: int = Field(default=10_000, ge=1)
    # Sources up to this size are read in the job's driver with pyarrow; larger ones (and all,
    # when 0) through Ray Data's distributed read tasks.
    in_process_read_max_bytes: int = 256 * 1024 * 1024
    pending_timeout_s: int = 600
    max_pending_timeout_s: int = 86_400
    run_timeout_s: int = 86_400
    max_run_timeout_s: int = 7 * 86_400
    reconcile_interval_s: float = 5.0
    # Ray keeps every job it ever ran in its job list, which the reconciler reads every tick.
    # This long after a Railyard job's Ray job ended (and the Railyard job finished), the
    # reconciler deletes Ray's record of it (railyard.control.ray_history); Railyard's store
    # keeps the job, its log and its timeline. 0: never delete.
    ray_job_retention_s: float = Field(default=3600.0, ge=0)
    # How long the Ray Serve deployment trusts a checked token without asking the database
    # again (per replica): a revoked token keeps working that long. 0: every request checks.
    token_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)
    # a model served by its alias (serve-model models:/OWNER/NAME@ALIAS) looks the alias up
    # this often and swaps in the version it points at when it moved
    model_alias_poll_s: float = Field(default=10.0, gt=0)
    # SQL sources: connection *names* a spec may use → SQLAlchemy URLs (JSON object in the env).
    sql_connections: dict[str, str] = Field(default_factory=dict, repr=False)
    # A statement of a SQL source's read stops after this long (Postgres statement_timeout).
    sql_statement_timeout_s: float = Field(default=600.0, gt=0)
    # Parquet paths a spec may read (comma-separated directory prefixes; empty: any path).
    allowed_data_prefixes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # On Ray, a later features entry up to this size is broadcast to every block of the first
    # instead of shuffling both sides.
    broadcast_join_max_bytes: int = 256 * 1024 * 1024
    # The CLI's and SDK's API token (else the file $RAILYARD_HOME/token that `railyard up` writes).
    token: SecretStr | None = None
    # Jobs of one owner (team) submitted to Ray at once; later ones wait QUEUED. 0: no limit.
    max_concurrent_jobs_per_team: int = Field(default=10, ge=0)
    # CPUs (train.resources: num_workers x cpus_per_worker) of one team's jobs on Ray at once;
    # later ones wait QUEUED. 0: no limit. An admin overrides both per team (railyard team set).
    max_cpus_per_team: float = Field(default=0.0, ge=0)
    # A queued job of priority >= 90 that its pool is too full to start stops the pool's
    # lowest-priority job on Ray, which goes back to the queue (no retry budget used).
    preemption: bool = False
    # Up to this many jobs the queue releases together to one pool run in ONE Ray job (a
    # pack: one JobSupervisor, one driver process per job), for many tiny jobs. 1: each job
    # is its own Ray job. A packed job stops itself when cancelled (railyard.execution.driver).
    pack_max_jobs: int = Field(default=1, ge=1, le=64)
    # Operator switch: accept and store jobs but submit none to Ray (maintenance, load tests);
    # they wait QUEUED and go out once it is switched off again.
    submission_paused: bool = False
    # Retries a spec may ask for (lifecycle.max_retries), at most.
    max_retries: int = Field(default=5, ge=0)
    # How often a running job's log is copied to the artifact store.
    log_flush_interval_s: float = Field(default=3.0, gt=0)
    # The job's driver writes a heartbeat this often; the reconciler stops and fails (or
    # retries) a RUNNING job whose heartbeat is older than the timeout.
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    heartbeat_timeout_s: float = Field(default=420.0, gt=0)
    # How long the driver keeps retrying a write while the database is unreachable. The
    # heartbeat timeout must exceed it (and an interval): a driver that waits out a database
    # outage is alive, and must not be taken for hung when the database returns.
    db_retry_window_s: float = Field(default=300.0, gt=0)
    # Start a warm runner (railyard.execution.warm_runner: drivers forked already imported)
    # beside every node of a local cluster (`railyard up`).
    warm_runners: bool = True
    # A job left at num_workers=1 whose source is larger than this trains on
    # auto_num_workers Ray Train workers, streamed from Ray Data (when its workflow can).
    distributed_min_bytes: int = Field(default=8 * 2**30, ge=0)
    auto_num_workers: int = Field(default=2, ge=2, le=256)
    # Default of lifecycle.checkpoint_interval_s.
    checkpoint_interval_s: float = Field(default=30.0, gt=0)
    # A sweep (train.tune, engine auto) of random or grid search with the FIFO scheduler on at
    # most this many training rows runs its trials in the job's driver instead of Ray Tune.
    driver_sweep_max_rows: int = Field(default=100_000, ge=0)
    # Where the secrets jobs need are kept (railyard.secrets); default $RAILYARD_HOME/secrets.
    secrets_dir: Path | None = None
    # A local cluster (`railyard up`, the tests) runs with Ray's token authentication.
    ray_token_auth: bool = True
    # Every call from the API or the CLI to Ray's dashboard gives up after this long.
    ray_request_timeout_s: float = Field(default=30.0, gt=0)
    # Webhooks (railyard.control.webhooks*): hosts allowed although they resolve to private,
    # loopback or link-local addresses; one attempt's timeout; the retry schedule (exponential
    # from the base, with jitter, capped at the max, for the window); the key that encrypts the
    # endpoints' signing secrets (unset: the file webhook-secrets.key in the secrets directory,
    # created on first use); how often the dispatcher looks for work.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_base_s: float = Field(default=10.0, gt=0)
    webhook_retry_max_s: float = Field(default=3600.0, gt=0)
    webhook_retry_window_s: float = Field(default=86_400.0, gt=0)
    webhook_secret_key: SecretStr | None = Field(default=None, repr=False)
    webhook_poll_interval_s: float = Field(default=0.5, gt=0)
    # Signs the web UI's session cookies (serve_app.ui.session). Unset: derived from the
    # database URL; a session also carries a fingerprint of its token's stored hash, so it is
    # never forged without the database, and ends when the token is revoked.
    ui_session_key: SecretStr | None = Field(default=None, repr=False)
    # MLflow (railyard.control.mlflow_export, the railyard[mlflow] extra): with a tracking URI,
    # the API logs every SUCCEEDED job as an MLflow run and registered model version in the
    # background; an attempt that fails is retried after base, 2 x base, ... (at most 1 h)
    # until max attempts, then the export is ``failed`` (the job is not).
    mlflow_tracking_uri: str | None = None
    mlflow_retry_base_s: float = Field(default=10.0, gt=0)
    mlflow_max_attempts: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _heartbeat_outlasts_a_database_outage(self) -> Settings:
        if self.heartbeat_timeout_s <= self.db_retry_window_s + self.heartbeat_interval_s:
            raise ValueError(
                f"RAILYARD_HEARTBEAT_TIMEOUT_S ({self.heartbeat_timeout_s:g}) must exceed "
                f"RAILYARD_DB_RETRY_WINDOW_S ({self.db_retry_window_s:g}) plus "
                f"RAILYARD_HEARTBEAT_INTERVAL_S ({self.heartbeat_interval_s:g}): a driver "
                "waiting out a database outage would be stopped as hung; raise the timeout "
                "or shorten the window")
        return self

    @field_validator("allowed_data_prefixes", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_prefixes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under ``home``."""
        return self.database_url or f"sqlite:///{self.home / 'railyard.db'}"

    @property
    def resolved_artifact_root(self) -> str:
        """Where models, metrics and logs go: a local directory or an ``s3://`` prefix."""
        return self.artifact_root or str(self.home / "artifacts")

    def create_home(self) -> Path:
        """``home``, created if needed, readable by its owner only (0700): it holds the job
        store, the secrets, tokens and logs."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.home.chmod(0o700)
        return self.home

    @property
    def resolved_secrets_dir(self) -> Path:
        """The secrets directory (railyard.secrets)."""
        return self.secrets_dir or self.home / "secrets"

    def secret_values(self) -> dict[str, str]:
        """The secrets a job or replica needs, by variable name (railyard.secrets)."""
        values = {"RAILYARD_DATABASE_URL": self.resolved_database_url}
        if self.sql_connections:
            values["RAILYARD_SQL_CONNECTIONS"] = json.dumps(self.sql_connections)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            if os.environ.get(name):
                values[name] = os.environ[name]
        return values

    def runtime_env_vars(self) -> dict[str, str]:
        """Environment a Ray job or Serve replica needs to act on the same store and data.

        It holds no secret: those are written to the secrets directory (when they changed)
        and only its path is passed (railyard.secrets), because Ray shows runtime envs to
        anyone who can reach its dashboard.
        """
        secrets.write(self.resolved_secrets_dir, self.secret_values())
        env = {
            "RAILYARD_HOME": str(self.home),
            secrets.DIR_VARIABLE: str(self.resolved_secrets_dir),
            "RAILYARD_ARTIFACT_ROOT": self.resolved_artifact_root,
            "RAILYARD_RAY_ADDRESS": self.ray_address,
            "RAILYARD_IN_PROCESS_READ_MAX_BYTES": str(self.in_process_read_max_bytes),
            "RAILYARD_BROADCAST_JOIN_MAX_BYTES": str(self.broadcast_join_max_bytes),
            "RAILYARD_LOG_FLUSH_INTERVAL_S": str(self.log_flush_interval_s),
            "RAILYARD_HEARTBEAT_INTERVAL_S": str(self.heartbeat_interval_s),
            "RAILYARD_DB_RETRY_WINDOW_S": str(self.db_retry_window_s),
            "RAILYARD_CHECKPOINT_INTERVAL_S": str(self.checkpoint_interval_s),
            "RAILYARD_DISTRIBUTED_MIN_BYTES": str(self.distributed_min_bytes),
            "RAILYARD_AUTO_NUM_WORKERS": str(self.auto_num_workers),
            "RAILYARD_DRIVER_SWEEP_MAX_ROWS": str(self.driver_sweep_max_rows),
            "RAILYARD_SQL_STATEMENT_TIMEOUT_S": str(self.sql_statement_timeout_s),
            "RAILYARD_MAX_PARTITIONS": str(self.max_partitions),
            # Every worker's line in the job's log: Ray's dedup folds lines that differ only in
            # numbers ("worker 1: 5728 rows" into worker 0's) and may never print the fold.
            "RAY_DEDUP_LOGS": "0",
        }
        # The job's driver obeys the same path prefixes.
        if self.allowed_data_prefixes:
            env["RAILYARD_ALLOWED_DATA_PREFIXES"] = ",".join(self.allowed_data_prefixes)
        # The API replica's webhook dispatcher obeys the same hosts and schedule.
        if self.webhook_allowed_hosts:
            env["RAILYARD_WEBHOOK_ALLOWED_HOSTS"] = ",".join(self.webhook_allowed_hosts)
        env["RAILYARD_WEBHOOK_RETRY_BASE_S"] = str(self.webhook_retry_base_s)
        env["RAILYARD_WEBHOOK_RETRY_MAX_S"] = str(self.webhook_retry_max_s)
        # The API replica's MLflow exporter.
        if self.mlflow_tracking_uri:
            env["RAILYARD_MLFLOW_TRACKING_URI"] = self.mlflow_tracking_uri
            env["RAILYARD_MLFLOW_RETRY_BASE_S"] = str(self.mlflow_retry_base_s)
            env["RAILYARD_MLFLOW_MAX_ATTEMPTS"] = str(self.mlflow_max_attempts)
        if os.environ.get("RAILYARD_POOLS_FILE"):
            env["RAILYARD_POOLS_FILE"] = os.environ["RAILYARD_POOLS_FILE"]
        for name in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` after changing
    env). The secrets directory named by RAILYARD_SECRETS_DIR is loaded first."""
    secrets.load()
    return Settings()
