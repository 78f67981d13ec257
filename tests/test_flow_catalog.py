"""The catalogue flow: a SOURCE account's products -> products, variants, stock; duplicates; deactivation.

Driven through the in-memory channel and the real job body (``execute_run``), on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import select

from hub import cursors, defaults
from hub.channel import Role
from hub.errors import TransientError
from hub.flows import catalog
from hub.hookspecs import hookimpl
from hub.jobs import registered_flows
from hub.models import ChannelAccount, DuplicateSku, Product, RunStatus, SyncRun
from hub.records import StockLevel
from hub.scheduling import due_flows, flow_enabled, interval_for, next_due
from tests.flows_fixtures_a import flowhub, product, variant  # noqa: F401  (fixture)
from tests.memory_channel import MemoryChannel
from tests.storage_fixtures import box, database, organisation  # noqa: F401  (fixtures)


def test_a_first_import_is_full_and_creates_products_variants_and_stock(flowhub):
    source_id, shop = flowhub.source(products=[
        product("TEE", variant("TEE-S", {"SYD": 3, "MEL": 2}),
                variant("TEE-M", [StockLevel("SYD", available=4, available_from_stock=3, on_hand=6)])),
    ])

    report = flowhub.run(source_id, "catalog")

    assert report.status is RunStatus.OK, report.error
    assert report.outcomes() == {"TEE-S": "ok", "TEE-M": "ok"}
    assert report.api_calls == 1 and shop.calls["list_products"] == 1
    small, medium = flowhub.variant("TEE-S"), flowhub.variant("TEE-M")
    assert small.product.parent_sku == "TEE" and small.product.category == "Women > Tops > Tees"
    assert small.product.source_account_id == source_id
    assert small.price_retail == Decimal("49.95") and small.barcode.startswith("93")
    # A source that does not tell the bases apart gets `available` for each of them.
    assert {(l.location, l.available, l.available_from_stock, l.on_hand) for l in small.stock_levels} == {
        ("SYD", 3, 3, 3), ("MEL", 2, 2, 2)}
    assert [(l.available, l.available_from_stock, l.on_hand) for l in medium.stock_levels] == [(4, 3, 6)]
    [event] = flowhub.events("catalog.imported")
    assert "full import of 1 product(s), 2 variant(s) (2 new, 0 changed)" in event.message
    with flowhub.db.session() as session:
        assert cursors.read(session, source_id, catalog.STREAM) is not None
        assert cursors.read(session, source_id, catalog.FULL_STREAM) is not None


def test_the_next_import_is_incremental_and_updates_prices_and_replaces_stock_locations(flowhub):
    source_id, shop = flowhub.source(products=[product("TEE", variant("TEE-S", {"SYD": 3, "MEL": 2}), variant("TEE-M"))])
    flowhub.run(source_id, "catalog")
    shop.products[0].variants[0].price_retail = Decimal("39.95")
    shop.products[0].variants[0].stock = [StockLevel("SYD", available=1)]

    report = flowhub.run(source_id, "catalog")

    assert report.status is RunStatus.OK
    assert [(item.key, item.outcome, item.message) for item in report.items] == [("TEE-S", "ok", "updated")]
    small = flowhub.variant("TEE-S")
    assert small.price_retail == Decimal("39.95")
    assert [(l.location, l.available) for l in small.stock_levels] == [("SYD", 1)]  # MEL no longer reported
    assert "incremental import" in flowhub.events("catalog.imported")[-1].message
    unchanged = flowhub.run(source_id, "catalog")  # nothing changed: no item rows, only the summary
    assert unchanged.status is RunStatus.OK and unchanged.items == []
    assert flowhub.events("catalog.imported")[-1].data["variants"] == 2


def test_duplicate_skus_are_flagged_reported_once_and_cleared_only_by_a_full_import(flowhub):
    source_id, shop = flowhub.source(products=[
        product("A", variant("A-1"), variant("DUP-1")),
        product("B", variant("DUP-1", 9)),
    ])

    first = flowhub.run(source_id, "catalog")

    assert first.status is RunStatus.PARTIAL
    assert first.item("DUP-1").outcome == "rejected" and first.item("DUP-1").field == "sku"
    assert "appears 2 times" in first.item("DUP-1").message
    assert first.item("A-1").outcome == "ok"
    assert flowhub.variant("DUP-1").duplicate is True
    with flowhub.db.session() as session:
        [row] = session.scalars(select(DuplicateSku).where(DuplicateSku.source_account_id == source_id)).all()
        assert (row.sku, row.occurrences) == ("DUP-1", 2)
    [event] = flowhub.events("catalog.duplicate_sku")
    assert event.level == "warning" and "DUP-1 ×2" in event.message and event.data == {"skus": {"DUP-1": 2}}

    flowhub.run(source_id, "catalog")  # still there: reported on the run, not a new event
    assert len(flowhub.events("catalog.duplicate_sku")) == 1

    shop.products[1].variants = [variant("B-1")]  # fixed in the source
    flowhub.run(source_id, "catalog")  # incremental: cannot prove the other copy gone
    assert flowhub.variant("DUP-1").duplicate is True

    full = flowhub.run(source_id, "catalog", full=True)

    assert full.status is RunStatus.OK
    assert flowhub.variant("DUP-1").duplicate is False
    [resolved] = flowhub.events("catalog.duplicate_resolved")
    assert resolved.data == {"skus": ["DUP-1"]}
    with flowhub.db.session() as session:
        assert session.scalars(select(DuplicateSku).where(DuplicateSku.source_account_id == source_id)).all() == []


def test_a_sku_arriving_under_a_new_product_while_the_old_one_is_unchanged_is_a_duplicate(flowhub):
    source_id, shop = flowhub.source(products=[product("OLD", variant("X-1"))])
    flowhub.run(source_id, "catalog")
    long_ago = datetime.now(timezone.utc) - timedelta(days=3)
    shop.product_changed_at["OLD"] = long_ago  # an incremental read will not return OLD
    shop.products.append(product("NEW", variant("X-1")))

    incremental = flowhub.run(source_id, "catalog")

    assert incremental.item("X-1").outcome == "rejected"
    assert flowhub.variant("X-1").duplicate is True
    assert flowhub.variant("X-1").product.parent_sku == "OLD"

    shop.products[0].variants = [variant("OLD-1")]  # the source drops it from OLD: it moved
    full = flowhub.run(source_id, "catalog", full=True)

    assert full.item("X-1").outcome == "ok"
    moved = flowhub.variant("X-1")
    assert moved.duplicate is False and moved.product.parent_sku == "NEW"


def test_an_incremental_import_never_deactivates_a_missing_product_and_a_full_import_does(flowhub):
    source_id, shop = flowhub.source(products=[product("KEEP", variant("KEEP-1"), variant("KEEP-2")),
                                               product("GONE", variant("GONE-1"))])
    flowhub.run(source_id, "catalog")
    del shop.products[1]
    shop.products[0].variants.pop()  # a returned product is complete: KEEP-2 is gone from it

    flowhub.run(source_id, "catalog")

    assert flowhub.variant("GONE-1").product.active is True
    assert flowhub.variant("KEEP-2").active is False
    assert flowhub.events("catalog.imported")[-1].data["deactivated_products"] == 0

    flowhub.run(source_id, "catalog", full=True)

    assert flowhub.variant("GONE-1").product.active is False
    assert flowhub.variant("KEEP-1").product.active is True
    assert flowhub.events("catalog.imported")[-1].data["deactivated_products"] == 1

    shop.products.append(product("GONE", variant("GONE-1")))  # back in the source: active again
    flowhub.run(source_id, "catalog")
    assert flowhub.variant("GONE-1").product.active is True


def test_a_product_deactivated_in_the_source_is_stored_inactive(flowhub):
    source_id, _ = flowhub.source(products=[product("OFF", variant("OFF-1"), active=False),
                                            product("ON", variant("ON-1", active=False))])
    flowhub.run(source_id, "catalog")
    assert flowhub.variant("OFF-1").product.active is False
    assert flowhub.variant("ON-1").active is False


def test_a_bad_variant_is_rejected_alone_and_names_the_field(flowhub):
    source_id, _ = flowhub.source(products=[product("TEE", variant("TEE-S"), variant("TEE-L "),
                                                    variant("TEE-M", price_retail=Decimal("-1")))])

    report = flowhub.run(source_id, "catalog")

    assert report.status is RunStatus.PARTIAL
    assert report.outcomes() == {"TEE-L ": "rejected", "TEE-M": "rejected", "TEE-S": "ok"}
    assert report.item("TEE-L ").field == "sku" and "whitespace" in report.item("TEE-L ").message
    assert report.item("TEE-M").field == "price_retail"
    assert flowhub.variant("TEE-S").product.parent_sku == "TEE"


def test_a_failing_enumeration_changes_nothing(flowhub):
    source_id, shop = flowhub.source(products=[product("TEE", variant("TEE-S"))])
    shop.fail_with = TransientError("page 3 timed out")

    report = flowhub.run(source_id, "catalog")

    assert report.status is RunStatus.FAILED and "page 3 timed out" in report.error
    with flowhub.db.session() as session:
        assert session.scalars(select(Product).where(Product.organisation_id == flowhub.organisation_id)).all() == []
        assert cursors.read(session, source_id, catalog.STREAM) is None  # the next run starts over


def test_a_full_import_is_due_again_after_a_day(flowhub):
    source_id, _ = flowhub.source(products=[product("TEE", variant("TEE-S"))])
    flowhub.run(source_id, "catalog")
    flowhub.run(source_id, "catalog")
    assert [e.data["full"] for e in flowhub.events("catalog.imported")] == [True, False]

    with flowhub.db.session() as session:
        cursors.write_time(session, source_id, catalog.FULL_STREAM, datetime.now(timezone.utc) - timedelta(days=2))
    flowhub.run(source_id, "catalog")

    assert flowhub.events("catalog.imported")[-1].data["full"] is True


# -- scheduling ---------------------------------------------------------------------------------------


class MarketplaceOnly(MemoryChannel):
    name = "memory_marketplace"
    roles = frozenset({Role.MARKETPLACE})


class MarketplaceOnlyPlugin:
    @hookimpl
    def channelhub_register_channels(self, register):  # type: ignore[no-untyped-def]
        register(MarketplaceOnly)


def test_the_catalogue_flow_is_scheduled_only_for_source_accounts(flowhub):
    flowhub.pm.register_plugin(MarketplaceOnlyPlugin(), "marketplace-only")
    source_id, _ = flowhub.source()
    market_id, _ = flowhub.account("market", plugin="memory_marketplace")

    with flowhub.db.session() as session:
        source, market = session.get(ChannelAccount, source_id), session.get(ChannelAccount, market_id)
        assert catalog.is_source(source) and not catalog.is_source(market)
        assert flow_enabled(source, "catalog") and not flow_enabled(market, "catalog")
        due = due_flows(session, datetime.now(timezone.utc))
    assert (source_id, "catalog") in due and (market_id, "catalog") not in due

    refused = flowhub.run(market_id, "catalog")
    assert refused.status is RunStatus.FAILED and "not a catalogue source" in refused.error


def test_the_flows_register_on_their_lanes_with_their_default_intervals(flowhub):
    flows = registered_flows()
    assert {name: flows[name].lane for name in ("catalog", "listings", "stock")} == {
        "catalog": "catalog", "listings": "catalog", "stock": "stock"}
    source_id, _ = flowhub.source(products=[product("TEE", variant("TEE-S"))])
    flowhub.run(source_id, "catalog")
    with flowhub.db.session() as session:
        account = session.get(ChannelAccount, source_id)
        assert interval_for(account, "stock") == timedelta(minutes=5)
        assert interval_for(account, "listings") == timedelta(minutes=60)
        assert interval_for(account, "catalog") == timedelta(seconds=defaults.FLOW_INTERVALS["catalog"])
        queued = session.scalar(select(SyncRun.queued_at).where(SyncRun.account_id == source_id))
        assert next_due(session, account, "catalog").replace(tzinfo=None) == (
            queued.replace(tzinfo=None) + timedelta(seconds=defaults.FLOW_INTERVALS["catalog"]))


# -- chunked writing --------------------------------------------------------------------------------


def test_a_chunked_import_counts_duplicates_over_the_whole_enumeration(flowhub, monkeypatch):
    monkeypatch.setattr(catalog, "CHUNK", 2)
    source_id, _ = flowhub.source(products=[
        product("A", variant("DUP-1"), variant("A-1")),
        product("B", variant("B-1")),
        product("C", variant("C-1")),
        product("D", variant("D-1")),
        product("E", variant("DUP-1", 9), variant("E-1")),  # three chunks later
    ])

    report = flowhub.run(source_id, "catalog")

    assert report.status is RunStatus.PARTIAL
    assert report.item("DUP-1").outcome == "rejected" and "appears 2 times" in report.item("DUP-1").message
    assert {key for key, outcome in report.outcomes().items() if outcome == "ok"} == {"A-1", "B-1", "C-1", "D-1", "E-1"}
    duplicate = flowhub.variant("DUP-1")
    assert duplicate.duplicate is True and duplicate.product.parent_sku == "A"  # the first record kept
    assert flowhub.events("catalog.imported")[-1].data["variants"] == 5


def test_a_failure_after_chunks_were_written_rolls_the_whole_import_back(flowhub, monkeypatch):
    source_id, shop = flowhub.source(products=[product("A", variant("A-1")), product("B", variant("B-1"))])
    flowhub.run(source_id, "catalog")
    monkeypatch.setattr(catalog, "CHUNK", 1)
    shop.products[0].variants[0].price_retail = Decimal("1.00")
    shop.products.append(product("C", variant("C-1")))

    def broken(*_args, **_kwargs):
        raise TransientError("database went away after the writes")

    monkeypatch.setattr(catalog.labels, "apply_rules", broken)  # after every chunk was flushed
    report = flowhub.run(source_id, "catalog", full=True)

    assert report.status is RunStatus.FAILED and "went away" in report.error
    assert report.items == []  # no item claims an import that was rolled back
    assert flowhub.variant("A-1").price_retail == Decimal("49.95")
    with flowhub.db.session() as session:
        parents = session.scalars(select(Product.parent_sku).where(Product.organisation_id == flowhub.organisation_id))
        assert sorted(parents) == ["A", "B"]


def test_an_enumeration_failing_mid_way_writes_nothing(flowhub, monkeypatch):
    monkeypatch.setattr(catalog, "CHUNK", 1)
    source_id, _ = flowhub.source(products=[product("A", variant("A-1")), product("B", variant("B-1"))])

    def halfway(self, since=None):
        yield product("A", variant("A-1"))
        yield product("B", variant("B-1"))
        raise TransientError("page 3 timed out")

    monkeypatch.setattr(MemoryChannel, "list_products", halfway)
    report = flowhub.run(source_id, "catalog")

    assert report.status is RunStatus.FAILED and "page 3 timed out" in report.error
    with flowhub.db.session() as session:
        assert session.scalars(select(Product).where(Product.organisation_id == flowhub.organisation_id)).all() == []
        assert cursors.read(session, source_id, catalog.STREAM) is None


# -- the Core write pass ----------------------------------------------------------------------------


def test_a_re_import_says_created_updated_and_unchanged_and_moves_a_variant(flowhub, monkeypatch):
    monkeypatch.setattr(catalog, "CHUNK", 2)  # a move across chunks, and products over several chunks
    source_id, shop = flowhub.source(products=[
        product("A", variant("A-1"), variant("A-2", {"SYD": 1, "MEL": 1})),
        product("B", variant("B-1")),
        product("C", variant("C-1")),
    ])
    first = flowhub.run(source_id, "catalog")
    assert first.outcomes() == {"A-1": "ok", "A-2": "ok", "B-1": "ok", "C-1": "ok"}
    assert {item.message for item in first.items} == {"new"}
    before = flowhub.variant("B-1").updated_at

    shop.products[0].variants[0].colour = "Red"  # a field
    shop.products[0].variants[1].stock = [StockLevel("SYD", available=1)]  # MEL gone
    shop.products[2].variants.append(shop.products[0].variants.pop(0))  # A-1 moves to C
    shop.products[2].variants.append(variant("C-2"))
    second = flowhub.run(source_id, "catalog", full=True)

    assert {i.key: i.message for i in second.items} == {"A-2": "updated", "A-1": "moved to product C", "C-2": "new"}
    data = flowhub.events("catalog.imported")[-1].data
    assert (data["variants"], data["created"], data["updated"]) == (5, 1, 2)
    moved = flowhub.variant("A-1")
    assert moved.product.parent_sku == "C" and moved.colour == "Red" and moved.active is True
    assert [(level.location, level.available) for level in flowhub.variant("A-2").stock_levels] == [("SYD", 1)]
    assert flowhub.variant("B-1").updated_at == before  # unchanged: not written

    third = flowhub.run(source_id, "catalog", full=True)
    assert third.items == []
    assert flowhub.events("catalog.imported")[-1].data["created"] == 0


def test_records_the_schema_refuses_are_still_refused_with_the_field_named(flowhub):
    source_id, _ = flowhub.source(products=[
        product("OK", variant("OK-1")),
        product("NAN", variant("NAN-1", price_retail=Decimal("NaN"))),
        product("LOC", variant("LOC-1", [StockLevel("", available=1)])),
        product("BAR", variant("BAR-1", barcode="9" * 65)),
        product("", variant("NOPARENT-1")),
        product("TAGS", variant("TAGS-1"), tags=[None]),
    ])

    report = flowhub.run(source_id, "catalog")

    assert report.item("OK-1").outcome == "ok"
    assert report.item("NAN-1").field == "price_retail" and "not permitted" in report.item("NAN-1").message
    assert report.item("LOC-1").field == "stock.0.location"
    assert report.item("BAR-1").field == "barcode"
    assert report.item("Product ").field == "parent_sku"  # no parent SKU: keyed by its title
    assert report.item("TAGS").outcome == "rejected" and report.item("TAGS").field == "tags.0"
    assert flowhub.events("catalog.imported")[-1].data["variants"] == 1
