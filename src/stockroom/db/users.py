"""User, token and idempotency-key rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from stockroom.db.tables import api_tokens, idempotency_keys, users
from stockroom.domain.errors import EmailTaken, IdempotentRequestInFlight
from stockroom.domain.models import ApiToken, User
from stockroom.domain.queries import IdempotencyRecord

# Built once: the token lookup runs on every authenticated request that misses the cache.
_BY_TOKEN_HASH = (
    select(users)
    .join(api_tokens, api_tokens.c.user_id == users.c.id)
    .where(api_tokens.c.token_hash == bindparam("token_hash"))
)


class SqlUserRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, email: str, name: str | None, is_admin: bool) -> User:
        statement = (
            insert(users)
            .values(email=email, name=name, is_admin=is_admin, created_at=datetime.now(UTC))
            .returning(users)
        )
        try:
            row = (await self._conn.execute(statement)).one()
        except IntegrityError as exc:
            raise EmailTaken() from exc
        return user_from(row._mapping)

    async def get(self, user_id: int) -> User | None:
        row = (await self._conn.execute(select(users).where(users.c.id == user_id))).first()
        return user_from(row._mapping) if row else None

    async def by_email(self, email: str) -> User | None:
        row = (await self._conn.execute(select(users).where(users.c.email == email))).first()
        return user_from(row._mapping) if row else None

    async def by_token_hash(self, token_hash: str) -> User | None:
        row = (await self._conn.execute(_BY_TOKEN_HASH, {"token_hash": token_hash})).first()
        return user_from(row._mapping) if row else None

    async def exists(self, user_id: int) -> bool:
        statement = select(users.c.id).where(users.c.id == user_id)
        return (await self._conn.execute(statement)).first() is not None


class SqlTokenRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, user_id: int, token_hash: str, name: str | None) -> ApiToken:
        statement = (
            insert(api_tokens)
            .values(user_id=user_id, token_hash=token_hash, name=name, created_at=datetime.now(UTC))
            .returning(api_tokens.c.id, api_tokens.c.created_at)
        )
        row = (await self._conn.execute(statement)).one()
        return ApiToken(id=row.id, user_id=user_id, name=name, created_at=row.created_at)

    async def delete(self, user_id: int, token_id: int) -> str | None:
        statement = (
            delete(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.user_id == user_id)
            .returning(api_tokens.c.token_hash)
        )
        token_hash: str | None = (await self._conn.execute(statement)).scalar_one_or_none()
        return token_hash

    async def delete_named(self, user_id: int, name: str) -> list[str]:
        statement = (
            delete(api_tokens)
            .where(api_tokens.c.user_id == user_id, api_tokens.c.name == name)
            .returning(api_tokens.c.token_hash)
        )
        return list((await self._conn.execute(statement)).scalars())


class SqlIdempotencyRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, user_id: int, scope: str, key: str) -> IdempotencyRecord | None:
        statement = select(idempotency_keys).where(_one_key(user_id, scope, key))
        row = (await self._conn.execute(statement)).first()
        if row is None:
            return None
        return IdempotencyRecord(
            user_id=row.user_id,
            scope=row.scope,
            key=row.key,
            fingerprint=row.fingerprint,
            status_code=row.status_code,
            sealed_body=bytes(row.sealed_body),
            location=row.location,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    async def add(self, record: IdempotencyRecord) -> None:
        statement = insert(idempotency_keys).values(
            user_id=record.user_id,
            scope=record.scope,
            key=record.key,
            fingerprint=record.fingerprint,
            status_code=record.status_code,
            sealed_body=record.sealed_body,
            location=record.location,
            created_at=record.created_at,
            expires_at=record.expires_at,
        )
        try:
            await self._conn.execute(statement)
        except IntegrityError as exc:
            raise IdempotentRequestInFlight() from exc

    async def delete(self, user_id: int, scope: str, key: str) -> None:
        await self._conn.execute(delete(idempotency_keys).where(_one_key(user_id, scope, key)))

    async def purge_expired(self, now: datetime, limit: int) -> int:
        expired = (
            select(idempotency_keys.c.id)
            .where(idempotency_keys.c.expires_at < now)
            .order_by(idempotency_keys.c.expires_at)
            .limit(limit)
        )
        statement = delete(idempotency_keys).where(idempotency_keys.c.id.in_(expired))
        return (await self._conn.execute(statement)).rowcount


def _one_key(user_id: int, scope: str, key: str) -> ColumnElement[bool]:
    return and_(
        idempotency_keys.c.user_id == user_id,
        idempotency_keys.c.scope == scope,
        idempotency_keys.c.key == key,
    )


def user_from(values: Any) -> User:
    """A user from a `users` row, read by column name (a SQLAlchemy row's `_mapping` or an
    asyncpg record)."""
    return User(
        id=values["id"],
        email=values["email"],
        name=values["name"],
        is_admin=values["is_admin"],
        created_at=values["created_at"],
    )
