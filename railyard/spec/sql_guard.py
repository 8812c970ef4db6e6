"""The read-only check for SQL queries in a spec.

A spec's ``query`` must be one SELECT (``WITH ... SELECT`` included). The check is syntactic and
deliberately simple: comments, string literals, quoted identifiers and dollar-quoted bodies are
blanked out, then the skeleton must start with SELECT/WITH, hold no second statement and none of
the words that let a SELECT write or lock (a data-modifying CTE, ``SELECT ... INTO``,
``FOR UPDATE/SHARE``). It is the first of two fences: reads also run in a read-only transaction
(railyard.data.sql_sources), which stops what a syntactic check cannot see, such as a function with
side effects.
"""

from __future__ import annotations

import re

_WRITE_WORDS = ("INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "INTO", "TRUNCATE", "DROP",
                "ALTER", "CREATE", "GRANT", "REVOKE", "COPY", "CALL", "EXECUTE", "VACUUM")
_WRITE_RE = re.compile(r"\b(" + "|".join(_WRITE_WORDS) + r")\b", re.IGNORECASE)
_LOCK_RE = re.compile(r"\bFOR\s+(NO\s+KEY\s+UPDATE|KEY\s+SHARE|SHARE|UPDATE)\b", re.IGNORECASE)
_FIRST_WORD_RE = re.compile(r"^[\s(]*([A-Za-z]+)")
_DOLLAR_TAG_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _blank(match_text: str) -> str:
    return " " * len(match_text)


def skeleton(query: str) -> str:
    """The query with comments, literals and quoted identifiers replaced by spaces.

    Raises ValueError for an unterminated literal, identifier or comment.
    """
    out: list[str] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        two = query[i:i + 2]
        if two == "--":
            end = query.find("\n", i)
            end = n if end == -1 else end
            out.append(_blank(query[i:end]))
            i = end
        elif two == "/*":
            end = query.find("*/", i + 2)
            if end == -1:
                raise ValueError("the query has an unterminated /* comment")
            out.append(_blank(query[i:end + 2]))
            i = end + 2
        elif ch in ("'", '"'):
            j = i + 1
            while True:
                j = query.find(ch, j)
                if j == -1:
                    raise ValueError(f"the query has an unterminated {ch} quote")
                if query[j + 1:j + 2] == ch:     # doubled quote is an escaped quote
                    j += 2
                    continue
                break
            out.append(ch + _blank(query[i + 1:j]) + ch)      # keep the quotes: rstrip
            i = j + 1
        elif ch == "$" and (tag := _DOLLAR_TAG_RE.match(query, i)) \
                and not (i and (query[i - 1].isalnum() or query[i - 1] == "_")):
            delim = tag.group(0)
            end = query.find(delim, tag.end())
            if end == -1:
                raise ValueError(f"the query has an unterminated {delim} string")
            mark = "$" + _blank(delim[2:]) + "$"
            out.append(mark + _blank(query[i + len(delim):end]) + mark)
            i = end + len(delim)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def check_select_only(query: str) -> str:
    """Return the query without a trailing ``;``; raise ValueError unless it is one SELECT."""
    bare = skeleton(query)
    stripped = bare.rstrip()
    if stripped.endswith(";"):
        stripped = stripped[:-1]
    if ";" in stripped:
        raise ValueError("query: only one statement is allowed; remove the ';' between "
                         "statements")
    first = _FIRST_WORD_RE.match(stripped)
    if not first or first.group(1).upper() not in ("SELECT", "WITH"):
        raise ValueError("query: only SELECT queries are allowed (it must start with SELECT "
                         "or WITH)")
    if (word := _LOCK_RE.search(stripped)) or (word := _WRITE_RE.search(stripped)):
        raise ValueError(
            f"query: {word.group(0).upper()!r} is not allowed; a query may only read (quote a "
            "column that has this name)")
    return query[:len(stripped)].rstrip()
