"""The one rule for tests that need a service (PostgreSQL, Redis, Debian's Chromium).

Outside CI a test whose service is missing is skipped, naming what is missing and how to get it.
Under ``CI=true`` it fails instead: CI must never pass by skipping what it was meant to test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

CHROMIUM = os.environ.get("CHANNELHUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def service_missing(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: tests that need it must run, not skip)", pytrace=False)
    pytest.skip(message)


def unavailable(what: str, error: BaseException) -> NoReturn:
    service_missing(f"{what} is not reachable: {error}")


def require_chromium() -> None:
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        service_missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
