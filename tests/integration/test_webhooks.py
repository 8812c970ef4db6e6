"""Webhooks on the real stack (Postgres, Ray, the API on Ray Serve): receivers are real HTTP
servers on loopback started here (the session platform allows 127.0.0.1 and retries after 1-4
seconds). A receiver that answers 500 gets the delivery again; the signature verifies with the
secret and fails with another; an API replica killed between attempts loses no delivery; a
receiver that hangs holds up no other endpoint; SSRF targets are refused with a 422."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psutil
import pytest

from railyard.client.webhooks import WebhookSignatureError, verify
from tests.integration.support import OUTAGE_ERRORS, invoke_cli, noop_spec
from tests.polling import wait_for

SECRET = "integration-secret-0123456789"


@dataclass
class Received:
    """One request a receiver got."""

    body: bytes
    headers: dict[str, str]
    at: float

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: it records every POST and answers ``status()`` after
    sleeping ``hang_s`` (while ``hanging`` is set)."""

    status: list[int] = field(default_factory=lambda: [200])
    hang_s: float = 0.0
    got: list[Received] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    hanging: threading.Event = field(default_factory=threading.Event)

    def answer(self) -> int:
        return self.status.pop(0) if len(self.status) > 1 else self.status[0]

    def for_job(self, job_id: str) -> list[Received]:
        return [r for r in list(self.got) if r.event["job"]["id"] == job_id]


@pytest.fixture()
def receivers() -> Iterator[Callable[[Receiver], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(receiver: Receiver) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.started.append(time.monotonic())
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hanging.is_set():
                    time.sleep(receiver.hang_s)
                receiver.got.append(Received(body, dict(self.headers), time.monotonic()))
                code = receiver.answer()
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code < 300 else b"try again")

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/hook"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def hooks(client):
    """Register webhooks (admin token: every team's jobs) and delete them after the test."""
    made: list[str] = []

    def register(url: str, events: list[str], secret: str = SECRET) -> dict:
        hook = client.create_webhook(url, events, secret=secret)
        made.append(hook["id"])
        return hook

    yield register
    for hook_id in made:
        try:
            client.delete_webhook(hook_id)
        except OUTAGE_ERRORS:
            pass


def deliveries(client, hook_id: str) -> list[dict]:
    return client.webhook_deliveries(hook_id)


def cancelled_job(platform, client, name: str) -> str:
    job = client.submit(noop_spec(platform, name, train_s=60))
    client.cancel(job["id"])
    return job["id"]


def test_a_failing_receiver_gets_the_signed_delivery_again(platform, client, receivers, hooks):
    receiver = Receiver(status=[500, 200])
    hook = hooks(receivers(receiver), ["SUCCEEDED", "FAILED"])
    job = client.submit(noop_spec(platform, "webhook-retried"))
    final = client.wait(job["id"], timeout=180)
    assert final["status"] == "SUCCEEDED", final["error"]
    got = wait_for(lambda: len(receiver.for_job(job["id"])) >= 2 and receiver.for_job(job["id"]),
                   60, "the delivery to be sent again after the 500", interval=0.5)
    first, second = got[:2]
    assert first.event["id"] == second.event["id"] and first.body == second.body
    event = verify(second.body, second.headers["Railyard-Signature"], SECRET)
    assert event["type"] == "SUCCEEDED" and event["job"]["status"] == "SUCCEEDED"
    assert event["job"]["owner"] == final["owner"]
    assert event["job"]["model_name"] == final["model_name"]
    assert event["job"]["metrics"] == final["metrics"]
    assert event["job"]["links"]["api"].endswith(f"/v1/jobs/{job['id']}")
    assert event["job"]["links"]["ui"].endswith(f"/jobs/{job['id']}")
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify(second.body, second.headers["Railyard-Signature"], "another-secret-entirely")
    log = wait_for(lambda: [d for d in deliveries(client, hook["id"])
                            if d["job_id"] == job["id"] and d["status"] == "delivered"],
                   30, "the delivery log to say delivered", interval=0.5)
    assert [a["http_status"] for a in log[0]["attempts"]] == [500, 200]
    assert log[0]["attempts"][0]["next_retry_at"] is not None
    assert log[0]["attempts"][0]["error"].startswith("HTTP 500")
    assert len(receiver.for_job(job["id"])) == 2          # delivered: not sent a third time


def serve_replicas() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if any("ServeReplica:" in part for part in (p.info["cmdline"] or []))]


