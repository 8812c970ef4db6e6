"""Schemathesis against a running Railyard API, and a local target to run it without Ray.

    .venv/bin/python -m tests.api_fuzz_target [--examples 300] [--postgres]

:func:`fuzz_api` loads ``/openapi.json`` from a live server and sends generated requests to
every operation — schema-valid ones and schema-invalid ones, with a valid bearer token — and
reports each 5xx and each response the schema does not describe (status code not declared,
body not matching the declared schema). It takes only a base URL and a token, so it runs the
same against the integration platform (Ray Serve + Postgres) and against :func:`local_api`:
the same FastAPI app under plain uvicorn on SQLite (or a Postgres URL) with the in-memory
execution backend of tests/fakes.py — what ``python -m tests.api_fuzz_target`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Operations whose {job_id} is worth aiming at a real job besides random ids.
JOB_PATH_PARAM = "job_id"
SEEDED_WAIT_S = 0.3
# POST /v1/jobs is the one that parses a large body: it gets this share of the examples.
CREATE_SHARE = 0.3
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


@dataclass
class FuzzReport:
    """What a fuzz run sent and what broke."""

    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    per_operation: dict[str, Counter] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    created_job_ids: list[str] = field(default_factory=list)
    ungeneratable: int = 0   # negative cases schemathesis could not build (skipped)
    seconds: float = 0.0

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (f"{self.requests} requests in {self.seconds:.1f}s over "
                f"{len(self.per_operation)} operations ({codes}); "
                f"{len(self.failures)} failure(s); {len(self.created_job_ids)} job(s) created; "
                f"{self.ungeneratable} negative case(s) schemathesis could not build")


def _skip_ungeneratable(strategy: Any, report: FuzzReport) -> Any:
    """``strategy``, minus the draws where schemathesis cannot build a schema-violating value
    (4.32 raises InvalidSchema "Cannot generate an array with 1 demanded elements" for some
    mutations of the discriminated ``data.features`` items): those are rejected and counted,
    not failures of the API."""
    from hypothesis import reject
    from hypothesis import strategies as st
    from schemathesis.core.errors import InvalidSchema

    @st.composite
    def guarded(draw: Any) -> Any:
        try:
            return draw(strategy)
        except InvalidSchema:
            report.ungeneratable += 1
            reject()

    return guarded()


def fuzz_api(base_url: str, token: str, *, max_examples: int = 300,
             job_ids: tuple[str, ...] = (), valid_spec: dict | None = None,
             valid_examples: int = 3, max_failures_per_operation: int = 3,
             timeout: float = 30.0) -> FuzzReport:
    """Run schemathesis against the API at ``base_url``; return the report (the caller
    asserts on ``failures`` and cancels ``created_job_ids``).

    ``max_examples`` is the total across operations, each one half schema-valid and half
    schema-invalid cases. ``job_ids`` are existing jobs the ``{job_id}`` routes are aimed at
    besides random ids. With ``valid_spec``, POST /v1/jobs also gets ``valid_examples`` cases
    with that body and generated headers (a 201, or a 200 replay of an Idempotency-Key): each
    may start a real job. Failures are collected rather than raised (no shrinking against a
    live server), a few per operation."""
    import schemathesis
    from hypothesis import strategies as st
    from schemathesis.generation import GenerationMode

    base_url = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=timeout)
    operations = [result.ok() for result in schema.get_all_operations()]
    create = [op for op in operations if op.method.upper() == "POST" and op.path == "/v1/jobs"]
    others = [op for op in operations if op not in create]
    budget = {op.label: max(4, int(max_examples * CREATE_SHARE)) for op in create}
    rest = max_examples - sum(budget.values())
    budget.update({op.label: max(4, rest // max(1, len(others))) for op in others})
    report = FuzzReport()
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as http:
        before = set(_newest_job_ids(http))
        for op in operations:
            strategies = [op.as_strategy(GenerationMode.POSITIVE),
                          _skip_ungeneratable(op.as_strategy(GenerationMode.NEGATIVE), report)]
            if JOB_PATH_PARAM in op.path and job_ids:
                # A long poll on a job that does not change holds its answer for wait_s (up
                # to 60 s): on the seeded jobs it is kept short.
                query = ({"wait_s": SEEDED_WAIT_S}
                         if any(p.name == "wait_s" for p in op.query) else None)
                strategies += [op.as_strategy(GenerationMode.POSITIVE, query=query,
                                              path_parameters={JOB_PATH_PARAM: job_id})
                               for job_id in job_ids]
            report.per_operation[op.label] = Counter()
            _run_cases(op, st.one_of(*strategies), budget[op.label], report, headers=headers,
                       timeout=timeout, max_failures=max_failures_per_operation)
            if op in create and valid_spec is not None:
                _run_cases(op, op.as_strategy(GenerationMode.POSITIVE, body=valid_spec),
                           valid_examples, report, headers=headers, timeout=timeout,
                           max_failures=max_failures_per_operation)
        report.created_job_ids += [job_id for job_id in _newest_job_ids(http)
                                   if job_id not in before
                                   and job_id not in report.created_job_ids]
    report.seconds = time.perf_counter() - started
    return report


def _run_cases(op: Any, strategy: Any, examples: int, report: FuzzReport, *,
               headers: dict[str, str], timeout: float, max_failures: int) -> None:
    """Send ``examples`` cases drawn from ``strategy`` to ``op`` and check each answer: not
    a 5xx, a documented status code, a body that matches the documented schema."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]
    failures: list[str] = []
    is_create = op.method.upper() == "POST" and op.path == "/v1/jobs"

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(headers=headers, timeout=timeout)
        report.requests += 1
        report.statuses[response.status_code] += 1
        report.per_operation.setdefault(op.label, Counter())[response.status_code] += 1
        if is_create and response.status_code in (200, 201):
            job_id = response.json().get("id")
            if job_id and job_id not in report.created_job_ids:
                report.created_job_ids.append(job_id)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except FailureGroup as exc:
            if len(failures) < max_failures:
                failures.append(f"{op.label}: {exc}")

    run()
    report.failures += failures


