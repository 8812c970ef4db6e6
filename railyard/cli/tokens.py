"""``railyard token``: issue, list and revoke API tokens, directly against the database named
by the settings (RAILYARD_DATABASE_URL, migrated first), like ``railyard up``.

Mounted in the main CLI with ``app.add_typer(token_app, name="token")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from railyard.config import get_settings
from railyard.errors import RailyardError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from railyard.jobstore.tables import ApiToken

token_app = typer.Typer(help="API tokens: one per team (or admin), stored hashed.",
                        no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _engine() -> Engine:
    from railyard.jobstore.engine import get_engine, migrate

    url = get_settings().resolved_database_url
    migrate(url)
    return get_engine(url)


@token_app.command("create")
def create(team: str = typer.Option(..., "--team", help="the team (job owner) it acts for"),
           admin: bool = typer.Option(False, "--admin", help="may see and submit for every team"),
           data_prefix: list[str] | None = typer.Option(
               None, "--data-prefix",
               help="a path prefix the team's specs may read (repeat for several); default: "
                    "whatever RAILYARD_ALLOWED_DATA_PREFIXES allows"),
           sql_connection: list[str] | None = typer.Option(
               None, "--sql-connection",
               help="a SQL connection (a RAILYARD_SQL_CONNECTIONS name) the team's specs may "
                    "read (repeat for several); default: every one, except for a token with "
                    "--data-prefix, which then reads no SQL source"),
           save: bool = typer.Option(False, "--save",
                                     help="also write it to $RAILYARD_HOME/token (mode 0600) "
                                          "for this machine's CLI and SDK")) -> None:
    """Issue a token and print it once on stdout (only its hash is stored)."""
    from railyard.client import credentials
    from railyard.jobstore import tokens

    try:
        token, row = tokens.issue(_engine(), team=team, admin=admin, data_prefixes=data_prefix,
                                  sql_connections=sql_connection)
    except RailyardError as exc:
        err_console.print(f"[red]error[/red] ({type(exc).__name__}): {exc.message}")
        raise typer.Exit(code=1) from None
    typer.echo(token)
    scope = "admin, every team" if row.is_admin else f"team {row.team}"
    err_console.print(f"token {row.prefix}… ({scope}; data prefixes: "
                      f"{', '.join(row.data_prefixes or []) or 'server default'}; SQL "
                      f"connections: {sql_grant_text(row)}). It is shown only this once: keep "
                      "it in a secret store, or pass --save.")
    unknown = sorted(set(row.sql_connections or []) - set(get_settings().sql_connections))
    if unknown and get_settings().sql_connections:
        err_console.print(f"[yellow]note[/yellow]: RAILYARD_SQL_CONNECTIONS here has no "
                          f"{', '.join(unknown)}; the grant applies once the server defines it")
    if save:
        path = credentials.token_file()
        credentials.save_token(path, token)
        err_console.print(f"saved to {path} (mode 0600)")


def sql_grant_text(row: ApiToken) -> str:
    """The SQL connections a token may read, as listings show them."""
    if row.sql_connections is not None:
        return ", ".join(row.sql_connections) or "none"
    return "none (has data prefixes)" if row.data_prefixes else "all"


@token_app.command("list")
def list_() -> None:
    """List tokens by prefix (the tokens themselves are not stored)."""
    from railyard.jobstore import tokens

    table = Table()
    for column in ("prefix", "team", "admin", "data prefixes", "sql connections", "created",
                   "revoked"):
        table.add_column(column, no_wrap=column == "prefix")
    for row in tokens.list_tokens(_engine()):
        table.add_row(row.prefix, row.team, "yes" if row.is_admin else "",
                      ", ".join(row.data_prefixes or []), sql_grant_text(row),
                      str(row.created_at)[:19],
                      str(row.revoked_at)[:19] if row.revoked_at else "")
    console.print(table)


@token_app.command("revoke")
def revoke(prefix: str = typer.Argument(..., help="the token's prefix, from `railyard token "
                                                  "list`")) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    from railyard.jobstore import tokens

    try:
        row = tokens.revoke(_engine(), prefix=prefix)
    except RailyardError as exc:
        err_console.print(f"[red]error[/red] ({type(exc).__name__}): {exc.message}")
        raise typer.Exit(code=1) from None
    console.print(f"revoked {row.prefix} (team {row.team})")
