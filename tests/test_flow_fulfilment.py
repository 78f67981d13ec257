"""The fulfilment flow: shipments mapped, checked and written back to the marketplace exactly once."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub import bindings
from hub.carrier_maps import TRACKING_MAX_LENGTH, InvalidTracking, tracking_problem, validate_tracking
from hub.errors import TransientError
from hub.flows import stock as stock_flow
from hub.models import OrderStatus, RunStatus
from hub.records import FulfilmentLine
from tests.flows_fixtures_b import OrdersHub, Scene, ordershub  # noqa: F401
from tests.storage_fixtures import box, database, organisation  # noqa: F401


@pytest.fixture(autouse=True)
def _no_stock_pushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stock_flow, "push_stock_now", lambda *args, **kwargs: [])


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
    assert scene.market.calls["send_fulfilment"] == 1
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
    assert scene.market.calls["send_fulfilment"] == 0

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
    assert scene.market.calls["send_fulfilment"] == 0
    assert ordershub.the_order(scene.marketplace, "1001").status is OrderStatus.FULFILLED


def test_a_marketplace_refusal_is_not_marked_sent_and_is_retried(ordershub: OrdersHub) -> None:
    scene = routed(ordershub)
    ordershub.map_carrier(scene.marketplace, "sendle", "Sendle")  # The memory marketplace has no Sendle
    ordershub.ship(scene.dest, "1001", carrier="sendle", tracking="SNDL12345")

    first = ordershub.run(scene.marketplace, "fulfilment")
    second = ordershub.run(scene.marketplace, "fulfilment")

    assert first.item("1001").outcome == "rejected"
    assert "Iconic AU refused it: unknown shipping provider 'Sendle'" in first.item("1001").message
    assert scene.market.calls["send_fulfilment"] == 2  # tried again, not marked sent
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


def test_third_party_managed_orders_are_never_written_back(ordershub: OrdersHub) -> None:
    scene = routed(ordershub, fulfilments_enabled=False)
    ordershub.ship(scene.dest, "1001")

    off = ordershub.run(scene.marketplace, "fulfilment")
    assert off.item("Iconic AU").outcome == "skipped" and "Third Party Managed" in off.item("Iconic AU").message

    ordershub.update_account(scene.marketplace, fulfilments_enabled=True)  # turned on later: old orders stay TPM
    later = ordershub.run(scene.marketplace, "fulfilment")

    assert later.status is RunStatus.OK
    assert scene.market.calls["send_fulfilment"] == 0 and scene.market.sent_fulfilments == []
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
