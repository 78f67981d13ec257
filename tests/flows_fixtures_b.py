"""Fixtures of the orders, fulfilment, reconcile and reset tests (flows, part B).

``ordershub`` extends part A's ``FlowHub`` (its own organisation on the module's SQLite or PostgreSQL
database, a plugin manager with the in-memory channel, ``run`` = one worker attempt) with what these
flows need: a marketplace wired to an order destination (and optionally a fulfilment account), a
seeded catalogue, orders placed and shipments made on the memory remotes, and read-backs.

It also registers ``memory_full``: the memory channel plus the optional order hooks (batch
``create_orders``, ``cancel_order``, ``pull_cancellations``, ``receive_return``), which the plain
memory channel lacks, so both paths of each flow step can be tested.

Import the fixtures into a test module::

    from tests.flows_fixtures_b import ordershub  # noqa: F401
    from tests.storage_fixtures import box, database, organisation  # noqa: F401
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from hub import carrier_maps
from hub.connections import Connector, set_connector
from hub.db import Database
from hub.errors import AuthError
from hub.hookspecs import hookimpl
from hub.models import (
    Binding,
    ChannelAccount,
    Fulfilment,
    LabelAssignment,
    Order,
    Organisation,
    Product,
    StockLevel,
    Variant,
)
from hub.plugins import ChannelhubPluginManager, set_plugin_manager
from hub.records import Address, Fulfilment as FulfilmentRecord, FulfilmentLine, ItemResult
from hub.records import Listing
from hub.records import Return as ReturnRecord
from hub.records import Order as OrderRecord
from hub.records import OrderLine as OrderLineRecord
from hub.secrets import CredentialBox
from tests.flows_fixtures_a import FlowHub
from tests.memory_channel import MemoryChannel, MemoryPlugin, MemoryRemote

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


class FullMemoryChannel(MemoryChannel):
    """The memory channel plus every optional order hook: a batch ``create_orders``, ``cancel_order``,
    ``pull_cancellations`` and ``receive_return``. What they receive is kept on the remote:
    ``extra(remote)`` gives ``cancelled`` (order numbers), ``returns`` (Return records) and
    ``cancelled_here`` (orders a test cancels "in the destination")."""

    name = "memory_full"
    title = "In-memory channel with every optional hook"

    def create_orders(self, orders: list[OrderRecord]) -> list[ItemResult]:
        state = self._call("create_orders")
        state.batch_sizes.append(len(orders))
        results = []
        for order in orders:
            if order.order_number not in state.created_orders:
                created = copy.deepcopy(order)
                created.external_id = f"D-{state.next_id()}"
                state.created_orders[order.order_number] = created
            results.append(ItemResult.success(order.order_number, external_id=state.created_orders[order.order_number].external_id))
        return results

    def cancel_order(self, order: OrderRecord, reason: str = "") -> ItemResult:
        extra(self._call("cancel_order"))["cancelled"].append((order.order_number, reason))
        return ItemResult.success(order.order_number)

    def pull_cancellations(self, since: datetime | None = None) -> list[OrderRecord]:
        state = self.remote
        state.calls["pull_cancellations"] += 1
        if self.credentials.get("token") == "revoked":
            raise AuthError("token revoked")
        if state.fail_cancellations_with is not None:  # not fail_with: see MemoryRemote
            raise state.fail_cancellations_with
        return [copy.deepcopy(order) for order in extra(state)["cancelled_here"]]

    def receive_return(self, ret: ReturnRecord) -> ItemResult:
        extra(self._call("receive_return"))["returns"].append(copy.deepcopy(ret))
        return ItemResult.success(ret.order_number)


def extra(state: MemoryRemote) -> dict[str, list[Any]]:
    """What ``FullMemoryChannel``'s optional hooks keep on a remote."""
    return state.__dict__.setdefault("extra", {"cancelled": [], "cancelled_here": [], "returns": []})


class FullMemoryPlugin:
    @hookimpl
    def channelhub_register_channels(self, register):  # type: ignore[no-untyped-def]
        register(FullMemoryChannel)


def address(name: str = "Jo Buyer") -> Address:
    return Address(name=name, line1="1 George St", city="Sydney", postcode="2000", country="AU", email="jo@example.com")


def listing_for(sku: str, quantity: int = 5, price: str = "49.95", **fields: Any) -> Listing:
    return Listing(sku=sku, parent_sku=sku.rsplit("-", 1)[0], title=f"Item {sku}", price=Decimal(price),
                   quantity=quantity, **fields)


@dataclass
class Scene:
    """A marketplace (``iconic``) whose orders go to ``shop`` (and ``ship`` when asked for)."""

    marketplace: int
    market: MemoryRemote
    destination: int
    dest: MemoryRemote
    fulfilment: int | None = None
    ship: MemoryRemote | None = None
    label_id: int | None = None


