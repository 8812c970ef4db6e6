"""The hook and the trigger against the live Railyard API (see conftest.py)."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from typing import Any

import pytest

from conftest import LiveApi
from railyard_airflow.api import RailyardApiError
from railyard_airflow.hooks import RailyardHook
from railyard_airflow.operators import RailyardTrainOperator
from railyard_airflow.triggers import RailyardJobTrigger


def wait_for_status(hook: RailyardHook, job_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while (job := hook.get_job(job_id))["status"] not in statuses:
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.5)
    return job


def test_submit_with_a_key_twice_gives_one_job_then_logs_and_cancel(live_api: LiveApi) -> None:
    hook = RailyardHook()
    spec = copy.deepcopy(live_api.spec)
    spec["model_name"] = "airflow_hook"
    spec["train"]["custom_params"] = {"train_s": 120}
    key = f"airflow-hook-test-{uuid.uuid4()}"
    first = hook.submit_job(spec, idempotency_key=key)
    again = hook.submit_job(spec, idempotency_key=key)
    assert again["id"] == first["id"]
    job = wait_for_status(hook, first["id"], {"RUNNING"})
    assert job["model_name"] == "airflow_hook"
    assert isinstance(hook.get_logs(first["id"]), str)
    assert hook.cancel_job(first["id"])["status"] in ("CANCELLED", "RUNNING")
    assert wait_for_status(hook, first["id"], {"SUCCEEDED", "FAILED", "CANCELLED"}
                           )["status"] == "CANCELLED"
    with pytest.raises(RailyardApiError, match="HTTP 409") as caught:
        hook.cancel_job(first["id"])
    assert caught.value.http_status == 409


def test_a_bad_token_is_refused_with_the_apis_message(live_api: LiveApi,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_RAILYARD_BAD", '{"conn_type": "railyard", "host": "'
                       + live_api.url + '", "password": "ry_not-a-token"}')
    ok, message = RailyardHook("railyard_bad").test_connection()
    assert not ok and "HTTP 401" in message
    assert RailyardHook().test_connection()[0]


def test_trigger_fires_once_the_job_is_terminal(live_api: LiveApi) -> None:
    hook = RailyardHook()
    spec = copy.deepcopy(live_api.spec)
    spec["model_name"] = "airflow_trigger"
    job = hook.submit_job(spec)

    async def first_event() -> dict[str, Any]:
        trigger = RailyardJobTrigger(job["id"], poll_interval=0.5)
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=300))
    assert event == {"status": "SUCCEEDED", "job_id": job["id"], "error": None,
                     "error_phase": None}


def test_the_trigger_sees_the_job_end_through_long_polls(live_api: LiveApi) -> None:
    """With a 600 s poll interval, only the API's long poll (each read answered when the job
    changes) lets the trigger fire within the timeout."""
    hook = RailyardHook()
    spec = copy.deepcopy(live_api.spec)
    spec["model_name"] = "airflow_trigger_long_poll"
    spec["train"]["custom_params"] = {"train_s": 2}
    job = hook.submit_job(spec)

    async def first_event() -> dict[str, Any]:
        async for event in RailyardJobTrigger(job["id"], poll_interval=600).run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=240))
    assert event["status"] == "SUCCEEDED" and event["job_id"] == job["id"], event


def test_trigger_reports_a_job_the_api_does_not_know(live_api: LiveApi) -> None:
    async def first_event() -> dict[str, Any]:
        async for event in RailyardJobTrigger("no-such-job", poll_interval=0.1).run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    assert event["status"] == "error" and "HTTP 404" in event["message"]


def test_killing_the_task_or_the_deferred_trigger_cancels_the_job(live_api: LiveApi) -> None:
    hook = RailyardHook()
    spec = copy.deepcopy(live_api.spec)
    spec["train"]["custom_params"] = {"train_s": 300}
    in_worker = hook.submit_job({**spec, "model_name": "airflow_killed_task"})
    deferred = hook.submit_job({**spec, "model_name": "airflow_killed_trigger"})

    operator = RailyardTrainOperator(task_id="train", spec=spec)
    operator.job_id = in_worker["id"]          # what execute() sets once it submitted
    operator.on_kill()
    asyncio.run(RailyardJobTrigger(deferred["id"]).on_kill())

    for job in (in_worker, deferred):
        done = wait_for_status(hook, job["id"], {"SUCCEEDED", "FAILED", "CANCELLED"})
        assert done["status"] == "CANCELLED", done
