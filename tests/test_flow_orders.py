"""The orders flow: import exactly once, route to the destination, follow cancellations and returns."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from hub import bindings, cursors
from hub.errors import RateLimited, RejectedItem, TransientError
from hub.flows import orders as orders_flow
from hub.flows import stock as stock_flow
from hub.flows.reset import RESET_SETTING
from hub.hookspecs import hookimpl
from hub.jobs import FlowContext
from hub.locks import LocalLocks
from sqlalchemy import event, select

from hub.channel import Limits
from hub.models import AccountStatus, Order, OrderStatus, RunStatus, utcnow
from hub.records import ItemResult
from tests.flows_fixtures_b import FullMemoryChannel, OrdersHub, extra, ordershub  # noqa: F401
from tests.memory_channel import MemoryChannel
from tests.storage_fixtures import box, database, organisation  # noqa: F401


@pytest.fixture
def pushes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[str], int | None]]:
    """Captures push_stock_now calls (the stock flow's own tests cover what it pushes)."""
    calls: list[tuple[int, list[str], int | None]] = []

    def record(db, organisation_id, skus, exclude_account_id=None, **_):  # type: ignore[no-untyped-def]
        calls.append((organisation_id, list(skus), exclude_account_id))
        return []

    monkeypatch.setattr(stock_flow, "push_stock_now", record)
    return calls


def test_an_order_is_imported_and_routed_as_the_destination_expects(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1", "TEE-2", stock=5)
    ordershub.place(scene.market, "1001", {"TEE-1": 2, "TEE-2": 1})

    report = ordershub.run(scene.marketplace, "orders")

    assert report.status is RunStatus.OK, report.error
    assert [(i.key, i.outcome, i.message) for i in report.items] == [
        ("1001", "ok", "imported"), ("1001", "ok", "routed to Shopify")]
    order = ordershub.the_order(scene.marketplace, "1001")
    assert order.status is OrderStatus.ROUTED and order.destination_account_id == scene.destination
    assert [(line.sku, line.quantity, line.variant_id is not None) for line in order.lines] == [
        ("TEE-1", 2, True), ("TEE-2", 1, True)]

    [created] = scene.dest.created_orders.values()
    assert created.order_number == "1001"  # the marketplace number is the order's name
    assert created.customer_name == "In-memory test channel"  # customer = the marketplace
    assert created.billing_address is None  # billing = the marketplace (no address configured)
    assert created.shipping_address.name == "Jo Buyer"  # shipping = the end customer
    assert created.note == "In-memory test channel order 1001 (channel account Iconic AU)"
    assert [line.channel_line_ids for line in created.lines] == [["1001-TEE-1-0", "1001-TEE-1-1"], ["1001-TEE-2-0"]]

    [imported] = ordershub.bindings(scene.marketplace, bindings.ORDER_IMPORT)
    assert (imported.external_id, imported.internal_id) == ("C1001", str(order.id))
    [routed] = ordershub.bindings(scene.destination, bindings.DESTINATION_ORDER)
    assert (routed.internal_id, routed.external_id) == (str(order.id), created.external_id)
    assert [e.kind for e in ordershub.events() if e.kind.startswith("order.")] == ["order.imported", "order.routed"]
    assert pushes == [(ordershub.organisation_id, ["TEE-1", "TEE-2"], scene.marketplace)]  # others hear at once
    assert (scene.market.calls["pull_orders"], scene.dest.calls["create_order"]) == (1, 1)
    assert report.api_calls == 2


def test_the_cursor_moves_to_the_newest_change_and_the_next_pull_overlaps(ordershub: OrdersHub, pushes: list,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    newest = ordershub.place(scene.market, "1002", {"TEE-1": 1}).placed_at
    seen: list = []
    original = orders_flow.pull
    monkeypatch.setattr(orders_flow, "pull",
                        lambda ctx, channel, since, ids: seen.append(since) or original(ctx, channel, since, ids))

    ordershub.run(scene.marketplace, "orders")
    ordershub.run(scene.marketplace, "orders")

    with ordershub.db.session() as session:
        assert cursors.read_time(session, scene.marketplace, "orders") == newest
    assert seen == [None, newest - orders_flow.PULL_OVERLAP]


def test_a_webhook_pull_takes_just_the_named_orders_and_leaves_the_cursor(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.run(scene.marketplace, "orders")
    with ordershub.db.session() as session:
        cursor = cursors.read_time(session, scene.marketplace, "orders")
    ordershub.place(scene.market, "1002", {"TEE-1": 1})
    ordershub.place(scene.market, "1003", {"TEE-1": 1})

    ordershub.run(scene.marketplace, "orders", order_ids=["C1003"])

    assert scene.market.calls["pull_orders_by_id"] == 1
    with ordershub.db.session() as session:
        numbers = set(session.scalars(select(Order.order_number).where(Order.account_id == scene.marketplace)))
        assert cursors.read_time(session, scene.marketplace, "orders") == cursor  # 1002 is still ahead of it
    assert numbers == {"1001", "1003"}
    ordershub.run(scene.marketplace, "orders")  # the next scheduled pull picks up what the webhook did not name
    with ordershub.db.session() as session:
        numbers = set(session.scalars(select(Order.order_number).where(Order.account_id == scene.marketplace)))
    assert numbers == {"1001", "1002", "1003"}


def test_an_order_pulled_again_is_neither_imported_nor_created_twice(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})

    first = ordershub.run(scene.marketplace, "orders")
    with ordershub.db.session() as session:  # as if the cursor were lost: the whole history comes again
        cursors.write(session, scene.marketplace, "orders", "2000-01-01T00:00:00+00:00")
    second = ordershub.run(scene.marketplace, "orders")

    assert first.status is RunStatus.OK and second.status is RunStatus.OK
    assert second.items == []  # nothing new, nothing to say
    assert len(ordershub.orders(scene.marketplace)) == 1
    assert len(scene.dest.created_orders) == 1 and scene.dest.calls["create_order"] == 1
    assert len(pushes) == 1


def test_new_orders_of_a_pull_are_inserted_together_whatever_their_number(
    ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1", "TEE-2", stock=50)
    statements: list[int] = []
    original = orders_flow.store_batch

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        count = [0]

        def one(*_: object) -> None:
            count[0] += 1

        event.listen(ordershub.db.engine, "before_cursor_execute", one)
        try:
            return original(*args, **kwargs)
        finally:
            event.remove(ordershub.db.engine, "before_cursor_execute", one)
            statements.append(count[0])

    monkeypatch.setattr(orders_flow, "store_batch", counted)
    ordershub.place(scene.market, "1001", {"TEE-1": 1, "TEE-2": 1})
    ordershub.run(scene.marketplace, "orders")
    for number in range(1002, 1014):
        ordershub.place(scene.market, str(number), {"TEE-1": 1, "TEE-2": 1})
    ordershub.run(scene.marketplace, "orders")

    assert len(ordershub.orders(scene.marketplace)) == 13
    assert len(ordershub.bindings(scene.marketplace, bindings.ORDER_IMPORT)) == 13
    assert len(ordershub.events("order.imported")) == 13
    if not ordershub.db.is_sqlite:  # SQLite's driver sends a batch's rows one by one, in-process
        # One order or twelve: the same statements (a savepoint and INSERTs per order before), plus
        # the lines of the order the first run imported, read again.
        assert statements[1] <= statements[0] + 1, statements


def test_polls_that_find_nothing_lock_no_account_row(ordershub: OrdersHub, pushes: list) -> None:
    # A quiet account is polled every few minutes: an empty answer (no orders, no shipments, no
    # cancellations at the destination) must not take the account's row lock the stores take.
    scene = ordershub.scene(fulfilment=True)
    locks: list[str] = []

    def one(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE CHANNEL_ACCOUNTS"):
            locks.append(statement)

    event.listen(ordershub.db.engine, "before_cursor_execute", one)
    try:
        assert ordershub.run(scene.marketplace, "orders").status is RunStatus.OK
        assert ordershub.run(scene.marketplace, "fulfilment").status is RunStatus.OK
    finally:
        event.remove(ordershub.db.engine, "before_cursor_execute", one)
    assert locks == []
    ordershub.seed("TEE-1", stock=5)
    ordershub.place(scene.market, "1001", {"TEE-1": 1})  # something to store: the lock is taken again
    event.listen(ordershub.db.engine, "before_cursor_execute", one)
    try:
        ordershub.run(scene.marketplace, "orders")
    finally:
        event.remove(ordershub.db.engine, "before_cursor_execute", one)
    assert locks


def test_an_order_a_pull_lists_twice_is_imported_once_and_its_later_state_kept(
    ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    original = orders_flow.pull
    monkeypatch.setattr(orders_flow, "pull", lambda ctx, channel, since, ids: [
        *(pulled := original(ctx, channel, since, ids)), dataclasses.replace(pulled[0], status="cancelled")])

    report = ordershub.run(scene.marketplace, "orders")

    assert report.status is RunStatus.OK, report.error
    [order] = ordershub.orders(scene.marketplace)
    assert order.status is OrderStatus.CANCELLED
    assert [e.kind for e in ordershub.events() if e.kind.startswith("order.")] == ["order.imported", "order.cancelled"]
    assert scene.dest.calls["create_order"] == 0


def test_a_worker_killed_after_create_order_does_not_create_a_second_order(
    ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})

    def killed(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise SystemError("worker killed")  # create_order has returned; the binding is never written

    with monkeypatch.context() as patch:
        patch.setattr(orders_flow, "record_route", killed)
        crashed = ordershub.run(scene.marketplace, "orders")
    assert crashed.status is RunStatus.FAILED and "worker killed" in (crashed.error or "")
    assert len(scene.dest.created_orders) == 1
    assert ordershub.bindings(scene.destination, bindings.DESTINATION_ORDER) == []
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.IMPORTED

    retried = ordershub.run(scene.marketplace, "orders")

    assert retried.status is RunStatus.OK
    assert scene.dest.calls["create_order"] == 2  # asked again; the destination found it by number
    assert len(scene.dest.created_orders) == 1
    [binding] = ordershub.bindings(scene.destination, bindings.DESTINATION_ORDER)
    assert binding.external_id == scene.dest.created_orders["1001"].external_id
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.ROUTED


@pytest.mark.parametrize("lock_account", [True, False], ids=["flow", "unique-constraint-alone"])
def test_two_workers_pulling_the_same_orders_at_once_import_and_route_each_once(
    ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch, lock_account: bool
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1", "TEE-2")
    for number in ("1001", "1002", "1003"):
        ordershub.place(scene.market, number, {"TEE-1": 1, "TEE-2": 1})
    both_pulled = threading.Barrier(2, timeout=20)
    original_pull = orders_flow.pull

    def pull_then_wait(ctx, channel, since, order_ids):  # type: ignore[no-untyped-def]
        pulled = original_pull(ctx, channel, since, order_ids)
        both_pulled.wait()  # both workers hold the same orders before either stores them
        return pulled

    monkeypatch.setattr(orders_flow, "pull", pull_then_wait)
    if not lock_account:  # leave the database's unique constraint as the only guard of the import
        original_lock = orders_flow.lock_row
        monkeypatch.setattr(orders_flow, "lock_row",
                            lambda session, model, row_id: None if model.__name__ == "ChannelAccount"
                            else original_lock(session, model, row_id))
    reports: list = []

    def worker() -> None:
        # Separate lock tables: the per-account flow lock is not what keeps this correct.
        hub = OrdersHub(ordershub.db, ordershub.organisation_id, ordershub.pm, ordershub.box, locks=LocalLocks())
        reports.append(hub.run(scene.marketplace, "orders"))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [r.status for r in reports] == [RunStatus.OK, RunStatus.OK], [r.error for r in reports]
    stored = ordershub.orders(scene.marketplace)
    assert sorted(o.order_number for o in stored) == ["1001", "1002", "1003"]
    assert {o.status for o in stored} == {OrderStatus.ROUTED}
    assert sorted(scene.dest.created_orders) == ["1001", "1002", "1003"]
    if not ordershub.db.is_sqlite:
        # Not just the destination's de-duplication: the order rows are locked while they are handed
        # over, so each is handed over exactly once. (SQLite is never locked across a remote call:
        # there the runtime's per-account lock and create_order's look-up keep it at one order.)
        assert scene.dest.calls["create_order"] == 3
    assert len(ordershub.bindings(scene.marketplace, bindings.ORDER_IMPORT)) == 3
    assert len(ordershub.bindings(scene.destination, bindings.DESTINATION_ORDER)) == 3
    imported = [e for e in ordershub.events("order.imported")]
    assert len(imported) == 3  # each import announced once, by whichever worker made it


def test_an_unknown_sku_puts_the_order_in_error_until_the_catalogue_has_it(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1, "GHOST-9": 2})

    report = ordershub.run(scene.marketplace, "orders")

    assert report.status is RunStatus.PARTIAL
    item = report.item("1001")
    assert (item.outcome, item.field) == ("rejected", "sku") and "'GHOST-9'" in item.message
    order = ordershub.the_order(scene.marketplace, "1001")
    assert order.status is OrderStatus.ERROR and "GHOST-9" in (order.error or "")
    [event] = ordershub.events("order.unmatched")
    assert event.level == "error" and event.data["skus"] == ["GHOST-9"] and "add it to the catalogue" in event.message
    assert scene.dest.created_orders == {}

    quiet = ordershub.run(scene.marketplace, "orders")  # still unknown: waits, says nothing new
    assert quiet.status is RunStatus.OK and len(ordershub.events("order.unmatched")) == 1

    ordershub.seed("GHOST-9")
    fixed = ordershub.run(scene.marketplace, "orders")
    assert fixed.item("1001").message == "routed to Shopify"
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.ROUTED
    assert [e.kind for e in ordershub.events() if e.kind == "order.matched"] == ["order.matched"]


def test_transform_order_hooks_run_in_turn_before_routing(ordershub: OrdersHub, pushes: list) -> None:
    class ChannelLine:
        @hookimpl
        def channelhub_transform_order(self, order, account):  # type: ignore[no-untyped-def]
            order.note = f"{order.note} | via {account.name}"
            return order

    class ShippingByCountry:
        @hookimpl(trylast=True)  # runs after ChannelLine and sees its note
        def channelhub_transform_order(self, order):  # type: ignore[no-untyped-def]
            order.shipping_method = "Express AU" if order.shipping_address.country == "AU" else "International"
            order.note += " | shipping chosen"
            return order

    ordershub.pm.register_plugin(ShippingByCountry(), "shipping")
    ordershub.pm.register_plugin(ChannelLine(), "channel-line")
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})

    ordershub.run(scene.marketplace, "orders")

    created = scene.dest.created_orders["1001"]
    assert created.note.endswith("| via Iconic AU | shipping chosen")
    assert created.shipping_method == "Express AU"


def test_a_failing_transform_hook_holds_the_order_with_the_reason(ordershub: OrdersHub, pushes: list) -> None:
    class Broken:
        @hookimpl
        def channelhub_transform_order(self, order, account):  # type: ignore[no-untyped-def]
            raise KeyError("region")

    ordershub.pm.register_plugin(Broken(), "broken")
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})

    report = ordershub.run(scene.marketplace, "orders")

    assert report.item("1001").outcome == "rejected"
    assert "plugin 'broken' failed" in report.item("1001").message
    assert scene.dest.created_orders == {}
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.ERROR


def test_orders_also_go_to_the_fulfilment_account(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene(fulfilment=True)
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})

    report = ordershub.run(scene.marketplace, "orders")

    assert report.item("1001").message == "routed to Shopify, Starshipit"
    assert list(scene.dest.created_orders) == ["1001"] and list(scene.ship.created_orders) == ["1001"]
    [sent] = ordershub.bindings(scene.fulfilment, bindings.FULFILMENT_ORDER)
    assert sent.external_id == scene.ship.created_orders["1001"].external_id


def test_a_fulfilment_account_that_fails_is_retried_without_resending_to_the_destination(
    ordershub: OrdersHub, pushes: list
) -> None:
    scene = ordershub.scene(fulfilment=True)
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.ship.fail_with = TransientError("Starshipit answered 503")

    first = ordershub.run(scene.marketplace, "orders")
    assert first.item("1001").outcome == "failed" and "503" in first.item("1001").message
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.IMPORTED
    [event] = ordershub.events("order.route_failed")
    assert event.level == "error" and "tried again on the next run" in event.message

    second = ordershub.run(scene.marketplace, "orders")
    assert second.item("1001").outcome == "ok"
    assert scene.dest.calls["create_order"] == 1 and scene.ship.calls["create_order"] == 2
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.ROUTED


def test_a_refusing_destination_puts_the_order_in_error_and_tells_the_admin_once(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.dest.reject_skus["TEE-1"] = "no such product"

    ordershub.run(scene.marketplace, "orders")
    again = ordershub.run(scene.marketplace, "orders")

    assert again.item("1001").outcome == "rejected" and "unknown SKU TEE-1" in again.item("1001").message
    order = ordershub.the_order(scene.marketplace, "1001")
    assert order.status is OrderStatus.ERROR
    assert len(ordershub.events("order.route_failed")) == 1  # the same problem is not announced every run
    del scene.dest.reject_skus["TEE-1"]
    ordershub.run(scene.marketplace, "orders")
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.ROUTED


def test_third_party_managed_orders_are_imported_and_routed_but_not_sent_for_fulfilment(
    ordershub: OrdersHub, pushes: list
) -> None:
    scene = ordershub.scene(fulfilment=True, fulfilments_enabled=False)
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})

    report = ordershub.run(scene.marketplace, "orders")

    assert [i.message for i in report.items] == ["imported as Third Party Managed (Fulfilments is off)",
                                                 "routed to Shopify"]
    order = ordershub.the_order(scene.marketplace, "1001")
    assert order.status is OrderStatus.THIRD_PARTY_MANAGED and order.third_party_managed
    assert list(scene.dest.created_orders) == ["1001"]  # the brand sees the sale
    assert scene.dest.created_orders["1001"].raw["third_party_managed"] is True
    assert scene.ship.created_orders == {}  # shipped by someone else
    assert ordershub.run(scene.marketplace, "orders").items == []  # routed once: not routed again


