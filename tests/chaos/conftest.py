"""Fixtures of the chaos suite, its marker, and the figures table it prints (and writes).

- ``chaos`` marks the full scenarios (minutes each, service restarts). They run only when the marker
  is asked for (``pytest -m chaos tests/chaos``, i.e. ``make chaos``); any other selection deselects
  them here as well, so a plain ``pytest`` can never restart Redis or PostgreSQL under other tests.
- Every scenario adds its :class:`~tests.chaos.harness.Figures` to ``FIGURES``; the terminal summary
  prints the table (so it shows in CI logs), and a run of the full suite writes it into
  ``docs/reliability.md`` between the figures markers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis import Redis

from tests.chaos.harness import (
    FIGURES,
    Figures,
    World,
    markdown_table,
    postgres_schema,
    redis_connection,
    text_table,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: full fault-injection scenarios (minutes; restarts Redis and "
                                       "PostgreSQL); run with `pytest -m chaos tests/chaos` (make chaos)")


def _chaos_selected(config: pytest.Config) -> bool:
    expression = config.getoption("markexpr", "") or ""
    return bool(re.search(r"\bchaos\b", expression)) and not re.search(r"\bnot\s+chaos\b", expression)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _chaos_selected(config):
        return
    chaos = [item for item in items if item.get_closest_marker("chaos") is not None]
    if chaos:
        config.hook.pytest_deselected(items=chaos)
        items[:] = [item for item in items if item.get_closest_marker("chaos") is None]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    if not FIGURES:
        return
    terminalreporter.section("channelhub reliability figures")
    terminalreporter.write_line(text_table(FIGURES))
    for figures in FIGURES:
        terminalreporter.write_line(f"- {figures.scenario}: {figures.details}")
    if _chaos_selected(config) and os.environ.get("CHANNELHUB_CHAOS_WRITE_DOC", "1") != "0":
        write_doc(FIGURES)
        terminalreporter.write_line(f"figures written to {DOC}")


def write_doc(rows: list[Figures]) -> None:
    """Replace the figures block of docs/reliability.md with this run's table and notes."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    notes = "\n".join(f"- **{figures.scenario}**: {figures.notes}" for figures in rows if figures.notes)
    block = (f"{START}\n_Last full run: {stamp} (`make chaos`)._\n\n{markdown_table(rows)}\n\n{notes}\n{END}")
    text = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


@pytest.fixture(scope="session")
def chaos_redis() -> Iterator[Redis]:
    connection = redis_connection()
    yield connection
    connection.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture
def world_factory(tmp_path: Path, pg_url: str, chaos_redis: Redis) -> Iterator:
    """Build a :class:`World` (its sandboxes and set-up done); everything it started is stopped after."""
    made: list[World] = []

    def make(*, set_up: bool = True, **options) -> World:  # type: ignore[no-untyped-def]
        world = World(tmp_path, pg_url, chaos_redis, **options)
        made.append(world)
        world.start_sandboxes()
        if set_up:
            world.set_up()
        return world

    try:
        yield make
    finally:
        for world in made:
            world.close()
