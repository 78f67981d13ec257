"""Fixtures for the Uphance plugin: a sandbox and channels wired to it through WSGI, on virtual time."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from hub.channel import AccountInfo, ChannelServices
from hub.ratelimit import RateLimiterRegistry
from hub.records import Address, Order, OrderLine
from plugins.uphance.channel import UphanceChannel
from plugins.uphance.sandbox import DEFAULT_EMAIL, DEFAULT_PASSWORD, create_app

START = 1_780_000_000.0  # 2026-05-28, after the seed catalogue's timestamps
WEBHOOK_SECRET = "s3cret-callback-token-0123456789"
CREDENTIALS = {"email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD, "webhook_secret": WEBHOOK_SECRET}  # stored encrypted
SETTINGS = {"organisation_id": 9579, "channel_id": 12, "warehouse": "Sydney DC", "customer_id": 501}
_accounts = itertools.count(1)


class FakeTime:
    """One clock for the sandbox, the client and the rate limiter; sleeping only advances it."""

    def __init__(self) -> None:
        self.now = START
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_sandbox(clock: FakeTime) -> Callable[..., Any]:
    def build(**settings: Any) -> Any:
        return create_app(seed=7, clock=clock, **settings)
    return build


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Any]) -> Any:
    return make_sandbox()


@pytest.fixture
def make_channel(sandbox: Any, clock: FakeTime) -> Callable[..., UphanceChannel]:
    """A channel against ``sandbox`` (or another app), with settings overriding the defaults."""

    def build(app: Any = None, credentials: dict[str, Any] | None = None, transport: Any = None,
              **settings: Any) -> UphanceChannel:
        services = ChannelServices(
            account=AccountInfo(id=next(_accounts), organisation_id=1, name="uphance", base_url="https://uphance.test"),
            credentials=credentials or dict(CREDENTIALS),
            settings={**SETTINGS, **settings}, transport=transport or httpx.WSGITransport(app=app or sandbox),
            sleep=clock.sleep, clock=clock, rate_limiter_registry=RateLimiterRegistry(clock=clock, sleep=clock.sleep),
        )
        return UphanceChannel(services)
    return build


@pytest.fixture
def channel(make_channel: Callable[..., UphanceChannel]) -> UphanceChannel:
    return make_channel()


def marketplace_order(number: str = "ICO-1001", skus: tuple[tuple[str, int], ...] = (("HL1001-NAV-S", 1),
                      ("HL1001-NAV-M", 2), ("HL1001-IVO-M", 1)), currency: str = "AUD") -> Order:
    """An Iconic order as the hub routes it: shipping to the end customer, billed to the marketplace."""
    return Order(
        channel_order_id=f"id-{number}", order_number=number, currency=currency,
        lines=[OrderLine(sku=sku, quantity=quantity, unit_price=Decimal("99.00")) for sku, quantity in skus],
        shipping_address=Address(name="Ada Lovelace", line1="1 George St", city="Sydney", postcode="2000",
                                 country="AU", region="NSW", phone="0400000000", email="ada@example.com"),
        billing_address=Address(name="THE ICONIC", company="THE ICONIC", line1="Level 18, 363 George St",
                                city="Sydney", postcode="2000", country="AU"),
        note="Order from The Iconic",
    )


def post_calls(app: Any, path: str) -> int:
    return app.calls[("POST", path)]


def control(app: Any, path: str, **body: Any) -> dict[str, Any]:
    """Call the sandbox's control API (what a person would do inside Uphance)."""
    response = Client(app).post(path, json=body)
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    return response.get_json()
