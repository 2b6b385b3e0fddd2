"""The image pipeline service: one job from source bytes to a stored, written-back result.

fetch (guarded) -> libvips -> object storage -> DB write-back -> cache invalidation.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import structlog

from stockroom.config import Settings
from stockroom.domain import image_jobs
from stockroom.domain.errors import (
    ImageError,
    ImageStorageError,
    RetriesExhausted,
    StockroomError,
    Unavailable,
)
from stockroom.domain.models import ImageJob, ImageResult
from stockroom.domain.operations import parse_operations_json
from stockroom.domain.ports import ImageStore, JobTransitions, ProductCache, UnitOfWorkFactory
from stockroom.pipeline.content_address import content_key
from stockroom.pipeline.fetch import ImageFetcher
from stockroom.pipeline.metrics import IMAGE_BYTES, IMAGE_JOB_SECONDS, IMAGE_JOBS
from stockroom.pipeline.operations import process
from stockroom.pipeline.webhooks import WebhookSender

log = structlog.get_logger("stockroom.pipeline")
T = TypeVar("T")


@dataclass(frozen=True)
class PipelineContext:
    """What the pipeline needs, built once per worker process (or embedded app)."""

    settings: Settings
    uow_factory: UnitOfWorkFactory
    transitions: JobTransitions
    store: ImageStore
    cache: ProductCache | None
    # One per process: keeps connections to the origins alive between jobs.
    fetcher: ImageFetcher
    # libvips runs on these threads only (`worker_image_concurrency` of them): at most that
    # many images decoded at once in this process. A job that finds them busy waits in the
    # executor's queue, and a thread that finishes one image starts the next queued one
    # itself, without a round trip through the event loop.
    image_executor: ThreadPoolExecutor
    # Signs and posts webhooks; None when no STOCKROOM_WEBHOOK_SECRET is set.
    webhooks: WebhookSender | None = None

    async def aclose(self) -> None:
        """Release what this context holds alone: the libvips threads and the connections."""
        self.image_executor.shutdown(wait=False, cancel_futures=True)
        await self.fetcher.aclose()
        if self.webhooks is not None:
            await self.webhooks.aclose()


async def run_image_job(job_id: str, ctx: PipelineContext, *, last_attempt: bool) -> None:
    """Process one delivery of a job. Raises on failure so the broker retries or
    dead-letters it, after the failure is recorded in the database."""
    job = await image_jobs.start_job(ctx.transitions, ctx.uow_factory(), job_id)
    if job is None:
        IMAGE_JOBS.labels("skipped").inc()
        log.info("image.skipped", job_id=job_id, reason="finished, superseded or missing")
        return
    bound = log.bind(job_id=job.id, product_id=job.product_id, attempt=job.attempts)
    started = time.perf_counter()
    try:
        result, vips = await _produce(job, ctx, bound)
    except Exception as exc:
        await _record_failure(job, ctx, exc, last_attempt=last_attempt, log=bound)
        raise
    written = await image_jobs.succeed_job(ctx.transitions, job, result)
    seconds = time.perf_counter() - started
    IMAGE_JOBS.labels("succeeded").inc()
    IMAGE_JOB_SECONDS.observe(seconds)
    IMAGE_BYTES.labels("in").inc(result.bytes_in)
    IMAGE_BYTES.labels("out").inc(result.bytes_out)
    bound.info(
        "image.processed",
        ms=round(seconds * 1000, 1),
        bytes_in=result.bytes_in,
        bytes_out=result.bytes_out,
        width=result.width,
        height=result.height,
        written=written,
        queued_ms=round(vips.queued * 1000, 1),
        vips_ms=round(vips.ran * 1000, 1),
    )


@dataclass(frozen=True, slots=True)
class _VipsTime:
    """Seconds a job waited for a libvips thread, and ran on it."""

    queued: float
    ran: float


def _timed(work: Callable[[], T], submitted: float) -> tuple[T, _VipsTime]:
    began = time.perf_counter()
    value = work()
    return value, _VipsTime(began - submitted, time.perf_counter() - began)


async def _produce(
    job: ImageJob, ctx: PipelineContext, bound: structlog.BoundLogger
) -> tuple[ImageResult, _VipsTime]:
    settings = ctx.settings
    fetched_at = time.perf_counter()
    source = await _source_bytes(job, ctx)
    bound.info(
        "image.fetched",
        ms=round((time.perf_counter() - fetched_at) * 1000, 1),
        bytes=len(source),
    )
    ops = parse_operations_json(job.operations)
    # The other jobs download and write back on the event loop meanwhile.
    work = functools.partial(
        process,
        source,
        ops or None,
        jpeg_quality=settings.jpeg_quality,
        max_pixels=settings.max_image_pixels,
    )
    processed, vips = await asyncio.get_running_loop().run_in_executor(
        ctx.image_executor, _timed, work, time.perf_counter()
    )
    key = content_key(processed.data, processed.extension)
    try:
        url = await ctx.store.put(key, processed.data, processed.content_type)
    except Unavailable as exc:
        raise ImageStorageError(f"storing the result failed: {exc.detail}") from exc
    result = ImageResult(
        output_key=key,
        output_url=url,
        width=processed.width,
        height=processed.height,
        bytes_in=len(source),
        bytes_out=len(processed.data),
    )
    return result, vips


async def _source_bytes(job: ImageJob, ctx: PipelineContext) -> bytes:
    if job.source_key is not None:  # an upload, kept in storage until processed
        try:
            return await ctx.store.get(job.source_key)
        except Unavailable as exc:
            raise ImageStorageError(f"reading the upload failed: {exc.detail}") from exc
    assert job.source_url is not None
    fetched = await ctx.fetcher.fetch(job.source_url)
    return fetched.data


async def _record_failure(
    job: ImageJob,
    ctx: PipelineContext,
    exc: Exception,
    *,
    last_attempt: bool,
    log: structlog.BoundLogger,
) -> None:
    error: ImageError
    if isinstance(exc, ImageError) and (exc.permanent or not last_attempt):
        error = exc
    elif last_attempt:
        detail = exc.detail if isinstance(exc, StockroomError) else type(exc).__name__
        error = RetriesExhausted(f"gave up after {job.attempts} attempts; last error: {detail}")
    else:  # not an image problem (a bug, the database): retry, nothing to tell the client yet
        IMAGE_JOBS.labels("retried").inc()
        log.warning("image.attempt_failed", error=type(exc).__name__, exc_info=True)
        return
    final = error.permanent
    IMAGE_JOBS.labels("dead_lettered" if final else "retried").inc()
    log.warning(
        "image.failed",
        error_code=error.code,
        error=error.detail,
        final=final,
        exc_info=not isinstance(exc, StockroomError),
    )
    try:
        await image_jobs.fail_job(ctx.uow_factory(), job, error, final=final)
    except Exception:
        log.exception("image.failure_not_recorded")
        return
    if final:
        log.error("image.dead_lettered", error_code=error.code)
