"""Start and stop a local Ray cluster and deploy the API onto any cluster through the Ray
dashboard's REST API (the same import path KubeRay's RayService uses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from railyard.config import Settings

SERVE_IMPORT_PATH = "serve_app.deployment:app"
APP_NAME = "railyard"


def ray_executable() -> str:
    """The ``ray`` CLI next to this interpreter (so jobs run with the project's Python)."""
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def cluster_env(settings: Settings) -> dict[str, str]:
    """Environment for ``ray start``: this interpreter first on PATH, Railyard and AWS settings."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings.runtime_env_vars())
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def dashboard_alive(address: str, timeout: float = 2.0) -> bool:
    """True when a Ray dashboard answers at ``address`` (http://host:8265)."""
    try:
        return httpx.get(f"{address.rstrip('/')}/api/version", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start_head(settings: Settings, *, num_cpus: int | None = None, gcs_port: int = 6379,
               dashboard_port: int = 8265, labels: dict[str, str] | None = None,
               extra_args: list[str] | None = None, timeout: float = 120.0) -> str:
    """``ray start --head`` on this machine; returns the dashboard (Jobs API) address."""
    args = [ray_executable(), "start", "--head", f"--port={gcs_port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            "--disable-usage-stats"]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    if labels:
        args.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
    args += extra_args or []
    result = subprocess.run(args, env=cluster_env(settings), capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"ray start failed:\n{result.stdout}\n{result.stderr}")
    address = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + timeout
    while not dashboard_alive(address):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray dashboard did not answer at {address}")
        time.sleep(0.5)
    state_file(settings).write_text(json.dumps({"started_by_railyard": True,
                                                "address": address}))
    return address


def stop_local_cluster(settings: Settings) -> None:
    """``ray stop`` for a cluster this machine's ``railyard up`` started."""
    subprocess.run([ray_executable(), "stop", "--force"], capture_output=True, timeout=120)
    state_file(settings).unlink(missing_ok=True)


def state_file(settings: Settings) -> Path:
    """Where ``railyard up`` remembers that it started the local cluster."""
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings.home / "cluster.json"


def started_local_cluster(settings: Settings) -> bool:
    """True if ``railyard up`` started the local cluster (so ``down`` should stop it)."""
    return state_file(settings).exists()


def serve_config(settings: Settings, *, host: str, port: int) -> dict:
    """The Serve config that runs the API (the RayService manifest carries the same)."""
    return {
        "http_options": {"host": host, "port": port},
        "applications": [{
            "name": APP_NAME, "route_prefix": "/", "import_path": SERVE_IMPORT_PATH,
            "runtime_env": {"env_vars": settings.runtime_env_vars()},
        }],
    }


def deploy_api(settings: Settings, *, address: str, host: str = "127.0.0.1", port: int = 8000,
               timeout: float = 180.0) -> str:
    """Deploy the API on the cluster at ``address``; return its URL once /healthz answers."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(address).deploy_applications(serve_config(settings, host=host,
                                                                    port=port))
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API did not answer at {url}/healthz within {timeout:.0f}s")
        time.sleep(0.5)


def undeploy_api(address: str) -> None:
    """Remove the API's Serve applications from the cluster."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(address).delete_applications()