def _newest_job_ids(http: httpx.Client) -> list[str]:
    """The newest 200 jobs the token sees (to find jobs a run created)."""
    response = http.get("/v1/jobs", params={"limit": 200})
    return [job["id"] for job in response.json()["jobs"]] if response.status_code == 200 \
        else []


def cancel_jobs(base_url: str, token: str, job_ids: list[str]) -> list[str]:
    """Cancel every job in ``job_ids`` that has not finished; returns those cancelled."""
    cancelled = []
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        for job_id in job_ids:
            job = http.get(f"/v1/jobs/{job_id}")
            if job.status_code == 200 and job.json()["status"] not in TERMINAL \
                    and http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200:
                cancelled.append(job_id)
    return cancelled


@contextlib.contextmanager
def serve_in_thread(app: Any, *, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app with plain uvicorn in a daemon thread; yields its base URL."""
    import uvicorn

    from tests.polling import wait_for
    from tests.servers import free_port

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        return server.started

    wait_for(started, 30, "uvicorn to start", interval=0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def local_api(database_url: str | None = None) -> Iterator[tuple[str, str, dict]]:
    """The API under uvicorn on SQLite (or ``database_url``) with the in-memory backend of
    tests/fakes.py; yields (base URL, admin token, a valid spec)."""
    from railyard.config import Settings
    from railyard.control.service import JobService
    from railyard.data.demo import sample_spec, write_fraud_dataset
    from railyard.jobstore import tokens
    from railyard.jobstore.engine import get_engine, migrate
    from serve_app.app import create_app
    from tests.fakes import InMemoryBackend

    with tempfile.TemporaryDirectory(prefix="railyard-fuzz-") as tmp:
        home = Path(tmp)
        settings = Settings(home=home,
                            database_url=database_url or f"sqlite:///{home}/fuzz.db")
        migrate(settings.resolved_database_url)
        service = JobService(engine=get_engine(settings.resolved_database_url),
                             backend=InMemoryBackend(), settings=settings)
        token, _ = tokens.issue(service.engine, team="admin", admin=True)
        spec = sample_spec(str(write_fraud_dataset(home / "fraud", 2000, files=2)))
        with serve_in_thread(create_app(lambda: service)) as url:
            yield url, token, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--postgres", action="store_true",
                        help="a throwaway Postgres instead of SQLite")
    parser.add_argument("--url", help="fuzz this running API instead (needs --token)")
    parser.add_argument("--token")
    args = parser.parse_args()

    def run(url: str, token: str, job_ids: tuple[str, ...], spec: dict | None) -> int:
        report = fuzz_api(url, token, max_examples=args.examples, job_ids=job_ids,
                          valid_spec=spec)
        print(report.summary())
        for label, codes in report.per_operation.items():
            print(f"  {label:32s} " + "  ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
        for failure in report.failures:
            print(failure)
        cancel_jobs(url, token, report.created_job_ids)
        return 1 if report.failures else 0

    if args.url:
        raise SystemExit(run(args.url, args.token, (), None))
    with contextlib.ExitStack() as stack:
        database_url = None
        if args.postgres:
            from tests.servers import postgres_server

            database_url = stack.enter_context(postgres_server()).url()
        url, token, spec = stack.enter_context(local_api(database_url))
        seed = httpx.post(f"{url}/v1/jobs", json=spec,
                          headers={"Authorization": f"Bearer {token}"}).json()["id"]
        raise SystemExit(run(url, token, (seed,), spec))


if __name__ == "__main__":
    main()
