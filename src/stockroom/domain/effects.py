"""The one dispatcher of what writes did (`domain/events.py`), run after their commit: the
product and token caches' invalidations, the removal of files no image uses, the live status.

Each effect is best effort and isolated: one failing (Redis down, storage down) is logged
and never stops the others, nor fails the write that committed. The caches keep their own
guarantees (a fill read before an invalidation is refused; an invalidation that cannot reach
Redis opens the breaker and bumps the epoch when it is back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson
import structlog

from stockroom.domain.errors import Unavailable
from stockroom.domain.events import (
    DomainEvent,
    ImageChanged,
    ImportChanged,
    JobChanged,
    OutputsReleased,
    ProductChanged,
    TokenRevoked,
)
from stockroom.domain.live import EventKind, LiveEvent, LiveHub
from stockroom.domain.models import ImageJob, JobKind, OwnedImage
from stockroom.domain.ports import (
    ImageStore,
    Lookups,
    ProductCache,
    TokenCache,
    UnitOfWorkFactory,
)
from stockroom.domain.views import image_view, import_view, job_view

log = structlog.get_logger("stockroom.effects")


@dataclass(frozen=True)
class Effects:
    """Built once per process by `bootstrap`; every unit of work hands it its events."""

    cache: ProductCache
    token_cache: TokenCache
    store: ImageStore
    live: LiveHub
    uow_factory: UnitOfWorkFactory
    lookups: Lookups  # the live events' reads: one row each, on the hot path's own pool

    async def __call__(self, events: Sequence[DomainEvent]) -> None:
        for event in dict.fromkeys(events):  # in order, each once
            try:
                await self._run(event)
            except Exception:
                log.exception("effects.failed", event=type(event).__name__)

    async def _run(self, event: DomainEvent) -> None:
        match event:
            case ProductChanged(product_id):
                await self.cache.invalidate(product_id)
            case TokenRevoked(token_hash):
                await self.token_cache.invalidate(token_hash)
            case OutputsReleased(keys):
                await self._remove_unused(keys)
            case JobChanged(job_id, seen):
                await self._job(job_id, seen)
            case ImageChanged(product_id, image_id, seen):
                await self._image(product_id, image_id, seen)
            case ImportChanged(import_id):
                await self._import(import_id)

    async def _remove_unused(self, keys: Sequence[str]) -> None:
        """Outputs are content-addressed, so another image may share one: delete only keys
        no row points at. A storage failure leaves an orphan, not an error."""
        async with self.uow_factory() as uow:
            unused = [k for k in keys if not await uow.products.output_key_in_use(k)]
        if not unused:
            return
        try:
            await self.store.delete(unused)
        except Unavailable:
            log.warning("products.output_cleanup_failed", keys=len(unused))

    async def _job(self, job_id: str, seen: ImageJob | None) -> None:
        job = seen if seen is not None else await self.lookups.job(job_id)
        if job is not None and job.kind is JobKind.STANDALONE:
            await self._publish(job.user_id, "job", job_view(job))

    async def _image(self, product_id: int, image_id: int, seen: OwnedImage | None) -> None:
        found = seen if seen is not None else await self.lookups.image(product_id, image_id)
        if found is not None:
            image = found.image
            view = image_view(image) | {"product_id": product_id, "position": image.position}
            await self._publish(found.user_id, "image", view)

    async def _import(self, import_id: str) -> None:
        async with self.uow_factory() as uow:
            found = await uow.imports.get(import_id)
            if found is not None and not found.status.finished:  # counts live until the end
                tally = await uow.imports.tally(import_id)
                found = replace(found, images_done=tally.done, images_failed=tally.failed)
        if found is not None:
            await self._publish(found.user_id, "import", import_view(found))

    async def _publish(self, user_id: int, kind: EventKind, view: dict[str, object]) -> None:
        data = orjson.dumps(view, option=orjson.OPT_UTC_Z)
        await self.live.publish(LiveEvent(user_id, kind, data))