def test_an_order_a_batch_did_not_get_to_is_retried_without_being_marked_in_error(
    ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1")
    for number in ("1001", "1002"):
        ordershub.place(scene.market, number, {"TEE-1": 1})
    create_orders = FullMemoryChannel.create_orders

    def stop_after_the_first(self, orders):  # type: ignore[no-untyped-def]
        [first] = create_orders(self, orders[:1])
        return [first, *(ItemResult.rejected(o.order_number, "not sent: Shopify answered 503", retryable=True)
                         for o in orders[1:])]

    monkeypatch.setattr(FullMemoryChannel, "create_orders", stop_after_the_first)
    report = ordershub.run(scene.marketplace, "orders")

    assert report.item("1002").outcome == "failed" and "did not take the order yet" in report.item("1002").message
    assert ordershub.the_order(scene.marketplace, "1002").status is OrderStatus.IMPORTED
    monkeypatch.setattr(FullMemoryChannel, "create_orders", create_orders)
    ordershub.run(scene.marketplace, "orders")
    assert {o.order_number: o.status for o in ordershub.orders(scene.marketplace)} == {
        "1001": OrderStatus.ROUTED, "1002": OrderStatus.ROUTED}


def test_a_cancellation_reaches_a_destination_that_can_cancel(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 2})
    ordershub.run(scene.marketplace, "orders")
    ordershub.change(scene.market, "1001", status="cancelled")

    report = ordershub.run(scene.marketplace, "orders")

    assert report.item("1001").message == "cancelled on the marketplace"
    order = ordershub.the_order(scene.marketplace, "1001")
    assert order.status is OrderStatus.CANCELLED and {line.status for line in order.lines} == {"cancelled"}
    assert extra(scene.dest)["cancelled"] == [("1001", "cancelled on Iconic AU")]
    assert [e.kind for e in ordershub.events() if e.kind.startswith("order.cancel")] == ["order.cancelled", "order.cancel_sent"]
    assert pushes[-1][1] == ["TEE-1"]  # the held units are free again: other marketplaces hear at once
    ordershub.run(scene.marketplace, "orders")
    assert len(extra(scene.dest)["cancelled"]) == 1


