"""Warm runners: a per-node server that has already imported what a job's driver needs (Ray
Data, xgboost and scikit-learn, matplotlib, the workflows) and forks a driver for each job.

A job's driver otherwise spends ~1.5 s of its life importing before it reads a byte. With a
warm server on the node, the Ray job's entrypoint
(``python -m railyard.execution.entrypoint JOB``, which imports nothing but the standard
library) hands the server its job id, environment, working directory and stdio; the server
forks, and the child runs ``railyard.execution.driver`` in that environment, writing to the
entrypoint's stdout and stderr (so Ray's driver log has it). The entrypoint forwards
SIGTERM/SIGINT to the child and exits with its exit code; the child exits as soon as the
entrypoint is gone (killed, or its node lost), so cancel and a killed driver behave exactly as
without the server. Without a server the entrypoint runs the job itself.

    python -m railyard.execution.warm_runner serve --socket /path/to/warm.sock

The server never initialises Ray; each child connects as the job's own driver.

The preloaded objects (~460,000 after the imports) are moved out of the garbage collector's
reach (``gc.freeze()``) before any fork. Otherwise the first full collection in each driver
walks them all, ~0.3 s on a busy core, and writing their collector headers copies ~130 MB of
the server's pages into the driver (copy-on-write): measured in a forked child, a full
collection took 295 ms and dirtied 128 MiB; frozen, 1 ms and 2.7 MiB.

One stalled client never holds up the others: the server reads every connection's request at
the same time (one selector, in the thread that forks) and drops a connection that has not
sent a whole request within REQUEST_TIMEOUT_S, or sent more than MAX_REQUEST bytes. The socket
is its owner's alone (mode 0600): whoever may connect may run a driver as the server's user.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

SOCKET_ENV = "RAILYARD_WARM_SOCKET"
FORKED_ENV = "RAILYARD_WARM_FORKED_FROM"     # set in a forked driver: the server's pid
FROZEN_ENV = "RAILYARD_WARM_FROZEN_OBJECTS"  # and how many objects the server froze
MAX_MESSAGE = 1 << 20
MAX_REQUEST = 16 * MAX_MESSAGE    # a request's environment is far smaller
REQUEST_TIMEOUT_S = 5.0           # to send a whole request, from the moment it connects
SOCKET_MODE = 0o600
CHECK_INTERVAL_S = 5.0            # how often the server checks its socket is still its own
# What every driver imports; importing it once here is the point of the server.
PRELOAD = ("railyard.execution.driver", "railyard.data.fetch", "railyard.training.streamed",
           "railyard.training.metrics", "railyard.artifacts.checkpoints",
           "railyard.training.sweeps.ray_tune", "railyard.training.builtin.xgboost",
           "railyard.training.builtin.lightgbm", "railyard.training.builtin.sklearn",
           "sklearn.metrics", "matplotlib.pyplot")


def send_message(sock: socket.socket, payload: dict, fds: list[int] | None = None) -> None:
    """One JSON message, newline-terminated; ``fds`` ride along (SCM_RIGHTS)."""
    data = json.dumps(payload).encode() + b"\n"
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def recv_message(sock: socket.socket, *, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (None at end of stream) and any descriptors that came with it."""
    buffer = b""
    fds: list[int] = []
    while not buffer.endswith(b"\n"):
        if max_fds and not fds:
            chunk, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, max_fds)
        else:
            chunk = sock.recv(MAX_MESSAGE)
        if not chunk:
            return None, fds
        buffer += chunk
    return json.loads(buffer), fds


# ------------------------------------------------------------------------------------ server
def preload() -> None:
    """Import the drivers' modules (and pick matplotlib's headless backend)."""
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    # Ray reads this when it is imported, so here, before the drivers' imports (see
    # Settings.runtime_env_vars).
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing extra only costs its import later
            print(f"railyard warm: could not preload {name}: {exc}", file=sys.stderr)
    from railyard.training.registry import available_workflows

    available_workflows()


