"""The `stockroom` command: serve, worker, migrate, users, dlq, jobs, import."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from stockroom.adapters.storage import FileImageStore
from stockroom.bootstrap import Role, bootstrap
from stockroom.config import Settings, get_settings
from stockroom.db.migrate import upgrade
from stockroom.demo import FOLDER, OTHER_PHOTO, PRODUCT_PHOTO, install_photos
from stockroom.demo.product import SKU, announce_in_background
from stockroom.domain import image_jobs, imports, webhook_delivery
from stockroom.domain import users as user_service
from stockroom.domain.errors import EmailTaken
from stockroom.domain.image_jobs import ALL_QUEUES
from stockroom.domain.models import ImageJob, IssuedToken, User
from stockroom.logs import configure_logging

app = typer.Typer(
    help="Stockroom: product catalog with an asynchronous image pipeline.", no_args_is_help=True
)
users_app = typer.Typer(help="Manage users and their API tokens.")
dlq_app = typer.Typer(help="Inspect and redrive dead-lettered image jobs.")
jobs_app = typer.Typer(help="Image jobs that are not finished.")
app.add_typer(users_app, name="users")
app.add_typer(dlq_app, name="dlq")
app.add_typer(jobs_app, name="jobs")
console = Console(stderr=True)
DEMO_EMAIL = "demo@stockroom.local"
# The CLI runs with the operator's authority: the machine's shell is the admin boundary.
_OPERATOR = User(
    id=0, email="operator@localhost", name="cli", is_admin=True, created_at=datetime.now(UTC)
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"stockroom {package_version('stockroom')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # The options of `stockroom` itself; the app's help says what it is.
    pass


@app.command()
def migrate() -> None:
    """Apply the database migrations (safe to run from several instances at once)."""
    settings = get_settings()
    upgrade(settings.database_url)
    console.print("[green]database is up to date[/green]")
    if settings.storage_url.startswith("s3:"):
        asyncio.run(_create_bucket(settings))
        console.print("[green]bucket is ready[/green]")


async def _create_bucket(settings: Settings) -> None:
    from stockroom.adapters.storage import S3ImageStore

    store = S3ImageStore.from_url(settings.storage_url)
    try:
        await store.create_bucket_if_missing()
    finally:
        await store.close()


_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _restart_with_shared_metrics() -> None:
    """`serve --workers N`: every API process writes its metrics to files in one fresh
    folder and `/metrics` sums them (prometheus_client's multiprocess mode), so a scrape of
    any process counts them all. prometheus_client reads the folder's variable when it is
    imported, which this process already did: start again with it set."""
    folder = tempfile.mkdtemp(prefix="stockroom-metrics-")
    os.environ[_MULTIPROC_DIR] = folder
    os.execv(sys.executable, [sys.executable, *sys.argv])  # noqa: S606 (this command again)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="API processes.")] = 1,
    demo: Annotated[
        bool,
        typer.Option(help="Create a demo admin (printing a token) and a demo product."),
    ] = False,
) -> None:
    """Start the API; in embedded mode (SQLite) migrate first."""
    settings = get_settings()
    base = f"http://{host}:{port}"
    if demo:
        _refuse_demo_outside_development(settings)
        base = _demo_origin(host, port)
        settings = _with_demo_origin(settings, base)
    if workers > 1 and (settings.is_embedded_broker or settings.cache_url.startswith("memory:")):
        console.print(
            "[red]--workers > 1 needs a shared broker and cache (amqp://, redis://): "
            "in-process ones would differ between the processes[/red]"
        )
        raise typer.Exit(2)
    if workers > 1 and _MULTIPROC_DIR not in os.environ:
        _restart_with_shared_metrics()
    if settings.database_url.startswith("sqlite") or demo:
        upgrade(settings.database_url)
    if demo:
        user, issued = asyncio.run(_demo_user(settings))
        photos = _install_demo_photos(settings, base)
        _print_quickstart(base, issued.secret, user, photos)
        if photos is not None:
            announce_in_background(base, issued.secret, f"{photos}/{PRODUCT_PHOTO}")
    configure_logging(
        settings.effective_log_format, settings.log_level, [settings.webhook_secret or ""]
    )
    # granian: faster than uvicorn on the app's own routes (docs/performance.md). Its
    # processes load the app factory (the lifespan runs in each) and read the settings
    # from the environment, as this one does.
    Granian(
        "stockroom.app:create_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        backpressure=settings.max_concurrent_requests,
        factory=True,
        log_level=LogLevels(settings.log_level.lower()),
        log_dictconfig=_SERVER_LOGS,
        log_access=False,  # our middleware logs each request
    ).serve()


# granian's own lines ("Starting granian", "Listening at") go through the root handler, in
# our format, in its main process and in its workers (whose create_app configures the same).
_SERVER_LOGS: dict[str, Any] = {
    "formatters": {},
    "handlers": {},
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": True},
    },
}


def _refuse_demo_outside_development(settings: Settings) -> None:
    """The demo admin has a token printed on the console: never on real data."""
    if settings.environment == "production" or not settings.database_url.startswith("sqlite"):
        console.print(
            "[red]serve --demo is for local development only: it refuses "
            "STOCKROOM_ENVIRONMENT=production and any database but SQLite, since it prints "
            f"an admin token on the console (here: environment={settings.environment}, "
            f"database {settings.database_url.partition(':')[0]}).[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2)


def _demo_origin(host: str, port: int) -> str:
    """`http://<ip>:<port>`, where this process is reached: an IP literal, since the download
    allowance is by address (loopback for a wildcard bind such as 0.0.0.0)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            console.print(f"[red]cannot resolve --host {host!r}: {exc}[/red]")
            raise typer.Exit(2) from exc
        ip = ipaddress.ip_address(str(found[0][4][0]).split("%")[0])
    if ip.is_unspecified:
        ip = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
    return f"http://[{ip}]:{port}" if ip.version == 6 else f"http://{ip}:{port}"


def _with_demo_origin(settings: Settings, origin: str) -> Settings:
    """Let the guarded download fetch from this process, that origin only, and hand out
    /media URLs on it unless STOCKROOM_PUBLIC_BASE_URL says otherwise. Through the
    environment: the app (and any --workers child) reads its settings from it."""
    os.environ["STOCKROOM_FETCH_ALLOWED_ORIGINS"] = ",".join(
        dict.fromkeys((*settings.fetch_allowed_origins, origin))
    )
    if "public_base_url" not in settings.model_fields_set:
        os.environ["STOCKROOM_PUBLIC_BASE_URL"] = origin
    get_settings.cache_clear()
    return get_settings()


def _install_demo_photos(settings: Settings, base: str) -> str | None:
    """Copy the demo photos where /media serves them: their URL folder, or None (S3)."""
    if not settings.storage_url.startswith("file:"):
        console.print(
            "[yellow]--demo makes no demo product with S3 storage: its photo is served "
            "from file:// storage under /media[/yellow]"
        )
        return None
    store = FileImageStore.from_url(settings.storage_url, settings.public_base_url)
    install_photos(store.root)
    return f"{base}/media/{FOLDER}"


@app.command()
def worker(
    processes: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (default: STOCKROOM_WORKER_PROCESSES, else one per core)."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Threads per process (default: STOCKROOM_WORKER_THREADS).")
    ] = None,
    queues: Annotated[
        str | None,
        typer.Option(help=f"Queues to consume, comma-separated (default: {','.join(ALL_QUEUES)})."),
    ] = None,
) -> None:
    """Consume image jobs from RabbitMQ until SIGTERM; dead processes are replaced."""
    settings = get_settings()
    if settings.is_embedded_broker:
        console.print(
            "[red]STOCKROOM_BROKER_URL is memory://: `serve` runs the workers itself.[/red]"
        )
        raise typer.Exit(2)
    chosen = {name.strip() for name in (queues or "").split(",") if name.strip()}
    if unknown := sorted(chosen - set(ALL_QUEUES)):
        console.print(
            f"[red]no such queue: {', '.join(unknown)} (known: {', '.join(ALL_QUEUES)})[/red]"
        )
        raise typer.Exit(2)
    from stockroom.worker import run_workers

    run_workers(
        settings,
        processes or settings.worker_process_count,
        threads or settings.worker_threads,
        chosen or None,
    )


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Jobs that failed for good: permanent errors and exhausted retries."""
    jobs = asyncio.run(_dead_letters(get_settings(), limit))
    if as_json:
        for job in jobs:
            typer.echo(json.dumps(_job_summary(job)))
        return
    table = Table("id", "kind", "product", "attempts", "code", "error", "dead-lettered")
    for job in jobs:
        table.add_row(
            job.id,
            job.kind.value,
            str(job.product_id or ""),
            str(job.attempts),
            job.error_code or "",
            (job.error or "")[:60],
            job.dead_lettered_at.isoformat(timespec="seconds") if job.dead_lettered_at else "",
        )
    Console().print(table)


@dlq_app.command("retry")
def dlq_retry(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids to redrive.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Redrive every dead letter.")] = False,
) -> None:
    """Put dead-lettered jobs back in their queue (the API's relay publishes them)."""
    if not job_ids and not all_:
        console.print("[red]name job ids, or pass --all[/red]")
        raise typer.Exit(2)
    count = asyncio.run(_redrive(get_settings(), job_ids or [], all_))
    console.print(f"requeued {count} job(s)")


async def _dead_letters(settings: Settings, limit: int) -> list[ImageJob]:
    services = await bootstrap(settings, Role.CLI)
    try:
        return await image_jobs.list_dead_letters(services.uow(), _OPERATOR, limit=limit)
    finally:
        await services.aclose()


async def _redrive(settings: Settings, job_ids: list[str], all_: bool) -> int:
    services = await bootstrap(settings, Role.CLI)
    try:
        if all_:
            job_ids = [
                job.id
                for job in await image_jobs.list_dead_letters(
                    services.uow(), _OPERATOR, limit=10_000
                )
            ]
        for job_id in job_ids:
            await image_jobs.redrive(services.uow(), _OPERATOR, job_id)
        return len(job_ids)
    finally:
        await services.aclose()


@jobs_app.command("requeue")
def jobs_requeue(
    older_than_minutes: Annotated[
        int, typer.Option(min=0, help="Only jobs queued or started this long ago or longer.")
    ] = 30,
) -> None:
    """Queue again the jobs still queued or processing after a while, for when RabbitMQ lost
    its messages (a purged queue, a lost disk). A job that was only slow gets a duplicate
    message, which does nothing twice; a running API process's relay publishes them."""
    count, batches, hooks = asyncio.run(_requeue_unfinished(get_settings(), older_than_minutes))
    console.print(f"requeued {count} job(s), {batches} import batch(es) and {hooks} webhook(s)")


async def _requeue_unfinished(settings: Settings, older_than_minutes: int) -> tuple[int, int, int]:
    """Image jobs, the batches of rows of imports, and the webhooks still to deliver, all
    created that long ago or longer."""
    services = await bootstrap(settings, Role.CLI)
    try:
        cutoff = datetime.now(UTC) - timedelta(minutes=older_than_minutes)
        jobs = await image_jobs.requeue_unfinished(services.uow(), older_than=cutoff)
        batches = await imports.requeue_batches(services.uow(), created_before=cutoff)
        hooks = await webhook_delivery.requeue_pending(services.uow(), created_before=cutoff)
        return jobs, batches, hooks
    finally:
        await services.aclose()


def _job_summary(job: ImageJob) -> dict[str, object]:
    return {
        "id": job.id,
        "kind": job.kind.value,
        "product_id": job.product_id,
        "source_url": job.source_url,
        "attempts": job.attempts,
        "error": job.error,
        "error_code": job.error_code,
        "dead_lettered_at": job.dead_lettered_at.isoformat() if job.dead_lettered_at else None,
    }


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
    services = await bootstrap(settings, Role.CLI)
    try:
        return await user_service.create_user(
            services.uow(), email=email, name=name, is_admin=admin
        )
    finally:
        await services.aclose()


async def _demo_user(settings: Settings) -> tuple[User, IssuedToken]:
    """The demo admin of `make run`: created once, with a fresh token at every start that
    replaces the previous one (and the first, "initial"), so old printed tokens stop working."""
    services = await bootstrap(settings, Role.CLI)
    try:
        try:
            return await user_service.create_user(
                services.uow(), email=DEMO_EMAIL, name="Demo", is_admin=True
            )
        except EmailTaken:
            user = await user_service.find_user(services.uow(), DEMO_EMAIL)
            issued = await user_service.replace_named_tokens(
                services.uow(), user, "demo", revoke=("initial",)
            )
            return user, issued
    finally:
        await services.aclose()


def _print_quickstart(base: str, token: str, user: User, photos: str | None) -> None:
    """Plain text on stdout: rich would wrap the curl lines at 80 columns in a pipe."""
    images = f'["{photos}/{OTHER_PHOTO}"]' if photos is not None else "[]"
    product = (
        f"demo product {SKU}, with a photo this process serves itself:\n"
        f"  {photos}/{PRODUCT_PHOTO}\n"
        "(its compressed URL is printed here once the image is processed)\n\n"
        if photos is not None
        else ""
    )
    typer.echo(
        f"\nStockroom on {base}  (API docs: {base}/docs)\n"
        f"demo admin {user.email}, token:\n  {token}\n\n"
        f"{product}"
        "Try:\n"
        f"  export TOKEN={token}\n"
        f'  curl -s -X POST {base}/products -H "Authorization: Bearer $TOKEN" \\\n'
        "       -H 'Content-Type: application/json' \\\n"
        '       -d \'{"product_name": "Leaf poster", "product_price": "19.99",\n'
        f'            "product_images": {images}}}\'\n'
        f'  curl -s {base}/products -H "Authorization: Bearer $TOKEN"\n'
    )


# -- stockroom import: a client of the API ---------------------------------------------------

_FINAL_IMPORT = {"completed", "completed_with_errors", "failed"}


@app.command("import")
def import_csv(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file to import."),
    ],
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Follow the import to its end, then write its output CSV."),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON on stdout (the final status with --wait); the output CSV is then "
            "written only with --output.",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the output CSV here (default: stdout)."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="STOCKROOM_URL", help="The API's base URL (default: STOCKROOM_PUBLIC_BASE_URL)."
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="STOCKROOM_TOKEN", help="An API token (sr_...).")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="Called with the final status (webhook).")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Send again with the same key: imported once.")
    ] = None,
) -> None:
    """Upload a CSV of products to the API (`POST /imports`); with --wait, follow it with a
    progress bar and write the output CSV. Exit 1 when the file is refused or the import
    fails; 0 otherwise, also when some images failed (the status says so)."""
    if not token:
        console.print("[red]set STOCKROOM_TOKEN or pass --token[/red]")
        raise typer.Exit(2)
    base = (url or get_settings().public_base_url).rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=_IMPORT_TIMEOUT) as http:
            accepted = _upload_import(http, file, callback_url, idempotency_key, as_json)
            if not wait:
                _print_accepted(accepted, as_json)
                return
            status = _follow_import(http, accepted["status_url"], quiet=as_json)
            if output is not None or not as_json:
                _write_output(http, f"{accepted['status_url']}/output.csv", output)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {base}: {exc}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(status))
    else:
        console.print(
            f"import {status['request_id']} {status['status']}: {status['rows']:,} rows, "
            f"{status['images_done']:,} images processed, {status['images_failed']:,} failed"
            + (f" ({status['error']})" if status.get("error") else "")
        )
    if status["status"] == "failed":
        raise typer.Exit(1)


