"""``railyard webhooks create | list | delete | deliveries``: a team's webhook endpoints, over
the API (``/v1/webhooks``) with the CLI's token.

Mounted in the main CLI with ``app.add_typer(webhooks_app, name="webhooks")``.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from railyard.errors import RailyardError

webhooks_app = typer.Typer(help="Webhooks: signed job events (RUNNING, SUCCEEDED, FAILED, "
                                "CANCELLED) POSTed to your endpoint.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _fail(exc: RailyardError) -> None:
    err_console.print(f"[red]error[/red] ({type(exc).__name__}): {exc.message}")
    raise typer.Exit(code=1)


@webhooks_app.command("create")
def create(url: str = typer.Argument(..., help="the receiver's http(s) URL"),
           event: list[str] = typer.Option(
               ["SUCCEEDED", "FAILED", "CANCELLED"], "--event", "-e",
               help="an event to receive (repeat): RUNNING, SUCCEEDED, FAILED, CANCELLED"),
           secret: str | None = typer.Option(
               None, help="the signing secret (16-256 characters); default: the server makes "
                          "one and prints it once"),
           owner: str | None = typer.Option(
               None, help="admin tokens: the team whose jobs to hear of (default: every team)"),
           ) -> None:
    """Register a webhook; prints its id (and a generated secret, shown only now)."""
    from railyard.client.sdk import RailyardClient

    try:
        with RailyardClient() as client:
            made = client.create_webhook(url, event, secret=secret, owner=owner)
    except RailyardError as exc:
        _fail(exc)
        return
    console.print(f"webhook {made['id']} for {', '.join(made['events'])} of "
                  f"{made['owner'] or 'every team'}'s jobs -> {made['url']}", soft_wrap=True)
    if made.get("secret"):
        console.print(f"signing secret (shown once): {made['secret']}", soft_wrap=True)


@webhooks_app.command("list")
def list_webhooks() -> None:
    """Your team's webhooks (an admin token: every one)."""
    from railyard.client.sdk import RailyardClient

    try:
        with RailyardClient() as client:
            found = client.webhooks()
    except RailyardError as exc:
        _fail(exc)
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=23)       # ids are copied whole
    table.add_column("url", overflow="fold")
    for name in ("events", "owner", "created"):
        table.add_column(name, overflow="fold")
    for hook in found:
        table.add_row(hook["id"], hook["url"], ",".join(hook["events"]),
                      hook["owner"] or "(every team)", hook["created_at"][:19])
    console.print(table)


@webhooks_app.command("delete")
def delete(webhook_id: str = typer.Argument(..., help="the webhook's id (wh_…)")) -> None:
    """Remove a webhook and its delivery log."""
    from railyard.client.sdk import RailyardClient

    try:
        with RailyardClient() as client:
            client.delete_webhook(webhook_id)
    except RailyardError as exc:
        _fail(exc)
        return
    console.print(f"deleted {webhook_id}")


@webhooks_app.command("deliveries")
def deliveries(webhook_id: str = typer.Argument(..., help="the webhook's id (wh_…)"),
               limit: int = typer.Option(20, min=1, max=200)) -> None:
    """A webhook's newest deliveries: each attempt's time, HTTP status, error, next retry."""
    from railyard.client.sdk import RailyardClient

    try:
        with RailyardClient() as client:
            found = client.webhook_deliveries(webhook_id, limit=limit)
    except RailyardError as exc:
        _fail(exc)
        return
    table = Table()
    for name in ("event", "type", "job", "status", "attempt at", "HTTP", "error",
                 "next retry"):
        table.add_column(name, overflow="fold")
    for delivery in found:
        attempts = delivery["attempts"] or [{}]
        for i, attempt in enumerate(attempts):
            head = i == 0
            table.add_row(delivery["event_id"] if head else "",
                          delivery["event_type"] if head else "",
                          delivery["job_id"] if head else "",
                          delivery["status"] if head else "",
                          (attempt.get("at") or "-")[:19],
                          str(attempt.get("http_status") or "-"),
                          (attempt.get("error") or "")[:60],
                          (attempt.get("next_retry_at") or "-")[:19])
    console.print(table)
