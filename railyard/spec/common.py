"""What every section of the training spec shares: name types, size limits, the strict base
model (unknown fields are errors; NaN, infinities, NUL characters and unpaired surrogates are
errors too: JSON and the job database cannot carry them), the check for such values
(:func:`unsafe_values`) and date parsing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

Name = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=4096)]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]

MAX_FILTERS = 64
MAX_COLUMNS = 512
MAX_LIST_VALUES = 10_000
MAX_SOURCES = 8
MAX_QUERY_CHARS = 100_000
SQL_TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"


MAX_REPORTED_PROBLEMS = 20


def string_problem(text: str) -> str | None:
    """What makes ``text`` unstorable, with the fix; None for a good string. Postgres refuses
    NUL in text, and an unpaired surrogate (``\\ud800``) is not Unicode: UTF-8 cannot encode
    it."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000); remove it"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return ("contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not "
                    "Unicode; send valid UTF-8 text")
    return None


def number_problem(value: float) -> str | None:
    """Why a float is not a JSON number (NaN, Infinity), with the fix; None for a finite one."""
    if math.isfinite(value):
        return None
    name = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return (f"{name} is not a JSON number (JSON has no NaN or Infinity); send a finite "
            "number, or leave the field out")


def unsafe_values(value: Any, *, extra: Callable[[Any], str | None] | None = None,
                  prefix: str = "", limit: int = MAX_REPORTED_PROBLEMS) -> list[dict[str, str]]:
    """Every value inside a decoded JSON document (dicts, lists, strings, numbers) that JSON or
    the job database cannot carry: non-finite floats, strings (and keys) with NUL or unpaired
    surrogates; ``extra`` may name a problem with any other value. Each as ``{"field":
    "data.features.0.path", "message": ...}``, at most ``limit``. Models inside are skipped:
    they were checked when they were built."""
    problems: list[dict[str, str]] = []
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack and len(problems) < limit:
        path, item = stack.pop()
        problem = None
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                key_text = str(key)
                key_problem = string_problem(key_text) if isinstance(key, str) else None
                shown = json.dumps(key_text)[1:-1] if key_problem else key_text
                child_path = f"{path}.{shown}" if path else shown
                if key_problem:
                    problems.append({"field": child_path, "message": f"the key {key_problem}"})
                children.append((child_path, child))
            stack.extend(reversed(children))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed([(f"{path}.{i}" if path else str(i), child)
                                   for i, child in enumerate(item)]))
        elif isinstance(item, str):
            problem = string_problem(item)
        elif isinstance(item, float):
            problem = number_problem(item)
        elif extra is not None and not isinstance(item, (BaseModel, int, bool)) \
                and item is not None:
            problem = extra(item)
        if problem:
            problems.append({"field": path or "(body)", "message": problem})
    return problems[:limit]


class StrictModel(BaseModel):
    """Base for spec sections: unknown fields are errors, and so are values JSON or the job
    database cannot carry (NaN and infinite floats, NUL characters, unpaired surrogates)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """Typed floats are refused by ``allow_inf_nan``; this finds the rest (strings, and
        values inside ``Any`` fields such as ``train.custom_params``)."""
        if isinstance(value, (str, float, dict, list, tuple)):
            problems = unsafe_values(value, limit=1)
            if problems:
                where, message = problems[0]["field"], problems[0]["message"]
                raise ValueError(message if where == "(body)" else f"at {where}: {message}")
        return value


def parse_datetime(text: str) -> datetime:
    """Parse ``YYYY-MM-DD`` or an ISO-8601 timestamp; raise ValueError naming the format."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time())
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date: use YYYY-MM-DD or an ISO-8601 timestamp") from None
