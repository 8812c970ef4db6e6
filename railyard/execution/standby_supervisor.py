"""A standby Python worker on this node for the next Ray job's supervisor.

Ray Jobs runs every job's entrypoint from a ``JobSupervisor`` actor, and starts that actor in a
new Python worker: on a 2-core node, starting it (importing Ray) is most of the ~1 s between
``submit_job`` and the entrypoint running. The raylet can start workers ahead of need for a
runtime environment (its ``PrestartWorkers`` RPC) and gives an idle worker whose runtime
environment matches to the next actor that needs one; the supervisor then starts in ~0.05 s.

The warm runner (railyard.execution.warm_runner) asks for one standby after each job it ran,
once no other job of the node is running (so the standby's start never competes with a job for
the CPUs). The supervisor's runtime environment is rebuilt from the job's driver environment
exactly as Ray's ``JobManager`` builds it: the job's ``env_vars`` plus Ray's own
(railyard.execution.standby_supervisor.supervisor_runtime_env). A standby with a different
environment is simply never used, and expires after ``KEEP_ALIVE_S``; nothing depends on one
being there.

    python -m railyard.execution.standby_supervisor --gcs ADDRESS --node-id HEX --runtime-env JSON

is the one-shot call the warm runner makes in a subprocess (gRPC stays out of the process
that forks drivers). ``RAILYARD_STANDBY_SUPERVISOR=false`` turns it off.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ENABLED_ENV = "RAILYARD_STANDBY_SUPERVISOR"
KEEP_ALIVE_S = 3600
# What Ray's JobManager adds to a supervisor's runtime env (ray.dashboard.modules.job.
# job_manager._get_supervisor_runtime_env), and JobSupervisor removes again for the driver
# when the job was submitted without entrypoint resources.
NICENESS = "RAY_worker_niceness"
NOSET = ("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES",
         "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES")
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the warm runner keeps a standby supervisor worker (default: yes)."""
    return env.get(ENABLED_ENV, "true").strip().lower() not in ("0", "false", "no", "off")


def supervisor_runtime_env(driver_env: Mapping[str, str]) -> dict[str, Any] | None:
    """The runtime env of the JobSupervisor that started a driver with ``driver_env``; None
    when the driver was not started by Ray Jobs."""
    try:
        runtime_env = dict(json.loads(driver_env[JOB_CONFIG_ENV])["runtime_env"] or {})
    except (KeyError, TypeError, ValueError):
        return None
    env_vars = dict(runtime_env.get("env_vars") or {})
    if NICENESS not in env_vars:
        # Submitted without entrypoint resources: the supervisor had Ray's three variables,
        # and the driver's copy of its runtime env had them removed.
        env_vars[NICENESS] = "0"
        env_vars.update({name: "1" for name in NOSET})
    runtime_env["env_vars"] = env_vars
    return runtime_env


def find_raylet(warm_socket: str | None, proc: Path = Path("/proc")) -> tuple[str, str] | None:
    """(GCS address, node id) of this node's raylet: the raylet started with
    ``RAILYARD_WARM_SOCKET=warm_socket`` in its environment (local clusters run several nodes
    on one machine), else the only raylet here (a KubeRay pod). None if neither is found. (The
    raylet's own port is chosen at start and is only in the GCS's node table.)"""
    raylets: list[tuple[str, str, bool]] = []
    for _, cmdline, environ in _processes(
            proc, lambda cmdline: cmdline.split(b"\0", 1)[0].endswith(b"/raylet")):
        node_id = re.search(rb"--node_id=([0-9a-f]+)", cmdline)
        gcs = re.search(rb"--gcs-address=([^\s\0]+)", cmdline)
        if not node_id or not gcs:
            continue
        ours = warm_socket is not None and \
            f"RAILYARD_WARM_SOCKET={warm_socket}".encode() in environ
        raylets.append((gcs.group(1).decode(), node_id.group(1).decode(), ours))
    mine = [(gcs, node) for gcs, node, ours in raylets if ours]
    if mine:
        return mine[0]
    return (raylets[0][0], raylets[0][1]) if len(raylets) == 1 else None


