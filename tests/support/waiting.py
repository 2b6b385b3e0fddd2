"""Waiting on state, not on the clock: poll until the condition holds, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

TERMINAL = {"ready", "failed"}


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Return the first truthy result of `check`; fail with the last result at the deadline."""
    deadline = time.monotonic() + timeout
    result: Any = None
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last result: {result!r}")


async def create_lamp(
    client: httpx.AsyncClient, headers: dict[str, str], urls: list[str]
) -> dict[str, Any]:
    """POST a product with these image URLs; its body as created (a 201, asserted)."""
    response = await client.post(
        "/products",
        json={"product_name": "Lamp", "product_price": "5", "product_images": urls},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def settled_lamp(
    client: httpx.AsyncClient, headers: dict[str, str], urls: list[str]
) -> dict[str, Any]:
    """`create_lamp`, then the product once every image is ready or failed."""
    created = await create_lamp(client, headers, urls)
    return await settled_product(client, created["id"], headers)


async def settled_product(
    client: httpx.AsyncClient, product_id: int, headers: dict[str, str], timeout: float = 30.0
) -> dict[str, Any]:
    """The product once every image is ready or failed."""

    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/products/{product_id}", headers=headers)).json()
        done = all(image["status"] in TERMINAL for image in body["images"])
        return body if done else None

    result: dict[str, Any] = await eventually(check, timeout=timeout)
    return result


async def settled_job(
    client: httpx.AsyncClient, job_id: str, headers: dict[str, str], timeout: float = 30.0
) -> dict[str, Any]:
    """The standalone job once it succeeded or failed."""

    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/jobs/{job_id}", headers=headers)).json()
        return body if body["status"] in ("succeeded", "failed") else None

    result: dict[str, Any] = await eventually(check, timeout=timeout)
    return result
