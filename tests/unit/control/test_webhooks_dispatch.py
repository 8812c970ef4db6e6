"""The webhook dispatcher on a SQLite store with a clock moved by hand: fan-out by team, the
signed body, retries with backoff, order per endpoint, giving up after the window, and a
receiver that hangs holding up nobody else. Receivers are httpx mock transports here; the
integration tests use real HTTP servers."""

from __future__ import annotations

import json
import threading
from collections import defaultdict

import httpx
import pytest

from railyard.client.webhooks import WebhookSignatureError, verify
from railyard.control.webhooks import WebhookDispatcher, retry_delay
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus, WebhookOutboxEvent
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform, FakeClock
from tests.polling import wait_for

SECRET = "s3cret-s3cret-s3cret"


class Receivers:
    """Mock receivers by host: what each got, and what each answers (a list of status codes,
    the last repeated)."""

    def __init__(self) -> None:
        self.got: dict[str, list[httpx.Request]] = defaultdict(list)
        self.answers: dict[str, list[int]] = {}
        self.hold: dict[str, threading.Event] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.hold and not self.hold[host].wait(10):
            raise httpx.ReadTimeout("receiver hung", request=request)
        self.got[host].append(request)
        answers = self.answers.get(host, [200])
        code = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(code, text="ok" if code < 300 else "boom")

    def events(self, host: str) -> list[dict]:
        return [json.loads(r.content) for r in self.got[host]]


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path, webhook_allowed_hosts=["a.test", "b.test", "all.test",
                                                        "slow.test"],
                       api_url="https://railyard.example.com")


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def receivers() -> Receivers:
    return Receivers()


@pytest.fixture()
def dispatcher(plat, clock, receivers):
    d = WebhookDispatcher(plat.service.engine, plat.settings, clock=clock, rng=lambda: 1.0,
                          client=httpx.Client(transport=httpx.MockTransport(receivers)))
    yield d
    d.close()


def hook(plat, who: str, host: str, events=("SUCCEEDED", "FAILED"), **extra) -> dict:
    made = plat.http.post("/v1/webhooks", json={"url": f"http://{host}/hook",
                                                "events": list(events), "secret": SECRET,
                                                **extra}, headers=plat.headers(who))
    assert made.status_code == 201, made.text
    return made.json()


def job_of(plat, who: str) -> str:
    answer = plat.submit(who)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def tick(dispatcher) -> None:
    dispatcher.tick()
    dispatcher.drain(timeout=30)


def deliveries(plat, who: str, hook_id: str) -> list[dict]:
    answer = plat.http.get(f"/v1/webhooks/{hook_id}/deliveries", headers=plat.headers(who))
    assert answer.status_code == 200, answer.text
    return answer.json()["deliveries"]


def test_each_team_hears_of_its_own_jobs_signed(plat, dispatcher, receivers):
    hook(plat, TEAM_A, "a.test")
    hook(plat, TEAM_B, "b.test")
    hook(plat, "admin", "all.test", events=["SUCCEEDED", "FAILED", "CANCELLED", "RUNNING"])
    job = job_of(plat, TEAM_A)
    jobs.update_job(plat.service.engine, job_id=job, metrics={"holdout": {"auc": 0.9}})
    assert jobs.transition(plat.service.engine, job_id=job, status=JobStatus.SUCCEEDED)
    tick(dispatcher)
    assert receivers.got["b.test"] == []
    [request] = receivers.got["a.test"]
    event = verify(request.content, request.headers["Railyard-Signature"], SECRET)
    assert event["type"] == "SUCCEEDED" and event["id"].startswith("evt_")
    assert request.headers["Railyard-Event-Id"] == event["id"]
    assert event["job"] == {
        "id": job, "status": "SUCCEEDED", "owner": TEAM_A, "model_name": event["job"]["model_name"],
        "error": None, "error_phase": None, "metrics": {"holdout": {"auc": 0.9}},
        "links": {"api": f"https://railyard.example.com/v1/jobs/{job}",
                  "ui": f"https://railyard.example.com/jobs/{job}"}}
    with pytest.raises(WebhookSignatureError):
        verify(request.content, request.headers["Railyard-Signature"], "another-secret-value")
    assert [e["id"] for e in receivers.events("all.test")] == [event["id"]]
    tick(dispatcher)                                              # nothing sent twice
    assert len(receivers.got["a.test"]) == 1


