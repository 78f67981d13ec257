"""create_order, fulfilments and cancellations back, and restocking returns."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from hub.errors import TransientError
from hub.testing import InFlight
from plugins.shopify.channel import ShopifyChannel
from plugins.shopify.sandbox import Faults

from .conftest import graphql_calls
from .test_conformance import marketplace_order

SKU = "STYLE-0001-BLA-S"


def level(app: Any, sku: str, location: str = "Sydney Warehouse") -> Any:
    state = app.state
    variant = next(v for v in state.variants.values() if v.sku == sku)
    return state.levels[(variant.item_id, state.location_named(location).id)]


def test_the_order_is_named_billed_and_shipped_as_the_hub_promises(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox, {"marketplace_email": "orders@theiconic.example",
                                     "marketplace_address": {"address1": "Level 18, 338 Pitt St", "city": "Sydney",
                                                             "provinceCode": "NSW", "zip": "2000", "countryCode": "AU"}})
    before = level(sandbox, SKU).available + level(sandbox, SKU, "Melbourne Store").available
    result = channel.create_order(marketplace_order("300000001"))
    assert result.ok and result.external_id.startswith("gid://shopify/Order/")
    order = sandbox.state.orders[result.external_id]
    assert order.name == "300000001" and order.sourceName == "channelhub"
    assert order.sourceIdentifier == "iconic-300000001"
    assert "The Iconic" in order.tags and "channelhub" in order.tags
    assert "The Iconic order 300000001" in order.note
    assert order.billing["company"] == "The Iconic" and order.billing["city"] == "Sydney"
    assert order.email == "orders@theiconic.example"
    assert order.shipping["firstName"] == "Jane" and order.shipping["lastName"] == "Citizen"
    assert order.financial_status == "PAID"
    assert order.lines[0].price == Decimal("79.95")  # the marketplace's price, not Shopify's
    # DECREMENT_OBEYING_POLICY by default: the unit moved from available to committed
    after = level(sandbox, SKU).available + level(sandbox, SKU, "Melbourne Store").available
    assert after == before - 1
    assert level(sandbox, SKU).committed + level(sandbox, SKU, "Melbourne Store").committed == 1


def test_inventory_behaviour_follows_the_account_setting(sandbox: Any, make_channel: Any) -> None:
    before = level(sandbox, SKU).available + level(sandbox, SKU, "Melbourne Store").available
    assert make_channel(sandbox, {"inventory_behaviour": "BYPASS"}).create_order(marketplace_order()).ok
    assert level(sandbox, SKU).available + level(sandbox, SKU, "Melbourne Store").available == before
    assert level(sandbox, SKU).committed == 0


def test_a_retry_after_a_timeout_creates_one_order(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(timeout_after_order_create=1)  # applied, then the answer is lost
    channel = make_channel(app)
    first = channel.create_order(marketplace_order("300000002"))
    again = channel.create_order(marketplace_order("300000002"))
    assert first.ok and again.ok and first.external_id == again.external_id
    assert [o.name for o in app.state.orders.values()] == ["300000002"]


def test_a_timeout_before_the_order_exists_is_transient(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox()
    channel = make_channel(app)
    channel.create_order(marketplace_order("300000009"))  # warm up: locations, lookups
    app.faults.update({"rate_timeout": 1.0})
    with pytest.raises(TransientError):
        channel.create_order(marketplace_order("300000003"))
    app.faults.update({"rate_timeout": 0.0})
    assert channel.create_order(marketplace_order("300000003")).ok
    assert sorted(o.name for o in app.state.orders.values()) == ["300000003", "300000009"]


def test_an_unknown_sku_is_rejected_naming_the_line(channel: Any, sandbox: Any) -> None:
    result = channel.create_order(marketplace_order(skus=(SKU, "NO-SUCH-SKU")))
    assert not result.ok and result.field == "lines.1.sku" and "NO-SUCH-SKU" in result.message
    assert not sandbox.state.orders


def test_user_errors_come_back_as_a_rejection(sandbox: Any, channel: Any, admin: Any) -> None:
    admin("/_control/stock", {"sku": SKU, "location": "Sydney Warehouse", "available": 0})
    admin("/_control/stock", {"sku": SKU, "location": "Melbourne Store", "available": 0})
    result = channel.create_order(marketplace_order())
    assert not result.ok and "INVENTORY_CLAIM_FAILED" in result.message
    assert result.field == "order.lineItems.0.quantity"


def test_order_lines_look_up_skus_in_one_call(sandbox: Any, channel: Any) -> None:
    skus = tuple(f"STYLE-{n:04d}-{c}-{s}" for n, c in ((1, "BLA"), (2, "WHI"), (3, "NAV")) for s in ("S", "M", "L"))
    sandbox.reset_counts()
    assert channel.create_order(marketplace_order("300000004", skus)).ok
    assert graphql_calls(sandbox) == 3  # find by name, one SKU search for 9 lines, orderCreate


def test_a_fulfilment_with_carrier_and_tracking_reaches_the_hub(sandbox: Any, channel: Any, admin: Any) -> None:
    created = channel.create_order(marketplace_order("300000005", (SKU, "STYLE-0002-WHI-M")))
    admin("/_control/fulfil", {"order": "300000005", "company": "Australia Post", "number": "AP123456789",
                               "url": "https://auspost.com.au/track/AP123456789", "lines": {SKU: 1}})
    admin("/_control/fulfil", {"order": "300000005", "company": "Yodel", "number": "YD42"})
    shipments = list(channel.pull_fulfilments(None))
    assert [(s.carrier, s.tracking_number) for s in shipments] == [("auspost", "AP123456789"), ("Yodel", "YD42")]
    first, second = shipments
    assert first.order_number == "300000005" and [(l.sku, l.quantity) for l in first.lines] == [(SKU, 1)]
    assert first.tracking_url.endswith("AP123456789") and first.external_id.startswith("gid://shopify/Fulfillment/")
    assert [(l.sku, l.quantity) for l in second.lines] == [("STYLE-0002-WHI-M", 1)]
    assert created.external_id == sandbox.state.order_named("300000005").id


def test_the_fulfilment_pull_reads_only_orders_shopify_lists_as_shipped(sandbox: Any, make_channel: Any,
                                                                       admin: Any, monkeypatch: Any) -> None:
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS"})
    channel.create_orders(batch(30))  # shipped by a warehouse outside Shopify: no fulfilment here
    admin("/_control/fulfil", {"order": "400000003", "company": "StarTrack", "number": "ST3",
                               "lines": {SKUS[3 % len(SKUS)]: 1}})  # part of the order
    admin("/_control/fulfil", {"order": "400000007", "company": "Sendle", "number": "SD7"})  # all of it
    sandbox.reset_counts()
    gauge = InFlight()
    monkeypatch.setattr(sandbox, "app", gauge.around(sandbox.app, until=2))
    shipments = list(channel.pull_fulfilments(None))
    assert sorted((s.order_number, s.tracking_number) for s in shipments) == [("400000003", "ST3"),
                                                                              ("400000007", "SD7")]
    assert graphql_calls(sandbox) == 2  # one search for partly shipped orders, one for shipped: no page of 7 x 30
    assert gauge.most == 2  # sent at the same time


def test_the_sandbox_searches_orders_by_shopifys_fulfillment_status_values(sandbox: Any, make_channel: Any,
                                                                         admin: Any) -> None:
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS"})
    channel.create_orders(batch(3))
    admin("/_control/fulfil", {"order": "400000001", "company": "StarTrack", "number": "ST1",
                               "lines": {SKUS[1 % len(SKUS)]: 1}})
    admin("/_control/fulfil", {"order": "400000002", "company": "Sendle", "number": "SD2"})
    search = "query($q: String) { orders(first: 10, query: $q) { nodes { name displayFulfillmentStatus } } }"

    def names(status: str) -> list[str]:
        return sorted(n["name"] for n in admin(search, {"q": f"fulfillment_status:{status}"})["data"]["orders"]["nodes"])

    assert names("unshipped") == ["400000000"] and names("partial") == ["400000001"] and names("shipped") == ["400000002"]
    assert names("unfulfilled") == ["400000000", "400000001"] and len(names("any")) == 3


def test_fulfilments_of_orders_placed_in_shopify_are_not_the_hubs(sandbox: Any, channel: Any, admin: Any) -> None:
    variant_id = next(v.id for v in sandbox.state.variants.values() if v.sku == SKU)
    admin("mutation($o: OrderCreateOrderInput!) { orderCreate(order: $o) { order { id } userErrors { message } } }",
          {"o": {"name": "#1001", "lineItems": [{"variantId": variant_id, "quantity": 1}]}})
    admin("/_control/fulfil", {"order": "#1001", "company": "Australia Post", "number": "AP999"})
    assert list(channel.pull_fulfilments(None)) == []


def test_fulfilments_since_the_cursor_only(sandbox: Any, channel: Any, admin: Any, vtime: Any) -> None:
    from datetime import datetime, timezone

    channel.create_order(marketplace_order("300000006"))
    channel.create_order(marketplace_order("300000007"))
    admin("/_control/fulfil", {"order": "300000006", "company": "StarTrack", "number": "ST1"})
    vtime.now += 120
    cursor = datetime.fromtimestamp(vtime.now, tz=timezone.utc)
    vtime.now += 60
    admin("/_control/fulfil", {"order": "300000007", "company": "Sendle", "number": "SD1"})
    assert [(s.order_number, s.carrier) for s in channel.pull_fulfilments(cursor)] == [("300000007", "sendle")]


def test_cancellations_are_reported_back(sandbox: Any, channel: Any, admin: Any) -> None:
    channel.create_order(marketplace_order("300000008"))
    committed = level(sandbox, SKU).committed + level(sandbox, SKU, "Melbourne Store").committed
    admin("/_control/cancel", {"order": "300000008"})
    cancelled = list(channel.pull_cancellations(None))
    assert [(o.order_number, o.status, o.channel_order_id) for o in cancelled] == \
        [("300000008", "cancelled", "iconic-300000008")]
    assert cancelled[0].lines[0].sku == SKU
    assert level(sandbox, SKU).committed + level(sandbox, SKU, "Melbourne Store").committed == committed - 1


def test_restock_is_idempotent_by_key(sandbox: Any, channel: Any) -> None:
    before = level(sandbox, SKU).available
    first = channel.restock(SKU, 2, "Sydney Warehouse", "return-77")
    again = channel.restock(SKU, 2, "Sydney Warehouse", "return-77")
    assert first.ok and again.ok
    assert level(sandbox, SKU).available == before + 2
    assert channel.restock(SKU, 1, "Sydney Warehouse", "return-78").ok
    assert level(sandbox, SKU).available == before + 3


def test_restock_of_many_lines_is_one_mutation(sandbox: Any, channel: Any) -> None:
    quantities = {f"STYLE-0002-WHI-{s}": 1 for s in ("S", "M", "L")} | {"NOPE": 1}
    channel.locations()
    sandbox.reset_counts()
    results = {r.key: r for r in channel.restock_lines(quantities, None, "return-80")}
    assert [k for k, r in results.items() if not r.ok] == ["NOPE"]
    assert graphql_calls(sandbox) == 2  # one SKU search, one inventoryAdjustQuantities


def test_restock_to_an_unknown_location_names_the_choices(channel: Any) -> None:
    from hub.errors import RejectedItem

    with pytest.raises(RejectedItem, match="Sydney Warehouse"):
        channel.restock(SKU, 1, "Perth", "return-79")


def test_faults_on_reads_are_retried(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(faults=Faults(rate_5xx=0.3, seed=3))
    products = list(make_channel(app, {"catalogue_mode": "paged"}).list_products(None))
    assert len(products) == 12 and app.injected["5xx"] > 0


def test_a_return_restocks_once_through_the_hub_hook(sandbox: Any, make_channel: Any) -> None:
    from hub.records import FulfilmentLine, Return

    channel = make_channel(sandbox, {"restock_location": "Sydney Warehouse"})
    before = level(sandbox, SKU).available
    ret = Return(order_number="ICO-5", external_id="R-5", lines=[FulfilmentLine(SKU, 1), FulfilmentLine(SKU, 1)])
    assert channel.receive_return(ret).ok
    assert channel.receive_return(ret).ok  # delivered twice: stock goes back once
    assert level(sandbox, SKU).available == before + 2
    unknown = channel.receive_return(Return(order_number="ICO-6", external_id="R-6", lines=[FulfilmentLine("NOPE", 1)]))
    assert not unknown.ok and "NOPE" in unknown.message


# -- create_orders: a batch ------------------------------------------------------------------------

SKUS = tuple(f"STYLE-{n:04d}-{c}-{s}" for n, c in ((1, "BLA"), (2, "WHI"), (3, "NAV")) for s in ("S", "M", "L"))


def batch(count: int, start: int = 400000000) -> list[Any]:
    return [marketplace_order(str(start + i), (SKUS[i % len(SKUS)], SKUS[(i + 1) % len(SKUS)])) for i in range(count)]


def test_a_batch_of_new_orders_takes_one_request_each_plus_two(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS"})
    orders = batch(30)
    sandbox.reset_counts()
    results = channel.create_orders(orders)
    assert graphql_calls(sandbox) == len(orders) + 2  # one name search, one SKU search, N orderCreates
    assert [r.key for r in results] == [o.order_number for o in orders] and all(r.ok for r in results)
    assert [sandbox.state.orders[r.external_id].name for r in results] == [o.order_number for o in orders]


def test_a_batch_with_an_order_already_there_and_an_unknown_sku(sandbox: Any, channel: Any) -> None:
    existing = channel.create_order(marketplace_order("400000100"))
    orders = [marketplace_order("400000101"), marketplace_order("400000100"),
              marketplace_order("400000102", (SKU, "NO-SUCH-SKU")), marketplace_order("400000103")]
    sandbox.reset_counts()
    results = channel.create_orders(orders)
    assert graphql_calls(sandbox) == 2 + 2  # the searches, then orderCreate for 101 and 103 only
    assert [(r.key, r.ok) for r in results] == [("400000101", True), ("400000100", True), ("400000102", False),
                                                ("400000103", True)]
    assert results[1].external_id == existing.external_id and results[1].message == "already in Shopify"
    assert results[2].field == "lines.1.sku" and "NO-SUCH-SKU" in results[2].message
    assert sorted(o.name for o in sandbox.state.orders.values()) == ["400000100", "400000101", "400000103"]


def test_user_errors_reject_one_order_not_the_batch(sandbox: Any, channel: Any, admin: Any) -> None:
    for location in ("Sydney Warehouse", "Melbourne Store"):
        admin("/_control/stock", {"sku": "STYLE-0003-NAV-L", "location": location, "available": 0})
    orders = [marketplace_order("400000201"), marketplace_order("400000202", (SKU, "STYLE-0003-NAV-L")),
              marketplace_order("400000203")]
    results = channel.create_orders(orders)
    assert [r.ok for r in results] == [True, False, True]
    assert "INVENTORY_CLAIM_FAILED" in results[1].message and results[1].field == "order.lineItems.1.quantity"


def test_the_same_order_twice_in_a_batch_is_created_once(sandbox: Any, channel: Any) -> None:
    results = channel.create_orders([marketplace_order("400000301"), marketplace_order("400000301")])
    assert results[0].ok and results[0] == results[1]
    assert [o.name for o in sandbox.state.orders.values()] == ["400000301"]


def test_names_are_searched_50_a_request_and_quoted(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS"})
    odd = marketplace_order('40 "0" OR name:x\\')  # quotes, backslash and OR inside a name stay one value
    assert channel.create_order(odd).ok
    orders = [odd, *batch(120, 400001000)]
    sandbox.reset_counts()
    results = channel.create_orders(orders)
    assert graphql_calls(sandbox) == 120 + 3 + 1  # ceil(121 / 50) name searches, one SKU search (9 SKUs)
    assert results[0].message == "already in Shopify" and all(r.ok for r in results)


def test_a_transient_failure_mid_batch_keeps_what_was_created(sandbox: Any, make_channel: Any,
                                                              monkeypatch: Any) -> None:
    channel = make_channel(sandbox, {"create_concurrency": 1})  # one after another: exactly which were sent
    mutate, calls = channel.client.mutate, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        if len(calls) == 2:
            raise TransientError("Shopify timed out")  # before applying: the look-again finds nothing
        return mutate(*args, **kwargs)

    monkeypatch.setattr(channel.client, "mutate", flaky)
    results = channel.create_orders([marketplace_order(str(400000400 + i)) for i in range(3)])
    assert [(r.ok, r.retryable) for r in results] == [(True, False), (False, True), (False, True)]
    assert "not sent to Shopify" in results[1].message and len(calls) == 2  # stops at the failure
    assert [o.name for o in sandbox.state.orders.values()] == ["400000400"]


def test_concurrent_creates_keep_what_was_created_and_send_nothing_new_after_a_failure(
        sandbox: Any, make_channel: Any, monkeypatch: Any) -> None:
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS", "create_concurrency": 3})
    mutate, calls, lock = channel.client.mutate, [], threading.Lock()

    def flaky(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(args[1]["order"]["name"])
            fail = len(calls) == 5
        if fail:
            raise TransientError("Shopify timed out")
        return mutate(*args, **kwargs)

    monkeypatch.setattr(channel.client, "mutate", flaky)
    orders = [marketplace_order(str(400000600 + i)) for i in range(20)]
    results = channel.create_orders(orders)
    in_shopify = {o.name for o in sandbox.state.orders.values()}
    assert [r.key for r in results] == [o.order_number for o in orders]
    assert all(r.ok == (r.key in in_shopify) for r in results)  # a result says what happened, in input order
    assert all(r.retryable and "not sent to Shopify" in r.message for r in results if not r.ok)
    assert 4 <= len(in_shopify) and len(calls) <= 5 + 2  # at most the two others in flight finish after the failure


def test_a_create_that_timed_out_but_reached_shopify_is_kept_and_the_rest_wait_for_the_next_run(
        sandbox: Any, make_channel: Any, monkeypatch: Any) -> None:
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS", "create_concurrency": 1})
    mutate, calls = channel.client.mutate, []

    def answer_lost(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1]["order"]["name"])
        payload = mutate(*args, **kwargs)  # Shopify creates the order ...
        if len(calls) == 3:
            raise TransientError("Shopify timed out")  # ... and the answer never arrives
        return payload

    monkeypatch.setattr(channel.client, "mutate", answer_lost)
    orders = [marketplace_order(str(400000700 + i)) for i in range(6)]
    results = channel.create_orders(orders)
    assert [r.ok for r in results] == [True, True, True, False, False, False]
    assert results[2].message == "created (after a timeout)"
    assert all(r.retryable and "timed out" in r.message for r in results[3:])
    assert len(calls) == 3 and len(sandbox.state.orders) == 3  # nothing new was sent after the timeout


def test_creates_overlap_up_to_create_concurrency(sandbox: Any, make_channel: Any, monkeypatch: Any) -> None:
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS"})
    gauge = InFlight()
    # The name search and the SKU search go first, together; then the orderCreates overlap.
    monkeypatch.setattr(sandbox, "app", gauge.around(sandbox.app, until=4, lead=2))
    results = channel.create_orders(batch(16))
    assert all(r.ok for r in results) and len(sandbox.state.orders) == 16
    assert gauge.most == 4 and ShopifyChannel.validate_settings({})["create_concurrency"] == 4
    assert sandbox.state.throttled == 0


def test_the_name_search_and_the_sku_search_go_out_together(sandbox: Any, make_channel: Any,
                                                            monkeypatch: Any) -> None:
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS", "create_concurrency": 1})
    gauge = InFlight()
    # Every request is held until two have been in flight at once: only the two searches can be,
    # as the orderCreates go one at a time. Searched one after the other, the first waits in vain.
    monkeypatch.setattr(sandbox, "app", gauge.around(sandbox.app, until=2, timeout=2.0))
    results = channel.create_orders(batch(3))
    assert gauge.most == 2 and all(r.ok for r in results) and len(sandbox.state.orders) == 3


def test_concurrent_creates_share_the_cost_bucket_without_being_throttled(make_sandbox: Any, make_channel: Any,
                                                                        vtime: Any) -> None:
    app = make_sandbox(bucket_size=600.0, restore_rate=50.0)  # a name search, then orderCreates at 5/s
    channel = make_channel(app, {"inventory_behaviour": "BYPASS", "create_concurrency": 8})
    results = channel.create_orders(batch(100))  # 1,000 points: the bucket runs dry half way
    assert all(r.ok for r in results) and len(app.state.orders) == 100
    assert app.state.throttled == 0 and channel.client.throttled == 0  # each took its points before sending


def test_a_transient_failure_before_anything_is_created_fails_the_batch(sandbox: Any, channel: Any,
                                                                       monkeypatch: Any) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise TransientError("Shopify timed out")

    monkeypatch.setattr(channel.client, "mutate", down)
    with pytest.raises(TransientError):
        channel.create_orders([marketplace_order("400000501"), marketplace_order("400000502")])


# -- pacing: the cost bucket, not a request rate ---------------------------------------------------


def test_a_burst_within_the_cost_bucket_is_not_held_back(sandbox: Any, make_channel: Any, vtime: Any) -> None:
    # 150 orderCreates = 1,500 points fit the Standard 2,000-point bucket: no wait at all. The old
    # 10 requests/s politeness limit (burst 20) held the same batch back for ~13 s.
    channel = make_channel(sandbox, {"inventory_behaviour": "BYPASS"})
    started = vtime.now
    results = channel.create_orders(batch(150))
    assert all(r.ok for r in results) and len(sandbox.state.orders) == 150
    assert vtime.now - started < 0.5
    assert sandbox.state.throttled == 0 and channel.client.throttled == 0


def test_sustained_orders_run_at_the_buckets_rate_without_throttling(make_sandbox: Any, make_channel: Any,
                                                                    vtime: Any) -> None:
    app = make_sandbox(bucket_size=600.0, restore_rate=50.0)  # 5 orderCreates/s once the bucket is spent
    channel = make_channel(app, {"inventory_behaviour": "BYPASS"})
    started = vtime.now
    results = channel.create_orders(batch(80))
    elapsed = vtime.now - started
    assert all(r.ok for r in results) and len(app.state.orders) == 80
    assert app.state.throttled == 0 and channel.client.throttled == 0  # paced before sending, never bounced
    # ~600 points were in the bucket; the other ~200 of the 80 x 10 came at 50 points/s.
    assert 3.0 < elapsed < 6.0, elapsed
    assert graphql_calls(app) == 80 + 2 + 1  # two name searches (50 names each), one SKU search


# -- the sandbox is faithful where the batch relies on it ------------------------------------------


def test_sandbox_order_create_costs_10_and_throttles_on_an_empty_bucket(sandbox: Any, admin: Any) -> None:
    variant_id = next(v.id for v in sandbox.state.variants.values() if v.sku == SKU)
    create = "mutation($o: OrderCreateOrderInput!) { orderCreate(order: $o) { order { id name } userErrors { message } } }"
    answer = admin(create, {"o": {"name": "A-1", "lineItems": [{"variantId": variant_id, "quantity": 1}]}})
    cost = answer["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 10 and cost["actualQueryCost"] == 10
    assert cost["throttleStatus"]["maximumAvailable"] == 2000 and cost["throttleStatus"]["restoreRate"] == 100
    sandbox.state.available = 9.0  # less than one orderCreate
    throttled = admin(create, {"o": {"name": "A-2", "lineItems": [{"variantId": variant_id, "quantity": 1}]}})
    assert "data" not in throttled and throttled["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert throttled["extensions"]["cost"]["actualQueryCost"] is None
    assert [o.name for o in sandbox.state.orders.values()] == ["A-1"]


def test_sandbox_name_search_with_or(sandbox: Any, admin: Any) -> None:
    variant_id = next(v.id for v in sandbox.state.variants.values() if v.sku == SKU)
    for name in ("B-1", "B-2", "B-3", 'B "4"'):
        admin("mutation($o: OrderCreateOrderInput!) { orderCreate(order: $o) { order { id } userErrors { message } } }",
              {"o": {"name": name, "lineItems": [{"variantId": variant_id, "quantity": 1}]}})
    search = "query($q: String!) { orders(first: 10, query: $q) { nodes { name } } }"
    found = admin(search, {"q": 'name:"B-1" OR name:"B-3" OR name:"B \\"4\\"" OR name:"nope"'})
    assert sorted(n["name"] for n in found["data"]["orders"]["nodes"]) == ["B \"4\"", "B-1", "B-3"]
