"""The Idempotency-Key header of creating POSTs, and the answer to send for a create."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request, Response

from stockroom.api.deps import get_services
from stockroom.api.fields import Text
from stockroom.domain.idempotency import FirstResponse, IdempotencyKey

_JSON = "application/json"
KeyHeader = Annotated[
    Text | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retrying with the same key and body returns the first response.",
    ),
]


@dataclass(frozen=True, slots=True)
class IdempotencyHeader:
    """The key a client sent (or None), with what seals its stored response."""

    key: str | None
    seal: str
    ttl: timedelta

    def for_body(self, fingerprint: str) -> IdempotencyKey | None:
        if self.key is None:
            return None
        return IdempotencyKey(self.key, fingerprint, self.seal, self.ttl)


async def get_idempotency_header(request: Request, key: KeyHeader = None) -> IdempotencyHeader:
    services = await get_services(request)
    return IdempotencyHeader(
        key=key,
        # The caller's credential seals the stored response: the server keeps it hashed only.
        seal=request.headers.get("authorization", ""),
        ttl=timedelta(hours=services.settings.idempotency_ttl_hours),
    )


IdempotencyDep = Annotated[IdempotencyHeader, Depends(get_idempotency_header)]


def answer(response: FirstResponse, *, replayed: bool) -> Response:
    """The stored or fresh response of a create, marked when it is a replay."""
    headers = {"Location": response.location} if response.location else {}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(response.body, response.status, headers=headers, media_type=_JSON)
