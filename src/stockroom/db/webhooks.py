"""Webhook messages and their delivery attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from stockroom.db.tables import outbox, webhook_attempts, webhook_messages
from stockroom.domain.models import WebhookAttempt, WebhookMessage, WebhookStatus
from stockroom.domain.webhooks import DeliveryResult


class SqlWebhookRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, message: WebhookMessage) -> None:
        await self._conn.execute(
            insert(webhook_messages),
            {
                "id": message.id,
                "user_id": message.user_id,
                "type": message.type,
                "url": message.url,
                "payload": message.payload.decode(),
                "job_id": message.job_id,
                "import_id": message.import_id,
                "status": message.status.value,
                "attempts": message.attempts,
                "created_at": message.created_at,
            },
        )

    async def get(self, message_id: str) -> WebhookMessage | None:
        row = (
            await self._conn.execute(
                select(webhook_messages).where(webhook_messages.c.id == message_id)
            )
        ).first()
        return _message_from(row._mapping) if row else None

    async def record_attempt(
        self,
        message: WebhookMessage,
        result: DeliveryResult,
        status: WebhookStatus,
        at: datetime,
    ) -> bool:
        attempt = message.attempts + 1
        # Locks the message: a second delivery of the same attempt waits here, then finds
        # the attempt counted and writes nothing.
        claimed = (
            await self._conn.execute(
                update(webhook_messages)
                .where(
                    webhook_messages.c.id == message.id,
                    webhook_messages.c.attempts == message.attempts,
                    webhook_messages.c.status == WebhookStatus.PENDING.value,
                )
                .values(
                    attempts=attempt,
                    status=status.value,
                    finished_at=None if status is WebhookStatus.PENDING else at,
                )
                .returning(webhook_messages.c.id)
            )
        ).first()
        if claimed is None:
            return False
        await self._conn.execute(
            insert(webhook_attempts),
            {
                "message_id": message.id,
                "user_id": message.user_id,
                "attempt": attempt,
                "status_code": result.status_code,
                "error": result.error[:255] if result.error else None,
                "duration_ms": result.duration_ms,
                "created_at": at,
            },
        )
        return True

    async def attempts(
        self,
        *,
        user_id: int | None,
        job_id: str | None = None,
        import_id: str | None = None,
        limit: int = 20,
        after: int | None = None,
    ) -> list[WebhookAttempt]:
        statement = select(
            webhook_attempts.c.id,
            webhook_attempts.c.attempt,
            webhook_attempts.c.status_code,
            webhook_attempts.c.error,
            webhook_attempts.c.created_at,
            webhook_messages.c.id.label("webhook_id"),
            webhook_messages.c.type,
            webhook_messages.c.url,
        ).join(webhook_messages, webhook_messages.c.id == webhook_attempts.c.message_id)
        if user_id is not None:
            statement = statement.where(webhook_attempts.c.user_id == user_id)
        if job_id is not None:
            statement = statement.where(webhook_messages.c.job_id == job_id)
        if import_id is not None:
            statement = statement.where(webhook_messages.c.import_id == import_id)
        if after is not None:
            statement = statement.where(webhook_attempts.c.id < after)
        statement = statement.order_by(webhook_attempts.c.id.desc()).limit(limit)
        return [
            WebhookAttempt(
                id=row.id,
                webhook_id=row.webhook_id,
                type=row.type,
                url=row.url,
                attempt=row.attempt,
                status_code=row.status_code,
                error=row.error,
                created_at=row.created_at,
            )
            for row in (await self._conn.execute(statement)).all()
        ]

    async def pending(self, created_before: datetime | None = None) -> list[str]:
        waiting = select(outbox.c.id).where(
            outbox.c.job_id == webhook_messages.c.id, outbox.c.published_at.is_(None)
        )
        statement = select(webhook_messages.c.id).where(
            webhook_messages.c.status == WebhookStatus.PENDING.value, ~waiting.exists()
        )
        if created_before is not None:
            statement = statement.where(webhook_messages.c.created_at < created_before)
        return [row[0] for row in (await self._conn.execute(statement)).all()]


def _message_from(values: Any) -> WebhookMessage:
    return WebhookMessage(
        id=values["id"],
        user_id=values["user_id"],
        type=values["type"],
        url=values["url"],
        payload=values["payload"].encode(),
        status=WebhookStatus(values["status"]),
        created_at=values["created_at"],
        attempts=values["attempts"],
        job_id=values["job_id"],
        import_id=values["import_id"],
        finished_at=values["finished_at"],
    )
