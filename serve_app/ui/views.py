"""What the UI's pages show, shaped from the service layer's rows: job rows, the phase
timeline per attempt, chart data, sweep and fan-out summaries, spec differences. Pure
functions over what the routes read; no request or template here."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from railyard.control.access import Caller
from railyard.control.service import JobService
from railyard.jobstore import jobs
from railyard.jobstore.jobs import as_utc
from railyard.jobstore.tables import Job, JobEvent, JobStatus, utcnow

# The holdout metric a row shows: the first of these the job has.
MAIN_METRICS = ("auc", "rmse", "accuracy", "smape", "mape", "r2", "mae", "logloss")
SCAN_LIMIT = 5000        # rows a model-name or text filter reads at most for one page
SCAN_PAGE = 200


@dataclass(frozen=True)
class Filters:
    """The jobs page's filters (empty strings: not filtered)."""

    owner: str = ""
    project: str = ""
    status: str = ""
    model: str = ""
    q: str = ""

    @property
    def scans(self) -> bool:
        """Whether a filter the store has no index for is set (filtered page by page)."""
        return bool(self.model or self.q)

    def matches(self, job: Job) -> bool:
        """Whether ``job`` passes the model-name and free-text filters."""
        if self.model and self.model.lower() not in job.model_name.lower():
            return False
        if self.q:
            text = " ".join([job.id, job.model_name, job.owner, job.project, job.trainer,
                             job.workflow_name, job.status, job.error or "",
                             job.model_description or ""]).lower()
            return all(word in text for word in self.q.lower().split())
        return True


@dataclass
class JobPage:
    """One page of the jobs list; ``scanned`` counts rows read by a scanning filter."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None
    scanned: int = 0


def main_metric(metrics: dict[str, Any] | None) -> tuple[str, float] | None:
    """The (name, value) of the job's main holdout metric, if it has one."""
    holdout = (metrics or {}).get("holdout") or {}
    for name in MAIN_METRICS:
        value = holdout.get(name)
        if isinstance(value, int | float):
            return name, float(value)
    return None


def duration_s(job: Job, now: datetime | None = None) -> float | None:
    """Seconds from start to finish (to now while it runs); None before it starts."""
    start = as_utc(job.started_at)
    if start is None:
        return None
    end = as_utc(job.finished_at) or (now or utcnow())
    return max(0.0, (end - start).total_seconds())


def job_row(job: Job) -> dict[str, Any]:
    """What a row of the jobs list shows of ``job``."""
    metric = main_metric(job.metrics)
    return {"id": job.id, "model_name": job.model_name, "owner": job.owner,
            "project": job.project, "trainer": job.trainer, "workflow": job.workflow_name,
            "status": job.status, "phase": job.phase or "", "created": as_utc(job.created_at),
            "duration_s": duration_s(job), "metric": metric,
            "active": not JobStatus(job.status).is_terminal()}


def list_page(svc: JobService, caller: Caller, filters: Filters, *, limit: int,
              cursor: str | None) -> JobPage:
    """A page of the jobs ``caller`` may see, through ``JobService.list_jobs`` (its owner
    rule). Owner, project and status filter in the store; model name and text filter rows
    as pages are read, at most SCAN_LIMIT rows per page shown."""
    status = JobStatus(filters.status) if filters.status else None
    query: dict[str, Any] = {"caller": caller, "owner": filters.owner or None,
                             "project": filters.project or None, "status": status}
    if not filters.scans:
        found, next_cursor = svc.list_jobs(limit=limit, cursor=cursor, **query)
        return JobPage([job_row(j) for j in found], next_cursor)
    page = JobPage()
    while page.scanned < SCAN_LIMIT:
        found, next_cursor = svc.list_jobs(limit=SCAN_PAGE, cursor=cursor, **query)
        for job in found:
            page.scanned += 1
            if filters.matches(job):
                page.rows.append(job_row(job))
                if len(page.rows) == limit:
                    page.next_cursor = jobs._encode_cursor(job)  # the store's cursor format
                    return page
        if next_cursor is None:
            return page
        cursor = next_cursor
    page.next_cursor = cursor
    return page


