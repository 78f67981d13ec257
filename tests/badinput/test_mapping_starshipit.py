"""Every public mapping of the Starshipit plugin under malformed remote payloads (see ``mutations``),
and outbound orders with hostile-but-valid content (huge and unicode text, SKUs with spaces)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hub.errors import ValidationError
from hub.records import Address, Order, OrderLine, load
from plugins.starshipit import mapping
from plugins.starshipit.rules import CourierChoice

from .mutations import FUZZ, HUGE, SKU_SPACES, UNICODE, Mutated, check_mapping, mutated, wrong_values

SHIPPED: dict[str, Any] = {
    "order_id": 123, "order_number": "1001", "carrier": "Fastways", "carrier_name": "Aramex", "carrier_service_code": "",
    "status": "Printed", "shipped_date": "2026-11-20T01:00:00Z",
    "items": [{"sku": "A-1", "quantity": 2}, {"description": "Gift note", "quantity": 1}, {"sku": "B 2", "quantity": 1.0}],
    "packages": [{"package_id": 1}, {"tracking_number": "AX9", "tracking_url": "https://t/AX9", "carrier_service_code": "PARCEL",
                                     "delivery_status": "InTransit", "label_created_date": "2026-11-20T01:02:03.1234567"}],
}
TRACK = {"tracking_number": "AX1", "tracking_url": "https://t/AX1", "tracking_status": "Delivered", "carrier_name": "Aramex",
         "carrier_service": "P", "shipment_date": "2026-11-20T01:00:00Z"}
WEBHOOK = {"order_number": "1001", "tracking_number": "AX9", "tracking_status": "Dispatched", "carrier_name": "Aramex",
           "last_updated_date": "2026-11-20T01:00:00Z"}
WEIGHTS = mapping.WeightPolicy(0.5, {"A-1": 1.25})

text = st.one_of(st.sampled_from(UNICODE + SKU_SPACES + (HUGE[:5000], "", "O'Brien & <Sons>")), st.text(max_size=60))


@FUZZ
@given(mutated(SHIPPED))
def test_shipment_from_order_and_to_fulfilment(case: Mutated) -> None:
    def call(order: Any) -> Any:
        shipment = mapping.shipment_from_order(order)
        return mapping.to_fulfilment(shipment) if shipment.tracking_number else shipment

    check_mapping(call, case)


@FUZZ
@given(mutated(TRACK))
def test_merge_tracking(case: Mutated) -> None:
    bare = mapping.shipment_from_order({**SHIPPED, "packages": []})
    check_mapping(lambda results: mapping.to_fulfilment(mapping.merge_tracking(bare, results)), case)


@FUZZ
@given(mutated(WEBHOOK))
def test_tracking_update(case: Mutated) -> None:
    check_mapping(mapping.tracking_update, case)


@FUZZ
@given(st.one_of(wrong_values, text))
def test_carrier_names_and_order_ids_never_raise_anything_unclear(value: Any) -> None:
    code = check_mapping(mapping.to_canonical_carrier, Mutated(value))
    assert code is None or code in {"auspost", "startrack", "aramex", "couriersplease", "sendle", "dhl", "tnt", "toll",
                                    "fedex", "ups", "nzpost", "allied", "hunter", "directfreight"}
    check_mapping(mapping.order_id_of, Mutated({"order_id": value}))
    check_mapping(mapping.order_id_of, Mutated(value))


@FUZZ
@given(name=text, line1=text, city=text, postcode=text, region=text, sku=text, title=text, number=text,
       quantity=st.integers(min_value=1, max_value=10**6), method=text,
       courier=st.none() | st.builds(CourierChoice, carrier=st.sampled_from(["AusPost", "StarTrack"]),
                                     service_code=st.sampled_from(["", "EXP"]), shipping_method=st.sampled_from(["", "Express"])))
def test_order_body_takes_any_valid_canonical_order(name: str, line1: str, city: str, postcode: str, region: str,
                                                    sku: str, title: str, number: str, quantity: int, method: str,
                                                    courier: CourierChoice | None) -> None:
    """What the hub's schemas accept, Starshipit gets or refuses with a RejectedItem naming the field."""
    data = {"channel_order_id": "ICO-1", "order_number": number, "shipping_method": method, "currency": "AUD",
            "lines": [{"sku": sku, "quantity": quantity, "title": title, "unit_price": "9.99"}],
            "shipping_address": {"name": name, "line1": line1, "city": city, "postcode": postcode, "country": "AU",
                                 "region": region}}
    try:
        order = load(Order, data)
    except ValidationError:
        return  # the hub refuses it before any channel sees it
    body = check_mapping(lambda _: mapping.order_body(order, courier, WEIGHTS), Mutated(None))
    facts = check_mapping(lambda _: mapping.shipment_facts(order, WEIGHTS), Mutated(None))
    if body is not None:
        assert body["order_number"] == number and body["items"][0]["sku"] == sku and len(body["order_number"]) <= 50
        assert facts.weight_kg >= 0


def test_an_order_with_many_lines_and_a_bad_sku_is_refused_as_a_whole_naming_the_line() -> None:
    order = Order(channel_order_id="ICO-1", order_number="1001", placed_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                  lines=[OrderLine(sku="A-1", quantity=1, unit_price=Decimal("1.00")) for _ in range(3)],
                  shipping_address=Address(name="Ada", line1="1 George St", city="Sydney", postcode="2000", country="AU"))
    bad = replace(order, lines=[*order.lines, OrderLine(sku="X" * 60, quantity=1)])
    refused = check_mapping(lambda _: mapping.order_body(bad, None, WEIGHTS), Mutated(None))
    assert refused is None  # RejectedItem: a shipment is all or nothing, never a part of an order
    assert len(mapping.order_body(order, None, WEIGHTS)["items"]) == 3


def test_free_text_items_are_skipped_and_the_skus_still_ship() -> None:
    fulfilment = mapping.to_fulfilment(mapping.shipment_from_order(SHIPPED))
    assert [(line.sku, line.quantity) for line in fulfilment.lines] == [("A-1", 2), ("B 2", 1)]
    assert fulfilment.carrier == "aramex" and fulfilment.tracking_number == "AX9"
    assert mapping.tracking_update(WEBHOOK).carrier == "aramex"
