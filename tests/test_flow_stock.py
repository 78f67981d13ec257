"""The stock flow: quantity = max(0, basis - pending order units - reserve), explained, pushed when changed."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import ConfigurationError
from hub.events import emit
from hub.flows.stock import compute_quantity, explain, push_stock_now
from hub.hookspecs import hookimpl
from hub.models import OrderStatus, RunStatus
from hub.records import StockLevel
from tests.flows_fixtures_a import flowhub, product, tees, variant  # noqa: F401  (fixture)
from tests.storage_fixtures import box, database, organisation  # noqa: F401  (fixtures)

# -- the rule, as a pure function -----------------------------------------------------------------

BASES = ["available", "available_from_stock", "on_hand"]
LABELS = {"available": "available", "available_from_stock": "available from stock", "on_hand": "on hand"}
locations = st.dictionaries(
    st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=2, max_size=4),
    st.fixed_dictionaries({basis: st.integers(-5, 500) for basis in BASES}),
    max_size=5,
)


def _read_back(text: str, basis: str) -> tuple[int, int, int, int, bool, list[int] | None]:
    """Parse "q = N basis (L1 a + L2 b) - p pending order units - r reserve (never below 0)"."""
    match = re.fullmatch(
        rf"(?P<q>\d+) = (?P<total>-?\d+) {re.escape(LABELS[basis])}(?: \((?P<split>(?!never)[^()]*)\))?"
        r"(?: - (?P<pending>\d+) pending order units?)?(?: - (?P<reserve>\d+) reserve)?(?P<floor> \(never below 0\))?",
        text,
    )
    assert match, f"unexpected explanation {text!r}"
    split = [int(part.rsplit(" ", 1)[1]) for part in match["split"].split(" + ")] if match["split"] else None
    return (int(match["q"]), int(match["total"]), int(match["pending"] or 0), int(match["reserve"] or 0),
            bool(match["floor"]), split)


@settings(max_examples=300, deadline=None)
@given(
    levels=locations,
    basis=st.sampled_from(BASES),
    pending=st.integers(0, 300),
    reserve=st.integers(0, 50),
    pick=st.integers(0, 5),
    extra_warehouse=st.booleans(),
)
def test_the_stock_arithmetic_matches_its_explanation(levels, basis, pending, reserve, pick, extra_warehouse):
    warehouses = sorted(levels)[:pick] + (["NOWHERE"] if extra_warehouse else [])
    quantity, parts = compute_quantity(levels, warehouses, basis, pending, reserve)

    counted = [loc for loc in (warehouses or sorted(levels)) if loc in levels]
    total = sum(levels[loc][basis] for loc in counted)
    assert quantity == max(0, total - pending - reserve)
    q, said_total, said_pending, said_reserve, floored, split = _read_back(explain(quantity, parts), basis)
    # What the log says adds up to what is pushed, term by term.
    assert (q, said_total, said_pending, said_reserve) == (quantity, total, pending, reserve)
    assert quantity == max(0, said_total - said_pending - said_reserve)
    assert floored == (total - pending - reserve < 0)
    if split is not None:
        assert sum(split) == said_total and len(split) == len(counted) > 1


def test_the_explanation_reads_like_the_audit_log_promises():
    levels = {"SYD": {"available": 3, "on_hand": 4}, "MEL": {"available": 2, "on_hand": 2}, "PER": {"available": 9}}
    assert explain(*compute_quantity(levels, ["SYD", "MEL"], "available", 1, 1)) == (
        "3 = 5 available (SYD 3 + MEL 2) - 1 pending order unit - 1 reserve")
    assert explain(*compute_quantity(levels, ["SYD"], "on_hand", 0, 0)) == "4 = 4 on hand"
    assert explain(*compute_quantity(levels, [], "available", 20, 0)) == (
        "0 = 14 available (MEL 2 + PER 9 + SYD 3) - 20 pending order units (never below 0)")
    with pytest.raises(ConfigurationError, match="inventory basis must be one of"):
        compute_quantity(levels, [], "incoming", 0, 0)


# -- the flow ----------------------------------------------------------------------------------------


def _stocked(flowhub, products, *, listed=True, **market_columns):
    source_id, shop = flowhub.source(products=products)
    flowhub.run(source_id, "catalog")
    flowhub.give_label("Iconic", *[p.parent_sku for p in products])
    market_id, market = flowhub.marketplace(source_id=source_id, **market_columns)
    if listed:
        assert flowhub.run(market_id, "listings").status is RunStatus.OK
        market.calls.clear()
        market.batch_sizes.clear()
    return source_id, shop, market_id, market


def test_quantity_is_basis_minus_pending_orders_minus_reserve_and_is_explained(flowhub):
    source_id, shop, market_id, market = _stocked(flowhub, [product("TEE", variant("TEE-S", 5))])
    flowhub.update_account(market_id, reserve_stock=1)
    flowhub.order(market_id, {"TEE-S": 1})  # imported, not routed: the source has not seen it

    report = flowhub.run(market_id, "stock")

    assert report.status is RunStatus.OK
    assert market.listings["TEE-S"].quantity == 3
    assert report.item("TEE-S").message == "3 = 5 available - 1 pending order unit - 1 reserve"
    event = flowhub.events("stock.pushed")[-1]
    assert event.message == "TEE-S: iconic now shows 3 (3 = 5 available - 1 pending order unit - 1 reserve)"
    assert {k: event.data[k] for k in ("quantity", "previous", "basis_total", "pending", "reserve")} == {
        "quantity": 3, "previous": 5, "basis_total": 5, "pending": 1, "reserve": 1}


def test_only_imported_unrouted_orders_of_the_organisation_count_as_pending(flowhub):
    source_id, shop, market_id, market = _stocked(flowhub, [product("TEE", variant("TEE-S", 10))])
    other_market, _ = flowhub.account("other-market")
    flowhub.order(other_market, {"TEE-S": 2})  # another marketplace of the organisation: counts
    flowhub.order(market_id, {"TEE-S": 3}, status=OrderStatus.ROUTED)  # the source knows it now
    flowhub.order(market_id, {"TEE-S": 4}, status=OrderStatus.THIRD_PARTY_MANAGED, third_party_managed=True)
    flowhub.order(market_id, {"TEE-S": 5}, third_party_managed=True)  # fulfilled elsewhere
    flowhub.order(market_id, {"OTHER": 6})

    flowhub.run(market_id, "stock")

    assert market.listings["TEE-S"].quantity == 8


def test_the_basis_and_warehouses_of_the_account_are_used(flowhub):
    stock = [StockLevel("SYD", available=2, available_from_stock=1, on_hand=6),
             StockLevel("MEL", available=3, available_from_stock=3, on_hand=4),
             StockLevel("DROPSHIP", available=50)]
    _, _, market_id, market = _stocked(flowhub, [product("TEE", variant("TEE-S", stock))],
                                       inventory_basis="on_hand", warehouses=["SYD", "MEL"])
    assert market.listings["TEE-S"].quantity == 10

    flowhub.update_account(market_id, inventory_basis="available_from_stock")
    report = flowhub.run(market_id, "stock")

    assert market.listings["TEE-S"].quantity == 4
    assert report.item("TEE-S").message == "4 = 4 available from stock (SYD 1 + MEL 3)"


def test_only_changed_quantities_are_pushed(flowhub):
    source_id, shop, market_id, market = _stocked(flowhub, tees(4))

    unchanged = flowhub.run(market_id, "stock")
    assert unchanged.items == [] and market.calls["push_listings"] == 0

    shop.products[2].variants[0].stock[0].available = 1
    flowhub.run(source_id, "catalog")
    changed = flowhub.run(market_id, "stock")

    assert changed.outcomes() == {"TEE-002": "ok"} and market.batch_sizes == [1]
    assert market.listings["TEE-002"].quantity == 1
    assert flowhub.run(market_id, "stock").items == []  # pushed once, then unchanged again


def test_25_changed_quantities_with_max_batch_10_take_3_calls(flowhub):
    source_id, shop, market_id, market = _stocked(flowhub, tees(25, stock=5))
    for item in shop.products:
        item.variants[0].stock[0].available = 7
    flowhub.run(source_id, "catalog")

    report = flowhub.run(market_id, "stock")

    assert report.counts == {"ok": 25} and report.api_calls == 3
    assert market.calls["push_listings"] == 3 and market.batch_sizes == [10, 10, 5]


class CapAt2:
    @hookimpl
    def channelhub_adjust_quantity(self, variant, account, quantity, explanation):  # type: ignore[no-untyped-def]
        if quantity > 2:
            explanation.append("capped at 2 by the cap plugin")
            return 2
        return None


class Nothing:
    @hookimpl
    def channelhub_adjust_quantity(self, variant, account, quantity, explanation):  # type: ignore[no-untyped-def]
        return None


def test_adjust_quantity_plugins_change_the_number_and_say_why(flowhub):
    _, _, market_id, market = _stocked(flowhub, [product("TEE", variant("TEE-S", 5))])
    flowhub.pm.register_plugin(CapAt2(), "cap")
    flowhub.pm.register_plugin(Nothing(), "nothing")

    report = flowhub.run(market_id, "stock")

    assert market.listings["TEE-S"].quantity == 2
    assert report.item("TEE-S").message == "2 after plugins (5 = 5 available; capped at 2 by the cap plugin)"


def test_a_sold_out_sku_shows_zero_and_an_oversell_is_reported(flowhub):
    _, _, market_id, market = _stocked(flowhub, [product("TEE", variant("TEE-S", 2))])
    flowhub.order(market_id, {"TEE-S": 3})

    report = flowhub.run(market_id, "stock")

    assert market.listings["TEE-S"].quantity == 0
    assert report.item("TEE-S").message == "0 = 2 available - 3 pending order units (never below 0)"
    [oversell] = flowhub.events("stock.oversell")
    assert oversell.level == "error" and oversell.data["oversold_by"] == 1
    assert "TEE-S is oversold by 1" in oversell.message

    flowhub.run(market_id, "stock")  # still 0: nothing pushed, nothing new to say
    assert len(flowhub.events("stock.oversell")) == 1


def test_an_oversell_is_reported_once_not_once_per_marketplace_or_flow(flowhub):
    source_id, shop = flowhub.source(products=[product("TEE", variant("TEE-S", 2)), product("CAP", variant("CAP-1", 1))])
    flowhub.run(source_id, "catalog")
    flowhub.give_label("Iconic", "TEE", "CAP")
    first, _ = flowhub.marketplace("first", source_id=source_id)
    second, _ = flowhub.marketplace("second", source_id=source_id)
    flowhub.order(first, {"TEE-S": 3, "CAP-1": 2})
    with flowhub.db.session() as session:  # the orders flow already said so when CAP-1's order arrived
        emit(session, organisation_id=flowhub.organisation_id, account_id=first, kind="stock.oversell", level="error",
             message="SKU CAP-1 is oversold", data={"sku": "CAP-1", "units": 2, "basis": 1})

    flowhub.run(first, "listings")
    flowhub.run(second, "listings")

    assert sorted(e.data["sku"] for e in flowhub.events("stock.oversell")) == ["CAP-1", "TEE-S"]


def test_duplicates_are_kept_out_of_stock_and_a_listed_sku_leaving_the_selection_gets_0_once(flowhub):
    source_id, shop, market_id, market = _stocked(flowhub, [
        product("A", variant("A-1", 4), variant("A-2", 4)),
        product("B", variant("B-1", 4)),
    ])
    shop.products.append(product("C", variant("B-1", 9)))  # B-1 now twice in the source
    shop.products.append(product("D", variant("DUP", 3)))
    shop.products.append(product("E", variant("DUP", 3)))  # never listed: a duplicate from the start
    shop.products[0].variants[1].active = False  # A-2 deactivated
    flowhub.run(source_id, "catalog")
    flowhub.give_label("Iconic", "DUP")

    report = flowhub.run(market_id, "stock")

    assert report.outcomes() == {"DUP": "skipped", "A-2": "ok", "B-1": "ok"} and len(report.items) == 3
    assert report.item("A-2").message == "0 = withdrawn: it is deactivated in the source"
    assert "more than once" in report.item("B-1").message
    assert market.listings["A-2"].quantity == 0 and market.listings["B-1"].quantity == 0
    assert "DUP" not in market.listings

    market.batch_sizes.clear()
    again = flowhub.run(market_id, "stock")
    assert again.outcomes() == {"DUP": "skipped", "B-1": "skipped"} and market.batch_sizes == []


def test_a_rejected_stock_update_is_reported_and_the_rest_flows(flowhub):
    source_id, shop, market_id, market = _stocked(flowhub, tees(3))
    for item in shop.products:
        item.variants[0].stock[0].available = 1
    flowhub.run(source_id, "catalog")
    market.reject_skus["TEE-001"] = "SKU not found"

    report = flowhub.run(market_id, "stock")

    assert report.status is RunStatus.PARTIAL and report.counts == {"ok": 2, "rejected": 1}
    assert market.listings["TEE-000"].quantity == 1 and market.listings["TEE-001"].quantity == 5
    [event] = flowhub.events("stock.rejected")
    assert "TEE-001: SKU not found" in event.message
    del market.reject_skus["TEE-001"]
    assert flowhub.run(market_id, "stock").outcomes() == {"TEE-001": "ok"}  # retried: never recorded as sent


def test_params_skus_limit_the_run(flowhub):
    source_id, shop, market_id, market = _stocked(flowhub, tees(3))
    for item in shop.products:
        item.variants[0].stock[0].available = 2
    flowhub.run(source_id, "catalog")

    report = flowhub.run(market_id, "stock", skus=["TEE-001"])

    assert report.outcomes() == {"TEE-001": "ok"}
    assert [market.listings[f"TEE-00{n}"].quantity for n in range(3)] == [5, 2, 5]


def test_an_order_pushes_its_skus_to_every_other_marketplace_at_once(flowhub):
    source_id, shop = flowhub.source(products=tees(3))
    flowhub.run(source_id, "catalog")
    flowhub.give_label("Iconic", "TEE000", "TEE001", "TEE002")
    origin, origin_remote = flowhub.marketplace("origin", source_id=source_id)
    other, other_remote = flowhub.marketplace("other", source_id=source_id)
    paused, paused_remote = flowhub.marketplace("paused", source_id=source_id)
    setup, _ = flowhub.marketplace("in-setup", source_id=source_id, status="setup")
    for account_id in (origin, other, paused):
        flowhub.run(account_id, "listings")
    flowhub.update_account(paused, status="paused")
    for state in (origin_remote, other_remote, paused_remote):
        state.calls.clear()

    flowhub.order(origin, {"TEE-001": 2})
    run_ids = push_stock_now(flowhub.db, flowhub.organisation_id, ["TEE-001"], exclude_account_id=origin)

    assert len(run_ids) == 1
    [run] = [r for r in flowhub.runs("stock") if r.id in run_ids]
    assert (run.account_id, run.trigger, RunStatus(run.status)) == (other, "event", RunStatus.OK)
    assert other_remote.listings["TEE-001"].quantity == 3 and other_remote.batch_sizes[-1] == 1
    assert origin_remote.calls["push_listings"] == 0 and paused_remote.calls["push_listings"] == 0
    assert push_stock_now(flowhub.db, flowhub.organisation_id, []) == []


def test_push_stock_now_hands_the_runs_to_a_runtime_when_given_one(flowhub):
    _, _, market_id, _ = _stocked(flowhub, tees(1))
    queued = []

    def enqueue(account_id, flow, *, trigger, params):
        queued.append((account_id, flow, trigger, params))
        return 99

    assert push_stock_now(flowhub.db, flowhub.organisation_id, ["TEE-000", "TEE-000"], enqueue=enqueue) == [99]
    assert queued == [(market_id, "stock", "event", {"skus": ["TEE-000"]})]
    # No account lists it: no run at all, rather than an empty run per order.
    assert push_stock_now(flowhub.db, flowhub.organisation_id, ["NOT-LISTED"], enqueue=enqueue) == []
    assert len(queued) == 1


def test_unlisted_skus_are_left_to_the_listings_flow(flowhub):
    _, _, market_id, market = _stocked(flowhub, tees(2), listed=False)

    assert flowhub.run(market_id, "stock").items == []
    targeted = flowhub.run(market_id, "stock", skus=["TEE-000"])

    assert targeted.item("TEE-000").outcome == "skipped" and "not listed" in targeted.item("TEE-000").message
    assert market.calls["push_listings"] == 0


def test_stock_and_listings_wait_while_a_product_reset_runs(flowhub):
    from datetime import datetime, timezone

    from hub.flows.reset import RESET_SETTING

    source_id, shop, market_id, market = _stocked(flowhub, tees(2))
    shop.products[0].variants[0].stock[0].available = 1
    flowhub.run(source_id, "catalog")
    marker = {"started_at": datetime.now(timezone.utc).isoformat(), "previous": {}}
    flowhub.update_account(market_id, settings={"remote": "iconic", RESET_SETTING: marker})
    for flow in ("stock", "listings"):
        waiting = flowhub.run(market_id, flow)
        assert list(waiting.outcomes().values()) == ["skipped"]
        assert "product reset is running" in waiting.items[0].message
    assert market.calls["push_listings"] == 0

    flowhub.update_account(market_id, settings={"remote": "iconic"})
    assert flowhub.run(market_id, "stock").outcomes() == {"TEE-000": "ok"}
