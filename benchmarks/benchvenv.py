"""The bench-only virtualenv, `.bench/venv`: tools the benchmarks run beside Stockroom
(thumbor, py-spy), installed there on first use with pip, never into the project's `.venv`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import RESULTS_DIR

VENV = RESULTS_DIR / "venv"


class ToolUnavailable(RuntimeError):
    """A tool could not be installed or started; the message says why."""


def _base_python() -> str:
    """The interpreter the project's venv was made from: a venv made from inside a venv
    would chain to it."""
    return getattr(sys, "_base_executable", sys.executable)


def ensure_tool(binary: str, requirement: str) -> Path:
    """`.bench/venv/bin/<binary>`, creating the venv and `pip install <requirement>` first
    when it is missing."""
    path = VENV / "bin" / binary
    if path.exists():
        return path
    try:
        if not (VENV / "bin" / "python").exists():
            subprocess.run(
                [_base_python(), "-m", "venv", str(VENV)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        print(f"[bench venv] pip install {requirement} into {VENV}...", file=sys.stderr)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", requirement],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise ToolUnavailable(f"installing {requirement} failed: {' '.join(tail)}") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolUnavailable(f"installing {requirement} failed: {exc}") from exc
    if not path.exists():
        raise ToolUnavailable(f"{requirement} installed no {binary} in {VENV / 'bin'}")
    return path
