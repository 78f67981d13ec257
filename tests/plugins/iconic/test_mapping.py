"""Pure mapping between The Iconic's v2 records and canonical records."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from hub.errors import ContractError, RejectedItem
from hub.records import Order, dump, load
from plugins.iconic import mapping
from plugins.iconic.sandbox import IconicState
from tests.plugins.iconic.conftest import dress


def item(item_id: int, sku: str, status: str = "pending", price: float = 50.0) -> dict[str, Any]:
    return {"id": item_id, "orderId": 1, "status": status, "paidPrice": price,
            "product": {"sellerSku": sku, "name": f"Product {sku}"}}


def order(**changes: Any) -> dict[str, Any]:
    address = {"firstName": "Sam", "lastName": "Lee", "phone": ["0400"], "address": ["1 A St", "Unit 2"],
               "email": "sam@example.com", "city": "Sydney", "region": "NSW", "postCode": "2000", "country": "Australia"}
    return {"id": 1, "number": "300001", "createdAt": "2025-06-01 10:00:00", "currency": "AUD", "grandTotal": 100,
            "customer": {"firstName": "Sam", "lastName": "Lee"}, "address": {"shipping": address, "billing": address},
            **changes}


def test_units_are_grouped_by_sku_and_status_keeping_every_item_id():
    lines = mapping.group_lines([item(1, "A"), item(2, "B"), item(3, "A"), item(4, "A", "canceled")], "o")
    assert [(l["sku"], l["status"], l["quantity"], l["channel_line_ids"]) for l in lines] == [
        ("A", "open", 2, ["1", "3"]), ("B", "open", 1, ["2"]), ("A", "cancelled", 1, ["4"])]


@pytest.mark.parametrize("statuses,expected", [
    (["open", "cancelled"], "new"), (["cancelled", "cancelled"], "cancelled"), (["shipped", "cancelled"], "shipped"),
    (["shipped", "returned"], "returned"), (["failed"], "returned"), (["shipped"], "shipped"),
])
def test_order_status_follows_its_lines(statuses, expected):
    assert mapping.order_status(statuses) == expected


def test_an_order_maps_to_a_valid_canonical_order():
    result = mapping.order_from_remote(order(), [item(1, "A"), item(2, "A")])
    assert result.lines[0].quantity == 2 and result.lines[0].unit_price == Decimal("50.00")
    assert result.shipping_address.line2 == "Unit 2" and result.shipping_address.country == "AU"
    assert result.placed_at.utcoffset().total_seconds() == 10 * 3600  # naive = Sydney time (AEST in June)
    assert result.customer_email == "sam@example.com" and result.total == Decimal("100.00")


def test_a_mapped_order_is_exactly_what_the_schema_would_load():
    # The mapping builds the record typed and checks it in place; the schema's round trip is the reference.
    result = mapping.order_from_remote(order(updatedAt="2025-06-02T01:00:00Z"),
                                       [item(1, "A"), item(2, "B", "canceled", 12.5)])
    assert result == load(Order, dump(result))
    assert result.changed_at == datetime(2025, 6, 2, 1, tzinfo=timezone.utc)


def test_an_order_with_a_blank_required_field_is_refused_naming_it():
    blank_street = order(address={"shipping": {**order()["address"]["shipping"], "address": []}})
    with pytest.raises(ContractError, match="shipping_address.line1") as refused:
        mapping.order_from_remote(blank_street, [item(1, "A")])
    assert "shipping_address.line1" in refused.value.detail


@pytest.mark.parametrize("changes,items,text", [
    ({"number": None}, [item(1, "A")], "id and number"),
    ({}, [], "without order items"),
    ({}, [{"id": 1, "status": "pending", "product": {}}], "product.sellerSku"),
    ({}, [item(1, "A", "teleported")], "unknown status"),
    ({"createdAt": "yesterday"}, [item(1, "A")], "createdAt"),
    ({"address": {"shipping": {"country": "Atlantis"}}}, [item(1, "A")], "country"),
    ({"address": {"shipping": {"country": "AU", "firstName": "X"}}}, [item(1, "A")], "shipping_address"),
])
def test_malformed_orders_are_contract_errors_naming_the_field(changes, items, text):
    with pytest.raises(ContractError, match=text):
        mapping.order_from_remote(order(**changes), items)


def test_categories_resolve_by_path_leaf_or_id():
    tree = IconicState().category_tree()
    assert mapping.find_category(tree, "Women > Dresses") == 11
    assert mapping.find_category(tree, "dresses") == 11
    assert mapping.find_category(tree, "22") == 22
    assert mapping.find_category(tree, "Women") is None  # not a leaf
    assert mapping.find_category(tree, "Men > Dresses") is None


def test_attributes_come_from_listing_fields_and_attributes():
    attributes = IconicState().category_attributes(11)
    listing = dress("A", attributes={"Occasion": "Party"})
    assert mapping.attribute_values(listing, attributes, "Dresses") == {"1": 100, "2": "Black", "4": "Party"}


def test_a_missing_mandatory_attribute_names_the_listing_field():
    with pytest.raises(RejectedItem) as raised:
        mapping.attribute_values(dress("A", gender=""), IconicState().category_attributes(11), "Dresses")
    assert raised.value.field == "gender" and raised.value.key == "A"


def test_price_rows_always_carry_every_field():
    current = {"salePrice": 80.0, "saleStartDate": "2025-01-01", "saleEndDate": "2025-02-01"}
    kept = mapping.price_row(dress("A", price="100"), 7, current, "AU", keep_marketplace_sale=True)
    assert kept == {"productId": 7, "country": "AU", "price": 100.0, "salePrice": 80.0,
                    "saleStartDate": "2025-01-01", "saleEndDate": "2025-02-01"}
    dropped = mapping.price_row(dress("A", price="100"), 7, current, "AU", keep_marketplace_sale=False)
    assert set(dropped) == set(kept) and dropped["salePrice"] is None and dropped["saleEndDate"] is None
    above = mapping.price_row(dress("A", price="70"), 7, current, "AU", keep_marketplace_sale=True)
    assert above["salePrice"] is None  # a sale above the new price cannot be kept


@pytest.mark.parametrize("free,reserved,written", [(3, 2, 5), (0, 2, 2), (5, 0, 5), (-1, 0, 0)])
def test_reserved_units_are_added_back(free, reserved, written):
    assert mapping.quantity_to_write(free, reserved) == written


def test_provider_and_reason_names_match_loosely_but_come_back_spelled_right():
    providers = [{"name": "CouriersPlease"}, {"name": "Australia Post"}]
    assert mapping.provider_name("couriers please", providers) == "CouriersPlease"
    assert mapping.provider_name("Fastway", providers) is None
    reasons = [{"type": "canceled", "name": "Out of stock"}, {"type": "failed", "name": "Out of stock"}]
    assert mapping.reason_name("OUT OF STOCK", reasons, "canceled") == "Out of stock"
    assert mapping.reason_name("Out of stock", reasons[1:], "canceled") is None
