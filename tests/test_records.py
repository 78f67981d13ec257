"""Canonical records: valid data loads into dataclasses, bad data names the field."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from hub import records
from hub.errors import ValidationError
from hub.records import (
    Address, Fulfilment, FulfilmentLine, ItemResult, Listing, Order, OrderLine, Product, Return,
    StockLevel, Variant, dump, load, validate_record,
)

ADDRESS = {"name": "Ada Lovelace", "line1": "1 George St", "city": "Sydney", "postcode": "2000", "country": "AU"}
ORDER = {
    "channel_order_id": "1001",
    "order_number": "ICO-1001",
    "lines": [{"sku": "TEE-BLK-M", "quantity": 2, "unit_price": "49.95", "channel_line_ids": ["a", "b"]}],
    "shipping_address": ADDRESS,
    "placed_at": "2026-11-20T10:00:00+11:00",
}
PRODUCT = {
    "parent_sku": "TEE",
    "title": "Organic tee",
    "brand": "Acme",
    "variants": [
        {"sku": "TEE-BLK-M", "barcode": "9300000000011", "size": "M", "price_retail": "49.95",
         "stock": [{"location": "Sydney", "available": 5, "on_hand": 6}]},
    ],
}


def test_order_loads_into_dataclasses():
    order = load(Order, ORDER)
    assert isinstance(order, Order)
    assert isinstance(order.lines[0], OrderLine)
    assert isinstance(order.shipping_address, Address)
    assert order.lines[0].unit_price == Decimal("49.95")
    assert order.placed_at == datetime(2026, 11, 19, 23, 0, tzinfo=timezone.utc)
    assert order.status == "new" and order.currency == "AUD"


def test_product_with_variants_and_stock():
    product = load(Product, PRODUCT)
    variant = product.variants[0]
    assert isinstance(variant, Variant) and isinstance(variant.stock[0], StockLevel)
    assert variant.stock[0].available == 5 and variant.stock[0].available_from_stock is None


@pytest.mark.parametrize("record_class,data", [
    (Order, ORDER),
    (Product, PRODUCT),
    (Listing, {"sku": "A-1", "parent_sku": "A", "title": "A", "price": "10.00", "quantity": 3}),
    (Fulfilment, {"order_number": "ICO-1", "carrier": "AusPost", "tracking_number": "AP123",
                  "lines": [{"sku": "A-1", "quantity": 1}], "shipped_at": "2026-11-21T00:00:00+00:00"}),
    (Return, {"order_number": "ICO-1", "external_id": "R1", "lines": [{"sku": "A-1", "quantity": 1}]}),
    (ItemResult, {"key": "A-1", "ok": False, "message": "no barcode", "field": "barcode"}),
])
def test_round_trip(record_class, data):
    record = load(record_class, data)
    assert load(record_class, dump(record)) == record
    validate_record(record)


@pytest.mark.parametrize("record_class,data,field", [
    (Order, {**ORDER, "lines": [{"sku": "X", "quantity": 0}]}, "lines.0.quantity"),
    (Order, {**ORDER, "lines": []}, "lines"),
    (Order, {k: v for k, v in ORDER.items() if k != "shipping_address"}, "shipping_address"),
    (Order, {**ORDER, "shipping_address": {**ADDRESS, "country": "Australia"}}, "shipping_address.country"),
    (Order, {**ORDER, "placed_at": "2026-11-20T10:00:00"}, "placed_at"),  # naive datetimes are ambiguous
    (Order, {**ORDER, "currency": "aud"}, "currency"),
    (Order, {**ORDER, "status": "lost"}, "status"),
    (Order, {**ORDER, "lines": [{"sku": "X", "quantity": "2"}]}, "lines.0.quantity"),  # numbers as strings
    (Variant, {"sku": " TEE-BLK-M"}, "sku"),
    (Variant, {"sku": "TEE-BLK-M "}, "sku"),
    (Variant, {"sku": ""}, "sku"),
    (Variant, {"sku": "A" * 101}, "sku"),
    (Variant, {"sku": "A", "price_retail": "-1"}, "price_retail"),
    (Variant, {"sku": "A", "price_retail": "NaN"}, "price_retail"),
    (Variant, {"sku": "A", "colour": "red", "color": "red"}, "color"),  # unknown fields are refused
    (Listing, {"sku": "A", "parent_sku": "A", "title": "A", "price": "1", "quantity": -1}, "quantity"),
    (StockLevel, {"location": "", "available": 1}, "location"),
    (Product, {**PRODUCT, "variants": [{"sku": "ok"}, {"sku": "bad\tsku"}]}, "variants.1.sku"),
])
def test_bad_data_names_the_field(record_class, data, field):
    with pytest.raises(ValidationError) as caught:
        load(record_class, data)
    assert field in caught.value.messages
    assert caught.value.field is not None
    assert field in str(caught.value)


def test_sku_with_inner_space_is_kept_verbatim():
    # Inner spaces are legal on some channels; matching flags them as near misses instead.
    assert load(Variant, {"sku": "TEE BLK"}).sku == "TEE BLK"


def test_item_result_constructors():
    assert ItemResult.success("A", external_id="9").ok
    rejected = ItemResult.rejected("A", "missing barcode", field="barcode")
    assert not rejected.ok and rejected.field == "barcode"


def test_every_record_has_a_schema():
    for record_class in (StockLevel, Variant, Product, Listing, Address, OrderLine, Order,
                         FulfilmentLine, Fulfilment, Return, ItemResult):
        assert record_class in records.SCHEMAS


def test_an_order_built_typed_is_checked_in_place_without_the_schema_round_trip(monkeypatch):
    order = load(Order, ORDER)

    def no_round_trip(*args, **kwargs):
        raise AssertionError("a valid typed order should not need the schema round trip")

    monkeypatch.setattr(records, "dump", no_round_trip)
    validate_record(order)  # aware datetimes, decimals, nested lines and addresses: all checked in place


def test_a_naive_datetime_in_a_typed_order_takes_the_round_trip_and_is_refused():
    naive = load(Order, ORDER)
    naive.placed_at = datetime(2026, 11, 20, 10, 0)
    with pytest.raises(ValidationError) as refused:
        validate_record(naive)
    assert "placed_at" in refused.value.messages
