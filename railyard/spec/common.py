"""What every section of the training spec shares: name types, size limits, the strict base
model (unknown fields are errors) and date parsing.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=4096)]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]

MAX_FILTERS = 64
MAX_COLUMNS = 512
MAX_LIST_VALUES = 10_000
MAX_SOURCES = 8
MAX_QUERY_CHARS = 100_000
SQL_TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"


class StrictModel(BaseModel):
    """Base for spec sections: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_datetime(text: str) -> datetime:
    """Parse ``YYYY-MM-DD`` or an ISO-8601 timestamp; raise ValueError naming the format."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time())
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date: use YYYY-MM-DD or an ISO-8601 timestamp") from None
