"""Users and their API tokens: opaque random secrets, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime

import orjson

from stockroom.domain.errors import (
    EmailTaken,
    InvalidToken,
    NotAllowed,
    TokenNotFound,
    UserNotFound,
)
from stockroom.domain.events import TokenRevoked
from stockroom.domain.idempotency import FirstResponse, IdempotencyKey, Outcome, create_once
from stockroom.domain.models import IssuedToken, User
from stockroom.domain.ports import Lookups, TokenCache, UnitOfWork

TOKEN_PREFIX = "sr_"  # noqa: S105 - a prefix, not a secret


def hash_token(secret: str) -> str:
    """Tokens carry 256 random bits, so a fast unsalted hash is enough to store them."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_user(
    uow: UnitOfWork, *, email: str, name: str | None = None, is_admin: bool = False
) -> tuple[User, IssuedToken]:
    """Create a user with a first token; raises EmailTaken for a known email."""
    async with uow:
        user, issued = await _add_user(uow, email, name, is_admin)
        await uow.commit()
    return user, issued


async def _add_user(
    uow: UnitOfWork, email: str, name: str | None, is_admin: bool
) -> tuple[User, IssuedToken]:
    email = email.strip().lower()
    if await uow.users.by_email(email) is not None:
        raise EmailTaken(f"a user with email {email!r} already exists")
    user = await uow.users.add(email=email, name=name, is_admin=is_admin)
    return user, await _issue_token(uow, user.id, name="initial")


async def authenticate(lookups: Lookups, secret: str, cache: TokenCache | None = None) -> User:
    """The user owning `secret`; raises InvalidToken for unknown or revoked tokens.

    With a cache, a known token costs no database query: the entry (token hash -> user) is
    invalidated when the token is revoked, with the same generation guard as products, so
    a revoked token stops working at once on every instance sharing the cache.
    """
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        raise InvalidToken()
    token_hash = hash_token(secret)
    entry = await cache.read(token_cache_key(token_hash)) if cache is not None else None
    if entry is not None and entry.body is not None:
        cached_hash, _, user_json = entry.body.partition(b"\n")
        if hmac.compare_digest(cached_hash, token_hash.encode()):
            return _user_from_json(user_json)
    user = await lookups.user_by_token_hash(token_hash)
    if user is None:
        raise InvalidToken()
    if cache is not None and entry is not None:
        body = token_hash.encode() + b"\n" + _user_to_json(user)
        await cache.fill(token_cache_key(token_hash), body, entry.token)
    return user


def token_cache_key(token_hash: str) -> str:
    """The token cache is keyed by the whole hash (the entry holds it too, and a hit is
    checked against it: a second guard that an entry answers only for its own token)."""
    return token_hash


def _user_to_json(user: User) -> bytes:
    return orjson.dumps(
        {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "is_admin": user.is_admin,
            "created_at": user.created_at,
        }
    )


def _user_from_json(raw: bytes) -> User:
    data = orjson.loads(raw)
    return User(
        id=data["id"],
        email=data["email"],
        name=data["name"],
        is_admin=data["is_admin"],
        created_at=datetime.fromisoformat(data["created_at"]),
    )


async def create_token(uow: UnitOfWork, user: User, name: str | None = None) -> IssuedToken:
    async with uow:
        issued = await _issue_token(uow, user.id, name=name)
        await uow.commit()
    return issued


async def revoke_token(uow: UnitOfWork, user: User, token_id: int) -> None:
    async with uow:
        token_hash = await uow.tokens.delete(user.id, token_id)
        if token_hash is None:
            raise TokenNotFound()
        uow.record(TokenRevoked(token_cache_key(token_hash)))
        await uow.commit()


async def replace_named_tokens(
    uow: UnitOfWork,
    user: User,
    name: str,
    *,
    revoke: Sequence[str] = (),
) -> IssuedToken:
    """Issue a token named `name` in place of the user's tokens named `name` (and those
    named in `revoke`), in one transaction: the old ones stop working at once."""
    async with uow:
        hashes: list[str] = []
        for old_name in (name, *revoke):
            hashes += await uow.tokens.delete_named(user.id, old_name)
        issued = await _issue_token(uow, user.id, name=name)
        for token_hash in hashes:
            uow.record(TokenRevoked(token_cache_key(token_hash)))
        await uow.commit()
    return issued


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise NotAllowed("this action needs an admin")


async def _issue_token(uow: UnitOfWork, user_id: int, name: str | None) -> IssuedToken:
    secret = new_token_secret()
    token = await uow.tokens.add(user_id=user_id, token_hash=hash_token(secret), name=name)
    return IssuedToken(token=token, secret=secret)


async def find_user(uow: UnitOfWork, email: str) -> User:
    async with uow:
        user = await uow.users.by_email(email.strip().lower())
    if user is None:
        raise UserNotFound()
    return user


USER_SCOPE = "users.create"
TOKEN_SCOPE = "tokens.create"  # noqa: S105 - a scope name, not a secret


async def create_user_once(
    uow: UnitOfWork,
    actor: User,
    *,
    email: str,
    name: str | None,
    is_admin: bool,
    idempotency: IdempotencyKey | None,
    render: Callable[[User, IssuedToken], bytes],
) -> Outcome:
    """`create_user` by an admin over the API, replayable under an Idempotency-Key."""
    require_admin(actor)

    async def create(uow: UnitOfWork) -> FirstResponse:
        user, issued = await _add_user(uow, email, name, is_admin)
        return FirstResponse(201, render(user, issued))

    return await create_once(uow, actor.id, USER_SCOPE, idempotency, create)


async def create_token_once(
    uow: UnitOfWork,
    user: User,
    *,
    name: str | None,
    idempotency: IdempotencyKey | None,
    render: Callable[[IssuedToken], bytes],
) -> Outcome:
    """`create_token` over the API, replayable under an Idempotency-Key."""

    async def create(uow: UnitOfWork) -> FirstResponse:
        return FirstResponse(201, render(await _issue_token(uow, user.id, name=name)))

    return await create_once(uow, user.id, TOKEN_SCOPE, idempotency, create)