def test_an_api_restart_between_attempts_loses_no_delivery(platform, client, receivers,
                                                           hooks):
    receiver = Receiver(status=[500])
    hook = hooks(receivers(receiver), ["CANCELLED"])
    job_id = cancelled_job(platform, client, "webhook-across-a-restart")
    # Kill only once the failed attempt is in the log: a replica killed between the receiver's
    # 500 and the log's write sends the delivery again with no record of that attempt.
    wait_for(lambda: [d for d in deliveries(client, hook["id"])
                      if d["job_id"] == job_id and d["attempts"]],
             60, "the first attempt to be logged", interval=0.2)
    replicas = serve_replicas()
    assert replicas, "no Serve replica process found"
    for proc in replicas:
        proc.kill()                              # the API dies with the delivery pending
    killed_at = time.monotonic()
    receiver.status = [200]
    wait_for(lambda: httpx.get(f"{platform.api_url}/healthz", timeout=5).status_code == 200,
             180, "the API to come back", interval=0.5, ignore=OUTAGE_ERRORS)
    delivered = wait_for(lambda: [r for r in receiver.for_job(job_id) if r.at > killed_at],
                         120, "the restarted API to deliver", interval=0.5)
    assert delivered[0].event["id"] == receiver.for_job(job_id)[0].event["id"]
    log = wait_for(lambda: [d for d in deliveries(client, hook["id"])
                            if d["job_id"] == job_id and d["status"] == "delivered"],
                   30, "the delivery log to say delivered", interval=0.5, ignore=OUTAGE_ERRORS)
    codes = [a["http_status"] for a in log[0]["attempts"]]
    assert codes[0] == 500 and codes[-1] == 200


def test_a_hanging_receiver_holds_up_no_other_endpoint(platform, client, receivers, hooks):
    slow = Receiver(hang_s=25.0)                 # past RAILYARD_WEBHOOK_TIMEOUT_S (10 s)
    slow.hanging.set()
    fast = Receiver()
    slow_hook = hooks(receivers(slow), ["CANCELLED"])
    hooks(receivers(fast), ["CANCELLED"])
    first = cancelled_job(platform, client, "webhook-hang-1")
    wait_for(lambda: fast.for_job(first), 60, "the fast receiver's first event", interval=0.2)
    wait_for(lambda: slow.started, 30, "the slow receiver to be called", interval=0.2)
    second = cancelled_job(platform, client, "webhook-hang-2")
    wait_for(lambda: fast.for_job(second), 60, "the fast receiver's second event",
             interval=0.2)
    # Both reached the fast endpoint while the slow one still had its first request open.
    assert slow.got == [] and len(slow.started) == 1
    slow.hanging.clear()
    log = wait_for(lambda: [d for d in deliveries(client, slow_hook["id"])
                            if d["job_id"] == first and d["attempts"]], 60,
                   "the slow endpoint's first attempt to end", interval=0.5)
    assert "Timeout" in (log[0]["attempts"][0]["error"] or "")
    wait_for(lambda: slow.for_job(first) and slow.for_job(second), 90,
             "the slow endpoint to catch up, in order", interval=0.5)
    events = [r.event["job"]["id"] for r in slow.got if r.event["job"]["id"] in (first, second)]
    assert events.index(first) < events.index(second)


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.2:9/hook", "loopback"),            # 127.0.0.1 alone is allowed here
    ("http://localhost:9/hook", "loopback"),             # a name resolving to loopback
    ("http://[::1]:9/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("file:///etc/passwd", "scheme 'file'"),
])
def test_ssrf_targets_are_refused(platform, url, why):
    answer = httpx.post(f"{platform.api_url}/v1/webhooks",
                        json={"url": url, "events": ["FAILED"], "secret": SECRET},
                        headers={"Authorization": f"Bearer {platform.token}"}, timeout=30)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert why in error["message"] and error["details"][0]["field"] == "url"


def test_the_cli_manages_a_teams_webhooks(platform, client, receivers):

    from railyard.jobstore import tokens

    token, _ = tokens.issue(platform.engine, team="team-hooks")
    env = {"RAILYARD_API_URL": platform.api_url, "RAILYARD_TOKEN": token}
    url = receivers(Receiver())
    made = invoke_cli(["webhooks", "create", url, "-e", "FAILED"], env=env)
    assert made.exit_code == 0, made.output
    assert "signing secret (shown once): whsec_" in made.output
    hook_id = made.output.split()[1]
    assert hook_id.startswith("wh_")
    listed = invoke_cli(["webhooks", "list"], env=env)
    assert listed.exit_code == 0 and hook_id in listed.output, listed.output
    mine = [h for h in client.webhooks() if h["id"] == hook_id]
    assert mine and mine[0]["owner"] == "team-hooks"          # the admin sees it too
    forged = invoke_cli(["webhooks", "create", url, "--owner", "admin"],
                        env=env)
    assert forged.exit_code == 1 and "not your team" in forged.output
    refused = invoke_cli(["webhooks", "create", "http://10.0.0.1/"], env=env)
    assert refused.exit_code == 1 and "private" in refused.output
    shown = invoke_cli(["webhooks", "deliveries", hook_id], env=env)
    assert shown.exit_code == 0, shown.output
    gone = invoke_cli(["webhooks", "delete", hook_id], env=env)
    assert gone.exit_code == 0 and hook_id not in [h["id"] for h in client.webhooks()]
