"""The channel's flows against the sandbox: orders in with the right courier, tracking out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from hub.errors import TransientError, ValidationError
from hub.records import validate_record
from hub.testing import InFlight
from plugins.starshipit.channel import StarshipitChannel
from tests.plugins.starshipit.helpers import BASE_URL, EPOCH, FakeTime, control, make_order

RULES = {
    "courier_rules": [
        {"name": "NZ", "countries": ["NZ"], "carrier": "DHL", "service_code": "P"},
        {"name": "express", "shipping_types": ["express"], "carrier": "StarTrack", "service_code": "EXP",
         "shipping_method": "StarTrack Express"},
    ],
    "default_courier": {"carrier": "AusPost", "service_code": "7B05"},
    "sku_weights_kg": {"COAT-1": 2.5},
}


def stored(app: Any, number: str) -> dict[str, Any]:
    found = app.state.by_number(number)
    assert found is not None, f"{number} is not in the sandbox"
    return found.order


def test_create_order_sends_the_order_with_the_rules_carrier(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox, settings=RULES)
    result = channel.create_order(make_order("IC-1", shipping_method="express", sku="COAT-1", quantity=2))
    assert result.ok and result.external_id
    assert "StarTrack EXP" in result.message and "rule 2 (express)" in result.message
    order = stored(sandbox, "IC-1")
    assert str(order["order_id"]) == result.external_id
    assert (order["carrier"], order["carrier_service_code"], order["shipping_method"]) == (
        "StarTrack", "EXP", "StarTrack Express")
    assert order["reference"] == "ic-IC-1" and order["currency"] == "AUD"
    assert order["destination"] == {
        "name": "Jo Citizen", "street": "20 George Street", "suburb": "Sydney", "city": "Sydney", "state": "NSW",
        "post_code": "2000", "country": "Australia", "phone": "0400000000", "email": "jo@example.com"}
    item = order["items"][0]
    assert (item["sku"], item["description"], item["quantity"], item["weight"], item["value"]) == (
        "COAT-1", "Linen dress, red, 10", 2, 2.5, 89.95)


def test_a_create_retried_after_a_timeout_makes_one_order(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox, settings=RULES)
    control(sandbox, "timeouts", {"count": 1})
    with pytest.raises(TransientError):  # the POST was applied, but its answer never came
        channel.create_order(make_order("IC-2"))
    assert sandbox.state.count("IC-2") == 1
    retried = channel.create_order(make_order("IC-2"))
    assert retried.ok and retried.external_id == str(stored(sandbox, "IC-2")["order_id"])
    assert sandbox.state.count("IC-2") == 1
    assert channel.client.http.calls_by_path["/api/orders"] == 3  # GET, POST (timed out), GET that found it


def test_an_order_starshipit_refuses_is_rejected_with_its_message(sandbox: Any, make_channel: Any) -> None:
    order = make_order("IC-3")
    order.shipping_address.name = ""
    result = make_channel(sandbox).create_order(order)
    assert not result.ok and "destination.name: is required" in result.message


def test_an_order_number_too_long_is_rejected_before_any_call(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox)
    result = channel.create_order(make_order("N" * 51))
    assert not result.ok and result.field == "order_number" and "at most 50" in result.message
    assert channel.client.calls == 0


def test_a_refused_duplicate_of_an_archived_order_is_explained(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(duplicate_policy="reject")
    channel = make_channel(app)
    assert channel.create_order(make_order("IC-4")).ok
    stored(app, "IC-4")["archived"] = True  # archived orders are hidden but block re-import
    result = channel.create_order(make_order("IC-4"))
    assert not result.ok and "archived" in result.message and result.field == "order_number"


def test_import_of_120_orders_takes_3_calls(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox, settings=RULES)
    orders = [make_order(f"BULK-{n:03}", country="NZ" if n % 2 else "AU") for n in range(120)]
    results = channel.create_orders(orders)
    assert [r.key for r in results] == [o.order_number for o in orders] and all(r.ok for r in results)
    assert len({r.external_id for r in results}) == 120
    assert channel.client.http.calls_by_path["/api/orders/import"] == 3
    # one page each of the unshipped and shipped lists to find orders already there, then the imports
    assert channel.client.calls == 5
    assert stored(sandbox, "BULK-001")["carrier"] == "DHL" and stored(sandbox, "BULK-002")["carrier"] == "AusPost"


def test_importing_again_makes_no_duplicates(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox)
    orders = [make_order(f"AGAIN-{n}") for n in range(60)]
    first = channel.create_orders(orders)
    control(sandbox, "dispatch", {"order_number": "AGAIN-7"})  # shipped ones are found too
    again = channel.create_orders(orders + [make_order("AGAIN-NEW")])
    assert [r.external_id for r in again[:60]] == [r.external_id for r in first]
    assert again[-1].ok and again[-1].external_id not in {r.external_id for r in first}
    assert all(sandbox.state.count(o.order_number) == 1 for o in orders)


def test_the_unshipped_and_shipped_lists_are_read_at_the_same_time(sandbox: Any, make_channel: Any) -> None:
    gauge = InFlight()
    # Each list read is held until both are in flight; read one after the other, the first waits in vain.
    channel = make_channel(gauge.around(sandbox, only="shipped", until=2, timeout=2.0))
    orders = [make_order(f"BOTH-{n}") for n in range(6)]
    channel.create_orders(orders[:3])
    control(sandbox, "dispatch", {"order_number": "BOTH-1"})
    again = channel.create_orders(orders)
    assert gauge.most == 2 and channel.client.http.calls_by_path["/api/orders/shipped"] == 2
    assert all(r.ok for r in again) and all(sandbox.state.count(o.order_number) == 1 for o in orders)
    assert [r.message for r in again[:3]] == ["already in Starshipit"] * 3  # found on either list


def test_import_rejects_bad_orders_and_keeps_the_rest(sandbox: Any, make_channel: Any) -> None:
    orders = [make_order(f"MIX-{n}") for n in range(4)]
    orders[1].shipping_address.name = ""  # Starshipit refuses it
    orders.append(make_order("M" * 60))  # refused before sending
    orders.append(make_order("MIX-0"))  # the same order twice in one call
    results = make_channel(sandbox).create_orders(orders)
    assert [r.ok for r in results] == [True, False, True, True, False, True]
    assert "destination.name" in results[1].message and results[4].field == "order_number"
    assert results[5].external_id == results[0].external_id and sandbox.state.count("MIX-0") == 1


def test_a_few_undated_orders_are_looked_up_one_by_one(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox)
    results = channel.create_orders([make_order("U-1", placed=False), make_order("U-2", placed=False)])
    assert all(r.ok for r in results)
    assert channel.client.http.calls_by_path == {"/api/orders": 2, "/api/orders/import": 1}


def test_cancel_deletes_an_unshipped_order(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox)
    created = channel.create_order(make_order("C-1"))
    result = channel.cancel_order(make_order("C-1"))
    assert result.ok and result.external_id == created.external_id and sandbox.state.count("C-1") == 0
    assert channel.cancel_order(make_order("C-1")).ok  # already gone: nothing to do


def test_cancel_of_a_shipped_order_is_flagged_to_the_admin(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox)
    channel.create_order(make_order("C-2"))
    control(sandbox, "dispatch", {"order_number": "C-2", "carrier": "AusPost", "tracking_number": "33AB"})
    result = channel.cancel_order(make_order("C-2"))
    assert not result.ok and result.field == "status"
    assert "already printed" in result.message and "33AB" in result.message and "Australia Post" in result.message
    assert sandbox.state.count("C-2") == 1


CARRIERS = [("AusPost", "auspost"), ("StarTrack", "startrack"), ("Fastways", "aramex"),
            ("CouriersPlease", "couriersplease"), ("Sendle", "sendle"), ("DHL", "dhl"), ("TNT", "tnt"),
            ("TollPriority", "toll"), ("StarTrackCourier", "startrack"), ("DHLGlobalMail", "DHLGlobalMail")]


@pytest.mark.parametrize("detail", ["full", "summary"])
def test_shipped_orders_reach_the_hub_with_canonical_carriers(make_sandbox: Any, make_channel: Any,
                                                               detail: str) -> None:
    app = make_sandbox(shipped_list_detail=detail)
    channel = make_channel(app)
    for index, (code, _) in enumerate(CARRIERS):
        channel.create_order(make_order(f"SHIP-{index}", quantity=2))
        control(app, "dispatch", {"order_number": f"SHIP-{index}", "carrier": code, "carrier_service_code": "S1",
                                  "tracking_number": f"TRK{index}"})
    channel.create_order(make_order("NOT-SHIPPED"))
    fulfilments = {f.order_number: f for f in channel.pull_fulfilments(None)}
    assert set(fulfilments) == {f"SHIP-{index}" for index in range(len(CARRIERS))}
    for index, (_, canonical) in enumerate(CARRIERS):
        fulfilment = fulfilments[f"SHIP-{index}"]
        validate_record(fulfilment)
        assert (fulfilment.carrier, fulfilment.tracking_number, fulfilment.service) == (canonical, f"TRK{index}", "S1")
        assert fulfilment.tracking_url and fulfilment.shipped_at is not None
        assert [(line.sku, line.quantity) for line in fulfilment.lines] == [("DRESS-RED-10", 2)]
        assert fulfilment.external_id == f"{stored(app, f'SHIP-{index}')['order_id']}:TRK{index}"
    # the summary list carries no tracking, so /api/track fills it in, once per order
    assert channel.client.http.calls_by_path["/api/track"] == (len(CARRIERS) if detail == "summary" else 0)


def test_pull_fulfilments_since_passes_the_cursor(sandbox: Any, make_channel: Any, fake: FakeTime) -> None:
    channel = make_channel(sandbox)
    channel.create_order(make_order("S-1"))
    control(sandbox, "dispatch", {"order_number": "S-1"})
    now = datetime.fromtimestamp(EPOCH + fake.elapsed, timezone.utc)
    assert [f.order_number for f in channel.pull_fulfilments(now - timedelta(minutes=5))] == ["S-1"]
    assert list(channel.pull_fulfilments(now + timedelta(minutes=5))) == []


def test_dispatched_mode_waits_for_the_carrier(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox, settings={"fulfil_when": "dispatched"})
    created = channel.create_order(make_order("D-1"))
    with httpx.Client(transport=httpx.WSGITransport(app=sandbox), base_url=BASE_URL,
                      headers={"StarShipIT-Api-Key": "sandbox-api-key",
                               "Ocp-Apim-Subscription-Key": "sandbox-production-subscription"}) as api:
        assert api.post("/api/orders/shipment", json={"order_id": int(created.external_id)}).json()["success"]
    assert list(channel.pull_fulfilments(None)) == []  # printed, not yet with the carrier
    printed_mode = make_channel(sandbox)
    assert [f.order_number for f in printed_mode.pull_fulfilments(None)] == ["D-1"]
    control(sandbox, "tracking", {"order_number": "D-1", "tracking_status": "InTransit"})
    assert [f.order_number for f in channel.pull_fulfilments(None)] == ["D-1"]


def test_a_cancelled_label_is_not_reported(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox)
    channel.create_order(make_order("X-1"))
    control(sandbox, "dispatch", {"order_number": "X-1"})
    control(sandbox, "tracking", {"order_number": "X-1", "tracking_status": "Cancelled"})
    assert list(channel.pull_fulfilments(None)) == []


def test_pull_fulfilment_of_one_order(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox)
    channel.create_order(make_order("ONE-1"))
    assert channel.pull_fulfilment("ONE-1") is None
    control(sandbox, "dispatch", {"order_number": "ONE-1", "carrier": "Sendle", "tracking_number": "SNDL1"})
    fulfilment = channel.pull_fulfilment("ONE-1")
    assert fulfilment is not None and (fulfilment.carrier, fulfilment.tracking_number) == ("sendle", "SNDL1")


def test_test_connection_reports_tier_and_rules(sandbox: Any, make_channel: Any) -> None:
    seen = make_channel(sandbox, settings={**RULES, "tier": "production"}).test_connection()
    assert seen["tier"] == "production" and seen["requests_per_second"] == 20
    assert seen["courier_rules"] == 2 and seen["default_courier"] == "AusPost"


def test_bad_settings_fail_naming_the_field(sandbox: Any, make_channel: Any) -> None:
    channel = make_channel(sandbox, settings={"courier_rules": [{"countries": ["AU"], "carrier": "Aramex"}]})
    with pytest.raises(ValidationError, match="courier_rules"):
        channel.create_order(make_order("BAD-1"))


def test_the_plugin_registers_its_channel() -> None:
    import plugins.starshipit as plugin

    registered: list[type] = []
    plugin.channelhub_register_channels(registered.append)
    assert registered == [StarshipitChannel]
