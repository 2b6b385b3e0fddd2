"""Users and their API tokens: opaque random secrets, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

from stockroom.domain.errors import (
    EmailTaken,
    InvalidToken,
    NotAllowed,
    TokenNotFound,
    UserNotFound,
)
from stockroom.domain.models import IssuedToken, User
from stockroom.domain.ports import UnitOfWork

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
    email = email.strip().lower()
    async with uow:
        if await uow.users.by_email(email) is not None:
            raise EmailTaken(f"a user with email {email!r} already exists")
        user = await uow.users.add(email=email, name=name, is_admin=is_admin)
        issued = await _issue_token(uow, user.id, name="initial")
        await uow.commit()
    return user, issued


async def authenticate(uow: UnitOfWork, secret: str) -> User:
    """The user owning `secret`; raises InvalidToken for unknown or revoked tokens."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        raise InvalidToken()
    async with uow:
        user = await uow.users.by_token_hash(hash_token(secret))
    if user is None:
        raise InvalidToken()
    return user


async def create_token(uow: UnitOfWork, user: User, name: str | None = None) -> IssuedToken:
    async with uow:
        issued = await _issue_token(uow, user.id, name=name)
        await uow.commit()
    return issued


async def revoke_token(uow: UnitOfWork, user: User, token_id: int) -> None:
    async with uow:
        if not await uow.tokens.delete(user.id, token_id):
            raise TokenNotFound()
        await uow.commit()


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
