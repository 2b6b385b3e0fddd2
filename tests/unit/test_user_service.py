"""Users and tokens: opaque secrets stored only as hashes, authenticated and revoked."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from stockroom.domain import users
from stockroom.domain.errors import (
    EmailTaken,
    InvalidToken,
    NotAllowed,
    TokenNotFound,
    UserNotFound,
)
from stockroom.domain.models import User
from tests.unit.fakes import FakeDatabase, RecordingCache

CREATED = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


def test_hash_token_is_the_hex_sha256_of_the_secret() -> None:
    assert users.hash_token("sr_abc") == hashlib.sha256(b"sr_abc").hexdigest()


def test_hash_token_accepts_any_python_string() -> None:
    # A lone surrogate cannot come through HTTP, but must not crash other callers.
    assert len(users.hash_token("sr_\udc80")) == 64


def test_new_secrets_are_prefixed_random_and_long() -> None:
    secrets = {users.new_token_secret() for _ in range(100)}

    assert len(secrets) == 100
    assert all(s.startswith(users.TOKEN_PREFIX) and len(s) >= 40 for s in secrets)


async def test_create_user_normalises_email_and_issues_a_working_token(db: FakeDatabase) -> None:
    user, issued = await users.create_user(db.uow(), email="  Alice@Example.COM ", name="Alice")

    assert (user.email, user.name, user.is_admin) == ("alice@example.com", "Alice", False)
    assert issued.token.user_id == user.id
    assert await users.authenticate(db.lookups(), issued.secret) == user


async def test_only_the_token_hash_is_stored(db: FakeDatabase) -> None:
    _user, issued = await users.create_user(db.uow(), email="a@example.com")

    [(token, stored)] = db.tables.tokens.values()
    assert token == issued.token
    assert stored == users.hash_token(issued.secret)
    assert issued.secret not in repr(db.tables)


async def test_an_email_is_taken_whatever_its_case(db: FakeDatabase) -> None:
    await users.create_user(db.uow(), email="a@example.com")

    with pytest.raises(EmailTaken):
        await users.create_user(db.uow(), email="A@EXAMPLE.com")

    assert len(db.tables.users) == 1
    assert len(db.tables.tokens) == 1


@pytest.mark.parametrize(
    "secret",
    ["", "sr_", "sr_unknown", "not-prefixed", "Bearer sr_x", "sr_" + "x" * 300, "sr_\udc80"],
)
async def test_unknown_or_malformed_tokens_are_invalid(db: FakeDatabase, secret: str) -> None:
    await users.create_user(db.uow(), email="a@example.com")

    with pytest.raises(InvalidToken):
        await users.authenticate(db.lookups(), secret)


async def test_a_token_must_match_exactly(db: FakeDatabase) -> None:
    _user, issued = await users.create_user(db.uow(), email="a@example.com")

    for near_miss in (issued.secret[:-1], issued.secret + "x", issued.secret.upper()):
        with pytest.raises(InvalidToken):
            await users.authenticate(db.lookups(), near_miss)


async def test_a_new_token_works_alongside_the_first(db: FakeDatabase) -> None:
    user, first = await users.create_user(db.uow(), email="a@example.com")

    second = await users.create_token(db.uow(), user, name="ci")

    assert second.secret != first.secret
    assert (second.token.name, second.token.user_id) == ("ci", user.id)
    assert await users.authenticate(db.lookups(), first.secret) == user
    assert await users.authenticate(db.lookups(), second.secret) == user


async def test_a_revoked_token_no_longer_authenticates(db: FakeDatabase) -> None:
    user, first = await users.create_user(db.uow(), email="a@example.com")
    second = await users.create_token(db.uow(), user)

    await users.revoke_token(db.uow(), user, first.token.id)

    with pytest.raises(InvalidToken):
        await users.authenticate(db.lookups(), first.secret)
    assert await users.authenticate(db.lookups(), second.secret) == user
    with pytest.raises(TokenNotFound):
        await users.revoke_token(db.uow(), user, first.token.id)


async def test_nobody_revokes_someone_elses_token(db: FakeDatabase) -> None:
    alice, alices = await users.create_user(db.uow(), email="alice@example.com")
    bob, _bobs = await users.create_user(db.uow(), email="bob@example.com", is_admin=True)

    with pytest.raises(TokenNotFound):
        await users.revoke_token(db.uow(), bob, alices.token.id)

    assert await users.authenticate(db.lookups(), alices.secret) == alice


def test_require_admin_refuses_everyone_else() -> None:
    user = User(1, "a@example.com", None, False, CREATED)

    users.require_admin(User(2, "r@example.com", None, True, CREATED))
    with pytest.raises(NotAllowed):
        users.require_admin(user)


async def test_find_user_by_email_in_any_case(db: FakeDatabase) -> None:
    user, _issued = await users.create_user(db.uow(), email="a@example.com")

    assert await users.find_user(db.uow(), " A@example.com") == user
    with pytest.raises(UserNotFound):
        await users.find_user(db.uow(), "b@example.com")


async def test_replacing_named_tokens_revokes_them_and_issues_a_working_one(
    db: FakeDatabase,
) -> None:
    user, initial = await users.create_user(db.uow(), email="demo@example.com")
    demo = await users.create_token(db.uow(), user, name="demo")
    kept = await users.create_token(db.uow(), user, name="ci")
    other, others = await users.create_user(db.uow(), email="other@example.com")
    cache = RecordingCache(db)

    issued = await users.replace_named_tokens(db.uow(), user, "demo", revoke=("initial",))

    for revoked in (initial, demo):
        with pytest.raises(InvalidToken):
            await users.authenticate(db.lookups(), revoked.secret)
    assert issued.token.name == "demo"
    assert await users.authenticate(db.lookups(), issued.secret) == user
    assert await users.authenticate(db.lookups(), kept.secret) == user
    assert await users.authenticate(db.lookups(), others.secret) == other
    # Each revoked token's cache entry is dropped, after the commit.
    assert {key for key, _product in cache.invalidated} == {
        users.token_cache_key(users.hash_token(t.secret)) for t in (initial, demo)
    }


async def test_replacing_again_revokes_the_previous_replacement(db: FakeDatabase) -> None:
    user, _initial = await users.create_user(db.uow(), email="demo@example.com")

    first = await users.replace_named_tokens(db.uow(), user, "demo")
    second = await users.replace_named_tokens(db.uow(), user, "demo")

    with pytest.raises(InvalidToken):
        await users.authenticate(db.lookups(), first.secret)
    assert await users.authenticate(db.lookups(), second.secret) == user
