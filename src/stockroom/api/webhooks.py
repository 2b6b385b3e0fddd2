"""/webhooks/deliveries: every attempt to deliver the caller's webhooks; and the check a
route makes of a `callback_url` before it accepts one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from stockroom.api.deps import CurrentUser, ReadUowDep
from stockroom.domain import webhook_delivery
from stockroom.domain.errors import FieldError, InvalidInput
from stockroom.services import Services

router = APIRouter(tags=["webhooks"])
_JOB_ID = r"^[0-9a-f]{32}$"


def check_callback(
    services: Services, callback_url: str | None, field: str = "callback_url"
) -> None:
    """A callback needs a signing secret on the server: without one, refuse it now rather
    than accept what will never be sent."""
    if callback_url is not None and services.settings.webhook_secret is None:
        raise InvalidInput(
            "Invalid input",
            [FieldError(field, "this server sends no webhooks (no signing secret is set)")],
        )


class Delivery(BaseModel):
    webhook_id: str
    type: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    created_at: datetime


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


@router.get("/webhooks/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    user: CurrentUser,
    uow: ReadUowDep,
    job_id: Annotated[str | None, Query(pattern=_JOB_ID)] = None,
    import_id: Annotated[str | None, Query(pattern=_JOB_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Response:
    page = await webhook_delivery.list_deliveries(
        uow,
        user,
        job_id=job_id,
        import_id=import_id,
        limit=limit,
        after=int(cursor) if cursor is not None else None,
    )
    body = {
        "items": [
            {
                "webhook_id": attempt.webhook_id,
                "type": attempt.type,
                "url": attempt.url,
                "attempt": attempt.attempt,
                "status_code": attempt.status_code,
                "error": attempt.error,
                "created_at": attempt.created_at,
            }
            for attempt in page.items
        ],
        "next_cursor": str(page.next_cursor) if page.next_cursor is not None else None,
    }
    return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")
