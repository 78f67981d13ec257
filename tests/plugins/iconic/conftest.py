"""Fixtures for The Iconic plugin: a sandbox on a fake clock, and channels wired to it without sockets."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from hub.channel import AccountInfo, ChannelServices
from hub.ratelimit import RateLimiterRegistry
from hub.records import Listing
from plugins.iconic.channel import IconicChannel
from plugins.iconic.sandbox import DEFAULT_APPLICATION_ID, DEFAULT_APPLICATION_SECRET, create_app

BASE_URL = "http://iconic.sandbox"
WEBHOOK_SECRET = "whsec-0123456789abcdef"


class FakeTime:
    """Wall clock and monotonic clock that move only when something sleeps (or a test advances them)."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.start = start
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    @property
    def now(self) -> float:
        return self.start + self.elapsed

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        # Small, like time.monotonic(): the token bucket's epsilon is absolute, and at epoch-sized
        # readings float resolution is coarser than it, so the bucket would spin on tiny sleeps.
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def sandbox_settings() -> dict[str, Any]:
    """Override in a test module to start the sandbox with other settings."""
    return {}


@pytest.fixture
def sandbox(fake: FakeTime, sandbox_settings: dict[str, Any]) -> Any:
    return create_app(clock=fake.time, **sandbox_settings)


@pytest.fixture
def make_channel(sandbox: Any, fake: FakeTime) -> Callable[..., IconicChannel]:
    registry = RateLimiterRegistry(clock=fake.monotonic, sleep=fake.sleep)
    counter = iter(range(1, 1000))

    def build(settings: dict[str, Any] | None = None, secret: str = DEFAULT_APPLICATION_SECRET,
              base_url: str | None = BASE_URL, environment: str = "sandbox",
              webhook_secret: str | None = WEBHOOK_SECRET, transport: Any = None) -> IconicChannel:
        """``webhook_secret`` goes into the (encrypted) credentials, where the channel reads it;
        ``transport`` shared by two channels makes them two runs of one process (a new one by default)."""
        services = ChannelServices(
            account=AccountInfo(id=next(counter), organisation_id=1, name="The Iconic test", environment=environment,
                                base_url=base_url),
            credentials={"application_id": DEFAULT_APPLICATION_ID, "application_secret": secret,
                         **({"webhook_secret": webhook_secret} if webhook_secret is not None else {})},
            settings=dict(settings or {}),
            transport=transport or httpx.WSGITransport(app=sandbox), sleep=fake.sleep, clock=fake.time,
            rate_limiter_registry=registry,
        )
        return IconicChannel(services)

    return build


@pytest.fixture
def channel(make_channel: Callable[..., IconicChannel]) -> IconicChannel:
    return make_channel()


@pytest.fixture
def control(sandbox: Any) -> httpx.Client:
    """The sandbox's control API, as a test would drive it over HTTP."""
    return httpx.Client(transport=httpx.WSGITransport(app=sandbox), base_url=BASE_URL)


def dress(sku: str, parent: str = "DRESS-1", *, size: str = "8", quantity: int = 5, price: str = "129.95",
          **changes: Any) -> Listing:
    """A listing The Iconic's Dresses category accepts (Gender and Colour given)."""
    fields: dict[str, Any] = dict(
        sku=sku, parent_sku=parent, title="Linen Midi Dress", price=Decimal(price), quantity=quantity,
        description="A linen midi dress.", brand="Acme", category="Women > Dresses", gender="Women",
        colour="Black", size=size, barcode=f"930000{zlib.crc32(sku.encode()) % 10**7:07d}",
    )
    fields.update(changes)
    return Listing(**fields)


def place_order(control: httpx.Client, *lines: tuple[str, int], **extra: Any) -> dict[str, Any]:
    response = control.post("/_control/orders", json={"items": [{"sku": s, "quantity": q} for s, q in lines], **extra})
    assert response.status_code == 201, response.text
    return response.json()


def calls(sandbox: Any, method: str | None = None, path: str | None = None) -> int:
    """Requests the sandbox saw (token requests excluded unless asked for by path)."""
    return sum(n for (m, p), n in sandbox.calls.items()
               if (method is None or m == method) and (p == path if path else p != "/oauth/client-credentials"))
