"""Pure mapping: carriers to canonical codes, shipped records to Fulfilments, bad records named."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from hub.errors import ContractError, RejectedItem
from plugins.starshipit.mapping import (
    WeightPolicy,
    merge_tracking,
    order_body,
    shipment_from_order,
    to_canonical_carrier,
    to_fulfilment,
    tracking_update,
)
from tests.plugins.starshipit.helpers import make_order


@pytest.mark.parametrize("name,code", [
    ("AusPost", "auspost"), ("Australia Post", "auspost"), ("AusPostMail", "auspost"), ("MyPostBusiness", "auspost"),
    ("StarTrack", "startrack"), ("StarTrackCourier", "startrack"), ("Fastways", "aramex"), ("Aramex", "aramex"),
    ("CouriersPlease", "couriersplease"), ("Couriers Please", "couriersplease"), ("Sendle", "sendle"),
    ("DHL", "dhl"), ("DHL Express", "dhl"), ("TNT", "tnt"), ("TollPriority", "toll"), ("Team Global Express", "toll"),
    ("TollIPEC", "toll"), ("NZPost", "nzpost"), ("CourierPost", "nzpost"), ("Pace", "nzpost"),
    ("HunterExpress", "hunter"), ("AlliedExpress", "allied"), ("DirectFreight", "directfreight"),
    ("DHLGlobalMail", None), ("DHL eCommerce", None), ("PBT", None), ("", None),
])
def test_starshipit_carriers_map_to_canonical_codes(name: str, code: str | None) -> None:
    assert to_canonical_carrier(name) == code


SHIPPED: dict[str, Any] = {
    "order_id": 123, "order_number": "1001", "carrier": "Fastways", "carrier_name": "Aramex",
    "carrier_service_code": "", "status": "Printed",
    "items": [{"sku": "A", "quantity": 2}, {"description": "Gift note", "quantity": 1}],
    "packages": [{"package_id": 1}, {"tracking_number": "AX9", "tracking_url": "https://t/AX9",
                                     "carrier_service_code": "PARCEL", "delivery_status": "InTransit",
                                     "label_created_date": "2026-11-20T01:02:03.1234567"}],
}


def test_a_shipped_order_becomes_a_fulfilment() -> None:
    fulfilment = to_fulfilment(shipment_from_order(SHIPPED))
    assert (fulfilment.order_number, fulfilment.carrier, fulfilment.tracking_number, fulfilment.service) == (
        "1001", "aramex", "AX9", "PARCEL")
    assert fulfilment.shipped_at == datetime(2026, 11, 20, 1, 2, 3, 123456, tzinfo=timezone.utc)
    assert [(line.sku, line.quantity) for line in fulfilment.lines] == [("A", 2)]  # free-text items skipped
    assert fulfilment.external_id == "123:AX9" and fulfilment.tracking_url == "https://t/AX9"


def test_tracking_fills_what_the_list_lacks() -> None:
    bare = shipment_from_order({**SHIPPED, "packages": []})
    merged = merge_tracking(bare, {"tracking_number": "AX1", "tracking_url": "u", "tracking_status": "Delivered",
                                   "carrier_service": "P", "shipment_date": "2026-11-20T01:00:00Z"})
    assert (merged.tracking_number, merged.status, merged.service) == ("AX1", "Delivered", "P")
    assert merged.shipped_at == datetime(2026, 11, 20, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("change,field", [
    ({"order_id": None}, "order_id"), ({"order_number": ""}, "order_number"), ({"packages": {}}, "packages"),
    ({"items": [{"sku": "A", "quantity": "two"}]}, "items.0.quantity"), ({"carrier": ["x"]}, "carrier"),
])
def test_malformed_shipped_records_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ContractError) as caught:
        shipment_from_order({**SHIPPED, **change})
    assert field in str(caught.value) or caught.value.detail == {"field": field}


def test_a_fulfilment_needs_a_tracking_number() -> None:
    with pytest.raises(ContractError, match="no tracking number"):
        to_fulfilment(shipment_from_order({**SHIPPED, "packages": []}))


def test_order_body_limits_are_checked_naming_the_field() -> None:
    order = make_order("1002")
    order.shipping_address.postcode = "12345678901"
    with pytest.raises(RejectedItem) as caught:
        order_body(order, None, WeightPolicy(0.5, {}))
    assert caught.value.field == "shipping_address.postcode" and "at most 10" in str(caught.value)
    order = make_order("1003", sku="S" * 51)
    with pytest.raises(RejectedItem) as caught:
        order_body(order, None, WeightPolicy(0.5, {}))
    assert caught.value.field == "lines.0.sku"


def test_an_unknown_country_is_sent_as_its_code_and_no_courier_leaves_carrier_out() -> None:
    body = order_body(make_order("1004", country="BR"), None, WeightPolicy(0.5, {}))
    assert body["destination"]["country"] == "BR" and "carrier" not in body
    assert body["order_date"] == "2026-05-28T19:26:40Z" and body["shipping_method"] == "standard"


def test_webhook_payloads_are_read() -> None:
    update = tracking_update({"order_number": 5567476, "carrier_name": "Australia Post", "tracking_number": "QQ1",
                              "tracking_status": "Dispatched", "last_updated_date": "2018-08-09T02:56:07.34Z"})
    assert (update.order_number, update.carrier, update.tracking_status) == ("5567476", "auspost", "Dispatched")
