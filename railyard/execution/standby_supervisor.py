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

    python -m railyard.execution.standby_supervisor --serve

is the helper process the warm runner starts once and keeps (``PrestartHelper``): it reads one
JSON request per line on stdin (``gcs``, ``node_id``, ``runtime_env``) and answers ``ok`` or
``error: ...`` per line. gRPC stays out of the process that forks drivers, and Ray's gRPC
modules are imported once rather than in a new process after every job (~0.3 CPU-seconds
each on a 2-core node). It exits when its stdin closes. ``RAILYARD_STANDBY_SUPERVISOR=false``
turns standbys off. The node's Python workers import Ray's job supervisor module as they start
(railyard.cluster.node_env), so a standby has it imported before the job comes.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from railyard.cluster.node_env import standby_enabled

KEEP_ALIVE_S = 3600
ANSWER_TIMEOUT_S = 60.0
# What Ray's JobManager adds to a supervisor's runtime env (ray.dashboard.modules.job.
# job_manager._get_supervisor_runtime_env), and JobSupervisor removes again for the driver
# when the job was submitted without entrypoint resources.
NICENESS = "RAY_worker_niceness"
NOSET = ("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES",
         "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES")
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


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


class PrestartHelper:
    """The warm runner's long-lived ``--serve`` process that makes the ``PrestartWorkers``
    calls; started on first use and again if it died."""

    def __init__(self, command: list[str] | None = None,
                 answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        self.command = command or [sys.executable, "-m", __name__, "--serve"]
        self.answer_timeout_s = answer_timeout_s
        self._proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        """The helper's pid while it runs."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def request(self, payload: dict[str, Any]) -> None:
        """Send one request and wait for its answer; raises RuntimeError with the helper's
        error, or when it did not answer (it is then stopped, and started again next time)."""
        proc = self._running()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(payload) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self.answer_timeout_s)
            answer = proc.stdout.readline() if ready else ""
        except (OSError, ValueError) as exc:
            self.close()
            raise RuntimeError(f"the standby helper is gone: {exc}") from None
        if not answer:
            self.close()
            raise RuntimeError("the standby helper did not answer")
        if answer.strip() != "ok":
            raise RuntimeError(answer.strip())

    def _running(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, bufsize=1)
        return self._proc

    def inherited_fds(self) -> list[int]:
        """The pipes to the helper, for a forked child to close."""
        proc = self._proc
        if proc is None:
            return []
        return [f.fileno() for f in (proc.stdin, proc.stdout) if f is not None and not f.closed]

    def close(self) -> None:
        """Stop the helper (it would also exit once this process is gone)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    f.close()


def replenish(runtime_env: dict[str, Any] | None, warm_socket: str | None,
              helper: PrestartHelper) -> bool:
    """Ask this node's raylet, through ``helper``, for a standby supervisor worker unless one
    is idle already; True if one was asked for. Never raises: a standby only saves time."""
    if runtime_env is None or not standby_enabled():
        return False
    try:
        if standby_pids(runtime_env.get("env_vars", {})):
            return False
        raylet = find_raylet(warm_socket)
        if raylet is None:
            return False
        # The runtime env goes through the pipe: a command line is readable by every local user.
        helper.request({"gcs": raylet[0], "node_id": raylet[1], "runtime_env": runtime_env})
        return True
    except Exception as exc:  # noqa: BLE001
        print(f"railyard warm: no standby supervisor: {exc}"[:1000], file=sys.stderr,
              flush=True)
        return False


def serve_requests(lines: Iterable[str], out: IO[str],
                   prestart_one: Callable[[str, str, dict[str, Any]], None] | None = None
                   ) -> None:
    """The helper's loop: one ``prestart`` per request line, one answer line each, until the
    lines end."""
    call = prestart_one or prestart
    for line in lines:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            call(request["gcs"], request["node_id"], request["runtime_env"])
            answer = "ok"
        except Exception as exc:  # noqa: BLE001 - one failed call must not end the helper
            answer = " ".join(f"error: {type(exc).__name__}: {exc}".split())[:1000]
        out.write(answer + "\n")
        out.flush()


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
    """``python -m railyard.execution.standby_supervisor --serve``: the helper's loop on
    stdin and stdout."""
    parser = argparse.ArgumentParser(prog="python -m railyard.execution.standby_supervisor")
    parser.add_argument("--serve", action="store_true", required=True)
    parser.parse_args(argv)
    serve_requests(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
