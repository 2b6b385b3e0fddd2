"""Log set-up: our events at the configured level, libraries' per-item chatter only at DEBUG,
and no secret in any line, ours or a library's."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from stockroom.domain.users import new_token_secret
from stockroom.logs import configure_logging
from stockroom.pipeline.operations import process
from tests.support.images import photo_bytes


@pytest.fixture(autouse=True)
def _restore_stdlib_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    chatty = {name: logging.getLogger(name).level for name in ("pyvips", "httpx", "httpcore")}
    yield
    root.handlers, root.level = handlers, level
    for name, saved in chatty.items():
        logging.getLogger(name).setLevel(saved)


def test_info_logs_our_events_but_not_libvips_narrating_each_image(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "INFO")
    process(photo_bytes(1200, 900), None, jpeg_quality=50, max_pixels=50_000_000)
    structlog.get_logger("stockroom.pipeline").info("image.processed", ms=1.0)

    err = capfd.readouterr().err
    assert '"event":"image.processed"' in err
    assert "VIPS:" not in err  # e.g. "VIPS: selected loader is VipsForeignLoadJpegBuffer"
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("pyvips").isEnabledFor(logging.WARNING)


def test_debug_brings_the_library_chatter_back(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "DEBUG")
    process(photo_bytes(1200, 900), None, jpeg_quality=50, max_pixels=50_000_000)

    assert "VIPS: selected loader is VipsForeignLoadJpegBuffer" in capfd.readouterr().err
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)


def test_console_tracebacks_show_no_locals_and_no_secret(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("console", "INFO")
    token = new_token_secret()

    def handler(authorization: str) -> None:
        raise ValueError("the handler failed")

    try:
        handler(f"Bearer {token}")
    except ValueError:
        structlog.get_logger("stockroom.test").exception("http.unhandled_error")

    err = capfd.readouterr().err
    assert "ValueError: the handler failed" in err
    assert token.removeprefix("sr_") not in err


def test_library_lines_are_redacted_too(capfd: pytest.CaptureFixture[str]) -> None:
    secret = "whsec_Zm9yIHRoZSB3ZWJob29rcw"
    configure_logging("json", "INFO", secrets=[secret])
    token = new_token_secret()

    logging.getLogger("uvicorn.error").info("refused %s signed %s", f"Bearer {token}", secret)
    logging.getLogger("httpx").warning("cookie: session=%s", token)

    lines = [orjson.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.error", "httpx"]
    assert token.removeprefix("sr_") not in str(lines)
    assert secret.removeprefix("whsec_") not in str(lines)
