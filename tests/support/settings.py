"""Settings for tests: built directly (never from the environment or a .env file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockroom.config import Settings


def make_settings(database_url: str, media: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "storage_url": f"file://{media}",
        "public_base_url": "http://testserver",
        "log_format": "console",
        "log_level": "WARNING",
        **overrides,
    }
    return Settings(_env_file=None, **values)
