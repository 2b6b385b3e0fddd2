"""Settings validation: what an operator gets wrong is refused at start, with a reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from stockroom.config import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_defaults_are_the_embedded_mode() -> None:
    default = settings()

    assert default.database_url.startswith("sqlite+aiosqlite://")
    assert default.broker_url == "memory://"
    assert default.cache_url == "memory://"
    assert default.effective_log_format == "console"


def test_plain_postgres_urls_get_the_async_driver() -> None:
    for url in ("postgres://u@h/db", "postgresql://u@h/db"):
        assert settings(database_url=url).database_url == "postgresql+asyncpg://u@h/db"


def test_an_in_process_cache_is_refused_with_separate_workers() -> None:
    with pytest.raises(ValidationError, match="only works with the embedded broker"):
        settings(broker_url="amqp://guest:guest@127.0.0.1:5672/")

    assert settings(broker_url="amqp://x/", cache_url="redis://127.0.0.1:6379/0").cache_url


def test_production_refuses_a_placeholder_webhook_secret_and_logs_json() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        settings(environment="production", webhook_secret="changeme")

    assert settings(environment="production").effective_log_format == "json"


def test_every_setting_is_documented_in_env_example_and_docs() -> None:
    root = Path(__file__).resolve().parents[2]
    example = (root / ".env.example").read_text()
    documented = {name.lower() for name in re.findall(r"^STOCKROOM_([A-Z_]+)=", example, re.M)}
    reference = (root / "docs" / "configuration.md").read_text()

    assert documented == set(Settings.model_fields)
    assert [f for f in Settings.model_fields if f"STOCKROOM_{f.upper()}" not in reference] == []
