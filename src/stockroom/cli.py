"""The `stockroom` command: serve, migrate, users."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from stockroom.bootstrap import bootstrap, shutdown
from stockroom.config import Settings, get_settings
from stockroom.db.migrate import upgrade
from stockroom.domain import users as user_service
from stockroom.domain.errors import EmailTaken
from stockroom.domain.models import IssuedToken, User

app = typer.Typer(help="Stockroom: product catalog with an asynchronous image pipeline.")
users_app = typer.Typer(help="Manage users and their API tokens.")
app.add_typer(users_app, name="users")
console = Console(stderr=True)


@app.command()
def migrate() -> None:
    """Apply the database migrations (safe to run from several instances at once)."""
    settings = get_settings()
    upgrade(settings.database_url)
    console.print("[green]database is up to date[/green]")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="API processes.")] = 1,
    demo: Annotated[bool, typer.Option(help="Create a demo admin and print a token.")] = False,
) -> None:
    """Start the API; in embedded mode (SQLite) migrate first."""
    settings = get_settings()
    if settings.database_url.startswith("sqlite") or demo:
        upgrade(settings.database_url)
    if demo:
        user, issued = asyncio.run(_demo_user(settings))
        _print_quickstart(host, port, issued.secret, user)
    uvicorn.run(
        "stockroom.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level=settings.log_level.lower(),
    )


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="The user's email (unique).")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Create a user and print their first API token (shown only once)."""
    settings = get_settings()
    try:
        user, issued = asyncio.run(_create_user(settings, email, name, admin))
    except EmailTaken as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    out = {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "is_admin": user.is_admin,
        "token": issued.secret,
    }
    if as_json:
        typer.echo(json.dumps(out))
    else:
        console.print(f"created user {user.id} <{user.email}>; token (shown once):")
        typer.echo(issued.secret)


async def _create_user(
    settings: Settings, email: str, name: str | None, admin: bool
) -> tuple[User, IssuedToken]:
    services = await bootstrap(settings)
    try:
        return await user_service.create_user(
            services.uow(), email=email, name=name, is_admin=admin
        )
    finally:
        await shutdown(services)


async def _demo_user(settings: Settings) -> tuple[User, IssuedToken]:
    """The demo admin of `make run`: created once, with a fresh token at every start."""
    services = await bootstrap(settings)
    try:
        try:
            return await user_service.create_user(
                services.uow(), email="demo@stockroom.local", name="Demo", is_admin=True
            )
        except EmailTaken:
            user = await user_service.find_user(services.uow(), "demo@stockroom.local")
            return user, await user_service.create_token(services.uow(), user, name="demo")
    finally:
        await shutdown(services)


def _print_quickstart(host: str, port: int, token: str, user: User) -> None:
    base = f"http://{host}:{port}"
    console.print(f"\n[bold]Stockroom[/bold] on {base}  (API docs: {base}/docs)")
    console.print(f"demo admin {user.email}, token:\n  [green]{token}[/green]\n")
    console.print("Try:", highlight=False)
    console.print(
        f"  export TOKEN={token}\n"
        f'  curl -s -X POST {base}/products -H "Authorization: Bearer $TOKEN" \\\n'
        "       -H 'Content-Type: application/json' \\\n"
        '       -d \'{"product_name": "Desk lamp", "product_price": "19.99", '
        '"product_images": []}\'\n'
        f'  curl -s {base}/products -H "Authorization: Bearer $TOKEN"\n',
        highlight=False,
        markup=False,
    )
