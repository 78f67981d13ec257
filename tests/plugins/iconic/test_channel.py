"""IconicChannel flows against the sandbox: listings, stock, orders, fulfilment, cancellation, webhooks."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest

from hub.channel import WebhookRequest
from hub.errors import AuthError, RejectedItem, TransientError, ValidationError
from hub.records import Fulfilment, FulfilmentLine, Listing, validate_record
from hub.testing import InFlight
from plugins.iconic.channel import LEGACY_WEBHOOK_SECRET, READS_IN_FLIGHT, IconicChannel
from tests.plugins.iconic.conftest import WEBHOOK_SECRET, calls, dress, place_order


def product(sandbox: Any, sku: str) -> dict[str, Any]:
    return next(p for p in sandbox.state.products.values() if p["sellerSku"] == sku)


def status_calls(sandbox: Any) -> int:
    return sum(n for (_, path), n in sandbox.calls.items() if path.startswith("/v2/orders/statuses/"))


def items_of_order(sandbox: Any, order_id: int) -> list[dict[str, Any]]:
    return sandbox.state.order_items(order_id)


# -- listings -----------------------------------------------------------------------------------


def test_new_parents_become_product_sets_with_their_sizes_as_products(channel, sandbox):
    listings = [dress(f"D1-{size}", size=size, quantity=3) for size in ("8", "10", "12")]
    listings += [dress("T1-S", "TEE-1", size="S", category="Men > T-Shirts", gender="Men")]
    results = channel.push_listings(listings)
    assert [r.key for r in results] == [l.sku for l in listings]
    assert all(r.ok and r.message == "pending approval" for r in results)
    assert len(sandbox.state.product_sets) == 2
    dress_set = next(s for s in sandbox.state.product_sets.values() if s["parentSku"] == "DRESS-1")
    assert dress_set["attributes"][1] == 100  # Gender "Women" sent as its option id
    assert {product(sandbox, l.sku)["productSetId"] for l in listings[:3]} == {dress_set["id"]}
    assert product(sandbox, "D1-10")["quantity"] == 3 and product(sandbox, "D1-10")["price"] == 129.95
    assert results[1].external_id == str(product(sandbox, "D1-10")["id"])
    assert calls(sandbox, "POST", "/v2/product-set") == 2


def test_a_listing_missing_gender_is_reported_and_the_others_are_created(channel, sandbox):
    listings = [dress("OK-1", "P-OK"), dress("NO-GENDER", "P-BAD", gender=""), dress("OK-2", "P-OK2", size="10")]
    results = {r.key: r for r in channel.push_listings(listings)}
    assert not results["NO-GENDER"].ok and results["NO-GENDER"].field == "gender"
    assert "Gender is missing" in results["NO-GENDER"].message and "Dresses" in results["NO-GENDER"].message
    assert results["OK-1"].ok and results["OK-2"].ok
    assert {p["sellerSku"] for p in sandbox.state.products.values()} == {"OK-1", "OK-2"}


@pytest.mark.parametrize("changes,field,text", [
    ({"brand": "Nobody"}, "brand", "not one of this seller's brands"),
    ({"category": "Women > Swimwear"}, "category", "not a leaf category"),
    ({"gender": "Woman"}, "gender", "use one of: Women, Men"),
    ({"colour": ""}, "colour", "Colour is missing"),
    ({"price": Decimal("0")}, "price", "above 0"),
    ({"sale_price": Decimal("200")}, "sale_price", "below the price"),
])
def test_listings_the_iconic_cannot_take_are_rejected_before_sending(channel, sandbox, changes, field, text):
    [result] = channel.push_listings([dress("X-1", **changes)])
    assert not result.ok and result.field == field and text in result.message
    assert calls(sandbox, "POST") == 0


def test_brands_are_found_among_thousands(channel, sandbox):
    sandbox.state.brands.extend({"id": 5000 + n, "name": f"Acme Kids {n}"} for n in range(150))
    [result] = channel.push_listings([dress("D-1")])
    assert result.ok
    acme = next(b["id"] for b in sandbox.state.brands if b["name"] == "Acme")
    assert next(iter(sandbox.state.product_sets.values()))["brandId"] == acme
    assert calls(sandbox, "GET", "/v2/brands") == 2  # "Acme" matches 151 brands: two pages, read to the end


def test_a_new_size_joins_the_existing_product_set(channel, sandbox):
    channel.push_listings([dress("D-8")])
    channel.push_listings([dress("D-10", size="10")])
    assert len(sandbox.state.product_sets) == 1
    assert product(sandbox, "D-10")["productSetId"] == product(sandbox, "D-8")["productSetId"]


def test_pending_products_become_approved_and_list_listings_says_so(make_channel, sandbox, control):
    channel = make_channel()
    channel.push_listings([dress("D-8"), dress("D-10", size="10")])
    assert {l.attributes["approval_status"] for l in channel.list_listings()} == {"pending"}
    control.post("/_control/approve", json={"sellerSkus": ["D-8"]})
    states = {l.sku: l.attributes for l in make_channel().list_listings()}
    assert states["D-8"]["approval_status"] == "approved" and states["D-8"]["shop_sku"]
    assert states["D-10"]["approval_status"] == "pending"
    [again] = make_channel().push_listings([dress("D-8")])
    assert again.ok and again.message == ""


def test_approval_after_a_configured_delay(channel, sandbox, fake):
    sandbox.state.settings.approval_delay = 600
    channel.push_listings([dress("D-8")])
    fake.advance(601)
    assert [l.attributes["approval_status"] for l in channel.list_listings()] == ["approved"]


def test_a_price_update_sends_every_price_field_so_a_sale_survives(channel, sandbox):
    channel.push_listings([dress("D-8")])
    product(sandbox, "D-8").update(salePrice=99.0, saleStartDate="2025-06-01", saleEndDate="2025-06-30")
    [result] = channel.push_listings([dress("D-8", price="139.95")])
    assert result.ok
    row = product(sandbox, "D-8")
    assert (row["price"], row["salePrice"], row["saleStartDate"], row["saleEndDate"]) == \
        (139.95, 99.0, "2025-06-01", "2025-06-30")


def test_the_hubs_sale_price_replaces_the_marketplace_one(make_channel, sandbox):
    make_channel().push_listings([dress("D-8")])
    product(sandbox, "D-8").update(salePrice=99.0)
    make_channel().push_listings([dress("D-8", sale_price=Decimal("89.95"))])
    assert product(sandbox, "D-8")["salePrice"] == 89.95
    make_channel(settings={"keep_marketplace_sales": False}).push_listings([dress("D-8")])
    assert product(sandbox, "D-8")["salePrice"] is None


def test_delisting_sets_the_product_inactive_and_relisting_active(channel, sandbox):
    channel.push_listings([dress("D-8")])
    [result] = channel.push_listings([dress("D-8", active=False)])
    assert result.ok and product(sandbox, "D-8")["status"] == "inactive"
    channel.push_listings([dress("D-8")])
    assert product(sandbox, "D-8")["status"] == "active"


def test_duplicate_skus_in_one_push_get_one_answer_each(channel):
    results = channel.push_listings([dress("D-8"), dress("D-8")])
    assert [r.key for r in results] == ["D-8", "D-8"] and all(r.ok for r in results)


# -- stock --------------------------------------------------------------------------------------


def _many_listed(channel: Any, count: int) -> list[Listing]:
    listings = [dress(f"S-{n:03d}", f"P-{n // 10:02d}", size=str(n % 10)) for n in range(count)]
    results = channel.push_listings(listings)
    assert all(r.ok for r in results)
    for listing, result in zip(listings, results, strict=True):
        listing.external_id = result.external_id
    return listings


def test_250_stock_changes_take_exactly_3_stock_calls(channel, sandbox):
    listings = _many_listed(channel, 250)
    sandbox.reset_counts()
    for listing in listings:
        listing.quantity = 7
    results = channel.push_stock(listings)
    assert all(r.ok for r in results) and len(results) == 250
    assert calls(sandbox, "PUT", "/v2/stock/product") == 3
    # ... plus one read of the reservations per reserving status (pending, ready_to_ship).
    assert calls(sandbox) == 3 + 2
    assert {p["quantity"] for p in sandbox.state.products.values()} == {7}


def test_stock_without_known_ids_is_looked_up_100_skus_at_a_time(channel, sandbox):
    listings = _many_listed(channel, 150)
    sandbox.reset_counts()
    for listing in listings:
        listing.external_id = None
    channel.push_stock(listings)
    assert calls(sandbox, "GET", "/v2/product/seller-skus") == 2
    assert calls(sandbox, "PUT", "/v2/stock/product") == 2


def test_reserved_units_are_added_back_so_available_is_the_hubs_quantity(channel, sandbox, control):
    [listing] = _many_listed(channel, 1)
    listing.quantity = 5
    channel.push_stock([listing])
    order = place_order(control, (listing.sku, 2))  # The Iconic now reserves 2
    listing.quantity = 3  # the hub holds the 2 ordered units back too
    channel.push_stock([listing])
    stock = sandbox.state.stock_read(product(sandbox, listing.sku))
    assert (stock["quantity"], stock["reservedStock"], stock["available"]) == (5, 2, 3)
    assert order["itemCount"] == 2


def test_rejected_stock_rows_are_reported_per_sku(channel, sandbox):
    listings = _many_listed(channel, 3)
    product(sandbox, listings[1].sku)["fulfilledByVenture"] = True
    results = {r.key: r for r in channel.push_stock(listings)}
    assert results[listings[0].sku].ok and results[listings[2].sku].ok
    assert not results[listings[1].sku].ok and results[listings[1].sku].field == "quantity"
    assert "venture" in results[listings[1].sku].message


def test_stock_for_an_unlisted_sku_is_rejected(channel):
    [result] = channel.push_stock([dress("NEVER-LISTED")])
    assert not result.ok and "not listed" in result.message


# -- orders -------------------------------------------------------------------------------------


@pytest.fixture
def listed(channel: Any) -> list[Listing]:
    return _many_listed(channel, 3)


def test_a_two_unit_order_becomes_one_line_of_two(channel, control, listed):
    placed = place_order(control, (listed[0].sku, 2), (listed[1].sku, 1))
    [order] = list(channel.pull_orders(None))
    validate_record(order)
    assert order.order_number == placed["number"] and order.channel_order_id == str(placed["id"])
    lines = {line.sku: line for line in order.lines}
    assert lines[listed[0].sku].quantity == 2 and len(lines[listed[0].sku].channel_line_ids) == 2
    assert lines[listed[1].sku].quantity == 1
    assert sorted(i for line in order.lines for i in line.channel_line_ids) == sorted(map(str, placed["orderItemIds"]))
    assert order.status == "new" and order.shipping_address.country == "AU" and order.total == Decimal("389.85")


def test_both_item_ids_are_written_back_with_id_keys(channel, sandbox, control, listed):
    placed = place_order(control, (listed[0].sku, 2))
    [order] = list(channel.pull_orders(None))
    fulfilment = Fulfilment(order_number=order.order_number, carrier="Australia Post", tracking_number="AP123",
                            lines=[FulfilmentLine(sku=line.sku, quantity=line.quantity,
                                                  channel_line_ids=line.channel_line_ids) for line in order.lines])
    result = channel.send_fulfilment(order, fulfilment)
    assert result.ok, result.message
    items = items_of_order(sandbox, placed["id"])
    # Had the body used any key but "id", The Iconic would have changed nothing and said so quietly.
    assert [i["status"] for i in items] == ["shipped", "shipped"]
    assert {i["shipment"]["trackingCode"] for i in items} == {"AP123"}
    assert {i["shipment"]["provider"]["name"] for i in items} == {"Australia Post"}
    assert calls(sandbox, "POST", "/v2/orders/statuses/set-to-ready-to-ship") == 1
    assert calls(sandbox, "POST", "/v2/orders/statuses/set-to-shipped") == 1


def test_sending_the_same_fulfilment_again_changes_nothing(channel, sandbox, control, listed):
    place_order(control, (listed[0].sku, 2))
    [order] = list(channel.pull_orders(None))
    fulfilment = Fulfilment(order_number=order.order_number, carrier="australia post", tracking_number="AP9")
    assert channel.send_fulfilment(order, fulfilment).ok
    again = channel.send_fulfilment(order, fulfilment)
    assert again.ok and again.message == "already written back"
    assert calls(sandbox, "POST", "/v2/orders/statuses/set-to-ready-to-ship") == 1


def test_lines_without_item_ids_pick_units_of_the_sku(channel, sandbox, control, listed):
    placed = place_order(control, (listed[0].sku, 2), (listed[1].sku, 1))
    [order] = list(channel.pull_orders(None))
    first = Fulfilment(order_number=order.order_number, carrier="StarTrack", tracking_number="ST1",
                       lines=[FulfilmentLine(sku=listed[0].sku, quantity=1)])
    second = Fulfilment(order_number=order.order_number, carrier="StarTrack", tracking_number="ST2",
                        lines=[FulfilmentLine(sku=listed[0].sku, quantity=1), FulfilmentLine(sku=listed[1].sku, quantity=1)])
    assert channel.send_fulfilment(order, first).ok and channel.send_fulfilment(order, second).ok
    tracking = sorted(i["shipment"]["trackingCode"] for i in items_of_order(sandbox, placed["id"]))
    assert tracking == ["ST1", "ST2", "ST2"]


def test_cross_docked_items_stop_at_ready_to_ship(make_channel, sandbox, control, listed):
    channel = make_channel(settings={"delivery_type": "send_to_warehouse"})
    placed = place_order(control, (listed[0].sku, 1))
    [order] = list(channel.pull_orders(None))
    assert channel.send_fulfilment(order, Fulfilment(order.order_number, "Aramex", "AR1")).ok
    assert [i["status"] for i in items_of_order(sandbox, placed["id"])] == ["ready_to_ship"]
    assert calls(sandbox, "POST", "/v2/orders/statuses/set-to-shipped") == 0


def test_an_unknown_provider_is_a_clear_error(channel, sandbox, control, listed):
    place_order(control, (listed[0].sku, 1))
    [order] = list(channel.pull_orders(None))
    result = channel.send_fulfilment(order, Fulfilment(order.order_number, "Pigeon Post", "PP1"))
    assert not result.ok and result.field == "carrier"
    assert "Pigeon Post" in result.message and "carrier map" in result.message and "Australia Post" in result.message
    assert status_calls(sandbox) == 0


def test_a_used_tracking_number_is_rejected_for_another_order(channel, control, listed):
    place_order(control, (listed[0].sku, 1))
    place_order(control, (listed[1].sku, 1))
    first, second = list(channel.pull_orders(None))
    assert channel.send_fulfilment(first, Fulfilment(first.order_number, "Aramex", "SAME")).ok
    result = channel.send_fulfilment(second, Fulfilment(second.order_number, "Aramex", "SAME"))
    assert not result.ok and result.field == "trackingNumber" and "already used" in result.message


def test_item_ids_of_another_order_are_refused_before_sending(channel, sandbox, control, listed):
    place_order(control, (listed[0].sku, 1))
    other = place_order(control, (listed[1].sku, 1))
    first = next(o for o in channel.pull_orders(None) if o.channel_order_id != str(other["id"]))
    foreign = Fulfilment(first.order_number, "Aramex", "X1",
                         lines=[FulfilmentLine(listed[1].sku, 1, [str(other["orderItemIds"][0])])])
    result = channel.send_fulfilment(first, foreign)
    assert not result.ok and "not part of order" in result.message
    assert status_calls(sandbox) == 0


def test_an_order_updated_while_the_pages_are_read_moves_no_other_order_off_its_page(
        make_channel, sandbox, control, listed, fake):
    product(sandbox, listed[0].sku)["quantity"] = 1000
    placed = []
    for _ in range(150):  # two pages of 100
        placed.append(place_order(control, (listed[0].sku, 1)))
        fake.advance(1)
    touched = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        answer = sandbox(environ, start_response)
        if environ["PATH_INFO"] == "/v2/orders" and not touched:  # the first page is read: a customer cancels
            touched.append(placed[10]["id"])
            fake.advance(1)
            sandbox.state.touch(items_of_order(sandbox, placed[10]["id"]), "canceled")
        return answer

    channel = make_channel(transport=httpx.WSGITransport(app=app))
    pulled = [order.channel_order_id for order in channel.pull_orders(datetime.fromtimestamp(fake.start, timezone.utc))]

    assert touched and sorted(pulled) == sorted(str(order["id"]) for order in placed)


def _one_unit_orders(channel: Any, sandbox: Any, control: Any, sku: str, count: int) -> list[Any]:
    product(sandbox, sku)["quantity"] = 1000
    for _ in range(count):
        place_order(control, (sku, 1))
    return sorted(channel.pull_orders(None), key=lambda order: int(order.channel_order_id))


@pytest.mark.parametrize("count", [1, 7, 100])
def test_a_batch_of_n_shipments_of_n_orders_takes_2n_plus_1_requests(channel, sandbox, control, listed, count):
    orders = _one_unit_orders(channel, sandbox, control, listed[0].sku, count)
    channel.providers()  # read once per channel instance (run), not per batch
    sandbox.reset_counts()

    pairs = [(order, Fulfilment(order.order_number, "Australia Post", f"AP{order.channel_order_id}")) for order in orders]
    results = channel.send_fulfilments(pairs)

    assert [r.key for r in results] == [order.order_number for order in orders] and all(r.ok for r in results)
    assert calls(sandbox) == 2 * count + 1  # one order-items read for the batch; the writes are per order (422 otherwise)
    assert calls(sandbox, "GET", "/v2/order-items") == 1
    assert all(item["status"] == "shipped" for order in orders for item in items_of_order(sandbox, int(order.channel_order_id)))


def test_one_shipment_sent_alone_takes_3_requests(channel, sandbox, control, listed):
    [order] = _one_unit_orders(channel, sandbox, control, listed[0].sku, 1)
    channel.providers()
    sandbox.reset_counts()
    assert channel.send_fulfilment(order, Fulfilment(order.order_number, "Aramex", "AR1")).ok
    assert calls(sandbox) == 3


def test_a_refused_shipment_in_a_batch_leaves_the_others_to_go_out(channel, sandbox, control, listed):
    earlier, first, second, third, fourth = _one_unit_orders(channel, sandbox, control, listed[0].sku, 5)
    assert channel.send_fulfilment(earlier, Fulfilment(earlier.order_number, "Aramex", "AR-0")).ok
    sandbox.reset_counts()
    results = channel.send_fulfilments([  # written 4 orders at a time: the outcome must not depend on which is first
        (first, Fulfilment(first.order_number, "Aramex", "AR-1")),
        (second, Fulfilment(second.order_number, "Pigeon Post", "PP-2")),  # no such provider
        (third, Fulfilment(third.order_number, "Aramex", "AR-0")),  # tracking used by another order
        (fourth, Fulfilment(fourth.order_number, "Aramex", "AR-4")),
    ])
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].field == "carrier" and "already used" in results[2].message
    assert calls(sandbox, "GET", "/v2/order-items") == 1  # the refused provider's order is not even read
    shipped = {order.order_number: [i["status"] for i in items_of_order(sandbox, int(order.channel_order_id))]
               for order in (first, second, third, fourth)}
    assert shipped == {first.order_number: ["shipped"], second.order_number: ["pending"],
                       third.order_number: ["pending"], fourth.order_number: ["shipped"]}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_batch_writes_write_back_concurrency_orders_at_a_time(make_channel, sandbox, control, listed, monkeypatch,
                                                               concurrency):
    channel = make_channel({"write_back_concurrency": concurrency})
    orders = _one_unit_orders(channel, sandbox, control, listed[0].sku, 12)
    gauge = InFlight()
    monkeypatch.setattr(sandbox, "app", gauge.around(sandbox.app, only="/statuses/",
                                                     until=concurrency))
    results = channel.send_fulfilments([(o, Fulfilment(o.order_number, "Aramex", f"AR{o.channel_order_id}")) for o in orders])
    assert [r.key for r in results] == [o.order_number for o in orders] and all(r.ok for r in results)
    assert gauge.most == concurrency
    assert all(item["status"] == "shipped" for o in orders for item in items_of_order(sandbox, int(o.channel_order_id)))
    assert IconicChannel.validate_settings({})["write_back_concurrency"] == 4


def test_an_auth_failure_mid_batch_stops_the_orders_not_yet_written(make_channel, sandbox, control, listed, monkeypatch):
    channel = make_channel({"write_back_concurrency": 2})
    orders = _one_unit_orders(channel, sandbox, control, listed[0].sku, 20)
    channel.providers()
    write, written, lock = channel._write_back, [], threading.Lock()

    def revoked_after_three(order, *args):
        with lock:
            if len(written) >= 3:
                raise AuthError("The Iconic revoked the token")
            written.append(order.order_number)
        return write(order, *args)

    monkeypatch.setattr(channel, "_write_back", revoked_after_three)
    with pytest.raises(AuthError):
        channel.send_fulfilments([(o, Fulfilment(o.order_number, "Aramex", f"AR{o.channel_order_id}")) for o in orders])
    shipped = [o for o in orders if items_of_order(sandbox, int(o.channel_order_id))[0]["status"] == "shipped"]
    assert len(shipped) == 3 and len(orders) - len(shipped) == 17  # the rest are sent by the next run


def test_two_shipments_of_one_order_in_a_batch_share_its_items(channel, sandbox, control, listed):
    placed = place_order(control, (listed[0].sku, 2))
    [order] = list(channel.pull_orders(None))
    one, two = (Fulfilment(order.order_number, "StarTrack", tracking, lines=[FulfilmentLine(listed[0].sku, 1)])
                for tracking in ("ST1", "ST2"))
    assert all(r.ok for r in channel.send_fulfilments([(order, one), (order, two)]))
    assert sorted(i["shipment"]["trackingCode"] for i in items_of_order(sandbox, placed["id"])) == ["ST1", "ST2"]


def test_a_status_write_mixing_two_orders_is_a_422_refusal(channel, control, listed):
    ids = [place_order(control, (listed[0].sku, 1))["orderItemIds"][0],
           place_order(control, (listed[1].sku, 1))["orderItemIds"][0]]
    with pytest.raises(RejectedItem) as raised:
        channel.client.post("/v2/orders/statuses/set-to-ready-to-ship", {
            "orderItems": [{"id": i} for i in ids], "deliveryType": "dropship", "shippingProvider": "Aramex",
            "trackingNumber": "MIX1"})
    assert raised.value.status == 422 and "same order" in str(raised.value)


def test_the_politeness_rate_is_an_account_setting():
    assert IconicChannel.validate_settings({})["requests_per_second"] == 25
    assert IconicChannel.validate_settings({"requests_per_second": 60})["requests_per_second"] == 60
    for wrong in (0, 0.5, 101):
        with pytest.raises(ValidationError):
            IconicChannel.validate_settings({"requests_per_second": wrong})


def test_cancel_with_a_failure_reason(channel, sandbox, control, listed):
    placed = place_order(control, (listed[0].sku, 2))
    [order] = list(channel.pull_orders(None))
    refused = channel.cancel_order(order, "Bored")
    assert not refused.ok and refused.field == "reason" and "Out of stock" in refused.message
    assert channel.cancel_order(order, "out of stock").ok
    assert {i["status"] for i in items_of_order(sandbox, placed["id"])} == {"canceled"}
    assert channel.cancel_order(order, "Out of stock").message == "already cancelled"
    [pulled] = list(channel.pull_orders(None))
    assert pulled.status == "cancelled" and pulled.lines[0].status == "cancelled"


def test_cancellations_and_returns_update_the_canonical_order(channel, control, listed):
    placed = place_order(control, (listed[0].sku, 2), (listed[1].sku, 1))
    cancel_one = [placed["orderItemIds"][0]]
    control.post(f"/_control/orders/{placed['id']}/cancel", json={"orderItemIds": cancel_one})
    [order] = list(channel.pull_orders(None))
    statuses = sorted((line.sku, line.status, line.quantity) for line in order.lines)
    assert statuses == [(listed[0].sku, "cancelled", 1), (listed[0].sku, "open", 1), (listed[1].sku, "open", 1)]
    assert order.status == "new"
    assert channel.send_fulfilment(order, Fulfilment(order.order_number, "Aramex", "AR7")).ok
    control.post(f"/_control/orders/{placed['id']}/return")
    [returned] = list(channel.pull_orders(None))
    assert returned.status == "returned"
    assert {line.status for line in returned.lines} == {"cancelled", "returned"}


def test_an_extra_overlap_setting_reaches_further_back(make_channel, control, listed, fake):
    old = place_order(control, (listed[0].sku, 1))
    fake.advance(5 * 60)
    cursor = datetime.fromtimestamp(fake.now, tz=timezone.utc)
    widened = make_channel({"order_overlap_minutes": 10})
    assert str(old["id"]) in {o.channel_order_id for o in widened.pull_orders(cursor)}


def test_pull_orders_since_a_cursor_uses_the_overlap_window(channel, sandbox, control, listed, fake):
    old = place_order(control, (listed[0].sku, 1))
    fake.advance(3600)
    cursor = datetime.fromtimestamp(fake.now, tz=timezone.utc)
    fake.advance(60)
    new = place_order(control, (listed[1].sku, 1))
    assert [o.channel_order_id for o in channel.pull_orders(cursor)] == [str(new["id"])]
    early = cursor - timedelta(minutes=70)
    assert {o.channel_order_id for o in channel.pull_orders(early)} == {str(old["id"]), str(new["id"])}
    near = datetime.fromtimestamp(fake.now - 3600 + 5 * 60, tz=timezone.utc)  # 5 min after the old order
    # The orders flow already subtracts its overlap from the cursor; the channel adds none by default.
    assert {o.channel_order_id for o in channel.pull_orders(near)} == {str(new["id"])}


def test_orders_and_items_are_paged_and_deduplicated(channel, sandbox, control, listed):
    for listing in listed:
        product(sandbox, listing.sku)["quantity"] = 500
    for _ in range(120):
        place_order(control, (listed[0].sku, 1))
    orders = list(channel.pull_orders(None))
    assert len(orders) == len({o.channel_order_id for o in orders}) == 120
    assert calls(sandbox, "GET", "/v2/orders") == 2
    assert calls(sandbox, "GET", "/v2/order-items") == 2  # 100 order ids per lookup


def test_a_long_orders_pull_reads_pages_and_item_look_ups_several_at_a_time(channel, sandbox, control, listed,
                                                                           monkeypatch):
    product(sandbox, listed[0].sku)["quantity"] = 1000
    for _ in range(350):
        place_order(control, (listed[0].sku, 1))
    pages, lookups = InFlight(), InFlight()
    # Held until the expected number are in flight: a busy host can start the fourth look-up's thread
    # after the first has answered (seen once in CI with a fixed 50 ms hold: 3 at once).
    monkeypatch.setattr(sandbox, "app", pages.around(lookups.around(sandbox.app, only="/v2/order-items", until=4),
                                                     only="/v2/orders", until=3, lead=1))
    orders = list(channel.pull_orders(None))
    assert len(orders) == len({o.channel_order_id for o in orders}) == 350
    assert all(order.lines for order in orders)
    assert calls(sandbox, "GET", "/v2/orders") == 4 and calls(sandbox, "GET", "/v2/order-items") == 4
    assert pages.most == 3  # the first page alone (it gives the total), then the other three at once
    assert lookups.most == READS_IN_FLIGHT == 4


def test_a_re_read_order_exactly_as_before_is_handed_out_again_without_fetching_its_items(
        make_channel, sandbox, control, listed):
    channel = make_channel()
    placed = [place_order(control, (listed[0].sku, 1)) for _ in range(3)]
    first = {o.channel_order_id: o for o in channel.pull_orders(None)}
    assert calls(sandbox, "GET", "/v2/order-items") == 1
    again = {o.channel_order_id: o for o in channel.pull_orders(None)}
    assert calls(sandbox, "GET", "/v2/orders") == 2 and calls(sandbox, "GET", "/v2/order-items") == 1
    assert all(again[key] is first[key] for key in first)  # the records mapped the first time

    # A cancelled item changes the order's updatedAt and statusList: that order alone is read again.
    control.post(f"/_control/orders/{placed[1]['id']}/cancel", json={"orderItemIds": placed[1]["orderItemIds"]})
    changed = {o.channel_order_id: o for o in channel.pull_orders(None)}
    assert calls(sandbox, "GET", "/v2/order-items") == 2
    assert changed[str(placed[1]["id"])].status == "cancelled"
    assert changed[str(placed[0]["id"])] is first[str(placed[0]["id"])]

    # Another sandbox (a test's own transport) never gets this one's records.
    elsewhere = make_channel()
    assert {o.channel_order_id for o in elsewhere.pull_orders(None)} == set(first)
    assert calls(sandbox, "GET", "/v2/order-items") == 3


def test_the_next_pull_reads_as_many_pages_at_once_as_the_last_window_held(make_channel, sandbox, control, listed,
                                                                          monkeypatch):
    product(sandbox, listed[0].sku)["quantity"] = 1000
    for _ in range(250):
        place_order(control, (listed[0].sku, 1))
    channel = make_channel()
    assert len(list(channel.pull_orders(None))) == 250  # first page alone (it gives the count), then two at once
    pages = InFlight()
    monkeypatch.setattr(sandbox, "app", pages.around(sandbox.app, only="/v2/orders", until=3))  # no page alone
    place_order(control, (listed[0].sku, 1))
    assert len(list(channel.pull_orders(None))) == 251
    assert pages.most == 3 and calls(sandbox, "GET", "/v2/orders") == 3 + 3


def test_remembered_orders_forget_the_least_recently_pulled_past_their_size():
    from plugins.iconic.remembered import RememberedOrders

    remembered = RememberedOrders(size=2)
    login = ("https://iconic.test", "app")
    orders = [{"id": n, "updatedAt": "2026-11-27T10:00:00+00:00", "statusList": {"pending": 1}} for n in (1, 2, 3)]
    records = [object() for _ in orders]  # stand-ins for mapped records: the cache never looks inside
    remembered.put(None, login, orders[0], records[0])  # type: ignore[arg-type]
    remembered.put(None, login, orders[1], records[1])  # type: ignore[arg-type]
    assert remembered.get(None, login, orders[0]) is records[0]  # 1 is now the most recent
    remembered.put(None, login, orders[2], records[2])  # type: ignore[arg-type]
    assert remembered.get(None, login, orders[1]) is None  # 2 was the least recent
    assert remembered.get(None, login, orders[0]) is records[0] and remembered.get(None, login, orders[2]) is records[2]
    assert remembered.get(None, login, {**orders[0], "updatedAt": "2026-11-27T10:05:00+00:00"}) is None
    assert remembered.get(None, ("https://iconic.test", "other app"), orders[0]) is None
    bare = {"id": 4, "updatedAt": "2026-11-27T10:00:00+00:00"}  # no statusList: an item's change could hide
    remembered.put(None, login, bare, records[0])  # type: ignore[arg-type]
    assert remembered.get(None, login, bare) is None


def test_embedded_items_need_no_second_call(channel, sandbox, control, listed):
    sandbox.state.settings.embed_order_items = True
    place_order(control, (listed[0].sku, 2))
    [order] = list(channel.pull_orders(None))
    assert order.lines[0].quantity == 2
    assert calls(sandbox, "GET", "/v2/order-items") == 0


# -- enumeration, connection, webhooks ----------------------------------------------------------


def test_list_listings_is_complete_and_in_the_hubs_terms(channel, sandbox, control):
    listings = _many_listed(channel, 230)
    place_order(control, (listings[0].sku, 2))
    shown = {l.sku: l for l in channel.list_listings()}
    assert set(shown) == {l.sku for l in listings}
    first = shown[listings[0].sku]
    assert first.quantity == 3 and first.attributes["reserved"] == 2  # available, as the hub counts it
    assert first.brand == "Acme" and first.category == "Dresses" and first.price == Decimal("129.95")


def test_list_listings_raises_when_a_page_fails(channel, sandbox):
    _many_listed(channel, 120)
    sandbox.faults.update({"rate_5xx": 1.0})
    with pytest.raises(TransientError):
        list(channel.list_listings())


def test_test_connection_lists_what_the_account_can_use(channel):
    seen = channel.test_connection()
    assert seen["brands"] == 1200 and "Acme" not in seen["brand_sample"]
    assert "Australia Post" in seen["shipment_providers"]
    assert {"type": "canceled", "name": "Out of stock"} in seen["failure_reasons"]


def _hook(event: str, payload: dict[str, Any], secret: str | None = WEBHOOK_SECRET) -> WebhookRequest:
    return WebhookRequest(headers={"Content-Type": "application/json"},
                          body=json.dumps({"event": event, "payload": payload}).encode(), url_secret=secret)


def test_order_webhooks_ask_for_a_targeted_pull(channel, control, listed):
    placed = place_order(control, (listed[0].sku, 1))
    created = channel.verify_webhook(_hook("onOrderCreated", {"OrderId": placed["id"], "OrderNr": placed["number"]}))
    assert created.flow == "orders" and created.params == {"order_ids": [str(placed["id"])]}
    changed = channel.verify_webhook(_hook("onOrderItemsStatusChanged", {"OrderId": placed["id"],
                                                                        "OrderItemIds": placed["orderItemIds"],
                                                                        "NewStatus": "canceled"}))
    assert changed.params["order_ids"] == [str(placed["id"])] and changed.delivery_id != created.delivery_id
    assert [o.order_number for o in channel.pull_orders_by_id(changed.params["order_ids"])] == [placed["number"]]


def test_a_repeated_delivery_has_the_same_delivery_id(channel):
    hook = _hook("onOrderCreated", {"OrderId": 5})
    assert channel.verify_webhook(hook).delivery_id == channel.verify_webhook(hook).delivery_id


def test_other_events_are_ignored(channel):
    assert channel.verify_webhook(_hook("onProductCreated", {"SellerSkus": ["A"]})) is None


@pytest.mark.parametrize("secret", [None, "", "whsec-wrong-secret-000"])
def test_a_wrong_url_secret_is_refused(channel, secret):
    with pytest.raises(AuthError):
        channel.verify_webhook(_hook("onOrderCreated", {"OrderId": 5}, secret=secret))


def test_webhooks_need_a_configured_secret(make_channel):
    channel = make_channel(webhook_secret=None)
    with pytest.raises(AuthError, match="webhook_secret in the Iconic account's credentials"):
        channel.verify_webhook(_hook("onOrderCreated", {"OrderId": 5}))


def test_the_webhook_secret_is_a_masked_credential_not_a_setting():
    assert "webhook_secret" in IconicChannel.credentials_schema().fields and "webhook_secret" in IconicChannel.secret_fields
    assert "webhook_secret" not in IconicChannel.settings_schema().fields
    assert IconicChannel.validate_credentials({"application_id": "a", "application_secret": "b"})["webhook_secret"] is None
    with pytest.raises(ValidationError, match="webhook_secret"):
        IconicChannel.validate_credentials({"application_id": "a", "application_secret": "b", "webhook_secret": "short"})
    # an account saved before the move still loads: the old plain copy is accepted and left out
    assert "webhook_secret" not in IconicChannel.validate_settings({"webhook_secret": WEBHOOK_SECRET})


def test_an_account_saved_before_the_move_still_verifies_with_its_settings_secret(make_channel):
    legacy = make_channel(webhook_secret=None, settings={"webhook_secret": WEBHOOK_SECRET})
    assert legacy.verify_webhook(_hook("onOrderCreated", {"OrderId": 5})).params == {"order_ids": ["5"]}
    with pytest.raises(AuthError):
        legacy.verify_webhook(_hook("onOrderCreated", {"OrderId": 5}, secret="whsec-wrong-secret-000"))
    assert legacy.test_connection()["problems"] == [LEGACY_WEBHOOK_SECRET]
    assert "problems" not in make_channel().test_connection()


def test_the_credentials_secret_wins_over_an_old_settings_copy(make_channel):
    channel = make_channel(settings={"webhook_secret": "whsec-old-settings-copy-0000"})
    assert channel.verify_webhook(_hook("onOrderCreated", {"OrderId": 5})) is not None
    with pytest.raises(AuthError):
        channel.verify_webhook(_hook("onOrderCreated", {"OrderId": 5}, secret="whsec-old-settings-copy-0000"))
