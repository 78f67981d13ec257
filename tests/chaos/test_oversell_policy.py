"""The orders flow's oversell policy, and the stock rule it relies on (SQLite and PostgreSQL).

The account setting ``oversell_policy`` decides what happens to the order that sold a unit the source
no longer has: ``hold`` (the default) keeps it in ``error`` ("Held: oversold ...") and off the order
system until the source has stock for it again; ``cancel`` cancels it on its marketplace with a
reason (``oversell_cancel_reason``, default "Out of stock"), or holds it when the marketplace cannot
cancel. The policy only ever takes back the newest orders the order system has not accepted yet.
The end-to-end race on two real marketplaces is ``test_oversell.py``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.flows import orders as orders_flow
from hub.flows import stock as stock_flow
from hub.models import Order, OrderStatus, StockLevel, Variant
from tests.flows_fixtures_b import OrdersHub, extra, ordershub  # noqa: F401
from tests.storage_fixtures import box, database, organisation  # noqa: F401


@pytest.fixture
def pushes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], int | None, bool]]:
    """push_stock_now calls (what the stock flow pushes is its own tests' business)."""
    calls: list[tuple[list[str], int | None, bool]] = []

    def record(db, organisation_id, skus, exclude_account_id=None, *, force=False, **_):  # type: ignore[no-untyped-def]
        calls.append((list(skus), exclude_account_id, force))
        return []

    monkeypatch.setattr(stock_flow, "push_stock_now", record)
    return calls


def _two_marketplaces(hub: OrdersHub, *, policy: str | None = None, plugin: str = "memory", stock: int = 1):
    scene = hub.scene()
    second, market_two = hub.account("The Iconic NZ", plugin=plugin, orders_enabled=True, fulfilments_enabled=True,
                                     listings_enabled=True, destination_account_id=scene.destination)
    if policy is not None:
        for account_id in (scene.marketplace, second):
            row = hub.account_row(account_id)
            hub.update_account(account_id, settings={**row.settings, "oversell_policy": policy})
    _seed_from_the_destination(hub, scene.destination, stock)
    return scene, second, market_two


def _seed_from_the_destination(hub: OrdersHub, destination: int, stock: int) -> None:
    """TEE-1 in the catalogue, imported from the order destination (as Shopify is both)."""
    hub.seed("TEE-1", stock=stock)
    with hub.db.session() as session:
        variant = session.scalar(select(Variant).where(Variant.sku == "TEE-1", Variant.organisation_id == hub.organisation_id))
        variant.product.source_account_id = destination


def _pending(hub: OrdersHub, sku: str = "TEE-1") -> int:
    with hub.db.session() as session:
        return stock_flow.pending_units(session, hub.organisation_id, [sku]).get(sku, 0)


def test_the_later_order_of_the_last_unit_is_held_by_default(ordershub: OrdersHub, pushes: list) -> None:
    scene, second, market_two = _two_marketplaces(ordershub)
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.place(market_two, "2001", {"TEE-1": 1})  # a minute later, on the other marketplace

    ordershub.run(scene.marketplace, "orders")
    report = ordershub.run(second, "orders")

    first, later = ordershub.the_order(scene.marketplace, "1001"), ordershub.the_order(second, "2001")
    assert first.status is OrderStatus.ROUTED
    assert later.status is OrderStatus.ERROR and later.error.startswith(orders_flow.HELD)
    assert "restock TEE-1 in the source" in later.error
    assert list(scene.dest.created_orders) == ["1001"]  # the held order never reached the order system
    [oversell] = ordershub.events("stock.oversell")
    assert oversell.level == "error" and oversell.data["sku"] == "TEE-1" and oversell.data["orders"] == ["2001"]
    [held] = ordershub.events("order.held")
    assert held.level == "error" and held.data["order_number"] == "2001" and held.data["policy"] == "hold"
    assert report.item("2001").outcome == "rejected"
    assert _pending(ordershub) == 1  # a held order still holds its unit: every marketplace shows 0
    assert (["TEE-1"], None, True) in pushes  # pushed to every marketplace, this one too, even if unchanged

    again = ordershub.run(second, "orders")  # later runs leave it alone, quietly
    assert ordershub.the_order(second, "2001").status is OrderStatus.ERROR
    assert len(ordershub.events("order.held")) == 1 and len(ordershub.events("stock.oversell")) == 1
    assert "2001" not in again.outcomes()


def test_a_held_order_is_released_and_routed_once_the_source_has_stock(ordershub: OrdersHub, pushes: list) -> None:
    scene, second, market_two = _two_marketplaces(ordershub)
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.place(market_two, "2001", {"TEE-1": 1})
    ordershub.run(scene.marketplace, "orders")
    ordershub.run(second, "orders")
    with ordershub.db.session() as session:  # the next catalogue import brings 3 more
        level = session.scalar(select(StockLevel).join(Variant).where(Variant.sku == "TEE-1",
                                                                   Variant.organisation_id == ordershub.organisation_id))
        level.available = 3

    ordershub.run(second, "orders")

    assert ordershub.the_order(second, "2001").status is OrderStatus.ROUTED
    assert sorted(scene.dest.created_orders) == ["1001", "2001"]
    assert [e.data["order_number"] for e in ordershub.events("order.released")] == ["2001"]


def test_the_cancel_policy_cancels_the_later_order_on_its_marketplace(ordershub: OrdersHub, pushes: list) -> None:
    scene, second, market_two = _two_marketplaces(ordershub, policy="cancel", plugin="memory_full")
    ordershub.update_account(second, settings={**ordershub.account_row(second).settings, "oversell_policy": "cancel",
                                               "oversell_cancel_reason": "Sourcing delay"})
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.place(market_two, "2001", {"TEE-1": 1})

    ordershub.run(scene.marketplace, "orders")
    ordershub.run(second, "orders")

    later = ordershub.the_order(second, "2001")
    assert later.status is OrderStatus.CANCELLED and all(line.status == "cancelled" for line in later.lines)
    assert extra(market_two)["cancelled"] == [("2001", "Sourcing delay")]
    [event] = ordershub.events("order.oversell_cancelled")
    assert event.level == "warning" and "Sourcing delay" in event.message and "TEE-1 is oversold" in event.message
    assert list(scene.dest.created_orders) == ["1001"]
    assert _pending(ordershub) == 0
    assert (["TEE-1"], None, True) in pushes


def test_a_marketplace_that_cannot_cancel_holds_the_order_instead(ordershub: OrdersHub, pushes: list) -> None:
    scene, second, market_two = _two_marketplaces(ordershub, policy="cancel")  # plain memory: no cancel_order
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.place(market_two, "2001", {"TEE-1": 1})

    ordershub.run(scene.marketplace, "orders")
    ordershub.run(second, "orders")

    assert orders_flow.is_held(ordershub.the_order(second, "2001"))
    [failed] = ordershub.events("order.cancel_failed")
    assert "cannot cancel orders through the hub" in failed.message and "held instead" in failed.message


def test_when_both_arrive_in_one_run_the_newest_loses(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    _seed_from_the_destination(ordershub, scene.destination, 2)
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.place(scene.market, "1002", {"TEE-1": 1})
    ordershub.place(scene.market, "1003", {"TEE-1": 1})  # the newest

    ordershub.run(scene.marketplace, "orders")

    statuses = {number: ordershub.the_order(scene.marketplace, number).status for number in ("1001", "1002", "1003")}
    assert statuses == {"1001": OrderStatus.ROUTED, "1002": OrderStatus.ROUTED, "1003": OrderStatus.ERROR}


@pytest.mark.parametrize("value", [None, "", "HOLD", "refund", 3])
def test_an_unknown_or_missing_policy_is_hold(ordershub: OrdersHub, value: object) -> None:
    scene = ordershub.scene()
    ordershub.update_account(scene.marketplace, settings={"oversell_policy": value})
    assert orders_flow.oversell_policy(ordershub.account_row(scene.marketplace)) == "hold"


def test_routing_to_the_source_takes_the_units_out_of_the_basis(ordershub: OrdersHub, pushes: list) -> None:
    """The destination that is also the SKU's catalogue source took the units out of its stock; until
    the next catalogue import the hub's copy says the same, so the unit is not offered again."""
    scene = ordershub.scene()
    ordershub.seed("TEE-1", stock=3)
    with ordershub.db.session() as session:
        variant = session.scalar(select(Variant).where(Variant.sku == "TEE-1", Variant.organisation_id == ordershub.organisation_id))
        variant.product.source_account_id = scene.destination
    ordershub.place(scene.market, "1001", {"TEE-1": 2})

    ordershub.run(scene.marketplace, "orders")

    with ordershub.db.session() as session:
        level = session.scalar(select(StockLevel).join(Variant).where(Variant.sku == "TEE-1",
                                                                   Variant.organisation_id == ordershub.organisation_id))
        assert (level.available, level.available_from_stock, level.on_hand) == (1, 1, 3)
    assert _pending(ordershub) == 0  # accepted by the destination: no longer pending, and not counted twice


def test_an_order_the_destination_refused_still_holds_its_units(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1", stock=3)
    ordershub.place(scene.market, "1001", {"TEE-1": 2})
    with ordershub.db.session() as session:  # refused by the destination: in error, still sold
        ordershub.run(scene.marketplace, "orders")
        order = session.scalar(select(Order).where(Order.order_number == "1001",
                                                   Order.organisation_id == ordershub.organisation_id))
        order.status, order.destination_account_id, order.error = OrderStatus.ERROR, None, "refused"
    assert _pending(ordershub) == 2
