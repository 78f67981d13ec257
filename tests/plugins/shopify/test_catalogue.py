"""list_products: bulk for full imports, cursor paging for increments, SKU problems reported."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from typing import Any

from plugins.shopify.client import GRAPHQL_PATH

from .conftest import graphql_calls

LONG_AGO = datetime(2025, 1, 1, tzinfo=timezone.utc)


def skus(products: list[Any]) -> list[str]:
    return [variant.sku for product in products for variant in product.variants]


def test_paging_reads_every_product_to_the_end_in_cost_sized_pages(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(products=30)
    channel = make_channel(app)
    products = list(channel.list_products(LONG_AGO))  # incremental: paged
    assert len(products) == 30 and len(set(skus(products))) == 90
    # 2 locations -> 11 points per variant, 10 variants per product -> 7 products per page, plus the locations query
    assert graphql_calls(app) == 1 + math.ceil(30 / 7)
    stock = products[0].variants[0].stock
    assert {level.location for level in stock} == {"Sydney Warehouse", "Melbourne Store"}
    assert all(level.on_hand == level.available for level in stock)  # nothing committed yet


def test_a_product_with_more_variants_than_a_page_pages_its_own_variants(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(products=2)
    app.state.add_product(title="Big Tee", handle="big-tee", vendor="Acme", product_type="Tees", tags=[],
                          variants=[(f"TEE-{n:02d}", str(n), "Black") for n in range(25)])
    products = list(make_channel(app).list_products(LONG_AGO))
    big = next(p for p in products if p.parent_sku == "big-tee")
    assert [v.sku for v in big.variants] == [f"TEE-{n:02d}" for n in range(25)]


def test_incremental_import_yields_only_products_updated_since(sandbox: Any, channel: Any, admin: Any, vtime: Any) -> None:
    since = datetime.fromtimestamp(vtime.now, tz=timezone.utc)
    vtime.now += 60
    admin("/_control/products/touch", {"sku": "STYLE-0003-NAV-M", "title": "Linen Shirt 3 Navy (new)"})
    products = list(channel.list_products(since))
    assert [p.title for p in products] == ["Linen Shirt 3 Navy (new)"]


def test_a_full_import_of_5000_variants_runs_one_bulk_operation(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(products=1000, sizes=("XS", "S", "M", "L", "XL"))
    channel = make_channel(app)
    products = list(channel.list_products(None))
    found = skus(products)
    assert len(found) == 5000 and len(set(found)) == 5000 and len(products) == 1000
    # one bulkOperationRunQuery, polls until COMPLETED, one file download: no paging at all
    assert graphql_calls(app) == 1 + app.state.settings.bulk_polls_to_complete
    assert sum(n for (method, path), n in app.calls.items() if path.startswith("/_bulk/")) == 1
    variant = products[0].variants[0]
    assert variant.stock and variant.attributes["inventory_item_id"].startswith("gid://shopify/InventoryItem/")


def test_bulk_and_paged_imports_agree(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(products=9)
    bulk = list(make_channel(app, {"catalogue_mode": "bulk"}).list_products(None))
    paged = list(make_channel(app, {"catalogue_mode": "paged"}).list_products(None))
    assert sorted(skus(bulk)) == sorted(skus(paged))
    by_sku = {v.sku: v for p in paged for v in p.variants}
    for variant in (v for p in bulk for v in p.variants):
        assert variant.stock == by_sku[variant.sku].stock
        assert variant.price_retail == by_sku[variant.sku].price_retail


def test_blank_skus_are_skipped_and_duplicates_reported(make_sandbox: Any, make_channel: Any, caplog: Any) -> None:
    app = make_sandbox(products=1)
    app.state.add_product(title="Odd Socks", handle="odd-socks", vendor="Acme", product_type="Socks", tags=[],
                          variants=[(None, "S", "Red"), ("  ", "M", "Red"), ("STYLE-0001-BLA-S", "L", "Red")])
    with caplog.at_level(logging.WARNING, logger="channelhub.test.shopify"):
        products = list(make_channel(app).list_products(None))
    found = skus(products)
    assert found.count("STYLE-0001-BLA-S") == 2  # yielded as-is: the catalogue flow decides
    assert "" not in found and "  " not in found
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert messages.count("has no SKU") == 2
    assert "duplicate SKU STYLE-0001-BLA-S" in messages


def test_prices_options_and_status_are_mapped(sandbox: Any, channel: Any) -> None:
    products = list(channel.list_products(None))
    variant = next(v for p in products for v in p.variants if v.attributes["compare_at_price"])
    assert variant.price_sale is not None and variant.price_retail > variant.price_sale
    assert variant.size in ("S", "M", "L") and variant.colour
    assert all(p.active and p.brand == "Acme Apparel" and p.category == "Shirts" for p in products)
    assert GRAPHQL_PATH.endswith("/2026-07/graphql.json")


def test_gender_and_season_come_from_tags_and_a_spaced_sku_is_left_for_the_flow_to_reject(
        make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(products=0)
    app.state.add_product(title="Linen Dress", handle="linen-dress", vendor="Acme", product_type="Dresses",
                          tags=["Gender:Women", "season:SS26", "sale"],
                          variants=[("DRESS-S", "S", "Sand"), ("DRESS-M ", "M", "Sand")])
    [product] = list(make_channel(app).list_products(None))
    assert (product.gender, product.season) == ("Women", "SS26")
    assert [v.sku for v in product.variants] == ["DRESS-S", "DRESS-M "]  # the catalogue flow names the bad one


# -- the bulk result, streamed ------------------------------------------------------------------------


def _late_variant(app: Any) -> tuple[Any, str]:
    """Give the shop's first product a variant created after every other one (a size added later), so
    in the bulk file it comes after the other products' variants instead of beside its siblings."""
    state = app.state
    first = next(iter(state.products.values()))
    donor = state.add_product(title="Donor", handle="donor", vendor="Acme", product_type="Tees", tags=[],
                              variants=[("LATE-XL", "XL", "Black")])
    [variant_id] = donor.variant_ids
    del state.products[donor.id]
    state.variants[variant_id].product_id = first.id
    first.variant_ids.append(variant_id)
    return first, "LATE-XL"


def test_bulk_products_are_yielded_while_the_file_streams(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(products=30)
    channel = make_channel(app, {"catalogue_mode": "bulk", "bulk_group_window": 2})
    products = channel.list_products(None)
    first = next(iter(products))  # out before the rest of the file is grouped
    assert len(first.variants) == 3 and all(v.stock for v in first.variants)
    rest = list(products)
    assert len(rest) == 29 and len(set(skus([first, *rest]))) == 90


def test_a_variant_listed_apart_from_its_siblings_is_grouped_within_the_window(make_sandbox: Any,
                                                                                 make_channel: Any) -> None:
    app = make_sandbox(products=5)
    product, late_sku = _late_variant(app)
    products = list(make_channel(app, {"catalogue_mode": "bulk"}).list_products(None))
    assert len(products) == 5
    grouped = next(p for p in products if late_sku in [v.sku for v in p.variants])
    assert grouped.parent_sku == product.handle and len(grouped.variants) == 4
    assert next(v for v in grouped.variants if v.sku == late_sku).stock


def test_a_variant_later_than_the_window_fails_the_import_instead_of_yielding_a_short_product(
        make_sandbox: Any, make_channel: Any) -> None:
    import pytest

    from hub.errors import ContractError

    app = make_sandbox(products=5)
    _late_variant(app)
    with pytest.raises(ContractError, match="bulk_group_window"):
        list(make_channel(app, {"catalogue_mode": "bulk", "bulk_group_window": 2}).list_products(None))
