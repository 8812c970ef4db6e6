"""Real servers for the test suite: a throwaway Postgres (initdb/pg_ctl), an S3-compatible server
(moto in server mode, spoken to over HTTP like AWS), and a helper to find free ports."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.polling import wait_for


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"{name} not found: install PostgreSQL server binaries "
                           "(apt-get install postgresql); scripts/test.sh does")
    return found


@dataclass
class Postgres:
    """A running throwaway Postgres."""

    port: int
    data_dir: Path
    run_as: list[str]
    # Connections over TCP need it (scram-sha-256), as on a real server: tests can check that
    # it never shows where it must not.
    password: str = ""

    def url(self, database: str = "railyard") -> str:
        """SQLAlchemy URL (psycopg 3), with the password."""
        return f"postgresql+psycopg://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """libpq connection string for psycopg.connect."""
        return (f"host=127.0.0.1 port={self.port} user=postgres password={self.password} "
                f"dbname={database}")

    def ctl(self, *args: str) -> None:
        """Run pg_ctl against this server (start/stop for outage tests)."""
        subprocess.run([*self.run_as, _pg_bin("pg_ctl"), "-D", str(self.data_dir), *args],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        self.ctl("-o", f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c full_page_writes=off -c max_connections=200",
                 "-l", str(self.data_dir / "server.log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast mode)."""
        self.ctl("-m", "fast", "-w", "stop")


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """initdb + pg_ctl start on a free port; as the `postgres` user when we are root."""
    base = Path(tempfile.mkdtemp(prefix="railyard-pg-"))
    data_dir = base / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chmod(base, 0o755)
        data_dir.mkdir()
        os.chown(data_dir, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    password = f"pg-{secrets.token_hex(12)}"
    password_file = base / "password"
    password_file.write_text(password)
    if run_as:
        os.chown(password_file, user.pw_uid, user.pw_gid)
    subprocess.run([*run_as, _pg_bin("initdb"), "-D", str(data_dir), "-U", "postgres",
                    "--auth-local=trust", "--auth-host=scram-sha-256",
                    f"--pwfile={password_file}", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=180)
    server = Postgres(port=free_port(), data_dir=data_dir, run_as=run_as, password=password)
    server.start()
    try:
        import psycopg

        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE railyard")
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class S3Server:
    """A running S3-compatible server."""

    endpoint: str
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point clients at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1"}


# Any key works with the S3 server; a distinctive one lets tests look for it where it must not be.
SECRET_ACCESS_KEY = "s3-secret-" + secrets.token_hex(8)


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's standalone server on a free loopback port."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        httpx.get(f"{endpoint}/moto-api/", timeout=2)
        return True

    try:
        wait_for(answers, 60, "moto_server to answer", ignore=(httpx.HTTPError,))
    except (AssertionError, RuntimeError) as exc:
        process.kill()
        raise RuntimeError("moto_server did not start") from exc
    try:
        yield S3Server(endpoint=endpoint, process=process)
    finally:
        process.terminate()
        process.wait(timeout=30)



@dataclass
class MlflowServer:
    """A running `mlflow server` (from scripts/mlflow_venv.sh's virtualenv); ``stop`` and
    ``start`` it again on the same port and store for outage tests."""

    url: str
    command: list[str]
    env: dict[str, str]
    base: Path               # its SQLite store and log
    artifacts: str           # s3://bucket/prefix where it stores the runs' artifacts
    process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the server and wait until it answers /health."""
        with (self.base / "server.log").open("ab") as log_file:
            # Its own process group: `mlflow server` runs uvicorn as a child process.
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log_file,
                                            stderr=subprocess.STDOUT, cwd=self.base,
                                            start_new_session=True)
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}: "
                                   f"{(self.base / 'server.log').read_text()[-2000:]}")
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200

        wait_for(answers, 120, "mlflow server to answer", ignore=(httpx.HTTPError,))

    def stop(self) -> None:
        """Stop the server (and its workers)."""
        if self.process is None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=30)
        try:                          # the workers, should any outlive the parent
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None


def mlflow_venv() -> Path:
    """The MLflow server's virtualenv (scripts/mlflow_venv.sh --no-build); a RuntimeError
    saying how to build it when it is missing."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "mlflow_venv.sh"
    found = subprocess.run(["bash", str(script), "--no-build"], capture_output=True, text=True,
                           timeout=120)
    if found.returncode != 0:
        raise RuntimeError(f"the MLflow server is not installed: {found.stderr.strip()} "
                           "(bootstrap step: bash scripts/mlflow_venv.sh)")
    return Path(found.stdout.strip().splitlines()[-1])


@contextmanager
def mlflow_server(s3: S3Server, bucket: str = "railyard-mlflow") -> Iterator[MlflowServer]:
    """`mlflow server` on a free loopback port: its own SQLite backend in a temporary
    directory, the runs' artifacts proxied to ``s3://<bucket>/mlflow`` on the S3 server."""
    import boto3

    venv = mlflow_venv()
    boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id="testing",
                 aws_secret_access_key=SECRET_ACCESS_KEY,
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    base = Path(tempfile.mkdtemp(prefix="railyard-mlflow-"))
    port = free_port()
    artifacts = f"s3://{bucket}/mlflow"
    server = MlflowServer(
        url=f"http://127.0.0.1:{port}",
        command=[str(venv / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                 str(port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
                 "--artifacts-destination", artifacts],
        env={**os.environ, **s3.env(), "MLFLOW_S3_ENDPOINT_URL": s3.endpoint},
        base=base, artifacts=artifacts)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
