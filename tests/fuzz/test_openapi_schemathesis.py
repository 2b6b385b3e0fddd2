"""Fuzz every operation of the published OpenAPI schema, in process, as a real user:
no input may cause a 500, and every response must match the schema the app publishes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi

from stockroom.app import create_app
from stockroom.config import Settings
from stockroom.db.engine import create_engine
from stockroom.db.uow import SqlUnitOfWork
from stockroom.domain import users
from tests.support.databases import sqlite_database

EXAMPLES_PER_OPERATION = 40
# The schema states types and bounds, not every rule (blank names, NUL bytes, http(s)-only
# URLs, a user_id that must exist), so a schema-valid request may rightly be a 422.
SEMANTIC_RULES_UNSTATED = schemathesis.checks.positive_data_acceptance


@dataclass(frozen=True)
class Target:
    app: FastAPI
    token: str
    token_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def _admin_token(database_url: str) -> tuple[str, int]:
    engine = create_engine(database_url, pool_size=1)
    try:
        _user, issued = await users.create_user(
            SqlUnitOfWork(engine), email="fuzz@example.com", is_admin=True
        )
    finally:
        await engine.dispose()
    return issued.secret, issued.token.id


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    with sqlite_database(folder) as url:
        token, token_id = asyncio.run(_admin_token(url))
        app = create_app(
            Settings(
                _env_file=None,  # type: ignore[call-arg]
                environment="test",
                database_url=url,
                storage_url=f"file://{folder / 'media'}",
                public_base_url="http://testserver",
                log_format="console",
                log_level="ERROR",
            )
        )
        try:
            yield Target(app, token, token_id)
        finally:
            # schemathesis started the app's lifespan in its own event-loop thread.
            asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(target: Target) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", target.app)


# `schemathesis.pytest.from_fixture` reads `Item._nodeid`, which pytest 9 no longer has, so
# each operation gets its own Hypothesis run inside one test per generation mode instead.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_input_causes_a_server_error_or_breaks_the_schema(
    api_schema: schemathesis.BaseSchema, target: Target, mode: GenerationMode
) -> None:
    failures: dict[str, BaseException] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: schemathesis.Case) -> None:
            _send(case, target)

        try:
            fuzz()
        except Unsatisfiable:
            # Nothing to negate (no parameters and no body): positive mode covers it.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as exc:
            failures[operation.label] = exc

    assert not failures, "\n\n".join(f"{label}:\n{exc}" for label, exc in failures.items())


def _send(case: schemathesis.Case, target: Target) -> None:
    if case.path_parameters and case.path_parameters.get("token_id") == target.token_id:
        # Revoking the fuzzer's own token would turn every later case into a 401.
        case.path_parameters["token_id"] = target.token_id + 1_000_000
    case.call_and_validate(headers=target.headers, excluded_checks=[SEMANTIC_RULES_UNSTATED])
