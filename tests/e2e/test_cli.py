"""The operator's commands, run as a user would: `stockroom ...` in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import pyvips

from stockroom.bootstrap import Role, bootstrap
from stockroom.cli import _demo_user
from stockroom.config import Settings
from stockroom.db.migrate import upgrade
from stockroom.domain import users
from stockroom.domain.errors import InvalidToken
from stockroom.domain.models import User
from tests.support.services import free_port
from tests.support.settings import make_settings

STOCKROOM = Path(sys.executable).with_name("stockroom")
# What `serve --demo` prints once the demo image is processed (or not): its first line.
OUTCOME = re.compile(r"demo product (\d+ \(DEMO-1\)|:)")


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STOCKROOM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "STOCKROOM_STORAGE_URL": f"file://{tmp_path / 'media'}",
        "STOCKROOM_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    return subprocess.run(
        [str(STOCKROOM), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_migrate_then_create_users_and_list_dead_letters(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0

    created = run(tmp_path, "users", "create", "--email", "Ops@Example.com", "--admin", "--json")
    again = run(tmp_path, "users", "create", "--email", "ops@example.com", "--json")
    letters = run(tmp_path, "dlq", "list", "--json")
    nothing = run(tmp_path, "dlq", "retry")

    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)
    assert user["email"] == "ops@example.com"
    assert user["is_admin"] is True
    assert user["token"].startswith("sr_")
    assert again.returncode == 1  # the email is taken, whatever its case
    assert letters.returncode == 0
    assert letters.stdout == ""
    assert nothing.returncode == 2  # neither ids nor --all


def test_worker_refuses_the_embedded_broker(tmp_path: Path) -> None:
    result = run(tmp_path, "worker")

    assert result.returncode == 2
    assert "memory://" in result.stderr


def test_jobs_requeue_reports_what_it_queued_again(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0

    requeued = run(tmp_path, "jobs", "requeue", "--older-than-minutes", "0")
    negative = run(tmp_path, "jobs", "requeue", "--older-than-minutes", "-1")

    assert requeued.returncode == 0, requeued.stderr
    assert "requeued 0 job(s)" in requeued.stderr
    assert negative.returncode == 2


def test_serve_demo_refuses_production(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--demo", env={"STOCKROOM_ENVIRONMENT": "production"})

    assert result.returncode == 2
    assert "--demo" in result.stderr
    assert "environment=production" in result.stderr
    assert not (tmp_path / "cli.db").exists()  # refused before migrating anything


def test_serve_demo_refuses_a_database_other_than_sqlite(tmp_path: Path) -> None:
    url = "postgresql://stockroom:hunter2-password@127.0.0.1:1/stockroom"

    result = run(tmp_path, "serve", "--demo", env={"STOCKROOM_DATABASE_URL": url})

    assert result.returncode == 2  # at once: port 1 is never dialled
    assert "database postgresql+asyncpg" in result.stderr
    assert "hunter2" not in result.stderr


def test_each_demo_start_revokes_the_previous_demo_token(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}", tmp_path / "media")
    upgrade(settings.database_url)

    starts = [asyncio.run(_demo_user(settings)) for _ in range(3)]

    [first_user, _, last_user] = [user for user, _issued in starts]
    [initial, previous, current] = [issued for _user, issued in starts]
    assert first_user == last_user  # the same demo admin, created once
    assert (initial.token.name, previous.token.name) == ("initial", "demo")
    for revoked in (initial, previous):
        with pytest.raises(InvalidToken):
            asyncio.run(_authenticate(settings, revoked.secret))
    assert asyncio.run(_authenticate(settings, current.secret)) == last_user


async def _authenticate(settings: Settings, secret: str) -> User:
    services = await bootstrap(settings, Role.CLI)
    try:
        return await users.authenticate(services.lookups, secret)
    finally:
        await services.aclose()


def test_stockroom_alone_prints_the_help(tmp_path: Path) -> None:
    result = run(tmp_path)

    # Click answers a bare group with its help and the usage-error code.
    assert result.returncode == 2
    help_text = result.stdout + result.stderr
    assert "Usage: stockroom" in help_text
    for command in ("serve", "worker", "migrate", "users", "dlq", "jobs"):
        assert command in help_text


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    result = run(tmp_path, "--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"stockroom {version('stockroom')}\n"


@pytest.mark.slow
def test_serve_demo_processes_its_own_photo_once_per_database(tmp_path: Path) -> None:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"

    first = serve_demo_until_announced(tmp_path, port)
    again = serve_demo_until_announced(tmp_path, port)

    assert f"{origin}/media/demo/colorful-cups.jpg" in first
    [first_line, compressed] = announcement(first)
    assert first_line == "demo product 1 (DEMO-1) is ready; its compressed image:"
    assert compressed.startswith(f"{origin}/media/img/")
    assert announcement(again) == [first_line, compressed]  # the same product, not a second
    photo = (tmp_path / "media" / compressed.removeprefix(f"{origin}/media/")).read_bytes()
    upright = pyvips.Image.new_from_buffer(photo, "")
    # The shipped photo is stored 1200x1600 with EXIF orientation 6: auto-oriented.
    assert (upright.get("vips-loader"), upright.width, upright.height) == (
        "jpegload_buffer",
        1600,
        1200,
    )


def serve_demo_until_announced(tmp_path: Path, port: int) -> str:
    """Run `serve --demo` until it prints the demo image's outcome; its stdout so far."""
    env = {
        **os.environ,
        "STOCKROOM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "STOCKROOM_STORAGE_URL": f"file://{tmp_path / 'media'}",
        "STOCKROOM_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "serve.log"
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            [str(STOCKROOM), "serve", "--demo", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as server,
    ):
        assert server.stdout is not None
        lines: list[str] = []
        try:
            for line in server.stdout:  # the test's timeout bounds this
                lines.append(line)
                if len(lines) > 1 and OUTCOME.match(lines[-2]):  # and the line after it
                    break
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    stdout = "".join(lines)
    assert OUTCOME.search(stdout), f"no outcome printed; stderr ends:\n{log.read_text()[-2000:]}"
    return stdout


def announcement(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    [start] = [i for i, line in enumerate(lines) if OUTCOME.match(line)]
    return [line.strip() for line in lines[start : start + 2]]
