"""Fixtures shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hub.jobs import set_enqueuer
from hub.plugins import set_plugin_manager

POSTGRES_URL = os.environ.get("CHANNELHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CHANNELHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    """Each test starts with no plugin manager loaded and no runtime registered for follow-up work,
    so one test's CHANNELHUB_PLUGINS or embedded runtime never leaks into the next."""
    set_plugin_manager(None)
    set_enqueuer(None)
    yield
    set_plugin_manager(None)
    set_enqueuer(None)
