"""Dependencies shared by the routers: the services, the unit of work, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stockroom.api import rate_limits
from stockroom.domain import users
from stockroom.domain.errors import Unauthenticated
from stockroom.domain.models import User
from stockroom.domain.ports import UnitOfWork
from stockroom.services import Services

_bearer = HTTPBearer(auto_error=False, description="An API token: `Bearer sr_...`")


# Every dependency here is `async def` although none awaits: FastAPI runs plain `def`
# dependencies in a thread pool, a hand-off too costly for the hot path.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_uow(services: ServicesDep) -> UnitOfWork:
    return services.uow()


UowDep = Annotated[UnitOfWork, Depends(get_uow)]


async def get_read_uow(services: ServicesDep) -> UnitOfWork:
    return services.read_uow()


ReadUowDep = Annotated[UnitOfWork, Depends(get_read_uow)]


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    # Called, not declared as a sub-dependency: FastAPI solves every declared one per
    # request, a cost on this hot path (docs/performance.md).
    services = await get_services(request)
    # A missing or wrong token counts against the client's address: 429 once over the limit.
    if credentials is None or credentials.scheme.lower() != "bearer":
        await rate_limits.count_auth_failure(services, request)
        raise Unauthenticated("send an API token as `Authorization: Bearer <token>`")
    try:
        user = await users.authenticate(
            services.lookups, credentials.credentials, services.token_cache
        )
    except Unauthenticated:
        await rate_limits.count_auth_failure(services, request)
        raise
    request.scope.setdefault("state", {})["user_id"] = user.id
    if request.method in rate_limits.WRITE_METHODS:  # reads never reach the limiter
        await rate_limits.count_write(services, user.id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def authenticated_user(request: Request) -> User:
    """`get_current_user` for a route served without FastAPI's dependency injection."""
    return await get_current_user(request, await _bearer(request))


async def get_request_id(request: Request) -> str | None:
    request_id: str | None = request.scope.get("state", {}).get("request_id")
    return request_id


RequestId = Annotated[str | None, Depends(get_request_id)]
