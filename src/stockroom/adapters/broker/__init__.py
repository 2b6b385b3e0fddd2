"""The message broker: Dramatiq over RabbitMQ (`amqp://`) or in process (`memory://`).

Only job ids travel; the database holds everything else. The relay publishes by actor
name, so a process that publishes never imports the actors."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from stockroom.domain.errors import BrokerUnavailable
from stockroom.domain.models import OutboxMessage

# Fail fast when RabbitMQ is down: the outbox keeps the message and the relay retries.
_AMQP_DEFAULTS = {
    "connection_attempts": "1",
    "retry_delay": "0",
    "socket_timeout": "3",
    "blocked_connection_timeout": "10",
    "heartbeat": "30",
}


def build_broker(
    url: str,
    *,
    max_retries: int,
    min_backoff_ms: int,
    max_backoff_ms: int,
    event_loop_thread: bool = False,
) -> dramatiq.Broker:
    """A broker with the middleware every Stockroom process uses, chosen by URL scheme.
    `event_loop_thread` adds Dramatiq's AsyncIO middleware (one event-loop thread for the
    process's actors): worker processes want it; the embedded worker uses the API's loop."""
    middleware: list[dramatiq.Middleware] = [
        AgeLimit(),
        TimeLimit(time_limit=10 * 60 * 1000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=max_retries, min_backoff=min_backoff_ms, max_backoff=max_backoff_ms),
        CurrentMessage(),
    ]
    if event_loop_thread:
        middleware.append(AsyncIO())
    scheme = urlsplit(url).scheme
    builders: dict[str, Callable[[], dramatiq.Broker]] = {
        "memory": lambda: StubBroker(middleware=middleware),
        "amqp": lambda: _rabbitmq(url, middleware),
        "amqps": lambda: _rabbitmq(url, middleware),
    }
    if scheme not in builders:
        raise ValueError(f"unsupported broker URL scheme {scheme!r}; use amqp:// or memory://")
    return builders[scheme]()


def _rabbitmq(url: str, middleware: list[dramatiq.Middleware]) -> dramatiq.Broker:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    url = urlunsplit(parts._replace(query=urlencode({**_AMQP_DEFAULTS, **query})))
    return RabbitmqBroker(url=url, confirm_delivery=True, middleware=middleware)


class DramatiqTaskQueue:
    """Publishes outbox messages; RabbitMQ's blocking client runs on one thread of its own."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker
        self._blocking = not isinstance(broker, StubBroker)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="publish")

    async def publish(self, message: OutboxMessage) -> None:
        outgoing: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=message.queue,
            actor_name=message.actor,
            args=(message.job_id,),
            kwargs={},
            options={"request_id": message.request_id} if message.request_id else {},
        )
        try:
            if self._blocking:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._thread, self._broker.enqueue, outgoing)
            else:
                self._broker.enqueue(outgoing)
        except Exception as exc:  # pika raises a zoo of errors; all mean "not taken"
            raise BrokerUnavailable(f"the broker did not take job {message.job_id}") from exc

    async def ping(self) -> None:
        if not self._blocking:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._declare_probe)
        except Exception as exc:
            raise BrokerUnavailable() from exc

    def _declare_probe(self) -> None:
        """A fresh, short-lived connection: a cached channel could outlive its socket."""
        parameters = self._broker.parameters  # type: ignore[attr-defined]
        pika.BlockingConnection(parameters).close()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._broker.close)
        self._thread.shutdown(wait=False)
