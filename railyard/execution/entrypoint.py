"""Entrypoint of a job's Ray driver: ``python -m railyard.execution.entrypoint JOB_ID`` (same
arguments as ``python -m railyard.execution.driver``), or ``--pack JOB_ID...`` for several
jobs in one Ray job (railyard.execution.pack).

It imports only the standard library: with a warm runner on the node (``RAILYARD_WARM_SOCKET``,
railyard.execution.warm_runner) the job runs in a driver forked from it, already imported;
without one, here.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the job warm if a server answers, else in this process."""
    args = list(sys.argv[1:] if argv is None else argv)
    socket_path = os.environ.get("RAILYARD_WARM_SOCKET")
    if args[:1] == ["--pack"]:
        from railyard.execution.pack import run_pack

        return run_pack(args[1:], socket_path)
    if socket_path:
        from railyard.execution.warm_runner import run_warm

        code = run_warm(args, socket_path)
        if code is not None:
            return code
    from railyard.execution.driver import main as run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
