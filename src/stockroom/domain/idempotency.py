"""Idempotent creates: a retried POST with the same Idempotency-Key and body gets the
first response back, byte for byte, and creates nothing new.

The first response is kept with the key, not re-read from what it created: a replay must
never show data the caller can no longer see (a product since moved to another user).
Responses can hold secrets (a new API token), so they are stored sealed (AES-GCM) with a
key derived from the caller's own bearer token, which the server keeps only as a hash:
the database alone cannot open them. Records expire after a TTL; every new record
removes a batch of expired ones, so the table does not grow without bound.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stockroom.domain.errors import IdempotencyKeyReused, IdempotentRequestInFlight
from stockroom.domain.ports import UnitOfWork
from stockroom.domain.queries import IdempotencyRecord

DEFAULT_TTL = timedelta(hours=24)
PURGE_BATCH = 100
_NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key, a fingerprint of what it asked, and the credential that seals the
    stored response (the caller's bearer token)."""

    key: str
    fingerprint: str
    seal: str = ""
    ttl: timedelta = DEFAULT_TTL


@dataclass(frozen=True, slots=True)
class FirstResponse:
    """What a create answered, kept to be answered again."""

    status: int
    body: bytes
    location: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    response: FirstResponse
    replayed: bool


Create = Callable[[UnitOfWork], Awaitable[FirstResponse]]


def fingerprint_of(payload: Mapping[str, object]) -> str:
    """A stable hash of what was asked, to tell a retry from a different request."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def create_once(
    uow: UnitOfWork,
    user_id: int,
    scope: str,
    key: IdempotencyKey | None,
    create: Create,
) -> Outcome:
    """Run `create` (its writes, not its commit) in one transaction with the key's record,
    or replay the record. A concurrent twin with the same key waits on the key's unique
    index; once the first commits, one more attempt replays the first's response."""
    try:
        return await _attempt(uow, user_id, scope, key, create)
    except IdempotentRequestInFlight:
        return await _attempt(uow, user_id, scope, key, create)


async def _attempt(
    uow: UnitOfWork, user_id: int, scope: str, key: IdempotencyKey | None, create: Create
) -> Outcome:
    async with uow:
        now = datetime.now(UTC)
        if key is not None:
            prior = await _replay(uow, user_id, scope, key, now)
            if prior is not None:
                return Outcome(prior, replayed=True)
        response = await create(uow)
        if key is not None:
            await uow.idempotency.purge_expired(now, PURGE_BATCH)
            await uow.idempotency.add(
                IdempotencyRecord(
                    user_id=user_id,
                    scope=scope,
                    key=key.key,
                    fingerprint=key.fingerprint,
                    status_code=response.status,
                    sealed_body=_seal(response.body, key, scope),
                    location=response.location,
                    created_at=now,
                    expires_at=now + key.ttl,
                )
            )
        await uow.commit()
    return Outcome(response, replayed=False)


async def _replay(
    uow: UnitOfWork, user_id: int, scope: str, key: IdempotencyKey, now: datetime
) -> FirstResponse | None:
    record = await uow.idempotency.get(user_id, scope, key.key)
    if record is None:
        return None
    if record.expires_at <= now:
        await uow.idempotency.delete(user_id, scope, key.key)
        return None
    if record.fingerprint != key.fingerprint:
        raise IdempotencyKeyReused()
    body = _open(record.sealed_body, key, scope)
    if body is None:
        raise IdempotencyKeyReused("the key was first used with another API token")
    return FirstResponse(record.status_code, body, record.location)


def _cipher(key: IdempotencyKey, scope: str) -> AESGCM:
    info = f"stockroom idempotency\x00{scope}\x00{key.key}".encode()
    secret = HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(key.seal.encode())
    return AESGCM(secret)


def _seal(body: bytes, key: IdempotencyKey, scope: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _cipher(key, scope).encrypt(nonce, body, None)


def _open(sealed: bytes, key: IdempotencyKey, scope: str) -> bytes | None:
    try:
        return _cipher(key, scope).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], None)
    except (InvalidTag, ValueError):
        return None
