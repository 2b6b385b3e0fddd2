"""The outbox relay: publishes committed job rows to the broker, so a broker outage at
request time loses nothing. Runs in every API process; row locks keep relays apart."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from stockroom.background import cancel_requested, stop_task
from stockroom.domain.errors import BrokerUnavailable, DatabaseUnavailable
from stockroom.domain.ports import OutboxClaims, TaskQueue

log = structlog.get_logger("stockroom.relay")


class OutboxRelay:
    def __init__(
        self,
        claims: OutboxClaims,
        queue: TaskQueue,
        *,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        batch: int = 100,
    ) -> None:
        self._claims = claims
        self._queue = queue
        self._poll = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Called after a commit that wrote outbox rows: publish now, not at the next poll."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish what is waiting; returns how many were published. Stops at the first
        broker failure, keeping the rest (and that one) for the next round."""
        total = 0
        while True:
            failure: BrokerUnavailable | None = None
            async with self._claims.claim(self._batch) as batch:
                for message in batch.messages:
                    try:
                        await self._queue.publish(message)
                    except BrokerUnavailable as exc:
                        failure = exc
                        break
                    batch.published.append(message.id)
            total += len(batch.published)
            if failure is not None:
                raise failure
            if len(batch.messages) < self._batch:
                return total

    async def run(self) -> None:
        backoff = self._poll
        while not cancel_requested():
            self._wake.clear()
            try:
                count = await self.publish_pending()
                if count:
                    log.debug("outbox.published", count=count)
                backoff = self._poll
            except (BrokerUnavailable, DatabaseUnavailable) as exc:
                log.warning("outbox.publish_failed", error=str(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            except Exception:
                log.exception("outbox.relay_error")
                await asyncio.sleep(backoff)
                continue
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for drops a cancellation
            # that arrives in the turn the wake-up does, and the relay would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
