"""Webhook delivery: an event becomes a message row and an outbox row in the transaction of
the change it announces, so it is never lost; an actor on the `webhooks` queue sends it,
records every attempt and, until the retry schedule runs out, writes the next attempt to
the outbox with a time before which the relay does not publish it. Every attempt of one
message carries the same `webhook-id` (the message id)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stockroom.domain.models import User, WebhookAttempt, WebhookMessage, WebhookStatus
from stockroom.domain.ports import UnitOfWork, UnitOfWorkFactory, WebhookSender
from stockroom.domain.webhooks import DeliveryResult, WebhookType, build_payload, retry_delay

WEBHOOKS_QUEUE = "webhooks"
DELIVER_WEBHOOK = "deliver_webhook"
_FINAL_STATUS = {
    "delivered": WebhookStatus.DELIVERED,
    "gone": WebhookStatus.GONE,
    "refused": WebhookStatus.REFUSED,
}


def new_webhook(
    user_id: int,
    type_: WebhookType,
    url: str,
    data: Mapping[str, object],
    *,
    job_id: str | None = None,
    import_id: str | None = None,
) -> WebhookMessage:
    now = datetime.now(UTC)
    return WebhookMessage(
        id=f"msg_{uuid.uuid4().hex[:28]}",
        user_id=user_id,
        type=type_,
        url=url,
        payload=build_payload(type_, data, now),
        status=WebhookStatus.PENDING,
        created_at=now,
        job_id=job_id,
        import_id=import_id,
    )


async def queue_webhook(uow: UnitOfWork, message: WebhookMessage) -> None:
    """Inside the caller's transaction: the message and its first outbox row."""
    await uow.webhooks.add(message)
    await uow.outbox.add(message.id, DELIVER_WEBHOOK, WEBHOOKS_QUEUE, None)


async def deliver(
    uow_factory: UnitOfWorkFactory,
    sender: WebhookSender,
    message_id: str,
    schedule: Sequence[float],
    rng: random.Random | None = None,
) -> DeliveryResult | None:
    """One attempt of a pending message; None when there is nothing to do (settled, or
    unknown). A delivery of the broker's that repeats an attempt already recorded sends it
    again (receivers deduplicate by webhook-id) and records nothing."""
    async with uow_factory() as uow:
        message = await uow.webhooks.get(message_id)
    if message is None or message.status is not WebhookStatus.PENDING:
        return None
    result = await sender.send(message.url, message.id, message.payload)
    delay = None if result.final else retry_delay(message.attempts + 1, schedule, rng)
    status = _FINAL_STATUS.get(result.outcome) or (
        WebhookStatus.PENDING if delay is not None else WebhookStatus.FAILED
    )
    now = datetime.now(UTC)
    async with uow_factory() as uow:
        if await uow.webhooks.record_attempt(message, result, status, now):
            if delay is not None:
                await uow.outbox.add(
                    message.id,
                    DELIVER_WEBHOOK,
                    WEBHOOKS_QUEUE,
                    None,
                    not_before=now + timedelta(seconds=delay),
                )
            await uow.commit()
    return result


async def requeue_pending(uow: UnitOfWork, created_before: datetime | None = None) -> int:
    """Queue again, through the outbox, the webhooks still to deliver whose broker message
    was lost (embedded mode's in-memory queue at a restart, a purged RabbitMQ queue). An
    attempt sent twice is recorded once; receivers deduplicate by webhook-id."""
    async with uow:
        ids = await uow.webhooks.pending(created_before)
        await uow.outbox.add_many(ids, DELIVER_WEBHOOK, WEBHOOKS_QUEUE, None)
        await uow.commit()
    return len(ids)


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    items: list[WebhookAttempt]
    next_cursor: int | None


async def list_deliveries(
    uow: UnitOfWork,
    actor: User,
    *,
    job_id: str | None = None,
    import_id: str | None = None,
    limit: int = 20,
    after: int | None = None,
) -> DeliveryPage:
    """The caller's delivery attempts, newest first (an admin's list holds everyone's)."""
    async with uow:
        found = await uow.webhooks.attempts(
            user_id=None if actor.is_admin else actor.id,
            job_id=job_id,
            import_id=import_id,
            limit=limit + 1,
            after=after,
        )
    items = found[:limit]
    return DeliveryPage(items, items[-1].id if len(found) > limit else None)
