"""Fixtures of the catalogue, labels, listings, stock and notification tests (flows, part A).

``flowhub`` gives a test its own organisation on the module's database (SQLite and PostgreSQL, from
``tests.storage_fixtures``), a plugin manager with the in-memory channel, and helpers to create
accounts wired to fresh ``MemoryRemote`` s, run a flow the way a worker does (``execute_run``), and
read back the run's items and events.

Import the fixtures into a test module::

    from tests.flows_fixtures_a import flowhub  # noqa: F401
    from tests.storage_fixtures import box, database, organisation  # noqa: F401
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from hub import accounts, labels
from hub.connections import Connector, set_connector
from hub.db import Database
from hub.jobs import create_run, execute_run, load_builtin_flows
from hub.locks import LocalLocks
from hub.models import (
    ChannelAccount,
    Event,
    Order,
    OrderLine,
    OrderStatus,
    Organisation,
    RunStatus,
    SyncRun,
    SyncRunItem,
    Variant,
    utcnow,
)
from hub.plugins import ChannelhubPluginManager, set_plugin_manager
from hub.scheduling import interval_for
from hub.records import Product, StockLevel
from hub.records import Variant as VariantRecord
from hub.secrets import CredentialBox
from tests.memory_channel import MemoryPlugin, MemoryRemote, remote

# -- canonical records with everything a marketplace needs ---------------------------------------------


def variant(sku: str, stock: int | dict[str, int] | list[StockLevel] = 5, **fields: Any) -> VariantRecord:
    """A source variant: barcode, size and prices filled in; ``stock`` available at "SYD", or per
    location ({"SYD": 3, "MEL": 2}), or as StockLevel records."""
    levels = stock if isinstance(stock, dict) else {} if isinstance(stock, list) else {"SYD": stock}
    values: dict[str, Any] = {
        "barcode": f"93{zlib.crc32(sku.encode()) % 10**11:011d}",
        "size": "M",
        "colour": "Black",
        "price_retail": Decimal("49.95"),
        "price_msrp": Decimal("59.95"),
        "price_wholesale": Decimal("20.00"),
        "stock": stock if isinstance(stock, list)
        else [StockLevel(location=location, available=amount) for location, amount in levels.items()],
    }
    values.update(fields)
    return VariantRecord(sku=sku, **values)


def product(parent_sku: str, *variants: VariantRecord, **fields: Any) -> Product:
    """A source product with a category, gender, description, brand and season."""
    values: dict[str, Any] = {
        "title": f"Product {parent_sku}",
        "description": "Soft organic cotton.",
        "brand": "Acme",
        "category": "Women > Tops > Tees",
        "gender": "female",
        "season": "SS25",
        "tags": ["core"],
        "images": [f"https://img.example/{parent_sku}.jpg"],
    }
    values.update(fields)
    return Product(parent_sku=parent_sku, variants=list(variants), **values)


def tees(count: int, prefix: str = "TEE", stock: int = 5) -> list[Product]:
    """``count`` one-variant products, SKUs ``TEE-000``..."""
    return [product(f"{prefix}{n:03d}", variant(f"{prefix}-{n:03d}", stock)) for n in range(count)]


# -- the hub around a test -----------------------------------------------------------------------------


@dataclass
class RunReport:
    run_id: int
    status: RunStatus
    error: str | None
    counts: dict[str, int]
    api_calls: int
    items: list[SyncRunItem] = field(default_factory=list)

    def outcomes(self) -> dict[str, str]:
        return {item.key: item.outcome for item in self.items}

    def item(self, key: str) -> SyncRunItem:
        found = [item for item in self.items if item.key == key]
        assert found, f"no item {key!r} in run {self.run_id}: {self.outcomes()}"
        return found[-1]


@dataclass
class FlowHub:
    db: Database
    organisation_id: int
    pm: ChannelhubPluginManager
    box: CredentialBox
    locks: LocalLocks = field(default_factory=LocalLocks)

    # accounts

    def account(self, name: str, *, plugin: str = "memory", status: str = "testing", **columns: Any) -> tuple[int, MemoryRemote]:
        remote_name = f"{name}-{uuid.uuid4().hex[:10]}"
        with self.db.session() as session:
            account = accounts.create_account(
                session, self.organisation_id, name, plugin, "sandbox", {"token": "t0ken"}, {"remote": remote_name},
                self.box, "test",
            )
            if status != "setup":
                accounts.activate(session, account, "test")
            if status == "live":
                accounts.go_live(session, account, "test")
            for column, value in columns.items():
                setattr(account, column, value)
            return account.id, remote(remote_name)

    def source(self, name: str = "shop", products: list[Product] | None = None) -> tuple[int, MemoryRemote]:
        account_id, state = self.account(name)
        state.products.extend(products or [])
        return account_id, state

    def marketplace(self, name: str = "iconic", *, source_id: int | None, label: str = "Iconic", **columns: Any) -> tuple[int, MemoryRemote]:
        label_id = self.label(label)
        columns = {"listings_enabled": True, "label_id": label_id, "source_account_id": source_id, **columns}
        return self.account(name, **columns)

    def update_account(self, account_id: int, **columns: Any) -> None:
        with self.db.session() as session:
            account = session.get(ChannelAccount, account_id)
            for column, value in columns.items():
                setattr(account, column, value)

    # labels

    def label(self, name: str) -> int:
        with self.db.session() as session:
            return labels.create_label(session, self.organisation_id, name).id

    def give_label(self, name: str, *keys: str) -> None:
        with self.db.session() as session:
            label = labels.create_label(session, self.organisation_id, name)
            result = labels.assign_skus(session, label, keys)
            assert not result.unknown, f"unknown SKUs {result.unknown}"

    # running flows

    def run(self, account_id: int, flow: str, *, queued_ago: timedelta | None = None, **params: Any) -> RunReport:
        """Run the flow now; ``queued_ago`` backdates the run's queueing (it waited that long for a worker)."""
        load_builtin_flows()
        run_id = create_run(self.db, account_id, flow, trigger="manual")
        if queued_ago is not None:
            with self.db.session() as session:
                session.get(SyncRun, run_id).queued_at = utcnow() - queued_ago
        execute_run(self.db, run_id, locks=self.locks, retries_left=0, params=params)
        return self.report(run_id)

    def interval(self, account_id: int, flow: str) -> timedelta:
        """How often the schedule runs the flow for the account."""
        with self.db.session() as session:
            return interval_for(session.get(ChannelAccount, account_id), flow)

    def report(self, run_id: int) -> RunReport:
        with self.db.session() as session:
            run = session.get(SyncRun, run_id)
            items = list(session.scalars(select(SyncRunItem).where(SyncRunItem.run_id == run_id).order_by(SyncRunItem.id)))
            return RunReport(run_id, RunStatus(run.status), run.error, dict(run.counts or {}), run.api_calls, items)

    def runs(self, flow: str) -> list[SyncRun]:
        with self.db.session() as session:
            return list(session.scalars(select(SyncRun).where(SyncRun.organisation_id == self.organisation_id,
                                                              SyncRun.flow == flow).order_by(SyncRun.id)))

    # reading back

    def events(self, kind: str | None = None) -> list[Event]:
        with self.db.session() as session:
            query = select(Event).where(Event.organisation_id == self.organisation_id).order_by(Event.id)
            if kind is not None:
                query = query.where(Event.kind == kind)
            return list(session.scalars(query))

    def variant(self, sku: str) -> Variant:
        with self.db.session() as session:
            found = session.scalar(select(Variant).where(Variant.organisation_id == self.organisation_id, Variant.sku == sku))
            assert found is not None, f"no variant {sku}"
            found.product, found.stock_levels  # noqa: B018  (load before the session closes)
            return found

    def order(self, account_id: int, lines: dict[str, int], *, status: OrderStatus = OrderStatus.IMPORTED,
              third_party_managed: bool = False) -> int:
        number = f"O-{uuid.uuid4().hex[:8]}"
        with self.db.session() as session:
            order = Order(organisation_id=self.organisation_id, account_id=account_id, channel_order_id=number,
                          order_number=number, status=status, third_party_managed=third_party_managed,
                          lines=[OrderLine(sku=sku, quantity=quantity) for sku, quantity in lines.items()])
            session.add(order)
            session.flush()
            return order.id

    def organisation(self) -> Organisation:
        with self.db.session() as session:
            return session.get(Organisation, self.organisation_id)


@pytest.fixture
def flowhub(database: Database, organisation: Organisation, box: CredentialBox) -> Iterator[FlowHub]:
    pm = ChannelhubPluginManager()
    pm.register_plugin(MemoryPlugin(), "memory")
    set_plugin_manager(pm)
    set_connector(Connector(box=box, pm=pm))
    try:
        yield FlowHub(database, organisation.id, pm, box)
    finally:
        set_connector(None)
