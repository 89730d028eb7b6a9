"""The gateway's part of the ``latina`` command line: database, users, worker, local stack."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer

from gateway.flows import accounts
from gateway.flows.unit_of_work import UnitOfWorkFactory
from gateway.repositories.users import Role
from shared.cli import password_or_ask, run_or_exit, settings_or_exit
from shared.db.embedded import resolve_database_url
from shared.db.migrations import apply_migrations
from shared.db.pool import connect, create_pool
from shared.db.setup import database_dsn
from shared.settings import Settings

app = typer.Typer(help="Latina operations: database, users, local stack.", no_args_is_help=True)
users_app = typer.Typer(
    help="Trainer and admin accounts and their API tokens.", no_args_is_help=True
)
app.add_typer(users_app, name="users")

T = TypeVar("T")
_SECRET_FIELDS = {
    "latina_secret_key",
    "ml_service_token",
    "leonardo_api_key",
    "replicate_api_token",
    "openai_api_key",
    "metrics_token",
}


async def _with_uows(settings: Settings, work: Callable[[UnitOfWorkFactory], Awaitable[T]]) -> T:
    dsn = await database_dsn(settings)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        return await work(UnitOfWorkFactory(pool))
    finally:
        await pool.close()


async def _migrate(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        report = await apply_migrations(conn)
    finally:
        await conn.close()
    for name in report.changed:
        typer.secho(
            f"warning: {name} changed after it was applied (not re-applied)", fg="yellow", err=True
        )
    for name in report.applied:
        typer.echo(f"applied {name}")
    typer.echo(f"{len(report.applied)} applied, {report.already_applied} already applied")


@app.command()
def migrate() -> None:
    """Apply pending SQL migrations (gateway and ML service); a second run changes nothing."""

    async def work(settings: Settings) -> None:
        dsn = await asyncio.to_thread(
            resolve_database_url, settings.database_url, settings.data_dir
        )
        await _migrate(dsn)

    run_or_exit(work)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="login name: letters, digits, . _ @ -")],
    role: Annotated[str, typer.Option(help="trainer or admin")] = "trainer",
    password: Annotated[
        str | None,
        typer.Option(
            help="password for the browser login (stored as argon2); --password alone asks"
            " for it, hidden, so it stays out of the shell's history"
        ),
    ] = None,
) -> None:
    """Create a user and print a new API token once (only its hash is stored)."""
    if role not in ("trainer", "admin"):
        typer.secho("error: --role must be trainer or admin", fg="red", err=True)
        raise typer.Exit(2)
    chosen: Role = "admin" if role == "admin" else "trainer"
    password = password_or_ask(password)

    async def work(settings: Settings) -> str:
        _, token = await _with_uows(
            settings, lambda uows: accounts.create_user(uows, name, chosen, password=password)
        )
        return token

    token = run_or_exit(work)
    typer.echo(f"created {chosen} {name!r}. API token (shown once, keep it safe):")
    typer.echo(token)


@users_app.command("password")
def users_password(
    name: str,
    password: Annotated[
        str | None, typer.Option(help="the new password (asked for, hidden, when omitted)")
    ] = None,
) -> None:
    """Set or reset a user's password for the browser login (/login)."""
    chosen = password_or_ask(password) or typer.prompt(
        "new password", hide_input=True, confirmation_prompt=True
    )
    run_or_exit(lambda s: _with_uows(s, lambda uows: accounts.set_password(uows, name, chosen)))
    typer.echo(f"password of {name!r} set")


@users_app.command("token")
def users_token(name: str) -> None:
    """Issue another API token for an existing user and print it once."""
    token = run_or_exit(lambda s: _with_uows(s, lambda uows: accounts.issue_token(uows, name)))
    typer.echo(token)


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Cut a user off everywhere: API tokens, browser sessions already issued, new logins."""
    run_or_exit(lambda s: _with_uows(s, lambda uows: accounts.disable_user(uows, name)))
    typer.echo(f"{name!r} disabled: tokens, sessions and logins refused")


@users_app.command("enable")
def users_enable(name: str) -> None:
    """Let a disabled user back in (tokens work again; browsers log in anew)."""
    run_or_exit(lambda s: _with_uows(s, lambda uows: accounts.enable_user(uows, name)))
    typer.echo(f"{name!r} enabled")


@users_app.command("revoke")
def users_revoke(name: str) -> None:
    """Revoke every API token of a user."""
    count = run_or_exit(
        lambda s: _with_uows(s, lambda uows: accounts.revoke_user_tokens(uows, name))
    )
    typer.echo(f"revoked {count} token(s) of {name!r}")


@users_app.command("list")
def users_list() -> None:
    """List users and their roles."""
    found = run_or_exit(lambda s: _with_uows(s, accounts.list_accounts))
    for user in found:
        state = " (disabled)" if user.disabled else ""
        typer.echo(f"{user.id:>4}  {user.name:<24} {user.role}{state}")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


@app.command("settings")
def showsettings_or_exit() -> None:
    """Print the settings in force (secrets masked)."""
    settings = settings_or_exit()
    for key, value in settings.model_dump().items():
        shown = "***" if key in _SECRET_FIELDS and value else value
        if key == "database_url" and value:
            shown = _without_password(value)
        typer.echo(f"{key.upper()}={'' if shown is None else shown}")


@app.command()
def worker() -> None:
    """Run a job worker (ML-update delivery, prompt evolution) until Ctrl-C; run several to
    scale out."""

    from gateway import jobs
    from gateway.worker import worker_deps

    async def work(settings: Settings) -> None:
        async with worker_deps(settings) as deps:
            typer.echo("latina worker: processing jobs (Ctrl-C stops)")
            conn = await connect(deps.dsn)
            try:
                await jobs.run_worker(conn, deps.ml, deps.evolution, pictures=deps.pictures)
            finally:
                await conn.close()

    try:
        run_or_exit(work)
    except KeyboardInterrupt:
        typer.echo("latina worker: stopped")


@app.command()
def run() -> None:
    """Run the local stack: database, migrations, ML service, gateway; Ctrl-C stops it all."""
    from gateway.local_stack import run_local_stack

    sys.exit(run_local_stack(settings_or_exit()))


if __name__ == "__main__":
    app()
