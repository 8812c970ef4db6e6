"""A lost node: the Ray node a job's driver runs on dies (its raylet is killed). The job is not
left RUNNING: its attempt fails as an infrastructure failure with the reason, and the retry
waits for the pool, which no longer has a node, until its pending timeout says so.

The node is an extra one, labelled for the ``gpu`` pool (with no GPUs), added for this test
alone so that no other test loses a node.
"""

from __future__ import annotations

import re
import time

import psutil

from railyard.cluster import local_cluster
from railyard.cluster.pools import POOL_LABEL
from tests.integration.support import OUTAGE_ERRORS, noop_spec
from tests.polling import wait_for


def raylets_of_pool(pool: str) -> list[psutil.Process]:
    """The raylet processes of this machine's nodes labelled for ``pool`` (the raylet gets its
    labels as JSON: ``--labels={"railyard.io/pool": "gpu"}``)."""
    label = re.compile(rf'"{re.escape(POOL_LABEL)}":\s*"{re.escape(pool)}"')
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "raylet" and label.search(cmd):
            found.append(proc)
    return found


def test_a_lost_node_fails_the_attempt_and_the_retry_waits_for_the_pool(platform, client):
    local_cluster.start_pool_node(platform.settings, gcs_address=platform.gcs_address,
                                  pool="gpu", cpus=1)
    raylets = wait_for(lambda: raylets_of_pool("gpu"), 60, "the gpu node's raylet",
                       interval=0.5, ignore=OUTAGE_ERRORS)
    spec = noop_spec(platform, "on-a-lost-node", train_s=120)
    spec["train"]["resources"] = {"pool": "gpu"}
    spec["lifecycle"] = {"max_retries": 1, "pending_timeout_s": 15}
    job = client.submit(spec)
    wait_for(lambda: (j := client.get(job["id"]))["status"] == "RUNNING"
             and j["phase"] == "train", 180, "the train phase on the gpu node",
             interval=0.5, ignore=OUTAGE_ERRORS)
    for raylet in raylets:
        raylet.kill()
    lost_at = time.monotonic()
    retried = wait_for(lambda: (j := client.get(job["id"]))["attempt"] == 2 and j, 60,
                       "the lost attempt to be failed and retried", interval=0.5,
                       ignore=OUTAGE_ERRORS)
    print(f"\nnode killed -> attempt 1 failed and attempt 2 queued: "
          f"{time.monotonic() - lost_at:.1f}s")
    assert time.monotonic() - lost_at < 60
    first = client.attempts(job["id"])[0]
    assert (first["status"], first["failure_kind"], first["error_phase"]) == \
        ("FAILED", "infrastructure", "train"), first
    final = wait_for(lambda: (j := client.get(job["id"]))["status"] == "FAILED" and j, 90,
                     "the retry to give up waiting for the pool", interval=0.5,
                     ignore=OUTAGE_ERRORS)
    assert final["error_phase"] == "pending" and "railyard.io/pool=gpu" in final["error"]
    assert [a["status"] for a in client.attempts(job["id"])] == ["FAILED", "FAILED"]
    assert retried["status"] in ("QUEUED", "PENDING")