def test_a_failing_receiver_gets_it_again_after_a_backoff(plat, dispatcher, receivers, clock):
    made = hook(plat, TEAM_A, "a.test")
    receivers.answers["a.test"] = [500, 503, 200]
    job = job_of(plat, TEAM_A)
    jobs.transition(plat.service.engine, job_id=job, status=JobStatus.FAILED, error="boom",
                    error_phase="train")
    tick(dispatcher)
    [pending] = deliveries(plat, TEAM_A, made["id"])
    assert pending["status"] == "pending" and pending["attempts"][0]["http_status"] == 500
    assert pending["attempts"][0]["error"].startswith("HTTP 500")
    tick(dispatcher)                                   # not due yet: nothing sent
    assert len(receivers.got["a.test"]) == 1
    clock.advance(10)                                  # base 10 s (rng 1.0: the full delay)
    tick(dispatcher)
    clock.advance(19)                                  # then 20 s
    tick(dispatcher)
    assert len(receivers.got["a.test"]) == 2
    clock.advance(1)
    tick(dispatcher)
    [done] = deliveries(plat, TEAM_A, made["id"])
    assert done["status"] == "delivered"
    assert [a["http_status"] for a in done["attempts"]] == [500, 503, 200]
    assert [a["next_retry_at"] is not None for a in done["attempts"]] == [True, True, False]
    bodies = {r.content for r in receivers.got["a.test"]}
    assert len(bodies) == 1                            # the same bytes every time
    event = receivers.events("a.test")[0]
    assert event["job"]["error"] == "boom" and event["job"]["error_phase"] == "train"


def test_an_endpoint_gets_its_events_in_order(plat, dispatcher, receivers, clock):
    hook(plat, TEAM_A, "a.test", events=["RUNNING", "SUCCEEDED"])
    receivers.answers["a.test"] = [500, 200]
    job = job_of(plat, TEAM_A)
    jobs.transition(plat.service.engine, job_id=job, status=JobStatus.RUNNING)
    jobs.transition(plat.service.engine, job_id=job, status=JobStatus.SUCCEEDED)
    tick(dispatcher)
    assert [e["type"] for e in receivers.events("a.test")] == ["RUNNING"]   # SUCCEEDED waits
    clock.advance(10)
    tick(dispatcher)
    tick(dispatcher)
    assert [e["type"] for e in receivers.events("a.test")] == ["RUNNING", "RUNNING",
                                                               "SUCCEEDED"]


def test_retries_stop_after_the_window(plat, dispatcher, receivers, clock):
    made = hook(plat, TEAM_A, "a.test", events=["CANCELLED"])
    receivers.answers["a.test"] = [500]
    job = job_of(plat, TEAM_A)
    jobs.transition(plat.service.engine, job_id=job, status=JobStatus.CANCELLED)
    for _ in range(60):
        tick(dispatcher)
        clock.advance(3600)
    [failed] = deliveries(plat, TEAM_A, made["id"])
    assert failed["status"] == "failed" and failed["next_attempt_at"] is None
    spent = len(failed["attempts"])
    assert 20 < spent < 30                       # an hour apart here: about a day's worth
    assert len(receivers.got["a.test"]) == spent


def test_a_hanging_receiver_holds_up_no_other(plat, dispatcher, receivers):
    hook(plat, TEAM_A, "slow.test")
    hook(plat, TEAM_A, "a.test")
    receivers.hold["slow.test"] = release = threading.Event()
    job = job_of(plat, TEAM_A)
    jobs.transition(plat.service.engine, job_id=job, status=JobStatus.SUCCEEDED)
    dispatcher.tick()
    wait_for(lambda: receivers.got["a.test"], 5, "the other endpoint's delivery", interval=0.05)
    assert len(receivers.got["a.test"]) == 1 and receivers.got["slow.test"] == []
    second = job_of(plat, TEAM_A)
    jobs.transition(plat.service.engine, job_id=second, status=JobStatus.SUCCEEDED)
    dispatcher.tick()                      # the slow endpoint is busy: not sent to again
    release.set()
    dispatcher.drain(timeout=30)
    tick(dispatcher)
    assert [e["job"]["id"] for e in receivers.events("slow.test")] == [job, second]
    assert [e["job"]["id"] for e in receivers.events("a.test")] == [job, second]


def test_the_outbox_row_is_written_with_the_transition_or_not_at_all(plat):
    engine = plat.service.engine
    job = job_of(plat, TEAM_A)

    def outbox() -> list[str]:
        from sqlmodel import Session, select

        with Session(engine) as session:
            return [e.type for e in session.exec(select(WebhookOutboxEvent)
                                                 .where(WebhookOutboxEvent.job_id == job))]

    assert outbox() == []                              # QUEUED/PENDING are no events
    assert jobs.transition(engine, job_id=job, status=JobStatus.SUCCEEDED)
    assert not jobs.transition(engine, job_id=job, status=JobStatus.FAILED)
    assert outbox() == ["SUCCEEDED"]


def test_events_nobody_wants_leave_the_outbox(plat, dispatcher):
    job = job_of(plat, TEAM_B)
    jobs.transition(plat.service.engine, job_id=job, status=JobStatus.SUCCEEDED)
    hook(plat, TEAM_A, "a.test")
    tick(dispatcher)
    from railyard.jobstore import webhooks

    assert webhooks.pending_events(plat.service.engine) == []


def test_retry_delay_doubles_with_jitter_up_to_the_cap():
    assert [retry_delay(n, base_s=10, max_s=3600, rng=lambda: 1.0) for n in (1, 2, 3)] == \
        [10, 20, 40]
    assert retry_delay(30, base_s=10, max_s=3600, rng=lambda: 1.0) == 3600
    assert retry_delay(1, base_s=10, max_s=3600, rng=lambda: 0.0) == 5
