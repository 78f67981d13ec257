"""The plugin author's test kit: conformance suites, fake time, services and sandbox helpers.

A channel plugin's tests import everything from here::

    from hub.testing import ChannelConformance, MarketplaceConformance, ErrorConformance, make_services

and list it as a pytest plugin in their top-level ``conftest.py`` for the ``fake_time`` fixture::

    pytest_plugins = ["hub.testing"]

Everything runs in-process against the plugin's WSGI sandbox (``httpx.WSGITransport``, no sockets)
on fake time, so retries, Retry-After and the rate limiter are exercised without waiting.
``docs/plugin-kit.md`` describes each suite.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest

from hub.channel import AccountInfo, ChannelServices
from hub.conformance import (
    OPT_IN_SUITES,
    ROLE_SUITES,
    BatchingConformance,
    ChannelConformance,
    DestinationConformance,
    ErrorConformance,
    MarketplaceConformance,
    SourceConformance,
    WebhookConformance,
    forged_webhooks,
    without_credentials,
)
from hub.ratelimit import RateLimiterRegistry
from hub.sandbox import CONTROL_PREFIX, Faults, WSGIApp


# A fixed wall-clock start (2026-05-28), so timestamps in tests are reproducible.
EPOCH = 1_780_000_000.0
SANDBOX_URL = "http://sandbox.test"


class FakeTime:
    """Monotonic and wall clocks that move only when something sleeps (or a test advances them)."""

    def __init__(self, start: float = EPOCH) -> None:
        self.start = start
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    def time(self) -> float:
        return self.start + self.elapsed

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


def make_services(
    credentials: dict[str, Any],
    settings: dict[str, Any] | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
    *,
    fake_time: FakeTime | None = None,
    base_url: str | None = SANDBOX_URL,
    account_id: int = 1,
    name: str = "test account",
    logger: logging.Logger | None = None,
) -> ChannelServices:
    """Hub services for a channel under test, as ``hub.connections`` would build them for an account.

    Without ``sleep`` the services run on ``fake_time`` (a fresh FakeTime if none is given): the
    client's backoff, Retry-After waits and the token bucket all move that clock, never the real one.
    ``transport`` is usually ``sandbox_transport(app)``.
    """
    account = AccountInfo(id=account_id, organisation_id=1, name=name, base_url=base_url)
    services = ChannelServices(account=account, credentials=dict(credentials), settings=dict(settings or {}),
                               transport=transport)
    if logger is not None:
        services.logger = logger
    if sleep is not None:
        services.sleep = sleep  # hub.http builds a bucket registry on this sleep's own time
        return services
    clock = fake_time or FakeTime()
    services.sleep, services.clock = clock.sleep, clock.time
    # A registry per services object: tests never share (or drain) another test's token bucket.
    services.rate_limiter_registry = RateLimiterRegistry(clock=clock.monotonic, sleep=clock.sleep)
    return services


def sandbox_transport(app: WSGIApp) -> httpx.WSGITransport:
    """An httpx transport that hands requests straight to a WSGI sandbox: no sockets, no server."""
    return httpx.WSGITransport(app=app)


def control(app: WSGIApp, path: str, body: Any = None, *, method: str = "POST") -> Any:
    """Call a sandbox's control API in-process and return its JSON; a refusal raises AssertionError."""
    url = path if path.startswith(CONTROL_PREFIX) else f"{CONTROL_PREFIX}/{path.lstrip('/')}"
    with httpx.Client(transport=sandbox_transport(app), base_url=SANDBOX_URL) as client:
        response = client.request(method, url, json=body)
    if response.status_code >= 400:
        raise AssertionError(f"{method} {url} -> {response.status_code}: {response.text}")
    return json.loads(response.content) if response.content else None


class InFlight:
    """How many calls were in flight at once, for tests of a channel that sends several together.

    ``with gauge:`` around each call, or ``gauge.around(app)`` for a WSGI sandbox: each request (or
    only those whose path contains ``only``) is held ``pause`` seconds of real time, so that
    concurrent requests overlap and ``gauge.most`` shows how many the channel kept in flight.

    A pause alone depends on the host: on a busy one the fourth thread may start after the first
    request has answered. Give ``until`` (or call ``reach(n)`` inside ``with gauge:``) and each call
    is held until that many have been in flight at once, then passes: a channel that does overlap
    its calls shows it however slow the host, and one that does not costs the test ``timeout``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grew = threading.Condition(self._lock)
        self.now = self.most = 0
        self.threads: set[str] = set()

    def __enter__(self) -> InFlight:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.current_thread().name)
            self._grew.notify_all()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1

    def reach(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` calls have been in flight at once (True), or ``timeout`` passes (False)."""
        with self._grew:
            return self._grew.wait_for(lambda: self.most >= count, timeout)

    def around(self, app: WSGIApp, *, pause: float = 0.05, only: str = "", until: int | None = None,
               lead: int = 0, timeout: float = 5.0) -> WSGIApp:
        """``lead``: the first requests that go alone by design (a first page that tells the client how
        many follow, a search before the writes) pass without waiting for ``until``."""
        seen = itertools.count()

        def gauged(environ: dict, start_response: Callable) -> Iterable[bytes]:
            if only not in environ.get("PATH_INFO", ""):
                return app(environ, start_response)
            with self:
                if until is not None and next(seen) >= lead:
                    self.reach(until, timeout)
                time.sleep(pause)
                return app(environ, start_response)

        return gauged


def set_faults(app: WSGIApp, **knobs: float) -> dict[str, Any]:
    """Turn a sandbox's fault knobs (``hub.sandbox.Faults`` fields) through its ``/_control/faults``."""
    return control(app, "faults", knobs, method="PUT")


def clear_faults(app: WSGIApp) -> dict[str, Any]:
    """Every fault rate and the latency back to zero."""
    quiet = {name: 0.0 for name in vars(Faults()) if name.startswith("rate_") or name == "latency"}
    return set_faults(app, **quiet)


@pytest.fixture
def fake_time() -> FakeTime:
    """A FakeTime per test; share it between the sandbox's clock and ``make_services``."""
    return FakeTime()


__all__ = [
    "EPOCH",
    "OPT_IN_SUITES",
    "ROLE_SUITES",
    "SANDBOX_URL",
    "BatchingConformance",
    "ChannelConformance",
    "DestinationConformance",
    "ErrorConformance",
    "FakeTime",
    "MarketplaceConformance",
    "SourceConformance",
    "WebhookConformance",
    "clear_faults",
    "control",
    "fake_time",
    "forged_webhooks",
    "make_services",
    "sandbox_transport",
    "set_faults",
    "without_credentials",
]