_IMPORT_TIMEOUT = httpx.Timeout(30.0, read=300.0)  # checking a 50 MB file takes a while


def _upload_import(
    http: httpx.Client,
    file: Path,
    callback_url: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> dict[str, Any]:
    """POST the file (streamed from disk); the 202's body, or exit 1 with the problems."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    data = {"callback_url": callback_url} if callback_url else {}
    with file.open("rb") as stream, console.status(f"uploading {file.name}..."):
        response = http.post(
            "/imports",
            files={"file": (file.name, stream, "text/csv")},
            data=data,
            headers=headers,
        )
    if response.status_code == 202:
        accepted: dict[str, Any] = response.json()
        return accepted
    _print_refusal(response, as_json)
    raise typer.Exit(1)


def _print_refusal(response: httpx.Response, as_json: bool) -> None:
    try:
        problem = response.json()
    except ValueError:
        problem = {"status": response.status_code, "title": response.text[:200]}
    if as_json:
        typer.echo(json.dumps(problem))
        return
    console.print(
        f"[red]refused ({response.status_code}): {problem.get('detail') or problem.get('title')}"
        "[/red]"
    )
    errors = problem.get("errors") or []
    if errors and "row" in errors[0]:
        table = Table("row", "column", "problem")
        for error in errors:
            table.add_row(str(error["row"]), error.get("column") or "", error["message"])
        console.print(table)
        if problem.get("total", len(errors)) > len(errors):
            console.print(f"... {problem['total'] - len(errors):,} more")
    for error in errors:
        if "field" in error:
            console.print(f"{error['field']}: {error['message']}")


def _print_accepted(accepted: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(accepted))
    else:
        console.print(
            f"import {accepted['request_id']} accepted; follow it at {accepted['status_url']}"
        )
        typer.echo(accepted["request_id"])


def _follow_import(http: httpx.Client, status_url: str, *, quiet: bool) -> dict[str, Any]:
    """Poll the status until it is final, with a progress bar of rows and images (stderr)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TextColumn("[progress.data.speed]{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        rows = progress.add_task("rows", total=None, note="", rate="")
        images = progress.add_task("images", total=None, note="", rate="")
        started = time.monotonic()
        while True:
            response = http.get(status_url)
            response.raise_for_status()
            status: dict[str, Any] = response.json()
            elapsed = max(time.monotonic() - started, 1e-6)
            done = status["images_done"] + status["images_failed"]
            progress.update(
                rows,
                total=status["rows"],
                completed=status.get("rows_done", 0),
                rate=f"{status.get('rows_done', 0) / elapsed:,.0f} rows/s",
            )
            progress.update(
                images,
                total=status["images_total"] or None,
                completed=done,
                note=f"{status['images_failed']:,} failed" if status["images_failed"] else "",
                rate=f"{done / elapsed:,.1f} images/s",
            )
            if status["status"] in _FINAL_IMPORT:
                return status
            time.sleep(0.5)


def _write_output(http: httpx.Client, path: str, output: Path | None) -> None:
    """Stream output.csv to the file, or to stdout."""
    with http.stream("GET", path) as response:
        response.raise_for_status()
        if output is None:
            for text in response.iter_text():
                typer.echo(text, nl=False)
            return
        with output.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
    console.print(f"output written to {output}")