@dataclass
class OrdersHub(FlowHub):
    clock: list[datetime] = field(default_factory=lambda: [T0])

    # the scene

    def scene(self, *, fulfilment: bool = False, destination_plugin: str = "memory", live: bool = False,
              **marketplace_columns: Any) -> Scene:
        destination, dest = self.account("Shopify", plugin=destination_plugin)
        ship_id, ship = self.account("Starshipit") if fulfilment else (None, None)
        label_id = self.label("Iconic")
        columns = {"orders_enabled": True, "fulfilments_enabled": True, "listings_enabled": True, "label_id": label_id,
                   "destination_account_id": destination, "fulfilment_account_id": ship_id, **marketplace_columns}
        marketplace, market = self.account("Iconic AU", status="live" if live else "testing", **columns)
        return Scene(marketplace, market, destination, dest, ship_id, ship, label_id)

    # the catalogue

    def seed(self, *skus: str, stock: int = 5, label_id: int | None = None, price: str = "49.95", **variant_fields: Any) -> None:
        """One product per SKU with everything a listing needs; labelled when ``label_id`` is given."""
        with self.db.session() as session:
            for sku in skus:
                product = Product(organisation_id=self.organisation_id, parent_sku=f"P-{sku}", title=f"Item {sku}",
                                  description="Soft cotton.", brand="Acme", category="Women > Tops", gender="female",
                                  season="SS25")
                variant = Variant(organisation_id=self.organisation_id, sku=sku, barcode=f"93{zlib.crc32(sku.encode()) % 10**11:011d}",
                                  size="M", colour="Black", price_retail=Decimal(price), **variant_fields)
                variant.stock_levels = [StockLevel(location="SYD", available=stock, available_from_stock=stock, on_hand=stock)]
                product.variants = [variant]
                session.add(product)
                session.flush()
                if label_id is not None:
                    session.add(LabelAssignment(label_id=label_id, variant_id=variant.id))

    # orders on the marketplace

    def tick(self, minutes: int = 1) -> datetime:
        self.clock[0] = self.clock[0] + timedelta(minutes=minutes)
        return self.clock[0]

    def place(self, market: MemoryRemote, number: str, lines: dict[str, int] | list[OrderLineRecord],
              *, status: str = "new", **fields: Any) -> OrderRecord:
        """Put an order on the marketplace, changed "now" (each call moves the test clock on a minute)."""
        moment = self.tick()
        if isinstance(lines, dict):
            lines = [OrderLineRecord(sku=sku, quantity=qty, unit_price=Decimal("49.95"),
                                     channel_line_ids=[f"{number}-{sku}-{n}" for n in range(qty)])
                     for sku, qty in lines.items()]
        values: dict[str, Any] = {
            "shipping_address": address(), "placed_at": moment, "customer_name": "Jo Buyer",
            "customer_email": "jo@example.com", "billing_address": address("Jo Billing"), "total": Decimal("99.90"),
            "raw": {"changed_at": moment.isoformat()}, **fields,
        }
        order = OrderRecord(channel_order_id=f"C{number}", order_number=number, lines=lines, status=status, **values)
        market.orders[order.channel_order_id] = order
        market.order_changed_at[order.channel_order_id] = moment
        return order

    def change(self, market: MemoryRemote, number: str, *, status: str | None = None,
               line_status: dict[str, str] | None = None) -> OrderRecord:
        """The marketplace changes an order (cancelled, returned, a line returned) "now"."""
        moment = self.tick()
        order = copy.deepcopy(market.orders[f"C{number}"])
        if status is not None:
            order.status = status
        for line in order.lines:
            if line_status and line.sku in line_status:
                line.status = line_status[line.sku]
        order.raw = {**order.raw, "changed_at": moment.isoformat()}
        market.orders[order.channel_order_id] = order
        market.order_changed_at[order.channel_order_id] = moment
        return order

    # shipments on the destination / fulfilment system

    def ship(self, remote: MemoryRemote, number: str, *, carrier: str = "auspost", tracking: str = "AP123456789AU",
             lines: list[FulfilmentLine] | None = None, external_id: str | None = None) -> FulfilmentRecord:
        shipment = FulfilmentRecord(order_number=number, carrier=carrier, tracking_number=tracking, lines=lines or [],
                                    shipped_at=self.tick(), external_id=external_id)
        remote.shipments.append(shipment)
        return shipment

    def map_carrier(self, account_id: int, carrier: str, name: str, template: str = "") -> None:
        with self.db.session() as session:
            account = session.get(ChannelAccount, account_id)
            carrier_maps.set_mapping(session, account, carrier, name, template)

    # reading back

    def orders(self, account_id: int) -> list[Order]:
        with self.db.session() as session:
            found = list(session.scalars(select(Order).where(Order.account_id == account_id).order_by(Order.id)))
            for order in found:
                order.lines, order.returns, order.fulfilments  # noqa: B018  (load before the session closes)
            return found

    def the_order(self, account_id: int, number: str) -> Order:
        found = [order for order in self.orders(account_id) if order.order_number == number]
        assert len(found) == 1, f"{len(found)} orders numbered {number}"
        return found[0]

    def bindings(self, account_id: int, kind: str) -> list[Binding]:
        with self.db.session() as session:
            return list(session.scalars(select(Binding).where(Binding.account_id == account_id, Binding.kind == kind)
                                        .order_by(Binding.id)))

    def fulfilments(self, order_id: int) -> list[Fulfilment]:
        with self.db.session() as session:
            return list(session.scalars(select(Fulfilment).where(Fulfilment.order_id == order_id).order_by(Fulfilment.id)))

    def account_row(self, account_id: int) -> ChannelAccount:
        with self.db.session() as session:
            account = session.get(ChannelAccount, account_id)
            assert account is not None
            return account


@pytest.fixture
def ordershub(database: Database, organisation: Organisation, box: CredentialBox) -> Iterator[OrdersHub]:
    pm = ChannelhubPluginManager()
    pm.register_plugin(MemoryPlugin(), "memory")
    pm.register_plugin(FullMemoryPlugin(), "memory_full")
    set_plugin_manager(pm)
    set_connector(Connector(box=box, pm=pm))
    try:
        yield OrdersHub(database, organisation.id, pm, box)
    finally:
        set_connector(None)
