"""The worker logs where a job's time went: waiting for a libvips thread, then on it."""

from __future__ import annotations

import time

from stockroom.pipeline.processing import _timed


def test_the_wait_and_the_run_are_timed_apart() -> None:
    submitted = time.perf_counter()
    time.sleep(0.02)  # the job waits for the thread

    def work() -> str:
        time.sleep(0.03)
        return "done"

    value, spent = _timed(work, submitted)
    assert value == "done"
    assert spent.queued >= 0.02
    assert spent.ran >= 0.03
