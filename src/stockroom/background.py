"""Tasks a process runs beside its requests (the outbox relay, the chores, the caches' and the
live status's Redis subscribers): how to stop one for sure."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog

log = structlog.get_logger("stockroom.background")


class BackgroundTask(Protocol):
    """What an API process starts after its startup and stops at shutdown."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


async def stop_task(task: asyncio.Task[Any] | None, *, every: float = 0.1) -> None:
    """Cancel `task` and return once it has ended, cancelling again every `every` seconds
    until it does.

    One cancellation is not always enough. A client library may turn it into an ordinary
    error (a driver interrupted in the middle of a rollback), which a loop that retries on
    errors then survives; Python 3.11's `asyncio.wait_for` drops one outright when what it
    waits for finishes in the same turn of the event loop. A shutdown awaiting such a task
    once would wait forever. An error the task ends with is logged, not raised: the rest of
    the shutdown still runs."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        # asyncio.wait neither raises the task's outcome nor cancels it if we are cancelled.
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled() and task.exception() is not None:
        log.warning("background.ended_with_error", task=task.get_name(), exc_info=task.exception())


def cancel_requested() -> bool:
    """Whether the running task was asked to stop, even if something on the way turned the
    cancellation into an error it then caught, or dropped it: a loop that retries on errors
    checks this each round, so that one stop is enough."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
