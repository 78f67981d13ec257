"""The fulfilment flow: shipments mapped, checked and written back to the marketplace exactly once."""

from __future__ import annotations

import string
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub import bindings
from hub.carrier_maps import TRACKING_MAX_LENGTH, InvalidTracking, tracking_problem, validate_tracking
from hub.errors import RejectedItem, TransientError
from hub.connections import open_channel
from hub.flows import fulfilment as fulfilment_flow
from hub.flows import stock as stock_flow
from hub.jobs import FlowContext
from hub.models import ChannelAccount, OrderStatus, RunStatus
from hub.records import FulfilmentLine
from hub.testing import InFlight
from tests.flows_fixtures_b import OrdersHub, Scene, ordershub  # noqa: F401
from tests.memory_channel import MemoryChannel, MemoryRemote
from tests.storage_fixtures import box, database, organisation  # noqa: F401


@pytest.fixture(autouse=True)
def _no_stock_pushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stock_flow, "push_stock_now", lambda *args, **kwargs: [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every flow test runs twice: through ``send_fulfilments`` (batches) and through ``send_fulfilment``.
    Tests named ``test_batch_*`` are about the batch path only."""
    if "ordershub" in metafunc.fixturenames and not metafunc.function.__name__.startswith("test_batch_"):
        metafunc.parametrize("send_path", ["batch", "single"], indirect=True)


@pytest.fixture(autouse=True)
def send_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    path = getattr(request, "param", "batch")
    if path == "single":
        monkeypatch.delattr(MemoryChannel, "send_fulfilments")
    return path


def sends(market: MemoryRemote) -> int:
    """Calls the marketplace got to write shipments back, whichever hook took them."""
    return market.calls["send_fulfilment"] + market.calls["send_fulfilments"]


def routed(hub: OrdersHub, **scene_options) -> Scene:  # type: ignore[no-untyped-def]
    """A scene with order 1001 (2 x TEE-1, 1 x TEE-2) imported and routed to the destination."""
    scene = hub.scene(**scene_options)
    hub.seed("TEE-1", "TEE-2")
    hub.map_carrier(scene.marketplace, "auspost", "Australia Post", "https://auspost.example/track/{tracking}")
    hub.place(scene.market, "1001", {"TEE-1": 2, "TEE-2": 1})
    assert hub.run(scene.marketplace, "orders").status is RunStatus.OK
    return scene


def test_a_shipment_is_mapped_and_sent_once_across_reruns(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.ship(scene.dest, "1001", carrier="Australia Post", tracking="AP123456789AU")

    first = ordershub.run(scene.marketplace, "fulfilment")
    second = ordershub.run(scene.marketplace, "fulfilment")
    third = ordershub.run(scene.marketplace, "fulfilment")

    assert first.status is RunStatus.OK and first.item("1001").message == "Australia Post AP123456789AU sent"
    assert second.items == [] and third.items == []
    [(number, sent)] = scene.market.sent_fulfilments
    assert number == "1001" and sent.carrier == "Australia Post"  # the marketplace's provider name
    assert sent.tracking_url == "https://auspost.example/track/AP123456789AU"
    assert [(line.sku, line.channel_line_ids) for line in sent.lines] == [
        ("TEE-1", ["1001-TEE-1-0", "1001-TEE-1-1"]), ("TEE-2", ["1001-TEE-2-0"])]
    assert sends(scene.market) == 1
    order = ordershub.the_order(scene.marketplace, "1001")
    assert order.status is OrderStatus.CONFIRMED
    [row] = ordershub.fulfilments(order.id)
    assert (row.status, row.carrier, row.external_id) == ("sent", "Australia Post", "AP123456789AU")
    [binding] = ordershub.bindings(scene.marketplace, bindings.FULFILMENT_SENT)
    assert (binding.internal_id, binding.external_id) == (str(row.id), "C1001/AP123456789AU")
    [event] = ordershub.events("fulfilment.sent")
    assert event.data["channel_carrier"] == "Australia Post"


def test_an_unknown_carrier_is_a_clear_error_until_it_is_mapped(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.ship(scene.dest, "1001", carrier="xyz", tracking="XYZ0001")

    first = ordershub.run(scene.marketplace, "fulfilment")
    second = ordershub.run(scene.marketplace, "fulfilment")

    message = "carrier 'xyz' has no mapping for account 'Iconic AU': add it under Carrier mapping"
    for report in (first, second):
        item = report.item("1001")
        assert (item.outcome, item.message, item.field) == ("rejected", message, "carrier")
        assert report.status is RunStatus.PARTIAL
    [event] = ordershub.events("fulfilment.failed")  # told once, retried every run
    assert event.level == "error" and message in event.message
    assert sends(scene.market) == 0

    ordershub.map_carrier(scene.marketplace, "xyz", "StarTrack")
    fixed = ordershub.run(scene.marketplace, "fulfilment")
    assert fixed.item("1001").outcome == "ok"
    assert scene.market.sent_fulfilments[0][1].carrier == "StarTrack"


def test_a_tracking_number_with_a_space_is_refused_with_the_reason(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.ship(scene.dest, "1001", tracking="AP1234 56789AU")

    report = ordershub.run(scene.marketplace, "fulfilment")

    item = report.item("1001")
    assert (item.outcome, item.field) == ("rejected", "tracking_number")
    assert item.message == "tracking number 'AP1234 56789AU' contains a space at position 7: remove it"
    assert sends(scene.market) == 0
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.FULFILLED


def test_a_marketplace_refusal_is_not_marked_sent_and_is_retried(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.map_carrier(scene.marketplace, "sendle", "Sendle")  # The memory marketplace has no Sendle
    ordershub.ship(scene.dest, "1001", carrier="sendle", tracking="SNDL12345")

    first = ordershub.run(scene.marketplace, "fulfilment")
    second = ordershub.run(scene.marketplace, "fulfilment")

    assert first.item("1001").outcome == "rejected"
    assert "Iconic AU refused it: unknown shipping provider 'Sendle'" in first.item("1001").message
    assert sends(scene.market) == 2  # tried again, not marked sent
    assert ordershub.bindings(scene.marketplace, bindings.FULFILMENT_SENT) == []
    assert len(ordershub.events("fulfilment.failed")) == 1
    assert second.item("1001").outcome == "rejected"


def test_a_transient_failure_is_retried_on_the_next_run(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.ship(scene.dest, "1001")
    scene.market.fail_with = TransientError("The Iconic answered 503")

    first = ordershub.run(scene.marketplace, "fulfilment")
    assert first.item("1001").outcome == "failed" and "503" in first.item("1001").message
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.FULFILLED

    ordershub.run(scene.marketplace, "fulfilment")
    assert len(scene.market.sent_fulfilments) == 1
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.CONFIRMED


def test_a_shipment_accepted_while_routing_is_in_error_confirms_the_order_once_routing_finishes(
        ordershub: OrdersHub) -> None:
    scene = ordershub.scene(fulfilment=True)
    assert scene.ship is not None
    ordershub.seed("TEE-1")
    ordershub.map_carrier(scene.marketplace, "auspost", "Australia Post")
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    scene.ship.fail_with = RejectedItem("Starshipit refused it for now")  # the shop has it, the warehouse not yet
    ordershub.run(scene.marketplace, "orders")
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.ERROR

    ordershub.ship(scene.dest, "1001")  # shipped all the same (e.g. the warehouse's answer was lost)
    ordershub.run(scene.marketplace, "fulfilment")
    assert len(scene.market.sent_fulfilments) == 1
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.ERROR

    ordershub.run(scene.marketplace, "orders")
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.CONFIRMED


def test_partial_shipments_take_the_remaining_line_ids_and_confirm_at_the_end(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.ship(scene.dest, "1001", tracking="AP0000000001", lines=[FulfilmentLine("TEE-1", 1)])
    ordershub.run(scene.marketplace, "fulfilment")
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.FULFILLED

    ordershub.ship(scene.dest, "1001", tracking="AP0000000002", lines=[FulfilmentLine("TEE-1", 1), FulfilmentLine("TEE-2", 1)])
    ordershub.run(scene.marketplace, "fulfilment")

    first, second = (sent for _, sent in scene.market.sent_fulfilments)
    assert [line.channel_line_ids for line in first.lines] == [["1001-TEE-1-0"]]
    assert [line.channel_line_ids for line in second.lines] == [["1001-TEE-1-1"], ["1001-TEE-2-0"]]
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.CONFIRMED


def test_a_shipment_stored_meanwhile_by_another_run_keeps_none_of_the_others_out(ordershub: OrdersHub,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    scene = routed(ordershub)
    first = ordershub.ship(scene.dest, "1001", tracking="AP0000000001", lines=[FulfilmentLine("TEE-1", 1)])
    ordershub.run(scene.marketplace, "fulfilment")
    second = ordershub.ship(scene.dest, "1001", tracking="AP0000000002", lines=[FulfilmentLine("TEE-2", 1)])
    # As if the first were stored by a concurrent run after this one read the order's shipments:
    # the batch insert meets the unique key and falls back to one insert each.
    stored_shipments = fulfilment_flow.shipped_orders

    def without_their_shipments(*args: Any) -> dict[str, Any]:
        orders = stored_shipments(*args)
        for order in orders.values():
            order.shipments.clear()
        return orders

    monkeypatch.setattr(fulfilment_flow, "shipped_orders", without_their_shipments)
    source = fulfilment_flow.Source(scene.destination, "Shopify", None, None)

    fulfilment_flow.store_shipments(_Context(ordershub.db), scene.marketplace, source, [first, second, second])

    order = ordershub.the_order(scene.marketplace, "1001")
    assert sorted(row.tracking_number for row in ordershub.fulfilments(order.id)) == ["AP0000000001", "AP0000000002"]


def test_shipments_come_from_the_fulfilment_account_too_and_count_once(ordershub: OrdersHub) -> None:
    scene = routed(ordershub, fulfilment=True)
    assert scene.ship is not None
    ordershub.ship(scene.ship, "1001", tracking="AP999999999AU")  # Starshipit ships it...
    ordershub.ship(scene.dest, "1001", tracking="AP999999999AU")  # ...and Shopify reports it as well
    ordershub.ship(scene.dest, "5555", tracking="AP555555555AU")  # a web-shop order: not ours

    report = ordershub.run(scene.marketplace, "fulfilment")

    assert report.status is RunStatus.OK
    assert scene.dest.calls["pull_fulfilments"] == 1 and scene.ship.calls["pull_fulfilments"] == 1
    assert [number for number, _ in scene.market.sent_fulfilments] == ["1001"]


def test_both_sources_are_pulled_at_the_same_time(ordershub: OrdersHub, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = routed(ordershub, fulfilment=True)
    ordershub.ship(scene.ship, "1001")
    gauge, pull = InFlight(), MemoryChannel.pull_fulfilments

    def slow_pull(self: MemoryChannel, since: Any = None) -> Any:
        with gauge:
            gauge.reach(2)  # both sources' pulls under way at once (or five seconds go by)
            return pull(self, since)

    monkeypatch.setattr(MemoryChannel, "pull_fulfilments", slow_pull)
    assert ordershub.run(scene.marketplace, "fulfilment").status is RunStatus.OK
    assert gauge.most == 2
    assert [number for number, _ in scene.market.sent_fulfilments] == ["1001"]


def test_a_source_that_fails_holds_back_no_shipment_of_the_other(ordershub: OrdersHub) -> None:
    scene = routed(ordershub, fulfilment=True)
    assert scene.ship is not None
    ordershub.ship(scene.ship, "1001")  # the warehouse shipped it
    scene.dest.fail_with = TransientError("Shopify answered 503")  # while Shopify is down

    first = ordershub.run(scene.marketplace, "fulfilment")
    assert first.status is not RunStatus.OK and "503" in (first.error or "")
    assert [number for number, _ in scene.market.sent_fulfilments] == ["1001"]  # sent all the same

    scene.dest.fail_with = None
    assert ordershub.run(scene.marketplace, "fulfilment").status is RunStatus.OK
    assert len(scene.market.sent_fulfilments) == 1  # and never twice


def test_third_party_managed_orders_are_never_written_back(ordershub: OrdersHub) -> None:
    scene = routed(ordershub, fulfilments_enabled=False)
    ordershub.ship(scene.dest, "1001")

    off = ordershub.run(scene.marketplace, "fulfilment")
    assert off.item("Iconic AU").outcome == "skipped" and "Third Party Managed" in off.item("Iconic AU").message

    ordershub.update_account(scene.marketplace, fulfilments_enabled=True)  # turned on later: old orders stay TPM
    later = ordershub.run(scene.marketplace, "fulfilment")

    assert later.status is RunStatus.OK
    assert sends(scene.market) == 0 and scene.market.sent_fulfilments == []
    order = ordershub.the_order(scene.marketplace, "1001")
    assert order.status is OrderStatus.THIRD_PARTY_MANAGED
    [row] = ordershub.fulfilments(order.id)
    assert row.status == "skipped" and "never written back" in (row.error or "")


def test_a_shipment_of_a_cancelled_order_is_held_for_the_admin(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.change(scene.market, "1001", status="cancelled")
    ordershub.run(scene.marketplace, "orders")
    ordershub.ship(scene.dest, "1001")

    report = ordershub.run(scene.marketplace, "fulfilment")

    assert report.item("1001").outcome == "rejected" and "was cancelled" in report.item("1001").message
    assert scene.market.sent_fulfilments == []


def test_the_source_cursor_moves_to_the_newest_shipment(ordershub: OrdersHub) -> None:
    from hub import cursors
    from hub.flows.fulfilment import STREAM_PREFIX

    scene = routed(ordershub)
    newest = ordershub.ship(scene.dest, "1001").shipped_at

    ordershub.run(scene.marketplace, "fulfilment")

    with ordershub.db.session() as session:
        assert cursors.read_time(session, scene.marketplace, STREAM_PREFIX + str(scene.destination)) == newest


# -- the batch path (send_fulfilments) -----------------------------------------------------------


def shipped_orders(hub: OrdersHub, count: int) -> Scene:
    """``count`` one-unit orders 2001.. imported, routed and shipped with distinct tracking numbers."""
    scene = hub.scene()
    hub.seed("TEE-1", stock=100)
    hub.map_carrier(scene.marketplace, "auspost", "Australia Post")
    numbers = [str(2001 + n) for n in range(count)]
    for number in numbers:
        hub.place(scene.market, number, {"TEE-1": 1})
    assert hub.run(scene.marketplace, "orders").status is RunStatus.OK
    for number in numbers:
        hub.ship(scene.dest, number, tracking=f"AP{number}00AU")
    return scene


def test_batch_shipments_go_out_max_batch_at_a_time_and_a_refusal_stays_alone(ordershub: OrdersHub) -> None:
    scene = shipped_orders(ordershub, 11)
    ordershub.map_carrier(scene.marketplace, "sendle", "Sendle")  # the memory marketplace refuses Sendle
    ordershub.ship(scene.dest, "2003", carrier="sendle", tracking="SNDL2003")  # replaces nothing: a second parcel
    ordershub.ship(scene.dest, "2005", tracking="AP 2005")  # invalid: failed here, never sent

    first = ordershub.run(scene.marketplace, "fulfilment")

    assert scene.market.calls["send_fulfilments"] == 2 and scene.market.calls["send_fulfilment"] == 0  # 13 rows, batch 10
    assert first.status is RunStatus.PARTIAL
    assert [i.outcome for i in first.items if i.key == "2003"].count("rejected") == 1
    assert "unknown shipping provider 'Sendle'" in next(i.message for i in first.items if i.outcome == "rejected"
                                                         and i.key == "2003")
    assert any(i.key == "2005" and i.field == "tracking_number" for i in first.items)
    sent = [(number, shipment.tracking_number) for number, shipment in scene.market.sent_fulfilments]
    assert sorted(sent) == sorted((str(2001 + n), f"AP{2001 + n}00AU") for n in range(11))
    assert len(ordershub.bindings(scene.marketplace, bindings.FULFILMENT_SENT)) == 11
    assert len(ordershub.events("fulfilment.sent")) == 11 and len(ordershub.events("fulfilment.failed")) == 2
    assert ordershub.the_order(scene.marketplace, "2001").status is OrderStatus.CONFIRMED

    again = ordershub.run(scene.marketplace, "fulfilment")  # only the two refused shipments are tried again

    assert scene.market.calls["send_fulfilments"] == 3 and len(scene.market.sent_fulfilments) == 11
    assert sorted(i.key for i in again.items) == ["2003", "2005"]


def test_batch_a_shipment_another_worker_sent_first_is_not_sent_again(ordershub: OrdersHub,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    scene = shipped_orders(ordershub, 3)
    real = fulfilment_flow.send_batch
    raced: list[int] = []

    def racing(ctx, account_id, fulfilment_ids, channel):  # type: ignore[no-untyped-def]
        if not raced:  # another worker takes the rows' lock first and sends the second shipment
            raced.append(fulfilment_ids[1])
            real(ctx, account_id, [fulfilment_ids[1]], channel)
        real(ctx, account_id, fulfilment_ids, channel)

    monkeypatch.setattr(fulfilment_flow, "send_batch", racing)
    report = ordershub.run(scene.marketplace, "fulfilment")

    assert report.status is RunStatus.OK and raced
    assert sorted(number for number, _ in scene.market.sent_fulfilments) == ["2001", "2002", "2003"]
    assert scene.market.calls["send_fulfilments"] == 2
    assert len(ordershub.bindings(scene.marketplace, bindings.FULFILMENT_SENT)) == 3


def test_batch_a_write_back_that_yields_leaves_the_rest_unsent_for_its_continuation(
        ordershub: OrdersHub, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = shipped_orders(ordershub, 23)
    monkeypatch.setattr(FlowContext, "time_to_yield", lambda self: True)  # other runs wait; the slice is over

    first = ordershub.run(scene.marketplace, "fulfilment")
    assert first.counts == {"ok": 10} and len(scene.market.sent_fulfilments) == 10  # one batch, then the worker is given up
    pulls = scene.dest.calls["pull_fulfilments"]
    assert pulls >= 1
    second = ordershub.run(scene.marketplace, "fulfilment", continuation=True)  # what the runtime queues after a yield
    assert scene.dest.calls["pull_fulfilments"] == pulls  # sends what the first run stored; pulls nothing again
    third = ordershub.run(scene.marketplace, "fulfilment", continuation=True)
    assert (second.counts, third.counts) == ({"ok": 10}, {"ok": 3})
    assert sorted(number for number, _ in scene.market.sent_fulfilments) == [str(2001 + n) for n in range(23)]


def test_batch_a_continuation_that_waited_longer_than_the_interval_pulls_new_shipments(
        ordershub: OrdersHub, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = shipped_orders(ordershub, 12)
    ordershub.place(scene.market, "3001", {"TEE-1": 1})
    assert ordershub.run(scene.marketplace, "orders").status is RunStatus.OK
    monkeypatch.setattr(FlowContext, "time_to_yield", lambda self: True)
    ordershub.run(scene.marketplace, "fulfilment")  # stores 12, sends 10, yields
    ordershub.ship(scene.dest, "3001", tracking="AP300100AU")  # shipped while the continuation waits
    pulls = scene.dest.calls["pull_fulfilments"]
    interval = ordershub.interval(scene.marketplace, "fulfilment")

    prompt = ordershub.run(scene.marketplace, "fulfilment", continuation=True, queued_ago=interval / 2)
    assert prompt.counts == {"ok": 2} and scene.dest.calls["pull_fulfilments"] == pulls  # the 2 left, no pull
    late = ordershub.run(scene.marketplace, "fulfilment", continuation=True, queued_ago=interval * 2)

    # While a continuation waits, the schedule queues no fulfilment run for the account: the late one pulls.
    assert scene.dest.calls["pull_fulfilments"] == pulls + 1
    assert [(item.key, item.outcome) for item in late.items] == [("3001", "ok")]
    assert "3001" in [number for number, _ in scene.market.sent_fulfilments]


class _Context:
    """What send_batch needs of a FlowContext, for driving two "workers" by hand."""

    def __init__(self, db: Any) -> None:
        self.db, self.run_id, self.items = db, None, []

    def item(self, key: str, outcome: str, message: str = "", field: str | None = None) -> None:
        self.items.append((key, outcome))

    def progress(self, done: int, total: int | None = None) -> None:
        pass

    def add_api_calls(self, n: int = 1) -> None:
        pass


# SQLite holds no row locks: there the runtime's per-account lock keeps one worker per account.
@pytest.mark.parametrize("database", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True, scope="module")
def test_batch_two_workers_at_once_send_each_shipment_once(ordershub: OrdersHub) -> None:
    scene = shipped_orders(ordershub, 4)
    scene.market.carriers = ()  # refused first, so the rows wait as unsent
    ordershub.run(scene.marketplace, "fulfilment")
    scene.market.carriers = ("Australia Post",)
    ids = [row.id for order in ordershub.orders(scene.marketplace) for row in ordershub.fulfilments(order.id)]
    with ordershub.db.session() as session:
        channels = [open_channel(session.get(ChannelAccount, scene.marketplace)) for _ in range(2)]
    inside = threading.Event()
    real = channels[0].send_fulfilments

    def slow(pairs):  # type: ignore[no-untyped-def]
        inside.set()
        time.sleep(0.5)  # the second worker reaches the lock meanwhile and waits for it
        return real(pairs)

    channels[0].send_fulfilments = slow  # type: ignore[method-assign]
    contexts = [_Context(ordershub.db), _Context(ordershub.db)]
    first = threading.Thread(target=fulfilment_flow.send_batch, args=(contexts[0], scene.marketplace, ids, channels[0]))
    first.start()
    assert inside.wait(5)
    fulfilment_flow.send_batch(contexts[1], scene.marketplace, ids, channels[1])
    first.join(5)

    assert sorted(number for number, _ in scene.market.sent_fulfilments) == ["2001", "2002", "2003", "2004"]
    assert scene.market.calls["send_fulfilments"] == 2  # the refused run's and the first worker's
    assert contexts[1].items == []  # it found every row sent
    assert len(ordershub.bindings(scene.marketplace, bindings.FULFILMENT_SENT)) == 4


def test_two_waiting_shipments_of_one_order_take_different_units(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.ship(scene.dest, "1001", tracking="AP0000000001", lines=[FulfilmentLine("TEE-1", 1)])
    ordershub.ship(scene.dest, "1001", tracking="AP0000000002", lines=[FulfilmentLine("TEE-1", 1), FulfilmentLine("TEE-2", 1)])

    ordershub.run(scene.marketplace, "fulfilment")  # both wait at once: one batch

    first, second = (sent for _, sent in scene.market.sent_fulfilments)
    assert [line.channel_line_ids for line in first.lines] == [["1001-TEE-1-0"]]
    assert [line.channel_line_ids for line in second.lines] == [["1001-TEE-1-1"], ["1001-TEE-2-0"]]
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.CONFIRMED


# -- tracking numbers ----------------------------------------------------------------------------

ALLOWED = string.ascii_letters + string.digits + "-"


@given(st.text(alphabet=ALLOWED, min_size=4, max_size=TRACKING_MAX_LENGTH))
def test_any_number_of_letters_digits_and_dashes_is_accepted(tracking: str) -> None:
    assert validate_tracking(tracking) == tracking


@given(st.text(alphabet=ALLOWED, min_size=2, max_size=30), st.text(alphabet=ALLOWED, min_size=2, max_size=30),
       st.sampled_from([" ", "\t", "\u00a0", "\n"]))
def test_whitespace_anywhere_is_refused_with_its_position(left: str, right: str, gap: str) -> None:
    problem = tracking_problem(left + gap + right)
    assert problem is not None and f"at position {len(left) + 1}" in problem
    assert ("a space" in problem) == (gap == " ")


@given(st.text(min_size=1, max_size=80).filter(lambda s: any(c not in ALLOWED for c in s)))
def test_anything_outside_the_allowed_set_is_refused(tracking: str) -> None:
    with pytest.raises(InvalidTracking) as raised:
        validate_tracking(tracking)
    assert raised.value.field == "tracking_number" and repr(tracking) in str(raised.value)


@pytest.mark.parametrize(("tracking", "reason"), [
    ("", "is empty"),
    ("AB1", "is too short (3 characters; at least 4)"),
    ("A" * 61, "is too long (61 characters; at most 60)"),
    ("AP#123456", "contains '#' at position 3; only letters A-Z, digits 0-9 and the dash '-' are allowed"),
])
def test_each_refusal_says_why(tracking: str, reason: str) -> None:
    assert tracking_problem(tracking) == reason
