"""The read-only check for SQL queries in a spec, on a real SQL parser (sqlglot).

A spec's ``query`` is parsed as the database would read it (PostgreSQL by default: ``E'\\''``
escapes, dollar quotes, nested comments; the connection's own dialect, SQLite too, once the
connection is known) and must be:

- exactly **one statement** (a trailing ``;`` is fine);
- a **read**: SELECT, ``WITH ... SELECT``, ``TABLE t``, or UNION / INTERSECT / EXCEPT of them,
  with no ``SELECT ... INTO``, no locking clause (``FOR UPDATE``/``SHARE``) and no
  data-modifying statement anywhere (a ``DELETE ... RETURNING`` in a CTE);
- calling only **allowed functions** (:data:`ALLOWED_FUNCTIONS`): ordinary scalar, aggregate,
  window and set-returning functions over values. Anything else is refused by name: the server
  functions that read files or talk to the server (``pg_read_file``, ``pg_ls_dir``, ``lo_*``,
  ``dblink*``, ``pg_terminate_backend``, ``pg_cancel_backend``, ``set_config``, ``pg_sleep*``,
  ``pg_advisory*``, ``nextval``/``setval``, ``query_to_xml`` …), user-defined functions and
  calls qualified by a schema other than ``pg_catalog``;
- reading no **system catalog** (``pg_catalog``, ``information_schema``, ``pg_*`` relations).

Calls are checked twice: on the parsed tree (by the name as written, whatever the parser maps it
to), and on the tokens (every ``name(`` must be an allowed function, an alias's column list or
one of the parser's own syntax words), so a call the parser took for something else is refused
too. What the parser cannot read is refused. This is the first of three fences: reads also run in
a read-only transaction with a statement timeout (railyard.data.sql_sources), and operators
point connections at a database role that may only read what specs should see.
"""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.tokens import Token, TokenType

# SQLAlchemy backend names → sqlglot dialects (sqlglot's own names are accepted as they are).
SQLALCHEMY_DIALECTS = {"postgresql": "postgres", "postgres": "postgres", "sqlite": "sqlite",
                       "mysql": "mysql", "mariadb": "mysql", "mssql": "tsql"}
DEFAULT_DIALECT = "postgres"
_TOKEN_REPR = re.compile(r"<Token token_type: [^,]*, text: (.*?), line: \d+.*?>")


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_COMMON_FUNCTIONS = _names("""
    abs acos asin atan atan2 avg ceil ceiling coalesce concat cos count cume_dist degrees
    dense_rank exp first_value floor greatest lag last_value lead least length ln log lower
    ltrim max min mod nth_value ntile nullif percent_rank pi power radians rank replace round
    row_number rtrim sign sin sqrt substr substring sum tan trim upper
""")

