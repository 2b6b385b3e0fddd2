"""Running the actors: in `stockroom worker` processes (RabbitMQ), or inside the API
process in embedded mode (`memory://`). Same actors, same pipeline, other broker."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import threading
import time
from typing import Any

import dramatiq
import structlog
import uvloop
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import AsyncIO, Middleware
from prometheus_client import start_http_server

from stockroom.adapters.cache import MemoryProductCache
from stockroom.bootstrap import Services, bootstrap, build_broker_for, shutdown
from stockroom.config import Settings
from stockroom.domain.image_jobs import IMAGES_QUEUE
from stockroom.domain.ports import ImageStore, ProductCache
from stockroom.logs import configure_logging
from stockroom.pipeline.actors import declare_actors
from stockroom.pipeline.processing import PipelineContext

log = structlog.get_logger("stockroom.worker")


class WorkerRuntime:
    """Builds the pipeline's services lazily, on the worker's event loop, where their
    database connections must live; closes them on that loop at shutdown."""

    def __init__(
        self,
        settings: Settings,
        *,
        cache: ProductCache | None = None,
        store: ImageStore | None = None,
    ) -> None:
        # No near-cache in a worker: it never reads the product cache, and its invalidations
        # need not wait for their pub/sub echo, since no client is waiting on the worker's
        # answer (the job row is committed before the invalidation is even sent). Without
        # it, a worker neither subscribes to every process's invalidations nor waits.
        self._settings = settings.model_copy(update={"cache_near_max_entries": 0})
        self._cache = cache
        self._store = store
        self._services: Services | None = None
        self._context: PipelineContext | None = None
        self._lock: asyncio.Lock | None = None

    async def context(self) -> PipelineContext:
        if self._context is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._context is None:
                    self._services = await bootstrap(
                        self._settings, cache=self._cache, store=self._store
                    )
                    self._context = self._services.pipeline_context()
        return self._context

    async def close(self) -> None:
        if self._context is not None:
            await self._context.aclose()
        if self._services is not None:
            await shutdown(self._services, close_shared=self._cache is None)
            self._services = self._context = None


class RuntimeShutdown(Middleware):
    """Closes the runtime on the event loop before the AsyncIO middleware stops it."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop = get_event_loop_thread()
        if loop is not None:
            loop.run_coroutine(self.runtime.close())


def prepare_broker(
    broker: dramatiq.Broker, settings: Settings, runtime: WorkerRuntime
) -> dramatiq.Broker:
    declare_actors(broker, settings, runtime.context)
    # Dramatiq runs "after" hooks in reverse order: placed after AsyncIO, ours runs first,
    # while the event loop is still up.
    broker.add_middleware(RuntimeShutdown(runtime), after=AsyncIO)
    return broker


class EmbeddedWorker:
    """The actors running inside the API process, on the in-memory broker."""

    def __init__(self, services: Services) -> None:
        assert services.broker is not None
        self._broker = services.broker
        # The in-process cache must be shared (it is the only copy); a Redis client must
        # not be: its connections belong to the API's event loop, the actors run on another.
        shared_cache = services.cache if isinstance(services.cache, MemoryProductCache) else None
        self._runtime = WorkerRuntime(services.settings, cache=shared_cache, store=services.store)
        prepare_broker(self._broker, services.settings, self._runtime)
        self._threads = services.settings.worker_threads
        self._worker: dramatiq.Worker | None = None

    def start(self) -> None:
        if get_event_loop_thread() is not None:
            # Dramatiq's AsyncIO middleware keeps one event-loop thread per process, in a
            # global: a second worker would take it over and leave the first's running.
            raise RuntimeError("a Dramatiq worker already runs in this process: one per process")
        # A short poll timeout lets the API shut down promptly (the default waits 1 s).
        self._worker = dramatiq.Worker(
            self._broker, worker_threads=self._threads, worker_timeout=100
        )
        self._worker.start()

    def stop(self) -> None:
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
        start_http_server(settings.worker_metrics_port + index, addr="127.0.0.1")
    # Dramatiq's AsyncIO middleware makes the actors' event loop with asyncio.new_event_loop()
    # when the worker starts: under this policy it is a uvloop loop, as the API's is under
    # uvicorn. The loop's own cost per job (the origin, PostgreSQL and Redis sockets, the
    # executor hand-offs) drops by about 1.5 ms of CPU (docs/performance.md).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    runtime = WorkerRuntime(settings)
    broker = prepare_broker(build_broker_for(settings), settings, runtime)
    worker = dramatiq.Worker(broker, worker_threads=threads, queues=queues or {IMAGES_QUEUE})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    loop_thread = get_event_loop_thread()
    log.info(
        "worker.started",
        threads=threads,
        queues=sorted(queues or {IMAGES_QUEUE}),
        event_loop=type(loop_thread.loop).__module__ if loop_thread else None,
    )
    stop.wait()
    log.info("worker.stopping")
    worker.stop()
    broker.close()


def run_workers(settings: Settings, processes: int, threads: int, queues: set[str] | None) -> None:
    """Start `processes` worker processes and keep them running: one that dies (killed,
    crashed) is replaced; its unacknowledged messages go back to the queue meanwhile."""
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

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
