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

from railyard import secrets
from railyard.cluster import node_env
from railyard.config import Settings

SERVE_IMPORT_PATH = "serve_app.deployment:app"
# Ray's processes, and through them every driver, replica and worker, create files for their
# user only: the job store, logs and local artifacts hold other teams' data.
PRIVATE_UMASK = 0o077
APP_NAME = "railyard"


def ray_executable() -> str:
    """The ``ray`` CLI next to this interpreter (so jobs run with the project's Python)."""
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


# What of the operator's shell a local Ray node inherits: every Ray worker, job driver and
# replica on the node sees the node's environment, so a secret in the shell (a cloud key, a
# token) must not ride along. Secrets reach them through railyard.secrets instead.
_INHERITED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
    "PYTHONPATH", "PYTHONHASHSEED", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SSL_CERT_FILE",
    "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_REGION",
    "AWS_DEFAULT_REGION", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
    "no_proxy"})
_NEVER_INHERITED = frozenset({"RAILYARD_TOKEN", "RAY_AUTH_TOKEN", *secrets.SECRET_VARIABLES})


def inherited_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The part of ``environ`` (default: this process's) a local Ray node may see: the
    allowlist above, ``LC_*``, and the ``RAY_*`` and ``RAILYARD_*`` settings but secrets."""
    environ = dict(os.environ if environ is None else environ)
    return {name: value for name, value in environ.items()
            if name not in _NEVER_INHERITED
            and (name in _INHERITED or name.startswith(("LC_", "RAY_", "RAILYARD_")))}


def ray_token_env(settings: Settings) -> dict[str, str]:
    """The variables that turn on Ray's token authentication with this home's token (created
    on first use, 0600, under ``$RAILYARD_HOME/ray``); nothing when it is switched off or the
    caller already chose (RAY_AUTH_MODE set)."""
    if not settings.ray_token_auth or "RAY_AUTH_MODE" in os.environ:
        return {}
    path = ray_token_path(settings)
    if not path.exists():
        import secrets as token_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token_bytes.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}


def ray_token_path(settings: Settings) -> Path:
    """Where a local cluster's Ray authentication token is kept."""
    return settings.home / "ray" / "auth_token"


def use_ray_token(settings: Settings) -> None:
    """Make this process (and what it starts) authenticate to the local cluster of
    ``settings.home`` when that cluster runs with Ray's token authentication. Call it before
    the first call to Ray: Ray reads the mode and the token once per process."""
    if settings.ray_token_auth and "RAY_AUTH_MODE" not in os.environ \
            and ray_token_path(settings).exists():
        _use_in_this_process(ray_token_env(settings))


def _use_in_this_process(token_env: dict[str, str]) -> None:
    """Set Ray's authentication variables here, and make Ray read them again: it caches its
    config and token loader at the first import of ``ray._raylet``."""
    if not token_env:
        return
    os.environ.update(token_env)
    if "ray._raylet" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def cluster_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``ray start``: this interpreter first on PATH, the inherited part of
    this process's environment, Railyard's settings (no secrets), Ray's token authentication,
    and ``extra`` (e.g. the node's warm runner socket)."""
    env = inherited_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings.runtime_env_vars())
    env.update(ray_token_env(settings))
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.update(extra or {})
    return env


def start_warm_runner(settings: Settings, node: str) -> dict[str, str]:
    """Start a warm runner (railyard.execution.warm_runner) for one local node; returns the
    environment that node's ``ray start`` needs for job drivers to find it, and for its standby
    supervisor worker to start with Ray's job supervisor imported (railyard.cluster.node_env).
    Nothing when disabled."""
    if not settings.warm_runners:
        return {}
    import hashlib
    import tempfile

    directory = warm_dir(settings)
    # A Unix socket path must stay under ~100 bytes: a short name in the temp directory.
    tag = hashlib.sha256(str(settings.home).encode()).hexdigest()[:10]
    socket_path = Path(tempfile.gettempdir()) / f"railyard-warm-{tag}-{node}.sock"
    log_fd = os.open(directory / f"{node}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(log_fd, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "railyard.execution.warm_runner", "serve",
             "--socket", str(socket_path)],
            env=cluster_env(settings), stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, umask=PRIVATE_UMASK)
    (directory / f"{node}.pid").write_text(f"{process.pid} {socket_path}")
    return {"RAILYARD_WARM_SOCKET": str(socket_path), **node_env.preload_env()}


def warm_dir(settings: Settings) -> Path:
    """Where the local warm runners keep their pid files and logs."""
    directory = settings.create_home() / "warm"
    directory.mkdir(exist_ok=True, mode=0o700)
    return directory


def stop_warm_runners(settings: Settings) -> None:
    """Stop the warm runners this home's cluster started (and remove their sockets)."""
    import signal

    for pid_file in warm_dir(settings).glob("*.pid"):
        pid, _, socket_path = pid_file.read_text().partition(" ")
        try:
            os.kill(int(pid), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
        if socket_path:
            Path(socket_path).unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)


