"""/users (admin) and /me: who the caller is, and their API tokens."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StringConstraints

from stockroom.api.deps import CurrentUser, ServicesDep, UowDep
from stockroom.api.fields import Text
from stockroom.domain import users

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
async def create_user(body: UserCreate, caller: CurrentUser, uow: UowDep) -> UserWithToken:
    users.require_admin(caller)
    user, issued = await users.create_user(
        uow, email=body.email, name=body.name, is_admin=body.is_admin
    )
    return UserWithToken(
        id=user.id,
        email=user.email,
        name=user.name,
        is_admin=user.is_admin,
        created_at=user.created_at,
        token=issued.secret,
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


@router.post("/me/tokens", status_code=201, response_model=TokenPublic)
async def create_token(
    caller: CurrentUser, uow: UowDep, body: TokenCreate | None = None
) -> TokenPublic:
    issued = await users.create_token(uow, caller, name=body.name if body else None)
    return TokenPublic(
        id=issued.token.id,
        name=issued.token.name,
        token=issued.secret,
        created_at=issued.token.created_at,
    )


@router.delete("/me/tokens/{token_id}", status_code=204, responses={404: {}})
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    caller: CurrentUser,
    uow: UowDep,
    services: ServicesDep,
) -> Response:
    await users.revoke_token(uow, caller, token_id, services.token_cache)
    return Response(status_code=204)
