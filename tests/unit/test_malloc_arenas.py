"""`stockroom worker` limits glibc's heaps in the processes it spawns, unless told otherwise."""

from __future__ import annotations

from stockroom.worker import limit_malloc_arenas


def test_two_arenas_by_default() -> None:
    environment: dict[str, str] = {}

    limit_malloc_arenas(environment)

    assert environment == {"MALLOC_ARENA_MAX": "2"}


def test_the_operators_own_value_wins() -> None:
    environment = {"MALLOC_ARENA_MAX": "8"}

    limit_malloc_arenas(environment)

    assert environment == {"MALLOC_ARENA_MAX": "8"}