def serve(socket_path: str) -> None:
    """Preload, then fork a driver for every request until killed (or until the socket is
    removed or taken over by a newer server)."""
    preload()
    gc.collect()             # what is garbage now would stay, frozen, in every driver
    gc.freeze()
    frozen = gc.get_freeze_count()      # a walk of every object: counted once, here
    os.environ[FROZEN_ENV] = str(frozen)
    path = Path(socket_path)
    server = listen(path)
    inode = path.stat().st_ino
    print(f"railyard warm: serving on {path} (pid {os.getpid()}, {frozen} preloaded objects "
          "frozen)", flush=True)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    pending: dict[int, _Pending] = {}         # by descriptor
    open_connections: set[socket.socket] = set()
    standby = _Standby(socket_path)
    next_check = time.monotonic() + CHECK_INTERVAL_S

    def close_inherited() -> None:
        """In a forked child: what belongs to the server and to other jobs' launchers."""
        selector.close()
        server.close()
        standby.close_in_child()
        for other in list(pending.values()):
            other.close()
        for other_conn in list(open_connections):
            other_conn.close()

    while True:
        deadline = min([next_check, *(p.deadline for p in pending.values())])
        for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
            if key.fileobj is server:
                _accept(server, selector, pending)
                continue
            waiting = pending.get(key.fd)
            if waiting is None:                  # dropped earlier in this round
                continue
            conn = waiting.conn
            try:
                request = waiting.read()
            except Exception as exc:  # noqa: BLE001 - one bad client must not stop the server
                _drop(selector, pending, waiting, f"bad request: {exc}")
                continue
            if request is None:
                continue
            selector.unregister(conn)
            del pending[key.fd]
            conn.setblocking(True)
            _start(conn, request, waiting.take_fds(), open_connections, standby,
                   close_inherited)
        now = time.monotonic()
        for waiting in [p for p in pending.values() if p.deadline <= now]:
            _drop(selector, pending, waiting,
                  f"no whole request within {REQUEST_TIMEOUT_S:.0f}s; connection closed")
        if now >= next_check:
            next_check = now + CHECK_INTERVAL_S
            # Gone (its cluster was stopped and cleaned up) or taken over by a newer server.
            if not path.exists() or path.stat().st_ino != inode:
                close_inherited()
                return


