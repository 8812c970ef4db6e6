"""railyard.execution.standby_supervisor without Ray: the supervisor's runtime env as Ray's
JobManager builds it, and finding this node's raylet and idle workers in a /proc-shaped
directory."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from railyard.execution.standby_supervisor import (
    JOB_CONFIG_ENV,
    NICENESS,
    NOSET,
    PrestartHelper,
    find_raylet,
    serve_requests,
    standby_pids,
    supervisor_runtime_env,
)

RAYLET = "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet"


def driver_env(env_vars: dict[str, str]) -> dict[str, str]:
    return {JOB_CONFIG_ENV: json.dumps({"runtime_env": {"env_vars": env_vars},
                                        "metadata": {"job_submission_id": "x"}})}


def test_a_job_submitted_without_resources_had_rays_three_variables_removed() -> None:
    runtime_env = supervisor_runtime_env(driver_env({"RAILYARD_HOME": "/h"}))
    assert runtime_env == {"env_vars": {"RAILYARD_HOME": "/h", NICENESS: "0",
                                        **{name: "1" for name in NOSET}}}


def test_a_job_submitted_with_resources_has_the_supervisors_env_as_is() -> None:
    env = {"RAILYARD_HOME": "/h", NICENESS: "0"}
    assert supervisor_runtime_env(driver_env(env)) == {"env_vars": env}


def test_a_driver_not_started_by_ray_jobs_has_no_supervisor() -> None:
    assert supervisor_runtime_env({}) is None
    assert supervisor_runtime_env({JOB_CONFIG_ENV: "not json"}) is None


def fake_process(proc: Path, pid: int, argv: list[str], environ: dict[str, str]) -> None:
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (entry / "environ").write_bytes(b"\0".join(f"{k}={v}".encode()
                                               for k, v in environ.items()) + b"\0")


def raylet_argv(node_id: str) -> list[str]:
    return [RAYLET, "--node_manager_port=0", f"--node_id={node_id}",
            "--python_worker_command=python default_worker.py --node-manager-port=X "
            "--gcs-address=10.0.0.1:6379 --session-name=s"]


def test_the_raylet_of_this_warm_runners_node_is_found(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, raylet_argv("aa11"), {"RAILYARD_WARM_SOCKET": "/tmp/a.sock"})
    fake_process(tmp_path, 11, raylet_argv("bb22"), {"RAILYARD_WARM_SOCKET": "/tmp/b.sock"})
    fake_process(tmp_path, 12, ["python", "-m", "railyard.execution.warm_runner"], {})
    assert find_raylet("/tmp/b.sock", tmp_path) == ("10.0.0.1:6379", "bb22")
    # Several raylets and none of them ours: no guess.
    assert find_raylet("/tmp/c.sock", tmp_path) is None


def test_the_only_raylet_is_this_nodes(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, raylet_argv("cc33"), {})
    assert find_raylet(None, tmp_path) == ("10.0.0.1:6379", "cc33")


def test_only_idle_workers_with_every_variable_are_standbys(tmp_path: Path) -> None:
    env = {NICENESS: "0", "RAILYARD_HOME": "/h"}
    fake_process(tmp_path, 20, ["ray::IDLE", "", ""], {**env, "PATH": "/bin"})
    fake_process(tmp_path, 21, ["ray::IDLE"], {"RAILYARD_HOME": "/h"})
    fake_process(tmp_path, 22, ["ray::JobSupervisor"], env)
    assert standby_pids(env, tmp_path) == [20]


@pytest.mark.parametrize("argv", [[RAYLET, "--node_id=zz"], ["/bin/raylet-not"]])
def test_a_raylet_without_its_flags_is_skipped(tmp_path: Path, argv: list[str]) -> None:
    fake_process(tmp_path, 10, argv, {})
    assert find_raylet(None, tmp_path) is None


def test_the_helper_loop_answers_each_request_and_survives_a_failed_one() -> None:
    calls: list[tuple[str, str, dict]] = []

    def prestart_one(gcs: str, node_id: str, runtime_env: dict) -> None:
        if node_id == "gone":
            raise LookupError("node gone is not in the GCS")
        calls.append((gcs, node_id, runtime_env))

    lines = [json.dumps({"gcs": "127.0.0.1:1", "node_id": node, "runtime_env": {"a": 1}})
             for node in ("n1", "gone", "n2")]
    out = io.StringIO()
    serve_requests([*lines, "\n"], out, prestart_one)
    assert out.getvalue().splitlines() == [
        "ok", "error: LookupError: node gone is not in the GCS", "ok"]
    assert [c[1] for c in calls] == ["n1", "n2"] and calls[0][2] == {"a": 1}


# A stand-in for ``--serve`` with the same protocol: ok, unless the request asks for an error.
ECHO_HELPER = ("import json, sys\n"
               "for line in sys.stdin:\n"
               "    r = json.loads(line)\n"
               "    print('error: ' + r['fail'] if 'fail' in r else 'ok', flush=True)\n")


def test_one_helper_process_serves_every_request_and_is_started_again_if_it_died() -> None:
    helper = PrestartHelper([sys.executable, "-c", ECHO_HELPER], answer_timeout_s=30)
    try:
        helper.request({"n": 1})
        first = helper.pid
        helper.request({"n": 2})
        assert first is not None and helper.pid == first       # no new process per request
        with pytest.raises(RuntimeError, match="error: no raylet"):
            helper.request({"fail": "no raylet"})
        assert helper.pid == first                              # an error keeps the helper
        os.kill(first, signal.SIGKILL)
        for _ in range(100):
            if helper.pid is None:
                break
            time.sleep(0.05)
        helper.request({"n": 3})
        assert helper.pid not in (None, first)
    finally:
        helper.close()
    assert helper.pid is None


def test_a_helper_that_does_not_answer_is_stopped() -> None:
    helper = PrestartHelper([sys.executable, "-c", "import time; time.sleep(60)"],
                            answer_timeout_s=0.5)
    with pytest.raises(RuntimeError, match="did not answer"):
        helper.request({"n": 1})
    assert helper.pid is None