def dashboard_alive(address: str, timeout: float = 2.0) -> bool:
    """True when a Ray dashboard answers at ``address`` (http://host:8265)."""
    try:
        # A health path Ray keeps public under token authentication.
        return httpx.get(f"{address.rstrip('/')}/api/gcs_healthz",
                         timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start_head(settings: Settings, *, num_cpus: int | None = None, gcs_port: int = 6379,
               dashboard_port: int = 8265, labels: dict[str, str] | None = None,
               extra_args: list[str] | None = None, timeout: float = 120.0) -> str:
    """``ray start --head`` on this machine; returns the dashboard (Jobs API) address. The
    dashboard listens on loopback only, and with ``settings.ray_token_auth`` every Ray API
    (dashboard, GCS) asks for the token this process then uses too (use_ray_token)."""
    _use_in_this_process(ray_token_env(settings))
    args = [ray_executable(), "start", "--head", f"--port={gcs_port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            "--disable-usage-stats"]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    if labels:
        args.append("--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
    args += extra_args or []
    settings.create_home()
    result = subprocess.run(args, env=cluster_env(settings, start_warm_runner(settings, "head")),
                            capture_output=True, text=True, timeout=timeout, umask=PRIVATE_UMASK)
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_port_args() -> list[str]:
    """Distinct agent and metrics ports, so several Ray nodes can share one machine."""
    return [f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}"]


def start_pool_node(settings: Settings, *, gcs_address: str, pool: str,
                    cpus: int = 1, timeout: float = 120.0) -> None:
    """``ray start --address`` a worker node labelled as one node of ``pool`` (CPU count
    scaled down to fit this machine; the gpu pool keeps its GPUs only where there are some)."""
    from railyard.cluster.pools import get_pool, local_node_args

    definition = get_pool(pool)
    num_gpus = definition.gpus if _has_gpu() else 0
    args = [ray_executable(), "start", f"--address={gcs_address}", "--disable-usage-stats",
            *local_node_args(definition, scale_cpus=cpus, num_gpus=num_gpus), *node_port_args()]
    import uuid

    warm = start_warm_runner(settings, f"{pool}-{uuid.uuid4().hex[:6]}")
    result = subprocess.run(args, env=cluster_env(settings, warm), capture_output=True,
                            text=True, timeout=timeout, umask=PRIVATE_UMASK)
    if result.returncode != 0:
        raise RuntimeError(f"ray start (pool {pool}) failed:\n{result.stdout}\n{result.stderr}")


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


def start_pool_cluster(settings: Settings, pools: dict[str, int], *,
                       cpus_per_node: int | dict[str, int] = 1, gcs_port: int = 6379,
                       dashboard_port: int = 8265,
                       extra_head_args: list[str] | None = None) -> str:
    """A head with no CPUs for work (it runs the API) and ``n`` labelled nodes per pool;
    ``cpus_per_node`` is one count for all pools or a count per pool."""
    address = start_head(settings, num_cpus=0, gcs_port=gcs_port,
                         dashboard_port=dashboard_port, extra_args=extra_head_args)
    for pool, count in pools.items():
        cpus = cpus_per_node.get(pool, 1) if isinstance(cpus_per_node, dict) else cpus_per_node
        for _ in range(count):
            start_pool_node(settings, gcs_address=f"127.0.0.1:{gcs_port}", pool=pool,
                            cpus=cpus)
    return address


def stop_local_cluster(settings: Settings) -> None:
    """``ray stop`` for a cluster this machine's ``railyard up`` started."""
    subprocess.run([ray_executable(), "stop", "--force"], capture_output=True, timeout=120)
    stop_warm_runners(settings)
    state_file(settings).unlink(missing_ok=True)


def state_file(settings: Settings) -> Path:
    """Where ``railyard up`` remembers that it started the local cluster."""
    return settings.create_home() / "cluster.json"


def started_local_cluster(settings: Settings) -> bool:
    """True if ``railyard up`` started the local cluster (so ``down`` should stop it)."""
    return state_file(settings).exists()


PROXY_LOCATION = "HeadOnly"


def serve_config(settings: Settings, *, host: str, port: int) -> dict:
    """The Serve config that runs the API (the RayService manifest carries the same, but for
    the proxy's location: its pods have an address each, so a proxy on every node)."""
    env_vars = settings.runtime_env_vars()
    # Server-only switches (a job's driver has no use for them).
    env_vars["RAILYARD_SUBMISSION_PAUSED"] = str(settings.submission_paused).lower()
    env_vars["RAILYARD_MAX_RETRIES"] = str(settings.max_retries)
    env_vars["RAILYARD_HEARTBEAT_TIMEOUT_S"] = str(settings.heartbeat_timeout_s)
    return {
        # One proxy, the head's. Nodes of a local cluster share one host, so the proxies of
        # "EveryNode" would share the port (SO_REUSEPORT) and a proxy draining away from a
        # node the replica left drops the connections the kernel handed it.
        "proxy_location": PROXY_LOCATION,
        "http_options": {"host": host, "port": port},
        "applications": [{
            "name": APP_NAME, "route_prefix": "/", "import_path": SERVE_IMPORT_PATH,
            "runtime_env": {"env_vars": env_vars},
        }],
    }


def deploy_api(settings: Settings, *, address: str, host: str = "127.0.0.1", port: int = 8000,
               timeout: float = 180.0) -> str:
    """Deploy the API on the cluster at ``address``; return its URL once /healthz answers."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(address).deploy_applications(serve_config(settings, host=host,
                                                                    port=port))
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if not wait_for_http_ok(f"{url}/healthz", timeout=timeout):
        raise RuntimeError(f"the API did not answer at {url}/healthz within {timeout:.0f}s")
    return url


def wait_for_http_ok(url: str, *, timeout: float, interval: float = 0.5) -> bool:
    """Poll ``url`` until it answers 200 (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def undeploy_api(address: str) -> None:
    """Remove the API's Serve applications from the cluster."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(address).delete_applications()
