"""Liveness, readiness and metrics: the endpoints that need no token."""

from __future__ import annotations

import asyncio
import contextlib
import os

import orjson
from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from stockroom.api.deps import ServicesDep
from stockroom.api.errors import problem
from stockroom.domain import image_jobs
from stockroom.domain.errors import Unavailable
from stockroom.pipeline.metrics import JOBS_BY_STATE, OUTBOX_BACKLOG

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a dependency is down"}})
async def ready(services: ServicesDep) -> Response:
    names = list(services.readiness)
    results = await asyncio.gather(
        *(services.readiness[name]() for name in names), return_exceptions=True
    )
    checks = {
        name: "ok" if result is None else "failed"
        for name, result in zip(names, results, strict=True)
    }
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return problem(
            503,
            "Service Unavailable",
            f"not ready: {', '.join(failed)} did not answer",
            headers={"Retry-After": "5"},
        )
    body = orjson.dumps({"status": "ready", "checks": checks})
    return Response(body, media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    """Process metrics, plus queue depth and dead letters read from the database."""
    with contextlib.suppress(Unavailable):
        counts = await image_jobs.pipeline_counts(services.uow())
        OUTBOX_BACKLOG.set(counts.pop("outbox_unpublished"))
        for state, value in counts.items():
            JOBS_BY_STATE.labels(state).set(value)
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


def _registry() -> CollectorRegistry:
    """This process's metrics; with `serve --workers N` (prometheus_client's multiprocess
    mode, `PROMETHEUS_MULTIPROC_DIR` set by `serve`), those of every API process summed."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