def attempt_phases(events: list[JobEvent], created: datetime) -> list[dict[str, Any]]:
    """One bar per phase per attempt (seconds from the job's creation) for the Gantt chart;
    a phase still running ends now."""
    bars: list[dict[str, Any]] = []
    attempt = 1
    open_bars: dict[str, dict[str, Any]] = {}
    now = utcnow()
    seen_start = False
    for ev in events:
        if ev.kind == "attempt_started":
            if seen_start:
                attempt += 1
            seen_start = True
            open_bars.clear()
            continue
        if ev.phase is None or ev.kind not in ("phase_started", "phase_finished"):
            continue
        at = (as_utc(ev.at) - created).total_seconds()
        if ev.kind == "phase_started":
            bar = {"attempt": attempt, "phase": ev.phase, "start": at, "end": None}
            open_bars[ev.phase] = bar
            bars.append(bar)
        elif ev.phase in open_bars:
            open_bars.pop(ev.phase)["end"] = at
    for bar in bars:
        if bar["end"] is None:
            bar["end"] = (now - created).total_seconds()
            bar["running"] = True
    return bars


# what the built-in workflows report per round: `iteration 10/100 {"holdout-auc": 0.91}`
# (xgboost, lightgbm) and `epoch 3/20 train_loss=0.41 val_loss=0.44` (torch)
ROUND_MESSAGE = re.compile(r"(?:iteration|epoch) (\d+)/\d+ (.+)")
KEY_VALUE = re.compile(r"([\w.-]+)=(-?[\d.]+(?:e-?\d+)?)")


def progress_record(message: str) -> dict[str, Any] | None:
    """One progress message as ``{"round": n, metric: value, ...}``: a JSON object with a
    ``round``, or a built-in workflow's round line (ROUND_MESSAGE); None for other text."""
    if message.startswith("{"):
        try:
            record = json.loads(message)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    match = ROUND_MESSAGE.fullmatch(message.strip())
    if match is None:
        return None
    rest = match.group(2)
    try:
        values = json.loads(rest) if rest.startswith("{") else {
            k: float(v) for k, v in KEY_VALUE.findall(rest)}
    except ValueError:
        return None
    return {"round": int(match.group(1)), **values} if isinstance(values, dict) else None


def progress_points(events: list[JobEvent]) -> dict[str, list[float]]:
    """Per-round metrics a workflow reported as progress messages (:func:`progress_record`),
    as series by metric name; empty when it reports none."""
    series: dict[str, list[float]] = {}
    rounds: list[float] = []
    for ev in events:
        if ev.kind != "progress" or not ev.message:
            continue
        record = progress_record(ev.message)
        if record is None or not isinstance(record.get("round"), int | float):
            continue
        rounds.append(float(record["round"]))
        for name, value in record.items():
            if name != "round" and isinstance(value, int | float):
                series.setdefault(name, []).append(float(value))
    return {"round": rounds, **series} if series else {}


def trial_view(trials: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """A sweep's trials for the table and charts: the metric per trial in the order they
    ended, the best so far, and each hyperparameter's values."""
    values, best, best_so_far = [], None, []
    for trial in trials:
        value = (trial.get("metrics") or {}).get(metric)
        value = float(value) if isinstance(value, int | float) else None
        values.append(value)
        if value is not None and trial.get("status") == "SUCCEEDED" and (
                best is None or (value > best if mode == "max" else value < best)):
            best = value
        best_so_far.append(best)
    params = sorted({name for t in trials for name in (t.get("params") or {})})
    return {"metric": metric, "mode": mode, "values": values, "best_so_far": best_so_far,
            "status": [t.get("status") for t in trials],
            "ids": [t.get("trial_id") for t in trials],
            "params": {p: [(t.get("params") or {}).get(p) for t in trials] for p in params}}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested spec as ``a.b.c`` keys (lists kept whole), for side-by-side comparison."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def compare_rows(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every spec field of the compared jobs: its values and whether they differ."""
    flat = [flatten(spec) for spec in specs]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for key in keys:
        values = [json.dumps(f.get(key), sort_keys=True, default=str) for f in flat]
        rows.append({"field": key, "values": values, "differs": len(set(values)) > 1})
    return rows