_POSTGRES_FUNCTIONS = _names("""
    any_value array_agg bit_and bit_or bit_xor bool_and bool_or corr covar_pop covar_samp every
    json_agg jsonb_agg json_object_agg jsonb_object_agg mode percentile_cont percentile_disc
    regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy
    stddev stddev_pop stddev_samp string_agg var_pop var_samp variance
    acosd asind atand atan2d cosd cot cotd sind tand sinh cosh tanh asinh acosh atanh cbrt div
    factorial gcd lcm log10 min_scale pow random scale trim_scale trunc width_bucket
    ascii bit_length btrim char_length character_length chr concat_ws convert_from convert_to
    decode encode format hashtext initcap left lpad md5 normalize octet_length overlay position
    quote_ident quote_literal quote_nullable regexp_count regexp_instr regexp_like regexp_match
    regexp_matches regexp_replace regexp_split_to_array regexp_split_to_table regexp_substr
    repeat reverse right rpad sha224 sha256 sha384 sha512 split_part starts_with strpos
    string_to_array string_to_table to_ascii to_hex translate unistr
    age clock_timestamp date_add date_bin date_part date_subtract date_trunc extract isfinite
    justify_days justify_hours justify_interval make_date make_interval make_time
    make_timestamp make_timestamptz now statement_timestamp timeofday timezone to_char to_date
    to_number to_timestamp transaction_timestamp
    array_to_json json_array_elements json_array_elements_text json_array_length
    json_build_array json_build_object json_each json_each_text json_extract_path
    json_extract_path_text json_object json_object_keys json_populate_record json_strip_nulls
    json_to_record json_typeof jsonb_array_elements jsonb_array_elements_text
    jsonb_array_length jsonb_build_array jsonb_build_object jsonb_each jsonb_each_text
    jsonb_extract_path jsonb_extract_path_text jsonb_insert jsonb_object jsonb_object_keys
    jsonb_path_exists jsonb_path_match jsonb_path_query jsonb_path_query_array
    jsonb_path_query_first jsonb_populate_record jsonb_pretty jsonb_set jsonb_strip_nulls
    jsonb_to_record jsonb_typeof row_to_json to_json to_jsonb
    array array_append array_cat array_dims array_fill array_length array_lower array_ndims
    array_position array_positions array_prepend array_remove array_replace array_to_string
    array_upper cardinality generate_series generate_subscripts trim_array unnest
    plainto_tsquery phraseto_tsquery to_tsquery to_tsvector ts_headline ts_rank ts_rank_cd
    websearch_to_tsquery
    bool current_setting date float4 float8 gen_random_uuid int2 int4 int8 interval
    num_nonnulls num_nulls numeric row text time timestamp timestamptz varchar
""")

_SQLITE_FUNCTIONS = _names("""
    char date datetime format glob group_concat hex ifnull iif instr julianday like
    likelihood likely printf quote random sign soundex strftime string_agg time timediff
    total typeof unhex unicode unixepoch unlikely json json_array json_array_length
    json_extract json_object json_type json_valid json_group_array json_group_object
    log10 log2 trunc
""")

ALLOWED_FUNCTIONS: dict[str, frozenset[str]] = {
    "postgres": _COMMON_FUNCTIONS | _POSTGRES_FUNCTIONS,
    "sqlite": _COMMON_FUNCTIONS | _SQLITE_FUNCTIONS,
}
"""Functions a query may call, by sqlglot dialect (others: the common ones); names as the
database spells them, lower case. Schema-qualified calls are allowed only as ``pg_catalog.f``
on PostgreSQL."""

_ANY_DIALECT_FUNCTIONS = frozenset().union(*ALLOWED_FUNCTIONS.values())
# Words before a "(" that the parser reads as syntax rather than as a call by name: its own
# function parsers (CAST, EXTRACT, TRIM …, which build typed nodes) and clause words
# (WITHIN GROUP, TABLESAMPLE SYSTEM/BERNOULLI … REPEATABLE). Reviewed for sqlglot 30.31: none
# is a PostgreSQL or SQLite function with side effects.
_SYNTAX_WORDS = _names("""
    arg_max arg_min argmax argmin cast ceil char chr convert date_part decode extract floor
    gap_fill group_concat initcap json_agg json_object json_objectagg json_table json_value
    jsonb_exists match max_by min_by normalize openjson overlay position safe_cast string_agg
    substring trim try_cast try_convert weight_string xmlelement xmltable
    group system bernoulli repeatable
""")
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})

# Statements (or parts of one) that write, lock, change the session or run other code.
_WRITING_NODES: tuple[tuple[type[exp.Expr], str], ...] = (
    (exp.Insert, "INSERT"), (exp.Update, "UPDATE"), (exp.Delete, "DELETE"),
    (exp.Merge, "MERGE"), (exp.Copy, "COPY"), (exp.Create, "CREATE"), (exp.Drop, "DROP"),
    (exp.Alter, "ALTER"), (exp.TruncateTable, "TRUNCATE"), (exp.Set, "SET"),
    (exp.Transaction, "BEGIN"), (exp.Commit, "COMMIT"), (exp.Rollback, "ROLLBACK"),
    (exp.Grant, "GRANT"), (exp.Revoke, "REVOKE"), (exp.Pragma, "PRAGMA"), (exp.Use, "USE"),
    (exp.LoadData, "LOAD"), (exp.Execute, "EXECUTE"), (exp.Kill, "KILL"),
    (exp.Command, "command"), (exp.Into, "INTO"), (exp.Lock, "FOR UPDATE"),
)


