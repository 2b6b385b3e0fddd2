"""A 500 logs its traceback, in each log format, but never the caller's credentials nor
the webhook secret (issue #14: one 500 once printed a bearer token 34 times)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import Request
from sqlalchemy import text
from tests.conftest import make_account
from tests.support.databases import empty_tables_sql
from tests.support.settings import make_settings

from stockroom.api import middleware
from stockroom.app import create_app
from stockroom.services import Services

WEBHOOK_SECRET = "whsec_" + "Q2hhbmdlZCBteSBtaW5kIGFib3V0IHRoZSBrZXlzISE="


@pytest.fixture(autouse=True)
def _restore_stdlib_logging() -> Iterator[None]:
    """create_app points the root handler at capfd's stream, closed after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_a_500_logs_the_traceback_but_no_token_nor_secret(
    fmt: str,
    sqlite_url: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Built here, not by the `app` fixture: logging must be configured while capfd captures.
    settings = make_settings(
        sqlite_url,
        tmp_path / "media",
        log_format=fmt,
        log_level="INFO",
        webhook_secret=WEBHOOK_SECRET,
    )
    app = create_app(settings)
    # Module loggers are cached on first use (a hot-path saving): one an earlier test used
    # keeps that test's format, and one first used here would keep capfd's file after it is
    # closed. So: no caching in this test, and a fresh logger for the middleware.
    structlog.configure(cache_logger_on_first_use=False)
    monkeypatch.setattr(middleware, "log", structlog.get_logger("stockroom.http"))

    async def broken(request: Request) -> None:
        signing_key = settings.webhook_secret  # a secret held in a local
        raise RuntimeError(f"handler blew up ({len(signing_key or '')} byte key)")

    app.add_api_route("/_broken", broken)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        async with services.engine.begin() as connection:
            for statement in empty_tables_sql(connection.dialect.name):
                await connection.execute(text(statement))
        account = await make_account(services, "leaky@example.com")
        capfd.readouterr()  # start-up lines
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get(
                "/_broken",
                headers={**account.headers, "Cookie": f"session={account.token}; theme=dark"},
            )
        err = capfd.readouterr().err

    assert response.status_code == 500
    assert "http.unhandled_error" in err
    assert "RuntimeError" in err
    assert f"handler blew up ({len(WEBHOOK_SECRET)} byte key)" in err  # the traceback stays
    assert account.token.removeprefix("sr_") not in err
    assert WEBHOOK_SECRET.removeprefix("whsec_") not in err
    if fmt == "json":
        lines = [json.loads(line) for line in err.splitlines() if line.strip()]
        [error] = [line for line in lines if line["event"] == "http.unhandled_error"]
        assert "RuntimeError" in str(error)
