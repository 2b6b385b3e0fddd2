"""structlog set-up: JSON lines in production, a readable console in development;
every event carries the context bound for its request or job (request_id, job_id...), and
no secret (log_redaction.py), tracebacks included."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Literal

import orjson
import structlog

from stockroom.log_redaction import Redactor

_CHATTY_LIBRARIES = ("pyvips", "httpx", "httpcore")


def configure_logging(
    fmt: Literal["json", "console"], level: str = "INFO", secrets: Sequence[str] = ()
) -> None:
    """`secrets`: exact values to mask wherever they appear (the webhook secret)."""
    redact = Redactor(secrets)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks become text here, in both formats, so that the redaction sees them;
        # never with locals (a frame's locals held the ASGI scope, bearer token included).
        # Plain text, not rich's boxes: those wrap and crop lines, which could cut a token
        # out of reach of the redaction's patterns.
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: structlog.typing.Processor
    fast_renderer: structlog.typing.Processor
    factory: structlog.typing.WrappedLogger
    binary = getattr(sys.stderr, "buffer", None)
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        fast_renderer = renderer
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
        if binary is not None:  # every request logs a line: orjson straight to bytes
            fast_renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
            factory = structlog.BytesLoggerFactory(file=binary)
    else:
        renderer = fast_renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    # A last pass over the line itself, for secrets inside objects only their repr shows.
    renderer, fast_renderer = redact.rendered(renderer), redact.rendered(fast_renderer)
    structlog.configure(
        processors=[*shared, fast_renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library: render them the same way (JSON lines).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs each request
    # The actor logs every failure itself (image.failed, with the traceback when it is not
    # an expected image error); Dramatiq would add a traceback for each 404 or bad file.
    logging.getLogger("dramatiq.worker.WorkerThread").setLevel(logging.CRITICAL)
    # At INFO, libvips narrates every image (loader, shrink factors, threadpool)
    # and httpx every request of the CLI and the demo; our own events say what happened. Their
    # chatter stays available at DEBUG.
    for chatty in _CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
