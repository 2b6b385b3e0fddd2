"""`stockroom import FILE`, run as a user would, against a real `stockroom serve` (embedded
mode, SQLite) with images served by a local HTTP server."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_processes import cli_token, serving
from tests.support.csv_files import HEADER, csv_bytes
from tests.support.image_server import ImageServer, serve_images

STOCKROOM = Path(sys.executable).with_name("stockroom")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """One `stockroom serve` for the module: (base URL, the environment of the CLI)."""
    folder = tmp_path_factory.mktemp("cli-import")
    env = {
        "STOCKROOM_ENVIRONMENT": "test",
        "STOCKROOM_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'cli.db'}",
        "STOCKROOM_STORAGE_URL": f"file://{folder / 'media'}",
        "STOCKROOM_ALLOW_PRIVATE_NETWORKS": "true",
        "STOCKROOM_JOB_MAX_RETRIES": "1",
        "STOCKROOM_JOB_MIN_BACKOFF_MS": "20",
        "STOCKROOM_IMPORT_SWEEP_SECONDS": "0.1",
        "STOCKROOM_LOG_LEVEL": "WARNING",
    }
    with serving(env, folder / "serve.log") as base:
        _wait_up(base)
        token = cli_token(env, "importer@example.com")
        yield base, {**env, "STOCKROOM_URL": base, "STOCKROOM_TOKEN": token}


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with serve_images() as server:
        yield server


def _wait_up(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} did not come up")


def stockroom_import(
    env: dict[str, str], *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STOCKROOM), "import", *args],
        env={**os.environ, **env, **(extra or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_waits_and_writes_the_output_csv(
    api: tuple[str, dict[str, str]], images: ImageServer, tmp_path: Path
) -> None:
    _, env = api
    source = tmp_path / "catalogue.csv"
    source.write_bytes(
        csv_bytes(
            [
                HEADER,
                ["P-1", "Lamp", f"{images.url('image.jpg')},{images.url('status/404')}", "5", ""],
                ["P-2", "Chair", "", "", "Oak"],
            ]
        )
    )
    out = tmp_path / "out.csv"

    result = stockroom_import(env, str(source), "--wait", "--json", "--output", str(out))

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["status"] == "completed_with_errors"
    assert (status["rows"], status["images_done"], status["images_failed"]) == (2, 1, 1)
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == [*HEADER, "Output Image URLs"]
    first, failed = rows[1][5].split(",")
    assert "/media/img/" in first
    assert failed == ""
    assert rows[2][5] == ""


def test_import_prints_the_output_csv_and_a_summary(
    api: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    _, env = api
    source = tmp_path / "small.csv"
    source.write_bytes(csv_bytes([HEADER, ["Q-1", "Stool", "", "2", ""]]))

    result = stockroom_import(env, str(source), "--wait")

    assert result.returncode == 0, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout)))[1][:2] == ["Q-1", "Stool"]
    assert "completed" in result.stderr
    assert "1 rows" in result.stderr


def test_import_without_wait_answers_at_once(
    api: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    _, env = api
    source = tmp_path / "later.csv"
    source.write_bytes(csv_bytes([HEADER, ["W-1", "Bench", "", "", ""]]))

    result = stockroom_import(env, str(source), "--json")

    assert result.returncode == 0, result.stderr
    accepted = json.loads(result.stdout)
    assert accepted["status_url"] == f"/imports/{accepted['request_id']}"


def test_a_refused_file_lists_its_problems_and_exits_1(
    api: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    _, env = api
    source = tmp_path / "bad.csv"
    source.write_bytes(
        csv_bytes([HEADER, ["", "No sku", "", "", ""], ["R-1", "x", "", "1.234", ""]])
    )

    printed = stockroom_import(env, str(source))
    scripted = stockroom_import(env, str(source), "--json")
    no_token = stockroom_import(env, str(source), extra={"STOCKROOM_TOKEN": ""})

    assert printed.returncode == 1
    assert "Serial Number" in printed.stderr
    assert "Price" in printed.stderr
    assert scripted.returncode == 1, scripted.stderr
    assert scripted.stdout.startswith("{"), (scripted.stdout, scripted.stderr)
    problem = json.loads(scripted.stdout)
    assert [(e["row"], e["column"]) for e in problem["errors"]] == [
        (2, "Serial Number"),
        (3, "Price"),
    ]
    assert no_token.returncode == 2
