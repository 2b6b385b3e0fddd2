"""A chore an API process runs every few seconds beside the outbox relay (expiring direct
uploads). Every instance runs it: chores are single UPDATEs that are harmless to repeat."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from stockroom.background import cancel_requested, stop_task

log = structlog.get_logger("stockroom.periodic")


class Periodic:
    def __init__(self, name: str, every: float, chore: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self._every = every
        self._chore = chore
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while not cancel_requested():
            await asyncio.sleep(self._every)
            try:
                await self._chore()
            except Exception:  # the database may be down: try again at the next round
                log.warning("periodic.failed", chore=self.name, exc_info=True)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