def sqlglot_dialect(dialect: str | None) -> str:
    """The sqlglot dialect for a SQLAlchemy backend name (or a sqlglot name); ValueError for a
    database the guard cannot read queries of."""
    if dialect is None:
        return DEFAULT_DIALECT
    name = SQLALCHEMY_DIALECTS.get(dialect, dialect)
    try:
        Dialect.get_or_raise(name)
    except ValueError:
        raise ValueError(f"queries are not supported on {dialect} connections (PostgreSQL and "
                         "SQLite are); read a table instead") from None
    return name


def _shown(dialect: str) -> str:
    return {"postgres": "PostgreSQL", "sqlite": "SQLite"}.get(dialect, dialect)


def _parse(query: str, dialect: str) -> tuple[list[exp.Expr], list[Token]]:
    """The statements of ``query`` and its tokens."""
    reader = Dialect.get_or_raise(dialect)
    try:
        tokens = reader.tokenize(query)
        trees = reader.parser().parse(tokens, query)
    except TokenError:
        raise ValueError("the query could not be read: it has an unterminated quote, comment "
                         "or $$ string") from None
    except ParseError as exc:
        where = exc.errors[0] if exc.errors else {}
        at = (f" near line {where.get('line')}, column {where.get('col')}"
              if where.get("line") else "")
        what = _TOKEN_REPR.sub(lambda m: repr(m.group(1)),
                               str(where.get("description") or "invalid syntax"))
        raise ValueError(f"the query could not be parsed as {_shown(dialect)} SQL{at} "
                         f"({what}); a query must be one SELECT the database accepts") from None
    except (SqlglotError, RecursionError) as exc:
        raise ValueError(f"the query could not be parsed as {_shown(dialect)} SQL "
                         f"({type(exc).__name__})") from None
    statements = [t for t in trees if t is not None and not isinstance(t, exp.Semicolon)]
    return statements, tokens


def _check_shape(node: exp.Expr) -> None:
    if isinstance(node, exp.Subquery) and node.this is not None:
        _check_shape(node.this)
    elif isinstance(node, exp.SetOperation):
        _check_shape(node.this)
        _check_shape(node.expression)
    elif not isinstance(node, exp.Select):
        kind = type(node).__name__.upper() if not isinstance(node, exp.Command) \
            else str(node.this).upper()
        raise ValueError(f"only SELECT queries are allowed (it must start with SELECT or "
                         f"WITH), not {kind}")


def _written_name(node: exp.Func, query: str) -> str | None:
    """The function's name as the query spells it (unquoted names folded to lower case), or
    None for a construct the parser built from syntax (CAST, EXTRACT, CASE, an operator)."""
    start, end = node.meta.get("start"), node.meta.get("end")
    if isinstance(start, int) and isinstance(end, int):
        text = query[start:end + 1]
    elif isinstance(node, exp.Anonymous):
        this = node.this
        text = f'"{this.name}"' if isinstance(this, exp.Identifier) and this.quoted else str(this)
    else:
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"`":
        return text[1:-1].replace(text[0] * 2, text[0])
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        return text[1:-1]
    return text.lower()


def _qualifier(node: exp.Expr) -> str | None:
    """The schema a call is qualified with (``pg_catalog`` in ``pg_catalog.lower(x)``)."""
    parent = node.parent
    if isinstance(parent, exp.Dot) and parent.expression is node:
        return parent.this.name if isinstance(parent.this, exp.Expr) else str(parent.this)
    return None


def _allowed(dialect: str | None) -> frozenset[str]:
    return (_ANY_DIALECT_FUNCTIONS if dialect is None
            else ALLOWED_FUNCTIONS.get(dialect, _COMMON_FUNCTIONS))