def test_a_cancellation_the_destination_cannot_make_is_left_to_the_admin(ordershub: OrdersHub, pushes: list) -> None:
    assert not MemoryChannel.implements("cancel_order") and FullMemoryChannel.implements("cancel_order")
    scene = ordershub.scene()  # the plain memory channel has no cancel_order
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.run(scene.marketplace, "orders")
    ordershub.change(scene.market, "1001", status="cancelled")

    ordershub.run(scene.marketplace, "orders")

    [event] = ordershub.events("order.cancel_by_hand")
    assert event.level == "warning"
    assert event.message.endswith("cancel order 1001 in Shopify by hand")


def test_an_order_cancelled_in_the_destination_is_cancelled_on_the_marketplace(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.run(scene.marketplace, "orders")
    cancelled = ordershub.change(scene.market, "1001", status="cancelled")
    scene.market.orders["C1001"].status = "new"  # the marketplace has not heard yet
    extra(scene.dest)["cancelled_here"].append(cancelled)

    report = ordershub.run(scene.marketplace, "orders")

    assert report.item("1001").message == "cancelled in Shopify"
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.CANCELLED
    # the plain memory marketplace cannot cancel through the hub: the admin is asked to
    [event] = ordershub.events("order.cancel_by_hand")
    assert event.message.endswith("cancel order 1001 in Iconic AU by hand")
    assert extra(scene.dest)["cancelled"] == []  # not sent back to where it came from
    ordershub.run(scene.marketplace, "orders")
    assert len(ordershub.events("order.cancelled")) == 1


def test_the_destinations_cancellations_are_read_while_the_marketplace_is_pulled(
        ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    asked, overlapped = threading.Event(), []
    pull_orders, pull_cancellations = MemoryChannel.pull_orders, FullMemoryChannel.pull_cancellations

    def marketplace_pull(self, since=None):  # type: ignore[no-untyped-def]
        overlapped.append(asked.wait(timeout=2))  # the destination is asked before this pull ends
        return pull_orders(self, since)

    def destination_read(self, since=None):  # type: ignore[no-untyped-def]
        asked.set()
        return pull_cancellations(self, since)

    monkeypatch.setattr(MemoryChannel, "pull_orders", marketplace_pull)
    monkeypatch.setattr(FullMemoryChannel, "pull_cancellations", destination_read)

    report = ordershub.run(scene.marketplace, "orders")

    assert report.status is RunStatus.OK, report.error
    assert overlapped == [True]
    assert report.item("1001").message == "routed to Shopify"


def test_a_cancellations_read_that_fails_fails_the_run_after_its_orders_are_routed(
        ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.dest.fail_cancellations_with = TransientError("Shopify answered 503")

    report = ordershub.run(scene.marketplace, "orders")

    assert report.status is RunStatus.FAILED and "Shopify answered 503" in (report.error or "")
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.ROUTED  # stored and routed first
    assert "1001" in scene.dest.created_orders
    scene.dest.fail_cancellations_with = None
    extra(scene.dest)["cancelled_here"].append(ordershub.change(scene.market, "1001", status="cancelled"))
    scene.market.orders["C1001"].status = "new"  # the marketplace has not heard yet
    assert ordershub.run(scene.marketplace, "orders").item("1001").message == "cancelled in Shopify"  # read again


def test_orders_go_to_a_batch_import_in_batches(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1", stock=30)  # enough for all 23: an oversold order would be held (oversell_policy)
    numbers = [str(1000 + n) for n in range(23)]
    for number in numbers:
        ordershub.place(scene.market, number, {"TEE-1": 1})

    report = ordershub.run(scene.marketplace, "orders")

    assert sorted(scene.dest.created_orders) == numbers
    assert (scene.dest.calls["create_orders"], scene.dest.calls["create_order"]) == (3, 0)
    assert scene.dest.batch_sizes == [10, 10, 3]  # the channel's max_batch
    assert report.counts == {"ok": 46}
    assert len(ordershub.bindings(scene.destination, bindings.DESTINATION_ORDER)) == 23


def _target(kind: str, channel_class: type, max_batch: int) -> orders_flow.Target:
    sized = type(f"Sized{max_batch}", (channel_class,), {"limits": Limits(max_batch=max_batch, requests_per_second=100,
                                                                            burst=100, documented="test")})
    return orders_flow.Target(kind, 1, "target", channel=sized.__new__(sized))  # batch_size reads only the class


def test_routing_moves_a_backlog_through_every_target_at_the_smallest_batch() -> None:
    shopify_like = _target(bindings.DESTINATION_ORDER, FullMemoryChannel, 250)
    starshipit_like = _target(bindings.FULFILMENT_ORDER, FullMemoryChannel, 50)
    one_at_a_time = _target(bindings.DESTINATION_ORDER, MemoryChannel, 100)  # no create_orders: batch of 1

    # The warehouse gets the first 50 orders after 50 orderCreates, not 250; each target's batches stay full.
    assert orders_flow.routing_chunk([shopify_like, starshipit_like]) == 50
    assert orders_flow.routing_chunk([one_at_a_time, starshipit_like]) == 50
    assert orders_flow.routing_chunk([shopify_like]) == 250
    assert orders_flow.routing_chunk([one_at_a_time]) == 1


def test_routing_that_yields_leaves_the_rest_waiting_for_its_continuation(ordershub: OrdersHub, pushes: list,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1", stock=30)
    numbers = [str(1000 + n) for n in range(23)]
    for number in numbers:
        ordershub.place(scene.market, number, {"TEE-1": 1})
    monkeypatch.setattr(FlowContext, "time_to_yield", lambda self: True)  # other runs wait; the slice is over

    first = ordershub.run(scene.marketplace, "orders")
    assert first.counts == {"ok": 23 + 10} and len(scene.dest.created_orders) == 10  # all imported, one chunk routed
    assert ordershub.the_order(scene.marketplace, "1022").status is OrderStatus.IMPORTED
    pulls = scene.market.calls["pull_orders"]
    assert pulls >= 1
    second = ordershub.run(scene.marketplace, "orders", continuation=True)  # what the runtime queues after a yield
    assert second.counts == {"ok": 10} and scene.market.calls["pull_orders"] == pulls  # routes; does not pull again
    ordershub.run(scene.marketplace, "orders", continuation=True)
    assert sorted(scene.dest.created_orders) == numbers
    assert scene.dest.batch_sizes == [10, 10, 3]


def test_a_continuation_that_waited_longer_than_the_interval_pulls_as_the_scheduled_run_would(
        ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1", stock=30)
    for number in range(1000, 1015):
        ordershub.place(scene.market, str(number), {"TEE-1": 1})
    monkeypatch.setattr(FlowContext, "time_to_yield", lambda self: True)
    ordershub.run(scene.marketplace, "orders")  # imports 15, routes 10, yields
    ordershub.place(scene.market, "2001", {"TEE-1": 1})  # placed while the continuation waits for a worker
    pulls = scene.market.calls["pull_orders"]
    interval = ordershub.interval(scene.marketplace, "orders")

    prompt = ordershub.run(scene.marketplace, "orders", continuation=True, queued_ago=interval / 2)
    assert scene.market.calls["pull_orders"] == pulls and prompt.counts == {"ok": 5}  # the 5 left, no pull
    late = ordershub.run(scene.marketplace, "orders", continuation=True, queued_ago=interval * 2)

    # While a continuation waits, the schedule queues no orders run for the account: the late one pulls.
    assert scene.market.calls["pull_orders"] == pulls + 1
    assert [(item.key, item.message) for item in late.items] == [("2001", "imported"), ("2001", "routed to Shopify")]
    assert "2001" in scene.dest.created_orders


def test_an_order_cancelled_before_it_was_routed_is_never_routed(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.dest.fail_with = TransientError("Shopify is down")
    ordershub.run(scene.marketplace, "orders")
    ordershub.change(scene.market, "1001", status="cancelled")

    ordershub.run(scene.marketplace, "orders")

    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.CANCELLED
    assert scene.dest.created_orders == {} and ordershub.events("order.cancel_by_hand") == []


def test_returns_are_recorded_once_per_line_and_booked_at_the_destination(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1", "TEE-2")
    ordershub.place(scene.market, "1001", {"TEE-1": 1, "TEE-2": 1})
    ordershub.run(scene.marketplace, "orders")

    ordershub.change(scene.market, "1001", line_status={"TEE-2": "returned"})
    partial = ordershub.run(scene.marketplace, "orders")
    ordershub.run(scene.marketplace, "orders")  # pulled again inside the overlap window
    order = ordershub.the_order(scene.marketplace, "1001")
    assert [i.message for i in partial.items] == ["TEE-2 returned on the marketplace", "return of TEE-2 booked in Shopify"]
    assert order.status is OrderStatus.ROUTED
    assert [(r.lines[0]["sku"], r.status) for r in order.returns] == [("TEE-2", "received")]
    assert [(r.order_number, [line.sku for line in r.lines]) for r in extra(scene.dest)["returns"]] == [("1001", ["TEE-2"])]

    ordershub.change(scene.market, "1001", status="returned")
    ordershub.run(scene.marketplace, "orders")
    order = ordershub.the_order(scene.marketplace, "1001")
    assert order.status is OrderStatus.RETURNED
    assert sorted(r.lines[0]["sku"] for r in order.returns) == ["TEE-1", "TEE-2"]
    assert len(extra(scene.dest)["returns"]) == 2  # each return booked once


def test_part_of_an_order_cancelled_on_the_marketplace_is_taken_once_and_left_to_the_admin(
    ordershub: OrdersHub, pushes: list
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1", "TEE-2")
    ordershub.place(scene.market, "1001", {"TEE-1": 1, "TEE-2": 1})
    ordershub.run(scene.marketplace, "orders")

    ordershub.change(scene.market, "1001", line_status={"TEE-2": "cancelled"})
    partial = ordershub.run(scene.marketplace, "orders")
    again = ordershub.run(scene.marketplace, "orders")  # pulled again inside the overlap window

    order = ordershub.the_order(scene.marketplace, "1001")
    assert [(line.sku, line.status) for line in order.lines] == [("TEE-1", "open"), ("TEE-2", "cancelled")]
    assert order.status is OrderStatus.ROUTED
    assert [i.message for i in partial.items] == ["TEE-2 cancelled on the marketplace"]
    assert again.items == []
    [event] = ordershub.events("order.line_cancelled")
    assert event.level == "warning" and event.message.endswith("adjust the order in Shopify by hand")
    assert pushes[-1][1] == ["TEE-2"]  # its unit is the marketplace's to sell again


def test_orders_pulled_again_unchanged_are_compared_without_being_loaded(
    ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1", "TEE-2")
    for number in ("1001", "1002", "1003"):
        ordershub.place(scene.market, number, {"TEE-1": 1, "TEE-2": 1})
    ordershub.run(scene.marketplace, "orders")
    loaded: list[list[str]] = []
    original = orders_flow.orders_by
    monkeypatch.setattr(orders_flow, "orders_by", lambda session, account_id, column, keys, **kw: (
        loaded.append(sorted(keys := list(keys))) or original(session, account_id, column, keys, **kw)))

    ordershub.run(scene.marketplace, "orders")  # the window again, nothing changed
    ordershub.change(scene.market, "1002", status="cancelled")
    ordershub.run(scene.marketplace, "orders")

    assert loaded == [[], ["C1002"]]
    assert [o.status for o in ordershub.orders(scene.marketplace)] == [
        OrderStatus.ROUTED, OrderStatus.CANCELLED, OrderStatus.ROUTED]


def test_a_return_the_destination_cannot_take_is_left_to_the_admin(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.run(scene.marketplace, "orders")
    ordershub.change(scene.market, "1001", status="returned")

    ordershub.run(scene.marketplace, "orders")
    ordershub.run(scene.marketplace, "orders")

    [event] = ordershub.events("order.return_by_hand")
    assert event.level == "warning" and event.message.endswith("book the return in Shopify by hand")
    assert [r.status for r in ordershub.the_order(scene.marketplace, "1001").returns] == ["by_hand"]


def test_an_order_selling_more_than_the_stock_is_an_oversell_naming_the_orders(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    scene_two = ordershub.account("The Iconic NZ", orders_enabled=True, fulfilments_enabled=True)[0]
    ordershub.seed("TEE-1", stock=2)
    ordershub.seed("TEE-2", stock=9)
    ordershub.order(scene_two, {"TEE-1": 1})  # another marketplace's order, not yet routed
    ordershub.place(scene.market, "1001", {"TEE-1": 2, "TEE-2": 1})

    ordershub.run(scene.marketplace, "orders")

    [event] = ordershub.events("stock.oversell")
    assert event.level == "error" and event.data["sku"] == "TEE-1"
    assert (event.data["units"], event.data["basis"]) == (3, 2)
    assert "1001" in event.data["orders"] and len(event.data["orders"]) == 2
    assert "Find stock in the source, or cancel an order" in event.message


def test_only_a_sku_that_looks_oversold_is_decided_under_its_row_lock(
    ordershub: OrdersHub, pushes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1", stock=1)
    ordershub.seed("TEE-2", "TEE-3", stock=9)
    locked: list[str] = []
    original = orders_flow.lock_row

    def record(session, model, row_id):  # type: ignore[no-untyped-def]
        if model.__name__ == "Variant":
            locked.append(session.get(model, row_id).sku)
        return original(session, model, row_id)

    monkeypatch.setattr(orders_flow, "lock_row", record)
    ordershub.place(scene.market, "1001", {"TEE-1": 1, "TEE-2": 1, "TEE-3": 1})
    ordershub.place(scene.market, "1002", {"TEE-1": 1, "TEE-2": 1})

    ordershub.run(scene.marketplace, "orders")

    assert locked == ["TEE-1"]  # the others were seen to have the stock by one look at the batch
    [event] = ordershub.events("stock.oversell")
    assert event.data["sku"] == "TEE-1" and sorted(event.data["orders"]) == ["1001", "1002"]
    [held] = ordershub.events("order.held")
    assert held.data["order_number"] == "1002"  # the later order gave its unit back


def test_orders_wait_while_a_product_reset_runs(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.update_account(scene.marketplace, settings={
        "remote": scene.market.name, RESET_SETTING: {"run_id": 1, "started_at": utcnow().isoformat()}})

    paused = ordershub.run(scene.marketplace, "orders")
    assert paused.item("Iconic AU").outcome == "skipped" and "product reset" in paused.item("Iconic AU").message
    assert scene.market.calls["pull_orders"] == 0

    stale = (utcnow() - timedelta(days=1)).isoformat()  # a reset whose worker died pauses nothing for good
    ordershub.update_account(scene.marketplace, settings={
        "remote": scene.market.name, RESET_SETTING: {"run_id": 1, "started_at": stale}})
    assert ordershub.run(scene.marketplace, "orders").item("1001").outcome == "ok"


@pytest.mark.parametrize(("columns", "expected"), [
    ({"orders_enabled": False}, "Orders is off for Iconic AU"),
    ({"status": "paused"}, "Iconic AU is paused"),
])
def test_the_flow_skips_accounts_it_must_not_touch(ordershub: OrdersHub, pushes: list, columns: dict, expected: str) -> None:
    scene = ordershub.scene()
    changes = {key: AccountStatus(value) if key == "status" else value for key, value in columns.items()}
    ordershub.update_account(scene.marketplace, **changes)

    report = ordershub.run(scene.marketplace, "orders")

    assert report.item("Iconic AU").message.startswith(expected)
    assert scene.market.calls["pull_orders"] == 0


def test_a_failed_pull_stores_nothing_and_keeps_the_cursor(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.market.fail_with = TransientError("page 2 timed out")

    report = ordershub.run(scene.marketplace, "orders")

    assert report.status is RunStatus.FAILED  # retries_left=0 here; a worker retries it with backoff
    assert ordershub.orders(scene.marketplace) == []
    with ordershub.db.session() as session:
        assert cursors.read(session, scene.marketplace, "orders") is None


def test_a_destination_without_credentials_waits_and_says_where(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.update_account(scene.destination, status=AccountStatus.PAUSED)

    report = ordershub.run(scene.marketplace, "orders")

    assert report.item("1001").outcome == "failed"
    assert "Shopify is paused: orders wait until it is active" in report.item("1001").message
    assert scene.dest.calls["create_order"] == 0


def test_routing_uses_the_configured_marketplace_billing_address(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    billing = {"name": "THE ICONIC", "company": "The Iconic Australia", "line1": "Level 18, 2 Park St",
               "city": "Sydney", "postcode": "2000", "country": "AU"}
    ordershub.update_account(scene.marketplace, settings={"remote": scene.market.name, "billing_address": billing,
                                                          "order_email": "orders@theiconic.example"})
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1}, total=Decimal("49.95"))

    ordershub.run(scene.marketplace, "orders")

    created = scene.dest.created_orders["1001"]
    assert created.billing_address is not None and created.billing_address.company == "The Iconic Australia"
    assert created.customer_email == "orders@theiconic.example"
    assert created.total == Decimal("49.95")


def test_a_rejected_item_from_create_order_names_the_field(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.dest.fail_with = RejectedItem("shipping address has no phone", key="1001", field="shipping_address.phone")

    report = ordershub.run(scene.marketplace, "orders")

    item = report.item("1001")
    assert (item.outcome, item.field) == ("rejected", "shipping_address.phone")
    assert ordershub.the_order(scene.marketplace, "1001").error == "Shopify refused the order: shipping address has no phone"


def test_a_destination_refusing_our_credentials_stops_routing_and_says_which_account(
    ordershub: OrdersHub, pushes: list
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    ordershub.place(scene.market, "1002", {"TEE-1": 1})
    ordershub.update_account(scene.destination, credentials_encrypted=ordershub.box.encrypt({"token": "revoked"}))

    report = ordershub.run(scene.marketplace, "orders")

    assert report.status is RunStatus.PARTIAL
    assert scene.dest.calls["create_order"] == 1  # no point trying the second order
    assert {o.status for o in ordershub.orders(scene.marketplace)} == {OrderStatus.IMPORTED}
    [event] = ordershub.events("order.route_failed")
    assert "Shopify refused the hub's credentials (token revoked): fix them on the Shopify account page" in event.message


def test_a_rate_limited_destination_defers_the_run_with_the_orders_already_stored(
    ordershub: OrdersHub, pushes: list
) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.dest.fail_with = RateLimited("429", retry_after=30)

    deferred = ordershub.run(scene.marketplace, "orders")

    assert deferred.status is RunStatus.DEFERRED
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.IMPORTED
    assert ordershub.run(scene.marketplace, "orders").item("1001").message == "routed to Shopify"


def test_every_other_marketplace_hears_of_the_sale_at_once(ordershub: OrdersHub) -> None:
    scene = ordershub.scene()
    ordershub.seed("TEE-1", "TEE-2", stock=5, label_id=scene.label_id)
    catch, catch_remote = ordershub.account("Catch", listings_enabled=True, label_id=scene.label_id)
    assert ordershub.run(catch, "listings").status is RunStatus.OK
    assert catch_remote.listings["TEE-1"].quantity == 5
    scene.dest.fail_with = TransientError("Shopify is down")  # so the order stays imported (pending) afterwards
    ordershub.place(scene.market, "1001", {"TEE-1": 2})

    ordershub.run(scene.marketplace, "orders")

    assert catch_remote.listings["TEE-1"].quantity == 3  # 5 available - 2 pending order units
    assert catch_remote.listings["TEE-2"].quantity == 5
    [stock_run] = [run for run in ordershub.runs("stock") if run.account_id == catch]
    assert stock_run.trigger == "event"
    assert scene.market.calls["push_listings"] == 0  # the marketplace that sold it already knows


def test_routing_takes_each_batch_through_every_target_before_the_next(ordershub: OrdersHub, pushes: list,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    scene = ordershub.scene(fulfilment=True, destination_plugin="memory_full")
    ordershub.seed("TEE-1", stock=30)
    numbers = [str(1000 + n) for n in range(23)]
    for number in numbers:
        ordershub.place(scene.market, number, {"TEE-1": 1})
    calls: list[tuple[str, int, int]] = []  # (target kind, orders in the call, orders already routed)
    original = orders_flow.route_batch

    def watch(ctx, account_id, target, order_ids, *args):  # type: ignore[no-untyped-def]
        routed = sum(order.status is OrderStatus.ROUTED for order in ordershub.orders(scene.marketplace))
        calls.append((target.kind, len(order_ids), routed))
        return original(ctx, account_id, target, order_ids, *args)

    monkeypatch.setattr(orders_flow, "route_batch", watch)

    report = ordershub.run(scene.marketplace, "orders")

    to_destination = [(size, routed) for kind, size, routed in calls if kind == bindings.DESTINATION_ORDER]
    assert to_destination == [(10, 0), (10, 10), (3, 20)]  # the first ten were routed before the next ten went out
    assert [kind for kind, _, _ in calls[:11]] == [bindings.DESTINATION_ORDER] + [bindings.FULFILMENT_ORDER] * 10
    assert scene.dest.batch_sizes == [10, 10, 3] and scene.ship.calls["create_order"] == 23  # no extra calls
    assert report.counts == {"ok": 46}
    assert {order.status for order in ordershub.orders(scene.marketplace)} == {OrderStatus.ROUTED}


def test_a_webhook_run_routes_just_the_orders_it_pulled(ordershub: OrdersHub, pushes: list) -> None:
    scene = ordershub.scene(destination_plugin="memory_full")
    ordershub.seed("TEE-1")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.dest.fail_with = TransientError("Shopify is down")
    ordershub.run(scene.marketplace, "orders")
    scene.dest.fail_with = None
    calls_before = dict(scene.dest.calls)
    ordershub.place(scene.market, "1002", {"TEE-1": 1})

    report = ordershub.run(scene.marketplace, "orders", order_ids=["C1002"])

    assert [(i.key, i.message) for i in report.items] == [("1002", "imported"), ("1002", "routed to Shopify")]
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.IMPORTED  # left to the scheduled run
    assert scene.dest.calls.get("pull_cancellations", 0) == calls_before.get("pull_cancellations", 0)
    assert ordershub.run(scene.marketplace, "orders").item("1001").message == "routed to Shopify"
