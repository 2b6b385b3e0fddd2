"""The demo product of `serve --demo`: made over the API, as a user would, once the server
answers (so its download never races the server's start), then watched until its image is
processed; the outcome is printed on stdout."""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.process import BaseProcess
from typing import Any

import httpx

__all__ = ["SKU", "announce_in_background", "demo_product_outcome"]

SKU = "DEMO-1"
_POLL_SECONDS = 0.2


def announce_in_background(base: str, token: str, image_url: str) -> BaseProcess:
    """Start a process that prints the demo image's compressed URL once it is ready.

    A process of its own (spawned), not a thread: the server forks its workers, and a
    thread inside OpenSSL or the resolver at that moment leaves a lock held in the child
    for ever (seen: a worker stuck in `ssl.create_default_context` at its start)."""
    process = multiprocessing.get_context("spawn").Process(
        target=_announce, args=(base, token, image_url), name="demo-product", daemon=True
    )
    process.start()
    return process


def _announce(base: str, token: str, image_url: str) -> None:
    try:
        line = demo_product_outcome(base, token, image_url)
    except (httpx.HTTPError, ValueError, KeyError, TimeoutError) as exc:
        line = f"demo product: gave up ({type(exc).__name__}: {exc})"
    print(line, flush=True)


def demo_product_outcome(base: str, token: str, image_url: str, timeout: float = 60.0) -> str:
    """Wait for /health, make sure product DEMO-1 has `image_url`, wait for its image: the
    line to print (its compressed URL, or its error code). Raises TimeoutError after
    `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    # trust_env=False: a proxy from the environment must not see the local calls.
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, trust_env=False
    ) as client:
        _wait_for_health(client, deadline)
        product = _ensure_product(client, image_url)
        product = _wait_for_image(client, product["id"], deadline)
    image = product["images"][0]
    if image["status"] == "ready":
        return (
            f"demo product {product['id']} ({SKU}) is ready; its compressed image:\n"
            f"  {product['compressed_product_images'][0]}\n"
        )
    return (
        f"demo product {product['id']} ({SKU}): its image failed, "
        f"error_code {image['error_code']}: {image['error']}\n"
    )


def _wait_for_health(client: httpx.Client, deadline: float) -> None:
    while True:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        _sleep_until_next_poll(deadline, "the server to answer /health")


def _ensure_product(client: httpx.Client, image_url: str) -> dict[str, Any]:
    """Product DEMO-1 of the demo admin, created once; its image list set to `image_url`
    (the port may have changed since the last start)."""
    found = _found(client)
    if found is None:
        created = client.post(
            "/products",
            json={
                "product_name": "Colorful cups",
                "product_description": "Stockroom's demo product; its photo is served by "
                "the process itself.",
                "product_price": "12.50",
                "sku": SKU,
                "product_images": [image_url],
            },
        )
        if created.status_code == 201:
            product: dict[str, Any] = created.json()
            return product
        found = _found(client)  # 409 sku_taken: another start made it meanwhile
        if found is None:
            created.raise_for_status()
            raise ValueError(f"POST /products answered {created.status_code}")
    if found["images"] and found["images"][0]["status"] == "failed":
        # Failed at an earlier start (say the source was refused then): drop it, so that
        # setting it again below queues a new download.
        _set_images(client, found["id"], [])
        found = {**found, "product_images": []}
    if found["product_images"] != [image_url]:
        found = _set_images(client, found["id"], [image_url])
    return found


def _set_images(client: httpx.Client, product_id: int, urls: list[str]) -> dict[str, Any]:
    patched = client.patch(f"/products/{product_id}", json={"product_images": urls})
    patched.raise_for_status()
    product: dict[str, Any] = patched.json()
    return product


def _found(client: httpx.Client) -> dict[str, Any] | None:
    page = client.get("/products", params={"sku": SKU})
    page.raise_for_status()
    items: list[dict[str, Any]] = page.json()["items"]
    return items[0] if items else None


def _wait_for_image(client: httpx.Client, product_id: int, deadline: float) -> dict[str, Any]:
    """The product once its first image is ready or failed."""
    while True:
        answer = client.get(f"/products/{product_id}")
        answer.raise_for_status()
        product: dict[str, Any] = answer.json()
        if product["images"][0]["status"] in ("ready", "failed"):
            return product
        _sleep_until_next_poll(deadline, "the demo image to be processed")


def _sleep_until_next_poll(deadline: float, waiting_for: str) -> None:
    if time.monotonic() + _POLL_SECONDS > deadline:
        raise TimeoutError(f"gave up waiting for {waiting_for}")
    time.sleep(_POLL_SECONDS)
