"""An in-memory channel with every role, for driving the flows in tests.

Its "remote" state lives in a ``MemoryRemote`` looked up by the account setting ``remote``, so a test
holds the same object the channel talks to and can place orders, ship them, or inject failures.
It counts calls per hook and per batch, so tests can assert batching.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields

from hub.channel import Channel, Limits, Role, WebhookAction, WebhookRequest
from hub.errors import AuthError, RejectedItem, TransientError
from hub.hookspecs import hookimpl
from hub.records import Fulfilment, ItemResult, Listing, Order, Product

REMOTES: dict[str, MemoryRemote] = {}


@dataclass
class MemoryRemote:
    name: str
    products: list[Product] = field(default_factory=list)
    # Optional change dates by parent SKU: list_products(since) then leaves out a product changed
    # before ``since``, as a real source's incremental read does. Products without one always come back.
    product_changed_at: dict[str, datetime] = field(default_factory=dict)
    listings: dict[str, Listing] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)  # what the marketplace sells
    order_changed_at: dict[str, datetime] = field(default_factory=dict)
    created_orders: dict[str, Order] = field(default_factory=dict)  # what the destination received
    shipments: list[Fulfilment] = field(default_factory=list)  # what the destination shipped
    sent_fulfilments: list[tuple[str, Fulfilment]] = field(default_factory=list)  # what the marketplace got
    calls: Counter = field(default_factory=Counter)
    batch_sizes: list[int] = field(default_factory=list)
    reject_skus: dict[str, str] = field(default_factory=dict)  # sku -> message
    fail_with: Exception | None = None  # raised by the next hook call, then cleared
    # Raised by every pull_cancellations until cleared: the orders flow reads cancellations beside
    # the marketplace's pull, in another thread, so fail_with (one-shot, "the next call") skips it.
    fail_cancellations_with: Exception | None = None
    fail_enumeration_after: int | None = None  # list_listings raises after this many items
    carriers: tuple[str, ...] = ("Australia Post", "StarTrack", "Aramex")
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> str:
        return str(next(self._ids))

    def take_failure(self) -> None:
        if self.fail_with is not None:
            failure, self.fail_with = self.fail_with, None
            raise failure


def remote(name: str) -> MemoryRemote:
    """The remote called ``name``, created empty on first use."""
    return REMOTES.setdefault(name, MemoryRemote(name))


class MemoryCredentials(Schema):
    token = fields.String(required=True)


class MemorySettings(Schema):
    remote = fields.String(required=True)


class MemoryChannel(Channel):
    name = "memory"
    title = "In-memory test channel"
    roles = frozenset({Role.SOURCE, Role.MARKETPLACE, Role.ORDER_DESTINATION, Role.FULFILMENT})
    credentials_schema = MemoryCredentials
    settings_schema = MemorySettings
    limits = Limits(max_batch=10, requests_per_second=100, burst=100, documented="test channel")

    @property
    def remote(self) -> MemoryRemote:
        return remote(self.settings["remote"])

    def _call(self, hook: str) -> MemoryRemote:
        state = self.remote
        state.calls[hook] += 1
        if self.credentials.get("token") == "revoked":
            raise AuthError("token revoked")
        state.take_failure()
        return state

    def test_connection(self) -> dict[str, Any]:
        return {"remote": self._call("test_connection").name}

    def list_products(self, since: datetime | None = None):
        state = self._call("list_products")
        return [copy.deepcopy(p) for p in state.products
                if since is None or p.parent_sku not in state.product_changed_at
                or state.product_changed_at[p.parent_sku] >= since]

    def push_listings(self, listings: list[Listing]) -> list[ItemResult]:
        state = self._call("push_listings")
        results = []
        for batch in self.limits.batches(listings):
            state.batch_sizes.append(len(batch))
            for listing in batch:
                if listing.sku in state.reject_skus:
                    results.append(ItemResult.rejected(listing.sku, state.reject_skus[listing.sku]))
                    continue
                state.listings[listing.sku] = copy.deepcopy(listing)
                results.append(ItemResult.success(listing.sku, external_id=f"L-{listing.sku}"))
        return results

    def pull_orders(self, since: datetime | None = None):
        state = self._call("pull_orders")
        return [copy.deepcopy(order) for key, order in state.orders.items()
                if since is None or state.order_changed_at.get(key, datetime.max) >= since]

    def pull_orders_by_id(self, order_ids: list[str]):
        state = self._call("pull_orders_by_id")
        return [copy.deepcopy(state.orders[key]) for key in order_ids if key in state.orders]

    def send_fulfilment(self, order: Order, fulfilment: Fulfilment) -> ItemResult:
        state = self._call("send_fulfilment")
        if fulfilment.carrier not in state.carriers:
            return ItemResult.rejected(order.order_number, f"unknown shipping provider {fulfilment.carrier!r}", field="carrier")
        state.sent_fulfilments.append((order.order_number, copy.deepcopy(fulfilment)))
        return ItemResult.success(order.order_number)

    def send_fulfilments(self, pairs: list[tuple[Order, Fulfilment]]) -> list[ItemResult]:
        """One call for the batch (``calls["send_fulfilments"]``); an unknown carrier refuses just its shipment."""
        state = self._call("send_fulfilments")
        results = []
        for order, fulfilment in pairs:
            if fulfilment.carrier not in state.carriers:
                results.append(ItemResult.rejected(order.order_number, f"unknown shipping provider {fulfilment.carrier!r}",
                                                   field="carrier"))
                continue
            state.sent_fulfilments.append((order.order_number, copy.deepcopy(fulfilment)))
            results.append(ItemResult.success(order.order_number))
        return results

    def list_listings(self):
        state = self._call("list_listings")
        for count, listing in enumerate(list(state.listings.values())):
            if state.fail_enumeration_after is not None and count >= state.fail_enumeration_after:
                raise TransientError("page 2 failed")
            yield copy.deepcopy(listing)

    def create_order(self, order: Order) -> ItemResult:
        state = self._call("create_order")
        if order.order_number not in state.created_orders:
            unknown = [line.sku for line in order.lines if line.sku in state.reject_skus]
            if unknown:
                raise RejectedItem(f"unknown SKU {unknown[0]}", key=order.order_number, field="sku")
            created = copy.deepcopy(order)
            created.external_id = f"D-{state.next_id()}"
            state.created_orders[order.order_number] = created
        return ItemResult.success(order.order_number, external_id=state.created_orders[order.order_number].external_id)

    def pull_fulfilments(self, since: datetime | None = None):
        return [copy.deepcopy(f) for f in self._call("pull_fulfilments").shipments]

    def verify_webhook(self, request: WebhookRequest) -> WebhookAction | None:
        if request.url_secret != self.settings.get("webhook_secret", "s3cret"):
            raise AuthError("bad webhook secret")
        return WebhookAction(flow="orders", delivery_id=request.header("X-Delivery"))


class MemoryPlugin:
    """Registered on a plugin manager in tests: ``pm.register_plugin(MemoryPlugin(), "memory")``."""

    @hookimpl
    def channelhub_register_channels(self, register):  # type: ignore[no-untyped-def]
        register(MemoryChannel)
