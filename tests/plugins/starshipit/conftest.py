"""Shared fixtures: a fresh sandbox and channel per test, on fake time, without sockets.

The sandbox's rate-limit clock, the hub's token bucket and the HTTP client's sleeps all run on one
FakeTime, so pacing and Retry-After are exercised exactly and nothing sleeps for real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hub.channel import AccountInfo, ChannelServices
from hub.ratelimit import RateLimiterRegistry
from plugins.starshipit.channel import StarshipitChannel
from plugins.starshipit.sandbox import API_KEY, DEVELOPER_KEY, PRODUCTION_KEY, create_app
from tests.plugins.starshipit.helpers import BASE_URL, FakeTime, Webhooks


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def webhooks() -> Webhooks:
    return Webhooks()


@pytest.fixture
def make_sandbox(fake: FakeTime, webhooks: Webhooks) -> Callable[..., Any]:
    def _make(**settings: Any) -> Any:
        settings.setdefault("seed_orders", 0)
        return create_app(seed=7, clock=fake.monotonic, now=fake.time, webhook_sender=webhooks, **settings)

    return _make


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Any]) -> Any:
    return make_sandbox()


@pytest.fixture
def make_channel(fake: FakeTime) -> Callable[..., StarshipitChannel]:
    def _make(app: Any, *, settings: dict[str, Any] | None = None, tier_key: str | None = None,
              **credentials: Any) -> StarshipitChannel:
        settings = settings or {}
        key = tier_key or (PRODUCTION_KEY if settings.get("tier") == "production" else DEVELOPER_KEY)
        services = ChannelServices(
            account=AccountInfo(id=1, organisation_id=1, name="Starshipit", base_url=BASE_URL),
            credentials={"api_key": API_KEY, "subscription_key": key, **credentials},
            settings=settings,
            transport=httpx.WSGITransport(app=app),
            sleep=fake.sleep,
            clock=fake.time,
            rate_limiter_registry=RateLimiterRegistry(clock=fake.monotonic, sleep=fake.sleep),
        )
        return StarshipitChannel(services)

    return _make


@pytest.fixture
def channel(sandbox: Any, make_channel: Callable[..., StarshipitChannel]) -> StarshipitChannel:
    return make_channel(sandbox)
