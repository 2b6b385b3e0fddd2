"""The operator's commands, run as a user would: `stockroom ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

STOCKROOM = Path(sys.executable).with_name("stockroom")


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STOCKROOM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "STOCKROOM_STORAGE_URL": f"file://{tmp_path / 'media'}",
        "STOCKROOM_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [str(STOCKROOM), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_migrate_then_create_users_and_list_dead_letters(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0

    created = run(tmp_path, "users", "create", "--email", "Ops@Example.com", "--admin", "--json")
    again = run(tmp_path, "users", "create", "--email", "ops@example.com", "--json")
    letters = run(tmp_path, "dlq", "list", "--json")
    nothing = run(tmp_path, "dlq", "retry")

    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)
    assert user["email"] == "ops@example.com"
    assert user["is_admin"] is True
    assert user["token"].startswith("sr_")
    assert again.returncode == 1  # the email is taken, whatever its case
    assert letters.returncode == 0
    assert letters.stdout == ""
    assert nothing.returncode == 2  # neither ids nor --all


def test_worker_refuses_the_embedded_broker(tmp_path: Path) -> None:
    result = run(tmp_path, "worker")

    assert result.returncode == 2
    assert "memory://" in result.stderr


def test_jobs_requeue_reports_what_it_queued_again(tmp_path: Path) -> None:
    assert run(tmp_path, "migrate").returncode == 0

    requeued = run(tmp_path, "jobs", "requeue", "--older-than-minutes", "0")
    negative = run(tmp_path, "jobs", "requeue", "--older-than-minutes", "-1")

    assert requeued.returncode == 0, requeued.stderr
    assert "requeued 0 job(s)" in requeued.stderr
    assert negative.returncode == 2
