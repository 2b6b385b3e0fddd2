"""Where the actors run: `stockroom worker` processes (RabbitMQ), or inside the API process in
embedded mode (`memory://`). Same actors and pipeline; only the event loop differs."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Coroutine, MutableMapping
from typing import Any

import dramatiq
import pyvips
import structlog
import uvloop
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import AsyncIO, Middleware
from prometheus_client import start_http_server

from stockroom.bootstrap import Role, Services, bootstrap, build_broker_for
from stockroom.config import Settings
from stockroom.domain.image_jobs import ALL_QUEUES
from stockroom.logs import configure_logging
from stockroom.pipeline.actors import declare_actors
from stockroom.pipeline.processing import PipelineContext

log = structlog.get_logger("stockroom.worker")


class WorkerRuntime:
    """A worker process's services, built on first use on the actors' event loop (where
    their connections must live) and closed on it at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._services: Services | None = None
        self._lock: asyncio.Lock | None = None

    async def context(self) -> PipelineContext:
        if self._services is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._services is None:
                    self._services = await bootstrap(self._settings, Role.WORKER)
        assert self._services.pipeline is not None
        return self._services.pipeline

    async def close(self) -> None:
        services, self._services = self._services, None
        if services is not None:
            await services.aclose()


class RuntimeShutdown(Middleware):
    """Closes the runtime on the event loop before the AsyncIO middleware stops it."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop = get_event_loop_thread()
        if loop is not None:
            loop.run_coroutine(self.runtime.close())


def _on_event_loop_thread(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a job on the worker process's event-loop thread (Dramatiq's AsyncIO middleware)."""
    loop = get_event_loop_thread()
    assert loop is not None, "the AsyncIO middleware is required"
    loop.run_coroutine(coroutine)


class EmbeddedWorker:
    """The actors inside the API process, on the in-memory broker. Jobs run on the API's own
    event loop, with the API's own services: one set of connections, one cache."""

    def __init__(self, services: Services) -> None:
        assert services.broker is not None
        assert services.pipeline is not None
        self._broker = services.broker
        self._threads = services.settings.worker_threads
        self._worker: dramatiq.Worker | None = None
        loop = asyncio.get_running_loop()
        pipeline = services.pipeline

        async def context() -> PipelineContext:
            return pipeline

        def on_api_loop(coroutine: Coroutine[Any, Any, None]) -> None:
            asyncio.run_coroutine_threadsafe(coroutine, loop).result()

        declare_actors(self._broker, services.settings, context, on_api_loop)

    def start(self) -> None:
        # A short poll timeout lets the API shut down promptly (the default waits 1 s).
        self._worker = dramatiq.Worker(
            self._broker, worker_threads=self._threads, worker_timeout=100
        )
        self._worker.start()

    def stop(self) -> None:
        """Blocks until the running jobs end: call it off the API's event loop, which those
        jobs need to finish."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self._broker.close()


def run_worker_process(
    settings: Settings, threads: int, queues: set[str] | None, index: int = 0
) -> None:
    """One worker process: consume the queues until SIGTERM/SIGINT."""
    configure_logging(
        settings.effective_log_format, settings.log_level, [settings.webhook_secret or ""]
    )
    if settings.worker_metrics_port:
        # One port per process (base + index): Prometheus scrapes each worker directly.
        start_http_server(settings.worker_metrics_port + index, addr=settings.worker_metrics_host)
    # Dramatiq's AsyncIO middleware makes the actors' event loop with asyncio.new_event_loop()
    # when the worker starts: under this policy it is a uvloop loop, as the API's is under
    # granian, which costs less CPU per job (docs/performance.md).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # One libvips thread per operation: the processes already fill the cores, and libvips'
    # own default (a thread per core in each process) only adds contention. An explicit
    # VIPS_CONCURRENCY still wins.
    if "VIPS_CONCURRENCY" not in os.environ:
        pyvips.concurrency_set(1)
    runtime = WorkerRuntime(settings)
    broker = build_broker_for(settings, event_loop_thread=True)
    declare_actors(broker, settings, runtime.context, _on_event_loop_thread)
    # Dramatiq runs "after" hooks in reverse order: placed after AsyncIO, ours runs first,
    # while the event loop is still up.
    broker.add_middleware(RuntimeShutdown(runtime), after=AsyncIO)
    worker = dramatiq.Worker(broker, worker_threads=threads, queues=queues or set(ALL_QUEUES))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    loop_thread = get_event_loop_thread()
    log.info(
        "worker.started",
        threads=threads,
        queues=sorted(queues or ALL_QUEUES),
        event_loop=type(loop_thread.loop).__module__ if loop_thread else None,
    )
    stop.wait()
    log.info("worker.stopping")
    worker.stop()
    broker.close()


def limit_malloc_arenas(environment: MutableMapping[str, str]) -> None:
    """Two glibc heaps ("arenas") per worker process, unless the operator chose otherwise.

    glibc gives threads that allocate at once heaps of their own, up to 8 per core, and
    keeps what libvips frees in each for reuse there: a worker's RSS grows with its arenas
    (two arenas, measured side by side with glibc's default: docs/performance.md). glibc
    reads MALLOC_ARENA_MAX when a process starts, so it is set here, in the environment the
    spawned worker processes inherit."""
    environment.setdefault("MALLOC_ARENA_MAX", "2")


def run_workers(settings: Settings, processes: int, threads: int, queues: set[str] | None) -> None:
    """Start `processes` worker processes and keep them running: one that dies (killed,
    crashed) is replaced; its unacknowledged messages go back to the queue meanwhile."""
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    limit_malloc_arenas(os.environ)

    def spawn(index: int) -> Any:
        child = context.Process(
            target=run_worker_process, args=(settings, threads, queues, index), daemon=False
        )
        child.start()
        return child

    def request_stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    children: list[Any] = [spawn(index) for index in range(processes)]
    while not stopping.wait(0.5):
        for index, child in enumerate(children):
            if not child.is_alive():
                log.warning("worker.replaced", pid=child.pid, exitcode=child.exitcode)
                time.sleep(0.5)
                children[index] = spawn(index)
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout=30)
