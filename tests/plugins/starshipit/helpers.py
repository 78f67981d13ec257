"""Helpers for the Starshipit tests: fake time, a webhook catcher, canonical orders, control calls."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import httpx

from hub.records import Address, Order, OrderLine

BASE_URL = "http://starshipit.sandbox"
EPOCH = 1_780_000_000.0


class FakeTime:
    """Monotonic and wall clocks that move only when someone sleeps."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    def time(self) -> float:
        return EPOCH + self.elapsed

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


class Webhooks:
    """The injectable sender: captures what the sandbox would POST."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> None:
        self.sent.append((url, headers, body))



def make_order(number: str = "ICONIC-1001", *, country: str = "AU", region: str = "NSW", quantity: int = 1,
               shipping_method: str = "standard", sku: str = "DRESS-RED-10", placed: bool = True) -> Order:
    return Order(
        channel_order_id=f"ic-{number}",
        order_number=number,
        lines=[OrderLine(sku=sku, quantity=quantity, unit_price=Decimal("89.95"), title="Linen dress, red, 10")],
        shipping_address=Address(name="Jo Citizen", line1="20 George Street", city="Sydney", postcode="2000",
                                 country=country, region=region, phone="0400000000", email="jo@example.com"),
        placed_at=datetime.fromtimestamp(EPOCH - 3600, timezone.utc) if placed else None,
        shipping_method=shipping_method,
        currency="AUD",
    )


def control(app: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    """Call the sandbox's control API (no keys, no rate limit)."""
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=BASE_URL) as client:
        response = client.post(f"/_control/{path}", json=body)
    response.raise_for_status()
    return response
