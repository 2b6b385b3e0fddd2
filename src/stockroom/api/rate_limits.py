"""The contract's rate limits, applied while authenticating: writes per user, and failed
authentications per client address. Reads never reach the limiter."""

from __future__ import annotations

import math

from starlette.requests import Request

from stockroom.domain.errors import RateLimited
from stockroom.domain.ports import RateLimit
from stockroom.services import Services

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def count_write(services: Services, user_id: int) -> None:
    """Count a write (a request in WRITE_METHODS) by `user_id`; raise RateLimited once the
    user's budget is spent."""
    limit = services.write_limit
    if limit is not None:
        await _count(services, limit, f"user:{user_id}", "writes")


async def count_auth_failure(services: Services, request: Request) -> None:
    """Count a missing or wrong token from the client's address; raise RateLimited once the
    address's budget is spent. Behind a proxy, STOCKROOM_FORWARDED_ALLOW_IPS decides which
    address this is (app.py)."""
    limit = services.auth_failure_limit
    if limit is not None:
        address = request.client.host if request.client is not None else "unknown"
        await _count(services, limit, f"address:{address}", "requests without a valid token")


async def _count(services: Services, limit: RateLimit, key: str, what: str) -> None:
    decision = await services.rate_limiter.hit(limit, key)
    if not decision.allowed:
        seconds = max(1, math.ceil(decision.retry_after))
        raise RateLimited(
            f"Over the limit of {limit.amount} {what} per {limit.seconds} s; retry in {seconds} s.",
            limit=limit.amount,
            retry_after=seconds,
        )
