"""Dramatiq actors: thin entrypoints that take a job id and call the pipeline service.

Declared on an explicit broker (no import-time global). The actor itself is synchronous:
it reads the message (retries, request id) on the worker thread, where Dramatiq's
CurrentMessage lives, then hands the async pipeline to `run`, which runs it to the end on
an event loop (a worker process's, or the API's in embedded mode), with those values passed
explicitly and bound into that task's structlog context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from stockroom.config import Settings
from stockroom.domain import imports
from stockroom.domain.image_jobs import ACTOR_BY_QUEUE, IMPORTS_QUEUE, QUEUES
from stockroom.domain.webhook_delivery import DELIVER_WEBHOOK, WEBHOOKS_QUEUE, deliver
from stockroom.pipeline.metrics import WEBHOOK_ATTEMPTS
from stockroom.pipeline.processing import PipelineContext, run_image_job

log = structlog.get_logger("stockroom.webhooks")
ContextFactory = Callable[[], Awaitable[PipelineContext]]
Runner = Callable[[Coroutine[Any, Any, None]], None]
"""Runs a coroutine to its end on an event loop, from a Dramatiq worker thread."""


def declare_actors(
    broker: dramatiq.Broker, settings: Settings, context: ContextFactory, run: Runner
) -> list[dramatiq.Actor[Any, Any]]:
    max_retries = settings.job_max_retries

    def retry_when(retries: int, exc: BaseException) -> bool:
        """Permanent image errors (404, not an image, too large) are not worth a retry."""
        return not getattr(exc, "permanent", False) and retries < max_retries

    async def job(job_id: str, message_id: str, request_id: str | None, last: bool) -> None:
        structlog.contextvars.bind_contextvars(
            job_id=job_id, message_id=message_id, request_id=request_id
        )
        await run_image_job(job_id, await context(), last_attempt=last)

    def process_image(job_id: str) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None, "the CurrentMessage middleware is required"
        retries = int(message.options.get("retries", 0))
        run(
            job(
                job_id,
                message.message_id,
                message.options.get("request_id"),
                retries >= max_retries,
            )
        )

    # One actor per queue (a queue per kind of work), both running the same pipeline.
    return [
        dramatiq.actor(
            broker=broker,
            actor_name=ACTOR_BY_QUEUE[queue],
            queue_name=queue,
            max_retries=max_retries,
            min_backoff=settings.job_min_backoff_ms,
            max_backoff=settings.job_max_backoff_ms,
            retry_when=retry_when,
        )(process_image)
        for queue in QUEUES
    ] + [
        declare_import_batches(broker, settings, context, run),
        declare_webhook_delivery(broker, settings, context, run),
    ]


def declare_import_batches(
    broker: dramatiq.Broker, settings: Settings, context: ContextFactory, run: Runner
) -> dramatiq.Actor[Any, Any]:
    """The actor that writes a CSV import's batch of rows, on the imports' queue (its
    images follow on the same queue). Every failure is retried; the last one fails the
    import (domain/imports.py `run_batch`)."""
    max_retries = settings.job_max_retries

    async def batch(batch_id: str, message_id: str, request_id: str | None, last: bool) -> None:
        structlog.contextvars.bind_contextvars(
            batch_id=batch_id, message_id=message_id, request_id=request_id
        )
        ctx = await context()
        await imports.run_batch(ctx.uow_factory, batch_id, last_attempt=last)

    def apply_import_batch(batch_id: str) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None, "the CurrentMessage middleware is required"
        retries = int(message.options.get("retries", 0))
        run(
            batch(
                batch_id,
                message.message_id,
                message.options.get("request_id"),
                retries >= max_retries,
            )
        )

    return dramatiq.actor(
        broker=broker,
        actor_name=imports.APPLY_BATCH,
        queue_name=IMPORTS_QUEUE,
        max_retries=max_retries,
        min_backoff=settings.job_min_backoff_ms,
        max_backoff=settings.job_max_backoff_ms,
    )(apply_import_batch)


def declare_webhook_delivery(
    broker: dramatiq.Broker, settings: Settings, context: ContextFactory, run: Runner
) -> dramatiq.Actor[Any, Any]:
    """The actor that makes one attempt of a webhook, on the webhooks' own queue. Its retries
    are not Dramatiq's: `deliver` writes the next attempt to the outbox, due after the
    schedule's delay. Dramatiq retries only what failed around the attempt (the database)."""

    async def attempt(message_id: str, dramatiq_message_id: str) -> None:
        structlog.contextvars.bind_contextvars(
            webhook_id=message_id, message_id=dramatiq_message_id
        )
        ctx = await context()
        if ctx.webhooks is None:
            log.error("webhook.not_sent", reason="STOCKROOM_WEBHOOK_SECRET is not set")
            return
        result = await deliver(
            ctx.uow_factory, ctx.webhooks, message_id, settings.webhook_retry_schedule
        )
        if result is not None:
            WEBHOOK_ATTEMPTS.labels(result.outcome).inc()
            log.info(
                "webhook.attempted",
                outcome=result.outcome,
                status_code=result.status_code,
                error=result.error,
                ms=round(result.duration_ms, 1),
            )

    def deliver_webhook(message_id: str) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None, "the CurrentMessage middleware is required"
        run(attempt(message_id, message.message_id))

    return dramatiq.actor(
        broker=broker,
        actor_name=DELIVER_WEBHOOK,
        queue_name=WEBHOOKS_QUEUE,
        max_retries=settings.job_max_retries,
        min_backoff=settings.job_min_backoff_ms,
        max_backoff=settings.job_max_backoff_ms,
    )(deliver_webhook)
