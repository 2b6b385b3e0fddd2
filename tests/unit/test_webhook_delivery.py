"""Webhook delivery with fakes: each attempt recorded once, the next one written to the
outbox with its delay, and the messages a lost queue dropped queued again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stockroom.domain import users, webhook_delivery
from stockroom.domain.models import User, WebhookStatus
from stockroom.domain.webhooks import DeliveryResult
from tests.unit.fakes import FakeDatabase

URL = "https://hooks.example.com/in"


class Receiver:
    """A WebhookSender whose answers are given in advance."""

    def __init__(self, *outcomes: str) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[str] = []

    async def send(self, url: str, webhook_id: str, payload: bytes) -> DeliveryResult:
        self.sent.append(webhook_id)
        outcome = self.outcomes.pop(0)
        code = {"delivered": 200, "retry": 500, "gone": 410}.get(outcome)
        return DeliveryResult(code, None if outcome == "delivered" else "no", outcome, 1.0)  # type: ignore[arg-type]


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
async def alice(db: FakeDatabase) -> User:
    user, _ = await users.create_user(db.uow(), email="alice@example.com")
    return user


async def queued(db: FakeDatabase, alice: User) -> str:
    message = webhook_delivery.new_webhook(alice.id, "job.succeeded", URL, {"id": "j"})
    async with db.uow() as uow:
        await webhook_delivery.queue_webhook(uow, message)
        await uow.commit()
    return message.id


def outbox_rows(db: FakeDatabase, message_id: str) -> list[bool]:
    """Whether each of the message's outbox rows is published yet, oldest first."""
    rows = sorted(db.tables.outbox.values(), key=lambda row: row[0].id)
    return [published is not None for message, published in rows if message.job_id == message_id]


async def publish_all(db: FakeDatabase) -> None:
    async with db.uow() as uow:
        await uow.outbox.mark_published(list(db.tables.outbox))
        await uow.commit()


async def test_a_retry_is_an_outbox_row_due_after_its_delay(db: FakeDatabase, alice: User) -> None:
    message_id = await queued(db, alice)
    await publish_all(db)
    receiver = Receiver("retry", "delivered")
    before = datetime.now(UTC)

    await webhook_delivery.deliver(db.uow, receiver, message_id, (30.0,))

    assert db.tables.webhooks[message_id].status is WebhookStatus.PENDING
    assert outbox_rows(db, message_id) == [True, False]
    (retry_id,) = [row_id for row_id, (m, p) in db.tables.outbox.items() if p is None]
    due = db.tables.outbox_not_before[retry_id]
    assert before + timedelta(seconds=15) <= due <= datetime.now(UTC) + timedelta(seconds=30)

    await webhook_delivery.deliver(db.uow, receiver, message_id, (30.0,))

    assert db.tables.webhooks[message_id].status is WebhookStatus.DELIVERED
    assert receiver.sent == [message_id, message_id]
    attempts = sorted((a for a, *_ in db.tables.webhook_attempts.values()), key=lambda a: a.id)
    assert [(a.attempt, a.status_code) for a in attempts] == [
        (1, 500),
        (2, 200),
    ]


@pytest.mark.parametrize(
    ("outcomes", "schedule", "status"),
    [(("gone",), (30.0,), WebhookStatus.GONE), (("retry",), (), WebhookStatus.FAILED)],
)
async def test_a_gone_receiver_or_a_spent_schedule_ends_the_delivery(
    db: FakeDatabase,
    alice: User,
    outcomes: tuple[str, ...],
    schedule: tuple[float, ...],
    status: WebhookStatus,
) -> None:
    message_id = await queued(db, alice)
    await publish_all(db)

    await webhook_delivery.deliver(db.uow, Receiver(*outcomes), message_id, schedule)

    assert db.tables.webhooks[message_id].status is status
    assert outbox_rows(db, message_id) == [True]  # nothing more to publish
    assert await webhook_delivery.deliver(db.uow, Receiver(), message_id, schedule) is None


async def test_messages_a_lost_queue_dropped_are_queued_again(
    db: FakeDatabase, alice: User
) -> None:
    waiting = await queued(db, alice)
    assert await webhook_delivery.requeue_pending(db.uow()) == 0  # its row is in the outbox
    await publish_all(db)  # ... then on a broker that lost it
    done = await queued(db, alice)
    await publish_all(db)
    await webhook_delivery.deliver(db.uow, Receiver("delivered"), done, (30.0,))

    assert await webhook_delivery.requeue_pending(db.uow()) == 1
    assert outbox_rows(db, waiting) == [True, False]
    assert outbox_rows(db, done) == [True]
    assert await webhook_delivery.requeue_pending(db.uow()) == 0  # queued once
