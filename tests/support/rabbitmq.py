"""A private RabbitMQ virtual host per test session, so tests never consume anyone
else's messages on the shared broker (nor leave theirs behind)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.services import IN_CI


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def private_vhost() -> Iterator[str | None]:
    """Yield an amqp:// URL on a new vhost, or None when rabbitmqctl is not available."""
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            raise RuntimeError("rabbitmqctl is needed to give tests a private vhost")
        yield None
        return
    name = f"stockroom_test_{uuid.uuid4().hex[:8]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        _ctl("delete_vhost", name)
