"""Fixtures: a Shopify sandbox on virtual time, and channels wired to it without sockets."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from hub.channel import AccountInfo, ChannelServices
from hub.ratelimit import RateLimiterRegistry
from plugins.shopify.channel import ShopifyChannel
from plugins.shopify.client import GRAPHQL_PATH
from plugins.shopify.sandbox import create_app

TOKEN = "shpat_test_token_1234"
SECRET = "test-client-secret-5678"
DOMAIN = "channelhub-test.myshopify.com"
BASE_URL = "http://shop.test"


class VirtualTime:
    """One clock for the sandbox and the channel; sleeping advances it instantly."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)


class Deliveries(list):
    """Webhook deliveries captured instead of sent: (uri, headers, body)."""

    def __call__(self, uri: str, headers: dict[str, str], body: bytes) -> int:
        self.append((uri, headers, body))
        return 200


@pytest.fixture
def vtime() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
def deliveries() -> Deliveries:
    return Deliveries()


@pytest.fixture
def make_sandbox(vtime: VirtualTime, deliveries: Deliveries) -> Callable[..., Any]:
    def make(**settings: Any) -> Any:
        options = {"products": 12, "access_token": TOKEN, "client_secret": SECRET, "shop_domain": DOMAIN,
                   "sender": deliveries, **settings}
        return create_app(seed=7, clock=vtime.clock, **options)

    return make


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Any]) -> Any:
    return make_sandbox()


@pytest.fixture
def make_channel(vtime: VirtualTime) -> Callable[..., ShopifyChannel]:
    def make(app: Any, settings: dict[str, Any] | None = None, **credentials: Any) -> ShopifyChannel:
        services = ChannelServices(
            account=AccountInfo(id=1, organisation_id=1, name="Acme Shopify", base_url=BASE_URL),
            credentials={"shop_domain": DOMAIN, "access_token": TOKEN, "client_secret": SECRET, **credentials},
            settings={"bulk_poll_seconds": 1.0, **(settings or {})},
            logger=logging.getLogger("channelhub.test.shopify"),
            transport=httpx.WSGITransport(app=app), sleep=vtime.sleep, clock=vtime.clock,
            rate_limiter_registry=RateLimiterRegistry(clock=vtime.clock, sleep=vtime.sleep),
        )
        return ShopifyChannel(services)

    return make


@pytest.fixture
def channel(sandbox: Any, make_channel: Callable[..., ShopifyChannel]) -> ShopifyChannel:
    return make_channel(sandbox)


@pytest.fixture
def admin(sandbox: Any) -> Callable[..., dict[str, Any]]:
    """Talk to the sandbox as the merchant would: GraphQL with the token, or its control API."""
    client = httpx.Client(transport=httpx.WSGITransport(app=sandbox), base_url=BASE_URL)

    def call(path_or_query: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if path_or_query.startswith("/_control"):
            response = client.post(path_or_query, json=body or {})
        else:
            response = client.post(GRAPHQL_PATH, headers={"X-Shopify-Access-Token": TOKEN},
                                   json={"query": path_or_query, "variables": body or {}})
        assert response.status_code == 200, response.text
        return response.json()

    return call


def graphql_calls(app: Any) -> int:
    return app.calls[("POST", GRAPHQL_PATH)]
