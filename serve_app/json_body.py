"""Every request body is read and checked here, before a route or pydantic sees it: an app-wide
dependency (:func:`check_json_body`, after the token check) that refuses with a 422 naming the
field and the fix what Python's ``json`` would turn into a 500 or an unstorable spec:

- nesting deeper than RAILYARD_MAX_JSON_DEPTH (``[[[[...`` made ``json.loads`` recurse until
  RecursionError): the brackets outside strings are counted before anything is decoded;
- an integer of more than RAILYARD_MAX_JSON_INT_DIGITS digits (Python refuses to convert past
  4300 digits, and no 64-bit column holds one of 21);
- ``NaN``, ``Infinity``, ``-Infinity`` and numbers too large for a float (``1e999``): JSON has
  no such numbers, and a spec stored with them could never be read back as JSON;
- a string or key with a NUL character or an unpaired surrogate, which the job database
  refuses.

A body over RAILYARD_MAX_BODY_BYTES stays a 413. The bytes read are kept on the request, so the
route reads the same body again (Starlette's ``Request.stream`` replays them).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi import Request

from railyard.errors import PayloadTooLargeError, SpecError
from railyard.spec.common import unsafe_values
from serve_app.deps import Service

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A JSON string, escapes included (unrolled: no backtracking per character).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class _Refused:
    """A number the decoder met that the API refuses: kept in the decoded document so the walk
    over it can name the field it sits in."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def nests_deeper(text: str, limit: int) -> bool:
    """Whether ``text``'s arrays and objects nest more than ``limit`` levels deep (brackets
    inside strings do not count); the scan stops at the first level past the limit."""
    if text.count("[") + text.count("{") <= limit:  # cannot nest deeper: the common case
        return False
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        if depth > limit:
            return True
    return False


def decode_json(body: bytes, *, max_depth: int, max_int_digits: int) -> Any:
    """``body`` decoded as JSON, or a SpecError (422) whose details name each field that JSON
    or the job database cannot carry, with the fix."""
    try:
        text = body.decode(json.detect_encoding(body))
    except UnicodeDecodeError as exc:
        raise _not_json(f"it is not UTF-8 text ({exc})") from None
    if nests_deeper(text, max_depth):
        message = (f"arrays and objects nest deeper than {max_depth} levels "
                   "(RAILYARD_MAX_JSON_DEPTH); a training spec needs about 6")
        raise SpecError(f"invalid request body: {message}",
                        details=[{"field": "(body)", "message": message}])

    def parse_int(digits: str) -> Any:
        count = len(digits.lstrip("-"))
        if count > max_int_digits:
            return _Refused(f"an integer of {count} digits is out of range: at most "
                            f"{max_int_digits} digits (RAILYARD_MAX_JSON_INT_DIGITS)")
        return int(digits)

    def parse_float(number: str) -> Any:
        value = float(number)
        if not math.isfinite(value):
            return _Refused(f"{number[:32]} is out of the range of a 64-bit float; send a "
                            "smaller number")
        return value

    def parse_constant(name: str) -> Any:
        return _Refused(f"{name} is not a JSON number (JSON has no NaN or Infinity); send a "
                        "finite number, or leave the field out")

    try:
        document = json.loads(text, parse_int=parse_int, parse_float=parse_float,
                              parse_constant=parse_constant)
    except json.JSONDecodeError as exc:
        raise _not_json(str(exc)) from None
    except RecursionError:  # not reached below the depth limit; kept as a last guard
        raise _not_json("it nests too deeply") from None
    problems = unsafe_values(
        document, extra=lambda v: v.problem if isinstance(v, _Refused) else None)
    if problems:
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        if len(problems) > 5:
            summary += f"; and {len(problems) - 5} more"
        raise SpecError(f"invalid request body: {summary}", details=problems)
    return document


def _not_json(reason: str) -> SpecError:
    return SpecError(f"request body is not valid JSON: {reason}; send the training spec as a "
                     "JSON object", details=[{"field": "(body)", "message": reason}])


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 once it is (or declares to be) over ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
    return bytes(body)


async def check_json_body(request: Request, svc: Service) -> None:
    """App-wide dependency: a request with a body has it read (413 over the size limit) and
    checked as JSON (:func:`decode_json`) before its route runs."""
    if request.method not in BODY_METHODS:
        return
    settings = svc.settings
    body = await read_body(request, settings.max_body_bytes)
    request._body = body  # Request.stream() replays these bytes to the route
    if body:
        decode_json(body, max_depth=settings.max_json_depth,
                    max_int_digits=settings.max_json_int_digits)
