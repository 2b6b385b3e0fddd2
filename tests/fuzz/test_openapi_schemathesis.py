"""Fuzz every operation of the published OpenAPI schema, in process, as a real user:
no input may cause a 500, and every response must match the schema the app publishes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.python import asgi

from stockroom.app import create_app
from stockroom.config import Settings
from stockroom.db.engine import create_engine
from stockroom.db.uow import SqlUnitOfWork
from stockroom.domain import users
from tests.support.databases import sqlite_database
from tests.support.services import free_port

EXAMPLES_PER_OPERATION = 40
Operation = APIOperation[Any, Any, Any, Any]
# The schema states types and bounds, not every rule (blank names, NUL bytes, http(s)-only
# URLs, a user_id that must exist), so a schema-valid request may rightly be a 422.
SEMANTIC_RULES_UNSTATED = schemathesis.checks.positive_data_acceptance


@dataclass(frozen=True)
class Target:
    app: FastAPI
    token: str
    token_id: int


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
                _env_file=None,
                environment="test",
                database_url=url,
                storage_url=f"file://{folder / 'media'}",
                public_base_url="http://testserver",
                log_format="console",
                log_level="ERROR",
                # No pipeline runs beside the fuzzer: the jobs it creates stay in the outbox
                # (a broker port nothing listens on; an in-process cache needs the in-process
                # broker). Jobs processed in threads beside Hypothesis once made CPython 3.11's
                # parser fail ("AST constructor recursion depth mismatch"), and the HTTP
                # surface is what this test is about.
                broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
                cache_url="none://",
                job_max_retries=0,
                # Schemathesis sends hundreds of requests without a token and expects 401
                # each time; the per-address budget would answer 429 (tested elsewhere).
                rate_limit_auth_failures_per_minute=0,
                rate_limit_writes_per_minute=0,
            )
        )
        try:
            yield Target(app, token, token_id)
        finally:
            # schemathesis started the app's lifespan in its own event-loop thread.
            asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(target: Target) -> schemathesis.BaseSchema:
    # Given as config (not as headers on each call), so negative cases that drop or mangle
    # the token are known to Schemathesis and expected to get a 401.
    config = schemathesis.Config.from_dict(
        {"auth": {"openapi": {"HTTPBearer": {"bearer": target.token}}}}
    )
    return schemathesis.openapi.from_asgi("/openapi.json", target.app, config=config)


# `schemathesis.pytest.from_fixture` reads `Item._nodeid`, which pytest 9 no longer has, so
# each operation gets its own Hypothesis run inside one test per generation mode instead.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_input_causes_a_server_error_or_breaks_the_schema(
    api_schema: schemathesis.BaseSchema, target: Target, mode: GenerationMode
) -> None:
    failures: dict[str, BaseException] = {}
    statuses: Counter[tuple[str, int]] = Counter()
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the published schema itself is broken
        operation = result.ok()
        if operation.label == "GET /ready":
            continue  # it takes no input, and rightly answers 503 here (the broker is down)
        if operation.label == "GET /events":
            continue  # an endless stream (tests/integration/test_events_api.py covers it)
        try:
            _fuzz(operation, mode, target, statuses)
        except Unsatisfiable:
            # Nothing to negate (no parameters and no body): positive mode covers it.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as exc:
            failures[operation.label] = exc

    assert not failures, "\n\n".join(f"{label}:\n{_describe(e)}" for label, e in failures.items())
    if mode is GenerationMode.POSITIVE:  # the token was really sent: some calls got through
        assert statuses["GET /me", 200] > 0, statuses
        assert statuses["POST /products", 201] > 0, statuses


def _fuzz(
    operation: Operation, mode: GenerationMode, target: Target, statuses: Counter[tuple[str, int]]
) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case[Operation]) -> None:
        response = _send(case, target)
        statuses[operation.label, response.status_code] += 1

    fuzz()


def _describe(exc: BaseException) -> str:
    """The failure with its sub-failures: Hypothesis wraps a flaky one in a group."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join([str(exc), *(_describe(sub) for sub in exc.exceptions)])
    return str(exc)


def _send(case: schemathesis.Case[Operation], target: Target) -> schemathesis.Response:
    if case.path_parameters and case.path_parameters.get("token_id") == target.token_id:
        # Revoking the fuzzer's own token would turn every later case into a 401.
        case.path_parameters["token_id"] = target.token_id + 1_000_000
    excluded = [SEMANTIC_RULES_UNSTATED]
    if _a_form_field_is_sent_as_absent(case):
        excluded.append(schemathesis.checks.negative_data_rejection)
    return case.call_and_validate(excluded_checks=excluded)


def _a_form_field_is_sent_as_absent(case: schemathesis.Case[Operation]) -> bool:
    """A negative case that turned a multipart field into an empty list: a form has no empty
    list, so the field is sent as no part at all, the same request as one without it, which
    the schema allows. Such a case is not invalid on the wire."""
    return (
        (case.media_type or "").startswith("multipart/")
        and isinstance(case.body, dict)
        and any(value == [] for value in case.body.values())
    )
