"""A bug answers a problem+json 500 that names the request id, never a stack trace."""

from __future__ import annotations

import httpx
from fastapi import FastAPI


async def test_an_unhandled_exception_is_a_problem_500_with_the_request_id(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async def broken() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/_broken", broken)

    response = await client.get("/_broken", headers={"X-Request-ID": "req-42"})

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-42"
    assert "req-42" in response.json()["detail"]
    assert "secret" not in response.text
