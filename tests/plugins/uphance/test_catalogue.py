"""list_products: Uphance products -> canonical Products, as the Iconic app reads them."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from hub.errors import ContractError
from hub.records import validate_record
from plugins.uphance import mapping


def by_sku(products):
    return {variant.sku: (product, variant) for product in products for variant in product.variants}


def test_products_carry_variations_skus_barcodes_and_attributes(channel, sandbox):
    products = list(channel.list_products())
    assert len(products) == 12
    raw = sandbox.state.main.products[1001]
    product, variant = by_sku(products)["HL1001-NAV-S"]
    navy = next(v for v in raw["variations"] if v["color"] == "Navy")
    sku = navy["skus"][1]
    iconic_prices = next(p for p in navy["prices"] if p["name"] == "The Iconic")
    assert (product.parent_sku, product.title, product.brand, product.category) == (
        "HL1001", raw["name"], "Kestrel", "Tops")
    assert product.gender == "Women" and product.season == "SS22"  # season_id sent as an array here
    assert by_sku(products)["HL1000-BLA-XS"][0].season == "AW22"  # and as a scalar there
    assert (variant.barcode, variant.size, variant.colour, variant.external_id) == (sku["ean"], "S", "Navy", str(sku["id"]))
    # Prices are the chosen channel's price list ("The Iconic"), not the first one listed.
    assert variant.price_msrp == Decimal(iconic_prices["msrp_money"])
    assert variant.price_wholesale == Decimal(iconic_prices["wsp_money"])
    assert variant.price_msrp != Decimal(navy["prices"][0]["msrp_money"])
    for item in products:
        validate_record(item)


def test_stock_follows_the_inventory_setting(make_channel, sandbox):
    sku = sandbox.state.main.sku_by_number("HL1002-SAG-M")
    available = by_sku(make_channel().list_products())["HL1002-SAG-M"][1].stock[0]
    from_stock = by_sku(make_channel(inventory="available_from_stock").list_products())["HL1002-SAG-M"][1].stock[0]
    assert (available.location, available.available, available.available_from_stock, available.on_hand) == (
        "Sydney DC", sku["available_to_sell"], sku["available_to_sell_from_stock"], sku["in_stock"])
    assert from_stock.available == sku["available_to_sell_from_stock"]


def test_an_empty_ean_is_reported_and_the_barcode_left_empty(channel, caplog):
    caplog.set_level("WARNING")
    variant = by_sku(channel.list_products())["HL1003-SAG-XS"][1]
    assert variant.barcode == ""
    assert "SKU HL1003-SAG-XS has no EAN in Uphance" in caplog.text


def test_brand_and_season_filters(make_channel):
    only_kestrel = list(make_channel(brands=["kestrel"]).list_products())
    assert only_kestrel and {p.brand for p in only_kestrel} == {"Kestrel"}
    aw22 = list(make_channel(seasons=["AW22"]).list_products())
    assert aw22 and {p.season for p in aw22} == {"AW22"}
    both = list(make_channel(brands=["Harbour Lane"], seasons=["AW22", "SS23"]).list_products())
    assert both and all(p.brand == "Harbour Lane" and p.season in ("AW22", "SS23") for p in both)


def test_since_yields_only_products_changed_since(channel, sandbox, clock):
    changed_at = datetime.fromtimestamp(clock.now, tz=timezone.utc)
    sandbox.state.main.sku_by_number("HL1004-BLA-M")["available_to_sell"] = 3
    sandbox.state.main.products[1004]["updated_at"] = mapping.uphance_time(changed_at)
    assert [p.parent_sku for p in channel.list_products(changed_at)] == ["HL1004"]


def test_a_product_without_style_code_is_left_out_and_reported(channel, sandbox, caplog):
    sandbox.state.main.products[1005]["product_identifier"] = ""
    assert "HL1005" not in {p.parent_sku for p in channel.list_products()}
    assert "product 1005 has no product_identifier" in caplog.text


def test_a_malformed_product_is_a_contract_error_naming_the_field(channel, sandbox):
    sandbox.state.main.products[1006]["variations"] = "none"
    with pytest.raises(ContractError, match=r"product 1006.variations is missing or not list"):
        list(channel.list_products())


def test_a_full_catalogue_costs_one_call_per_page(make_sandbox, make_channel):
    app = make_sandbox(products=230)
    assert len(list(make_channel(app).list_products())) == 230
    assert app.calls[("GET", "/products")] == 3


def test_connection_lists_what_the_settings_choose_from_and_flags_bad_choices(make_channel):
    seen = make_channel(channel_id=99, warehouse=None).test_connection()
    assert seen["organisation"]["id"] == 9579
    assert {c["name"] for c in seen["channels"]} == {"Wholesale AUD", "The Iconic", "Retail NZD"}
    assert seen["warehouses"] == ["Sydney DC", "Melbourne 3PL"] and seen["seasons"] == ["AW22", "SS22", "SS23"]
    assert seen["problems"] == ["channel_id 99 is not an Uphance channel of this organisation",
                                "warehouse is not set: choose the Uphance warehouse that fulfils"]


def test_settings_are_validated_naming_the_field(make_channel):
    from hub.errors import ValidationError

    with pytest.raises(ValidationError) as raised:
        make_channel(inventory="on_order")
    assert raised.value.field == "inventory"
