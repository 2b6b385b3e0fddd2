"""/users (admin) and /me: who the caller is, and their API tokens."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StringConstraints

from stockroom.api.deps import CurrentUser, UowDep
from stockroom.api.fields import Text
from stockroom.api.idempotency import IdempotencyDep, answer
from stockroom.domain import users
from stockroom.domain.idempotency import fingerprint_of
from stockroom.domain.models import IssuedToken, User

router = APIRouter(tags=["users"])
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an email address")
    return value


Email = Annotated[
    Text,
    StringConstraints(max_length=320, pattern=_EMAIL.pattern),
    AfterValidator(_email),
]
Name = Annotated[Text, StringConstraints(min_length=1, max_length=255)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name | None = None
    is_admin: StrictBool = False


class UserPublic(BaseModel):
    id: int
    email: str
    name: str | None
    is_admin: bool
    created_at: datetime


class UserWithToken(UserPublic):
    token: str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None


class TokenPublic(BaseModel):
    id: int
    name: str | None
    token: str
    created_at: datetime


@router.post("/users", status_code=201, response_model=UserWithToken, responses={403: {}, 409: {}})
async def create_user(
    body: UserCreate, caller: CurrentUser, uow: UowDep, idempotency: IdempotencyDep
) -> Response:
    outcome = await users.create_user_once(
        uow,
        caller,
        email=body.email,
        name=body.name,
        is_admin=body.is_admin,
        idempotency=idempotency.for_body(fingerprint_of(body.model_dump())),
        render=_user_with_token,
    )
    return answer(outcome.response, replayed=outcome.replayed)


def _user_with_token(user: User, issued: IssuedToken) -> bytes:
    return (
        UserWithToken(
            id=user.id,
            email=user.email,
            name=user.name,
            is_admin=user.is_admin,
            created_at=user.created_at,
            token=issued.secret,
        )
        .model_dump_json()
        .encode()
    )


@router.get("/me", response_model=UserPublic)
async def me(caller: CurrentUser) -> UserPublic:
    return UserPublic(
        id=caller.id,
        email=caller.email,
        name=caller.name,
        is_admin=caller.is_admin,
        created_at=caller.created_at,
    )


@router.post("/me/tokens", status_code=201, response_model=TokenPublic, responses={409: {}})
async def create_token(
    caller: CurrentUser, uow: UowDep, idempotency: IdempotencyDep, body: TokenCreate | None = None
) -> Response:
    name = body.name if body else None
    outcome = await users.create_token_once(
        uow,
        caller,
        name=name,
        idempotency=idempotency.for_body(fingerprint_of({"name": name})),
        render=_token,
    )
    return answer(outcome.response, replayed=outcome.replayed)


def _token(issued: IssuedToken) -> bytes:
    public = TokenPublic(
        id=issued.token.id,
        name=issued.token.name,
        token=issued.secret,
        created_at=issued.token.created_at,
    )
    return public.model_dump_json().encode()


@router.delete("/me/tokens/{token_id}", status_code=204, responses={404: {}})
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    caller: CurrentUser,
    uow: UowDep,
) -> Response:
    await users.revoke_token(uow, caller, token_id)
    return Response(status_code=204)
