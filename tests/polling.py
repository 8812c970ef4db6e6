"""The one polling helper of the test suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2, *,
             ignore: tuple[type[BaseException], ...] = ()) -> T:
    """``predicate()``'s first truthy value within ``timeout`` seconds, else an AssertionError
    naming ``what``. Exceptions of the ``ignore`` types (an API or a database that is down)
    count as "not yet"; the last one is named in the error. Any other exception is raised."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ignore as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}"
                         + (f" (last error: {last_error})" if last_error is not None else ""))
