"""The reconciler: a plan from a complete enumeration; a report in Testing; guarded removals in Live."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hub import bindings
from hub.flows import stock as stock_flow
from hub.models import Role, RunStatus
from hub.users import create_user
from tests.flows_fixtures_b import OrdersHub, Scene, listing_for, ordershub  # noqa: F401
from tests.storage_fixtures import box, database, organisation  # noqa: F401

LABELLED = [f"TEE-{n:02d}" for n in range(12)]


@pytest.fixture(autouse=True)
def _no_stock_pushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stock_flow, "push_stock_now", lambda *args, **kwargs: [])


def listed(hub: OrdersHub, *, live: bool, extra_catalogue: tuple[str, ...] = ("OLD-1",)) -> Scene:
    """12 labelled SKUs listed by the listings flow, then the marketplace drifts:

    TEE-00 shows 9 instead of 5, TEE-01 shows 59.95 instead of 49.95, TEE-02 disappeared;
    OLD-1 (in the catalogue, not labelled) and FOREIGN-1 (unknown to the hub) are listed too.
    """
    scene = hub.scene(live=live, reconciler_enabled=True)
    hub.seed(*LABELLED, stock=5, label_id=scene.label_id)
    hub.seed(*extra_catalogue, stock=5)
    assert hub.run(scene.marketplace, "listings").status is RunStatus.OK
    shown = scene.market.listings
    shown["TEE-00"].quantity = 9
    shown["TEE-01"].price = Decimal("59.95")
    del shown["TEE-02"]
    for sku in (*extra_catalogue, "FOREIGN-1"):
        shown[sku] = listing_for(sku)
    scene.market.calls.clear()
    scene.market.batch_sizes.clear()
    return scene


def test_in_testing_the_plan_is_only_reported(ordershub: OrdersHub) -> None:
    scene = listed(ordershub, live=False)
    before = {sku: (l.quantity, l.price, l.active) for sku, l in scene.market.listings.items()}

    report = ordershub.run(scene.marketplace, "reconcile")

    assert report.status is RunStatus.OK
    assert {(i.key, i.outcome, i.message) for i in report.items} == {
        ("OLD-1", "skipped", "dry run: would remove"),
        ("TEE-02", "skipped", "dry run: would relist"),
        ("TEE-00", "skipped", "dry run: would set quantity 9 -> 5"),
        ("TEE-01", "skipped", "dry run: would set price 59.95 -> 49.95"),
        ("FOREIGN-1", "skipped", "not in the catalogue and never listed by the hub: left alone "
                                 "(a product reset suggests near-miss SKUs)"),
    }
    assert {sku: (l.quantity, l.price, l.active) for sku, l in scene.market.listings.items()} == before
    assert scene.market.calls == {"list_listings": 1}  # read, nothing written
    [plan] = ordershub.events("reconcile.plan")
    assert "dry run: the account is in Testing" in plan.message
    assert plan.data["remove"] == [{"sku": "OLD-1", "reason": "it no longer carries the account's label"}]
    assert (plan.data["relist"], plan.data["left_alone"]) == (["TEE-02"], ["FOREIGN-1"])
    assert plan.data["stock"] == [{"sku": "TEE-00", "shown": "9", "wanted": "5"}]


def test_in_live_it_removes_fixes_drift_and_relists(ordershub: OrdersHub) -> None:
    scene = listed(ordershub, live=True)

    report = ordershub.run(scene.marketplace, "reconcile")

    assert report.status is RunStatus.OK, report.error
    shown = scene.market.listings
    assert shown["OLD-1"].active is False and shown["OLD-1"].quantity == 0
    assert shown["TEE-00"].quantity == 5 and shown["TEE-01"].price == Decimal("49.95")
    assert shown["FOREIGN-1"].active is True  # not the hub's to remove
    assert report.item("OLD-1").message == "removed: it no longer carries the account's label"
    assert report.item("TEE-00").message == "quantity drift fixed: 9 -> 5"
    assert report.item("TEE-01").message == "price drift fixed: 59.95 -> 49.95"
    assert report.item("TEE-02").message == "missing on the channel: the next listings run lists it again"
    # one batch each: the removal, the price fix, the stock fix (push_stock falls back to push_listings here)
    assert scene.market.calls["push_listings"] == 3
    [removed] = ordershub.events("reconcile.removed")
    assert removed.data["skus"] == ["OLD-1"]

    ordershub.run(scene.marketplace, "listings")
    assert shown["TEE-02"].active is True  # the listings flow put it back
    again = ordershub.run(scene.marketplace, "reconcile")
    assert {i.key for i in again.items} == {"FOREIGN-1"}  # nothing left to do but the foreign listing


def test_a_failed_page_never_removes_anything(ordershub: OrdersHub) -> None:
    scene = listed(ordershub, live=True)
    scene.market.fail_enumeration_after = 5

    report = ordershub.run(scene.marketplace, "reconcile")

    assert report.status is RunStatus.FAILED and "page 2 failed" in (report.error or "")
    assert scene.market.calls == {"list_listings": 1}
    assert all(listing.active for listing in scene.market.listings.values())
    assert scene.market.listings["TEE-00"].quantity == 9
    [event] = ordershub.events("reconcile.incomplete")
    assert "nothing was changed" in event.message and event.data["read"] == 5
    assert ordershub.events("reconcile.plan") == []


def test_removing_more_than_the_share_needs_an_admin(ordershub: OrdersHub) -> None:
    scene = listed(ordershub, live=True, extra_catalogue=("OLD-1", "OLD-2", "OLD-3"))
    with ordershub.db.session() as session:
        org = ordershub.organisation()
        create_user(session, org, "viewer@brand.example", "long-enough-password", role=Role.VIEWER)
        create_user(session, org, "admin@brand.example", "long-enough-password", role=Role.ADMIN)

    refused = ordershub.run(scene.marketplace, "reconcile")

    assert refused.item("OLD-1").message == "not removed: the share of removals needs an admin's confirmation"
    assert refused.item("TEE-00").message == "quantity drift fixed: 9 -> 5"  # the rest still happens
    assert all(scene.market.listings[sku].active for sku in ("OLD-1", "OLD-2", "OLD-3"))
    [event] = ordershub.events("reconcile.removals_refused")
    assert event.level == "warning"
    assert "3 of the 15 listings shown (20%, more than the 10% allowed" in event.message
    assert '{"confirm_removals": true}' in event.message

    by_viewer = ordershub.run(scene.marketplace, "reconcile", confirm_removals=True, actor="viewer@brand.example")
    assert by_viewer.item("OLD-2").outcome == "skipped"
    assert "viewer@brand.example, who is not an admin" in ordershub.events("reconcile.removals_refused")[-1].message

    by_admin = ordershub.run(scene.marketplace, "reconcile", confirm_removals=True, actor="admin@brand.example")
    assert {by_admin.item(sku).outcome for sku in ("OLD-1", "OLD-2", "OLD-3")} == {"ok"}
    assert not any(scene.market.listings[sku].active for sku in ("OLD-1", "OLD-2", "OLD-3"))


def test_the_share_is_configurable_per_account(ordershub: OrdersHub) -> None:
    scene = listed(ordershub, live=True, extra_catalogue=("OLD-1", "OLD-2", "OLD-3"))
    ordershub.update_account(scene.marketplace, settings={"remote": scene.market.name, "reconcile_max_remove_share": 0.25})

    report = ordershub.run(scene.marketplace, "reconcile")

    assert report.item("OLD-3").outcome == "ok" and ordershub.events("reconcile.removals_refused") == []


def test_removals_go_in_batches_of_the_channel_limit(ordershub: OrdersHub) -> None:
    old = tuple(f"OLD-{n:02d}" for n in range(25))
    scene = listed(ordershub, live=True, extra_catalogue=old)
    ordershub.update_account(scene.marketplace, settings={"remote": scene.market.name, "reconcile_max_remove_share": 1})

    ordershub.run(scene.marketplace, "reconcile")

    assert not any(scene.market.listings[sku].active for sku in old)
    # max_batch 10: ceil(25 / 10) calls to remove, then one for the price fix and one for the stock fix
    assert scene.market.batch_sizes == [10, 10, 5, 1, 1]


def test_a_listing_the_hub_made_for_a_sku_gone_from_the_catalogue_is_removed(ordershub: OrdersHub) -> None:
    scene = listed(ordershub, live=True)
    scene.market.listings["GONE-1"] = listing_for("GONE-1")
    with ordershub.db.session() as session:
        bindings.bind(session, scene.marketplace, bindings.LISTING, internal_id=987654, external_id="GONE-1")

    report = ordershub.run(scene.marketplace, "reconcile", confirm_removals=False)

    assert report.item("GONE-1").outcome == "skipped"  # 2 of 14: above the share, so it waits for an admin
    [event] = ordershub.events("reconcile.plan")
    assert {"sku": "GONE-1", "reason": "the hub listed it, and it is no longer in the catalogue"} in event.data["remove"]


def test_an_account_without_a_label_is_never_reconciled(ordershub: OrdersHub) -> None:
    scene = listed(ordershub, live=True)
    ordershub.update_account(scene.marketplace, label_id=None)

    report = ordershub.run(scene.marketplace, "reconcile")

    assert report.item("Iconic AU").outcome == "skipped" and "has no label" in report.item("Iconic AU").message
    assert scene.market.calls == {}