def _check_call_tokens(tokens: list[Token], tree: exp.Expr, dialect: str | None) -> None:
    """Every ``name(`` in the text is an allowed function or an alias's column list (``AS
    t(a, b)``): a call the parser did not take for one is refused all the same."""
    aliases = {node.meta.get("start") for node in tree.find_all(exp.Identifier)
               if isinstance(node.parent, exp.TableAlias)}
    allowed = _allowed(dialect)
    for token, following in zip(tokens, tokens[1:], strict=False):
        if following.token_type != TokenType.L_PAREN or token.token_type not in (
                TokenType.VAR, TokenType.IDENTIFIER):
            continue
        quoted = token.token_type == TokenType.IDENTIFIER
        name = token.text if quoted else token.text.lower()
        if name in allowed or (not quoted and name in _SYNTAX_WORDS) or token.start in aliases:
            continue
        raise ValueError(
            f"function {name}() is not allowed; a query may call only ordinary scalar, "
            "aggregate and window functions (railyard.spec.sql_guard.ALLOWED_FUNCTIONS lists "
            "them)")


def _check_functions(tree: exp.Expr, query: str, dialect: str | None) -> None:
    allowed = _allowed(dialect)
    for node in tree.find_all(exp.Func):
        name = _written_name(node, query)
        if name is None:
            continue
        schema = _qualifier(node)
        qualified = f"{schema}.{name}" if schema else name
        if schema is not None and not (schema.lower() == "pg_catalog"
                                       and dialect in (None, "postgres")):
            raise ValueError(
                f"function {qualified}() is not allowed; a query may call only built-in "
                "functions, unqualified (or as pg_catalog.name on PostgreSQL)")
        if name not in allowed:
            raise ValueError(
                f"function {qualified}() is not allowed; a query may call only ordinary "
                "scalar, aggregate and window functions (railyard.spec.sql_guard."
                "ALLOWED_FUNCTIONS lists them)")


def _check_relations(tree: exp.Expr, dialect: str | None) -> None:
    if dialect not in (None, "postgres"):
        return
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue                                   # a table function: checked as a call
        check_table_name(".".join(p for p in (table.db, table.name) if p))


def check_table_name(table: str) -> str:
    """Return ``table`` (``name`` or ``schema.name``); ValueError for a system catalog."""
    schema, _, name = table.rpartition(".")
    if schema.lower() in SYSTEM_SCHEMAS or (not schema and name.lower().startswith("pg_")):
        raise ValueError(f"{table!r} is a system catalog; a SQL source may read only data "
                         "tables and views")
    return table


def check_select_only(query: str, dialect: str | None = None) -> str:
    """Return the query without a trailing ``;`` (or trailing comments); raise ValueError unless
    it is one SELECT that only reads, calls allowed functions and reads no system catalog.

    ``dialect`` is the database's (a SQLAlchemy backend name such as ``postgresql`` or
    ``sqlite``, or a sqlglot dialect); None, before the connection is known, parses it as
    PostgreSQL and accepts a function allowed in any supported dialect.
    """
    name = sqlglot_dialect(dialect)
    statements, tokens = _parse(query, name)
    if not statements:
        raise ValueError("the query is empty; give one SELECT")
    if len(statements) > 1:
        raise ValueError("only one statement is allowed; remove the ';' between statements")
    tree = statements[0]
    _check_shape(tree)
    for node in tree.walk():
        for kind, word in _WRITING_NODES:
            if isinstance(node, kind):
                if isinstance(node, exp.Lock):
                    word = node.sql(dialect=name).upper()
                raise ValueError(f"{word!r} is not allowed; a query may only read (quote a "
                                 "column that has this name)")
    known = None if dialect is None else name
    _check_functions(tree, query, known)
    _check_call_tokens(tokens, tree, known)
    _check_relations(tree, known)
    meaningful = [token for token in tokens if token.token_type != TokenType.SEMICOLON]
    return query[:meaningful[-1].end + 1].rstrip()