def standby_pids(env_vars: Mapping[str, str], proc: Path = Path("/proc")) -> list[int]:
    """Idle Ray workers on this machine with all of ``env_vars`` in their environment."""
    wanted = [f"{k}={v}".encode() for k, v in env_vars.items()]
    return [pid for pid, _, environ in _processes(
                proc, lambda cmdline: cmdline.startswith(b"ray::IDLE"))
            if all(item in environ for item in wanted)]


def _processes(proc: Path, wanted: Callable[[bytes], bool]
               ) -> Iterator[tuple[int, bytes, set[bytes]]]:
    """(pid, command line, environment entries) of the processes under ``proc`` whose raw
    command line ``wanted`` accepts; processes that vanish or are not ours to read are
    skipped."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if not wanted(cmdline):
                continue
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        yield int(entry.name), cmdline, environ


def replenish(runtime_env: dict[str, Any] | None, warm_socket: str | None) -> bool:
    """Ask this node's raylet for a standby supervisor worker unless one is idle already;
    True if one was asked for. Never raises: a standby only saves time."""
    if runtime_env is None or not enabled():
        return False
    try:
        if standby_pids(runtime_env.get("env_vars", {})):
            return False
        raylet = find_raylet(warm_socket)
        if raylet is None:
            return False
        # The runtime env goes on stdin: a command line is readable by every local user.
        result = subprocess.run(
            [sys.executable, "-m", "railyard.execution.standby_supervisor", "--gcs", raylet[0],
             "--node-id", raylet[1], "--runtime-env", "-"],
            input=json.dumps(runtime_env), capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            print(f"railyard warm: no standby supervisor: {result.stderr.strip()[-500:]}",
                  file=sys.stderr, flush=True)
            return False
        return True
    except Exception as exc:  # noqa: BLE001
        print(f"railyard warm: no standby supervisor: {exc}", file=sys.stderr, flush=True)
        return False


def prestart(gcs_address: str, node_id: str, runtime_env: dict[str, Any],
             keep_alive_s: int = KEEP_ALIVE_S) -> None:
    """One ``PrestartWorkers`` call: a Python worker with ``runtime_env`` on that node's
    raylet (its address from the GCS node table)."""
    from ray._private.grpc_utils import init_grpc_channel
    from ray._private.utils import get_runtime_env_info, parse_runtime_env_for_task_or_actor
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # not in Ray's _raylet.pyi
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

    nodes = GcsClient(address=gcs_address).get_all_node_info(timeout=10)
    node = next((info for key, info in nodes.items() if key.hex() == node_id), None)
    if node is None:
        raise LookupError(f"node {node_id} is not in the GCS at {gcs_address}")
    info = get_runtime_env_info(parse_runtime_env_for_task_or_actor(runtime_env),
                                is_job_runtime_env=False, serialize=False)
    raylet = f"{node.node_manager_address}:{node.node_manager_port}"
    # Ray's own channel: it carries the cluster's token when Ray's token authentication is on.
    with init_grpc_channel(raylet) as channel:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(
            # Ray's generated protobuf modules build their messages at import time; no stubs.
            node_manager_pb2.PrestartWorkersRequest(  # type: ignore[attr-defined]
                language=common_pb2.PYTHON,  # type: ignore[attr-defined]
                runtime_env_info=info,
                keep_alive_duration_secs=keep_alive_s, num_workers=1),
            timeout=30)


def main(argv: list[str] | None = None) -> int:
    """``python -m railyard.execution.standby_supervisor --gcs ADDRESS --node-id HEX --runtime-env
    JSON`` (``-``: read the JSON from stdin)."""
    parser = argparse.ArgumentParser(prog="python -m railyard.execution.standby_supervisor")
    parser.add_argument("--gcs", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--runtime-env", required=True)
    parser.add_argument("--keep-alive-s", type=int, default=KEEP_ALIVE_S)
    args = parser.parse_args(argv)
    runtime_env = sys.stdin.read() if args.runtime_env == "-" else args.runtime_env
    prestart(args.gcs, args.node_id, json.loads(runtime_env), args.keep_alive_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