def listen(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` that only this user may connect to (created with
    mode 0600: no moment when it is more open), non-blocking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o777 & ~SOCKET_MODE)
    try:
        server.bind(str(path))
    finally:
        os.umask(previous)
    os.chmod(path, SOCKET_MODE)
    server.listen(64)
    server.setblocking(False)
    return server


class _Pending:
    """A connection whose request is still being read (without blocking), with its deadline."""

    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self.conn, self.deadline = conn, deadline
        self.buffer = b""
        self.fds: list[int] = []

    def read(self) -> dict | None:
        """Read what has arrived; the request once it is whole, else None. Raises on a closed
        or oversized connection, or a request that is not a JSON object with three
        descriptors."""
        try:
            if not self.fds:
                chunk, fds, _, _ = socket.recv_fds(self.conn, MAX_MESSAGE, 3)
                self.fds.extend(fds)
            else:
                chunk = self.conn.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return None
        if not chunk:
            raise ValueError("the client closed the connection before a whole request")
        self.buffer += chunk
        if len(self.buffer) > MAX_REQUEST:
            raise ValueError(f"request over {MAX_REQUEST} bytes")
        if not self.buffer.endswith(b"\n"):
            return None
        request = json.loads(self.buffer)
        if not isinstance(request, dict) or len(self.fds) != 3 \
                or not isinstance(request.get("argv"), list) \
                or not isinstance(request.get("env"), dict) \
                or not isinstance(request.get("cwd"), str) \
                or not isinstance(request.get("launcher_pid"), int):
            raise ValueError("expected a request with argv, env, cwd, launcher_pid and "
                             "stdin, stdout and stderr")
        return request

    def take_fds(self) -> list[int]:
        """The descriptors that came with the request, now the caller's to close."""
        fds, self.fds = self.fds, []
        return fds

    def close(self) -> None:
        for fd in self.take_fds():
            try:
                os.close(fd)
            except OSError:
                pass
        self.conn.close()


def _accept(server: socket.socket, selector: selectors.BaseSelector,
            pending: dict[int, _Pending]) -> None:
    try:
        conn, _ = server.accept()
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:                     # e.g. out of descriptors: drop the oldest
        print(f"railyard warm: accept failed: {exc}", file=sys.stderr, flush=True)
        if pending:
            oldest = min(pending.values(), key=lambda p: p.deadline)
            _drop(selector, pending, oldest, "dropped to accept others")
        return
    conn.setblocking(False)
    pending[conn.fileno()] = _Pending(conn, time.monotonic() + REQUEST_TIMEOUT_S)
    selector.register(conn, selectors.EVENT_READ)


def _drop(selector: selectors.BaseSelector, pending: dict[int, _Pending],
          waiting: _Pending, why: str) -> None:
    print(f"railyard warm: {why}", file=sys.stderr, flush=True)
    selector.unregister(waiting.conn)
    del pending[waiting.conn.fileno()]
    waiting.close()


def _start(conn: socket.socket, request: dict, fds: list[int], open_connections: set,
           standby: _Standby, close_inherited: Callable[[], None]) -> None:
    """Fork the job's driver for ``request``; a thread reports its pid and exit code."""
    gc.freeze()           # what the server made since, out of the drivers' collections too
    try:
        pid = os.fork()
    except OSError as exc:                     # the launcher then sees the server hang up
        print(f"railyard warm: could not fork: {exc}", file=sys.stderr, flush=True)
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    if pid == 0:
        close_inherited()                      # other jobs' launchers are not ours
        _run_child(conn, request, fds)         # never returns
    for fd in fds:
        os.close(fd)
    open_connections.add(conn)
    standby.saw_job(request["env"])
    threading.Thread(target=_report_exit, args=(conn, pid, open_connections, standby),
                     daemon=True).start()


class _Standby:
    """Keeps a standby worker for the next job's Ray supervisor on this node
    (railyard.execution.standby_supervisor), asked for after a job ends and the node has no
    other."""

    def __init__(self, socket_path: str) -> None:
        from railyard.execution.standby_supervisor import PrestartHelper

        self.socket_path = socket_path
        self.runtime_env: dict | None = None
        self.helper = PrestartHelper()
        self._lock = threading.Lock()

    def saw_job(self, env: dict[str, str]) -> None:
        from railyard.execution.standby_supervisor import supervisor_runtime_env

        self.runtime_env = supervisor_runtime_env(env) or self.runtime_env

    def replenish(self) -> None:
        from railyard.execution.standby_supervisor import replenish

        if self._lock.acquire(blocking=False):
            try:
                replenish(self.runtime_env, self.socket_path, self.helper)
            finally:
                self._lock.release()

    def close_in_child(self) -> None:
        """In a forked driver: close the pipes to the prestart helper, so that the helper
        sees its end of input when the server is gone."""
        for fd in self.helper.inherited_fds():
            try:
                os.close(fd)
            except OSError:
                pass


def _report_exit(conn: socket.socket, pid: int, open_connections: set,
                 standby: _Standby | None = None) -> None:
    try:
        send_message(conn, {"pid": pid})
        _, status = os.waitpid(pid, 0)
        send_message(conn, {"exit": os.waitstatus_to_exitcode(status)})
    except OSError:
        pass
    finally:
        open_connections.discard(conn)
        conn.close()
    if standby is not None and not open_connections:
        standby.replenish()


def process_name(job_id: str) -> str:
    """The name (``comm``, 15 bytes at most) a forked driver takes, so ``ps`` and tests can
    tell which job it runs: its command line is still the server's."""
    return f"ry-{job_id[-12:]}"


def _set_process_name(name: str) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)      # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _run_child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the job's driver process."""
    code = 1
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        conn.close()
        frozen = os.environ.get(FROZEN_ENV, "0")
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[FORKED_ENV] = str(os.getppid())
        os.environ[FROZEN_ENV] = frozen
        os.chdir(request["cwd"])
        sys.argv = ["railyard.execution.driver", *request["argv"]]
        if request["argv"] and not request["argv"][0].startswith("-"):
            _set_process_name(process_name(request["argv"][0]))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        _exit_with(int(request["launcher_pid"]))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from railyard.execution.driver import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - report and exit non-zero like a crashed driver
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _exit_with(launcher_pid: int, interval_s: float = 0.2) -> None:
    """Exit this driver as soon as its launcher (the process Ray knows) is gone."""
    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if not _alive(launcher_pid):
                os._exit(137)

    threading.Thread(target=watch, name="railyard-launcher-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    """False once ``pid`` has exited, including as a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


# ------------------------------------------------------------------------------------ client
def run_warm(argv: list[str], socket_path: str, *, connect_timeout_s: float = 2.0) -> int | None:
    """Hand ``railyard.execution.driver``'s arguments to the warm server; its exit code, or
    None when no server answers (the caller then runs the job itself)."""
    started = start_warm(argv, socket_path, connect_timeout_s=connect_timeout_s)
    if started is None:
        return None
    client, child = started
    forward_signals([child])
    return wait_warm(client)


def start_warm(argv: list[str], socket_path: str, *,
               connect_timeout_s: float = 2.0) -> tuple[socket.socket, int] | None:
    """Have the warm server fork a driver with ``argv`` and this process's stdio, environment
    and working directory: the connection to wait on (``wait_warm``) and the driver's pid, or
    None when no server answers or it died before forking."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(connect_timeout_s)
    try:
        client.connect(socket_path)
    except OSError:
        client.close()
        return None
    client.settimeout(None)
    request = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(),
               "launcher_pid": os.getpid()}
    send_message(client, request, [0, 1, 2])
    started, _ = recv_message(client)
    if started is None:
        client.close()
        return None
    return client, int(started["pid"])


def wait_warm(client: socket.socket) -> int:
    """The exit code of the driver ``start_warm`` started on ``client`` (1 when the server
    died while it ran)."""
    ended, _ = recv_message(client)
    client.close()
    return 1 if ended is None else int(ended["exit"])


def forward_signals(pids: list[int]) -> None:
    """Pass SIGTERM and SIGINT (Ray's stop) on to ``pids``; a pid added to the list later is
    included."""
    def forward(signum: int, _frame: object) -> None:
        for pid in list(pids):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)


def main(argv: list[str] | None = None) -> int:
    """``python -m railyard.execution.warm_runner serve --socket PATH``."""
    parser = argparse.ArgumentParser(prog="python -m railyard.execution.warm_runner")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="preload and fork drivers on request")
    serve_cmd.add_argument("--socket", default=os.environ.get(SOCKET_ENV))
    args = parser.parse_args(argv)
    if not args.socket:
        parser.error(f"give --socket or set {SOCKET_ENV}")
    serve(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
