"""The listings flow: labelled variants -> canonical listings -> only what changed, in batches."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from hub.bindings import LISTING
from hub.hookspecs import hookimpl
from hub.models import Binding, RunStatus, utcnow
from tests.flows_fixtures_a import flowhub, product, tees, variant  # noqa: F401  (fixture)
from tests.storage_fixtures import box, database, organisation  # noqa: F401  (fixtures)


def _listed(flowhub, products, *, labelled=None, **market_columns):
    """Import ``products`` from a source, label them (all, or the parent SKUs in ``labelled``), add a marketplace."""
    source_id, shop = flowhub.source(products=products)
    flowhub.run(source_id, "catalog")
    flowhub.give_label("Iconic", *(labelled if labelled is not None else [p.parent_sku for p in products]))
    market_id, market = flowhub.marketplace(source_id=source_id, **market_columns)
    return source_id, shop, market_id, market


def _bindings(flowhub, account_id):
    with flowhub.db.session() as session:
        return {b.external_id: b for b in session.scalars(
            select(Binding).where(Binding.account_id == account_id, Binding.kind == LISTING))}


def test_labelled_active_variants_become_listings_with_every_attribute(flowhub):
    _, _, market_id, market = _listed(flowhub, [
        product("TEE", variant("TEE-S", 3), variant("TEE-M", 4)),
        product("CAP", variant("CAP-1")),
        product("OLD", variant("OLD-1"), active=False),
    ], labelled=["TEE", "OLD"])

    report = flowhub.run(market_id, "listings")

    assert report.status is RunStatus.OK, report.error
    assert sorted(market.listings) == ["TEE-M", "TEE-S"]
    sent = market.listings["TEE-S"]
    assert (sent.parent_sku, sent.title, sent.price, sent.sale_price, sent.quantity) == (
        "TEE", "Product TEE", Decimal("49.95"), None, 3)
    assert (sent.category, sent.gender, sent.size, sent.colour, sent.brand) == (
        "Women > Tops > Tees", "female", "M", "Black", "Acme")
    assert sent.barcode == flowhub.variant("TEE-S").barcode and sent.images == ["https://img.example/TEE.jpg"]
    bindings = _bindings(flowhub, market_id)
    assert set(bindings) == {"L-TEE-S", "L-TEE-M"}
    assert all(b.fingerprint and b.last_sent_at and b.last_error is None for b in bindings.values())
    explained = {e.data["sku"]: e.data["explanation"] for e in flowhub.events("stock.pushed")}
    assert explained == {"TEE-S": "3 = 3 available", "TEE-M": "4 = 4 available"}


@pytest.mark.parametrize(("price_field", "price", "sale_price"), [
    ("retail", "49.95", "39.95"),
    ("msrp", "59.95", "39.95"),
    ("wholesale", "20.00", None),  # a "sale" above the price is not a sale: left out
    ("sale", "39.95", None),
])
def test_the_price_follows_the_account_price_field(flowhub, price_field, price, sale_price):
    _, _, market_id, market = _listed(flowhub, [product("TEE", variant("TEE-S", price_sale=Decimal("39.95")))],
                                      price_field=price_field)
    flowhub.run(market_id, "listings")
    sent = market.listings["TEE-S"]
    assert sent.price == Decimal(price)
    assert sent.sale_price == (Decimal(sale_price) if sale_price else None)


def test_the_sale_price_field_falls_back_to_retail_and_a_missing_price_is_reported(flowhub):
    _, _, market_id, market = _listed(flowhub, [product("TEE", variant("TEE-S"), variant("TEE-M", price_msrp=None))],
                                      price_field="sale")
    flowhub.run(market_id, "listings")
    assert market.listings["TEE-S"].price == Decimal("49.95")

    flowhub.update_account(market_id, price_field="msrp")
    report = flowhub.run(market_id, "listings")
    assert (report.item("TEE-M").outcome, report.item("TEE-M").field, report.item("TEE-M").message) == (
        "rejected", "price", "missing msrp price")


def test_missing_attributes_are_reported_per_sku_before_anything_is_sent(flowhub):
    _, _, market_id, market = _listed(flowhub, [
        product("GOOD", variant("GOOD-1")),
        product("NOEAN", variant("NOEAN-1", barcode="")),
        product("NOVAR", variant("NOVAR-1", size="", colour="")),
        product("BARE", variant("BARE-1", barcode=""), category="", gender="", description=" "),
    ])

    report = flowhub.run(market_id, "listings")

    assert report.status is RunStatus.PARTIAL
    assert sorted(market.listings) == ["GOOD-1"]
    assert market.calls["push_listings"] == 1 and market.batch_sizes == [1]
    rejected = {item.key: (item.field, item.message) for item in report.items if item.outcome == "rejected"}
    assert rejected == {
        "NOEAN-1": ("barcode", "missing barcode (EAN)"),
        "NOVAR-1": ("variation", "missing variation (size or colour)"),
        "BARE-1": ("category", "missing category, barcode (EAN), gender, description"),
    }
    [event] = flowhub.events("listing.rejected")
    assert event.level == "warning" and event.data["count"] == 3
    assert "NOEAN-1: missing barcode (EAN)" in event.message and "Fix them in the source catalogue" in event.message

    again = flowhub.run(market_id, "listings")  # the same problems: on the run, not a new event
    assert again.item("NOEAN-1").outcome == "rejected"
    assert len(flowhub.events("listing.rejected")) == 1


def test_a_batch_with_one_bad_sku_delivers_the_others_and_reports_the_bad_one(flowhub):
    _, shop, market_id, market = _listed(flowhub, tees(5))
    market.reject_skus["TEE-002"] = "Brand is not allowed in this category"

    report = flowhub.run(market_id, "listings")

    assert report.status is RunStatus.PARTIAL
    assert sorted(market.listings) == ["TEE-000", "TEE-001", "TEE-003", "TEE-004"]
    assert report.item("TEE-002").outcome == "rejected"
    assert report.item("TEE-002").message == "Brand is not allowed in this category"
    assert report.counts == {"ok": 4, "rejected": 1}
    [event] = flowhub.events("listing.rejected")
    assert "TEE-002: Brand is not allowed in this category" in event.message

    # Once the channel accepts it, only the SKU that failed is sent again.
    del market.reject_skus["TEE-002"]
    market.batch_sizes.clear()
    assert flowhub.run(market_id, "listings").status is RunStatus.OK
    assert market.batch_sizes == [1] and "TEE-002" in market.listings


def test_a_listed_sku_the_channel_rejects_keeps_the_error_on_its_binding(flowhub):
    source_id, shop, market_id, market = _listed(flowhub, tees(2))
    flowhub.run(market_id, "listings")
    shop.products[1].variants[0].price_retail = Decimal("9.95")
    flowhub.run(source_id, "catalog")
    market.reject_skus["TEE-001"] = "Price below the allowed minimum"

    flowhub.run(market_id, "listings")

    binding = _bindings(flowhub, market_id)["L-TEE-001"]
    assert binding.last_error == "Price below the allowed minimum"
    assert market.listings["TEE-001"].price == Decimal("49.95")  # the marketplace kept the old one


def test_25_changed_skus_with_max_batch_10_take_3_calls(flowhub):
    _, _, market_id, market = _listed(flowhub, tees(25))

    report = flowhub.run(market_id, "listings")

    assert report.counts == {"ok": 25}
    assert market.calls["push_listings"] == 3 and market.batch_sizes == [10, 10, 5]
    assert report.api_calls == 3


def test_an_unchanged_listing_is_not_sent_again_but_a_changed_one_is(flowhub):
    source_id, shop, market_id, market = _listed(flowhub, tees(3))
    flowhub.run(market_id, "listings")
    market.calls.clear()
    market.batch_sizes.clear()

    unchanged = flowhub.run(market_id, "listings")

    assert unchanged.status is RunStatus.OK and unchanged.items == []
    assert market.calls["push_listings"] == 0

    shop.products[1].description = "Now in recycled cotton."
    shop.products[2].variants[0].stock[0].available = 1  # stock alone is the stock flow's business
    flowhub.run(source_id, "catalog")
    changed = flowhub.run(market_id, "listings")

    assert changed.outcomes() == {"TEE-001": "ok"}
    assert market.batch_sizes == [1] and market.listings["TEE-001"].description == "Now in recycled cotton."


def test_unchanged_listings_are_reasserted_after_the_interval(flowhub):
    _, _, market_id, market = _listed(flowhub, tees(3))
    flowhub.run(market_id, "listings")
    with flowhub.db.session() as session:
        stale = session.scalar(select(Binding).where(Binding.account_id == market_id, Binding.external_id == "L-TEE-000"))
        stale.last_sent_at = utcnow() - timedelta(hours=25)
    market.batch_sizes.clear()

    report = flowhub.run(market_id, "listings")

    assert report.outcomes() == {"TEE-000": "ok"} and market.batch_sizes == [1]
    flowhub.update_account(market_id, schedules={"listings_reassert": 0})
    assert flowhub.run(market_id, "listings").counts == {"ok": 3}


class BrandSuffix:
    @hookimpl
    def channelhub_transform_listing(self, listing, account):  # type: ignore[no-untyped-def]
        listing.title = f"{listing.title} | {account.name}"
        return listing


class Discount:
    @hookimpl
    def channelhub_transform_listing(self, listing):  # type: ignore[no-untyped-def]
        listing.sale_price = Decimal("10.00")  # in place, returning nothing


def test_transform_listing_plugins_run_in_turn_and_their_changes_count_as_changes(flowhub):
    _, _, market_id, market = _listed(flowhub, tees(1))
    flowhub.run(market_id, "listings")
    flowhub.pm.register_plugin(BrandSuffix(), "suffix")
    flowhub.pm.register_plugin(Discount(), "discount")

    report = flowhub.run(market_id, "listings")

    assert report.outcomes() == {"TEE-000": "ok"}
    assert market.listings["TEE-000"].title == "Product TEE000 | iconic"
    assert market.listings["TEE-000"].sale_price == Decimal("10.00")


def test_duplicate_and_deactivated_skus_are_kept_out_of_listings(flowhub):
    source_id, shop, market_id, market = _listed(flowhub, [
        product("A", variant("A-1"), variant("DUP")),
        product("B", variant("DUP"), variant("B-1")),
    ])

    report = flowhub.run(market_id, "listings")

    assert sorted(market.listings) == ["A-1", "B-1"]
    assert report.item("DUP").outcome == "skipped" and "more than once" in report.item("DUP").message

    shop.products[1].variants[1].active = False
    flowhub.run(source_id, "catalog")
    market.batch_sizes.clear()
    flowhub.run(market_id, "listings", force=True)
    assert market.batch_sizes == [1]  # only A-1: B-1 stopped syncing


def test_an_account_without_a_label_is_refused_rather_than_listing_nothing(flowhub):
    _, _, market_id, market = _listed(flowhub, tees(1))
    flowhub.update_account(market_id, label_id=None)

    report = flowhub.run(market_id, "listings")

    assert report.status is RunStatus.FAILED and "has no label" in report.error
    assert market.calls["push_listings"] == 0


def test_refused_credentials_stop_the_run_and_tell_the_admin(flowhub):
    _, _, market_id, market = _listed(flowhub, tees(1))
    flowhub.update_account(market_id, credentials_encrypted=flowhub.box.encrypt({"token": "revoked"}))

    report = flowhub.run(market_id, "listings")

    assert report.status is RunStatus.FAILED
    [event] = flowhub.events("flow.auth_failed")
    assert event.account_id == market_id and "fix them on the account page" in event.message
