"""Product reset: pause orders and stock, re-match every listed SKU, suggest near misses, resume."""

from __future__ import annotations

import pytest

from hub import bindings
from hub.errors import TransientError
from hub.flows import reset as reset_flow
from hub.flows import stock as stock_flow
from hub.flows.reset import RESET_SETTING, reset_in_progress
from hub.models import RunStatus, utcnow
from tests.flows_fixtures_b import OrdersHub, listing_for, ordershub  # noqa: F401
from tests.storage_fixtures import box, database, organisation  # noqa: F401


@pytest.fixture(autouse=True)
def _no_stock_pushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stock_flow, "push_stock_now", lambda *args, **kwargs: [])


def test_a_reset_lists_unmatched_skus_with_near_miss_suggestions(ordershub: OrdersHub) -> None:
    scene = ordershub.scene(live=True)
    ordershub.seed("ABC-1", "ABC-2", "DRESS-10", "DRESS-12", label_id=scene.label_id)
    for sku in ("abc_1", "ABC 2", "DRESS-10", "DRESS-11", "ZZZ-9"):
        scene.market.listings[sku] = listing_for(sku)
    scene.market.listings["OLD-1"] = listing_for("OLD-1", active=False)  # taken down: not shown

    report = ordershub.run(scene.marketplace, "reset")

    assert report.status is RunStatus.PARTIAL  # unmatched SKUs are problems to fix
    assert report.item("DRESS-10").outcome == "ok"
    assert report.item("abc_1").message == "listed on the channel but not in the catalogue; did you mean 'ABC-1'?"
    assert report.item("ZZZ-9").message.endswith("and no catalogue SKU is close")
    [finished] = ordershub.events("reset.finished")
    assert finished.data["unmatched"] == [
        {"sku": "ABC 2", "suggestions": ["ABC-2"]},
        {"sku": "DRESS-11", "suggestions": []},  # one digit off is another size, never a suggestion
        {"sku": "ZZZ-9", "suggestions": []},
        {"sku": "abc_1", "suggestions": ["ABC-1"]},
    ]
    assert (finished.data["listed"], finished.data["matched"]) == (5, 1)
    assert finished.data["not_listed"] == ["ABC-1", "ABC-2", "DRESS-12"]
    assert "4 unmatched (2 with suggestions)" in finished.message and finished.level == "warning"
    assert finished.data["toggles"]["orders_enabled"] is True
    assert RESET_SETTING not in ordershub.account_row(scene.marketplace).settings
    assert scene.market.calls == {"list_listings": 1}  # it reads; it changes nothing on the channel


def test_orders_and_the_reconciler_wait_while_the_reset_runs(ordershub: OrdersHub, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = ordershub.scene(live=True, reconciler_enabled=True)
    ordershub.seed("TEE-1", label_id=scene.label_id)
    ordershub.place(scene.market, "1001", {"TEE-1": 1})
    during: dict[str, object] = {}
    original = reset_flow.match

    def match_while_others_try(ctx, listed):  # type: ignore[no-untyped-def]
        during["in_progress"] = reset_in_progress(ordershub.account_row(scene.marketplace))
        during["orders"] = ordershub.run(scene.marketplace, "orders")
        during["reconcile"] = ordershub.run(scene.marketplace, "reconcile")
        return original(ctx, listed)

    monkeypatch.setattr(reset_flow, "match", match_while_others_try)
    ordershub.run(scene.marketplace, "reset")

    assert during["in_progress"] is True
    for flow in ("orders", "reconcile"):
        item = during[flow].item("Iconic AU")  # type: ignore[attr-defined]
        assert item.outcome == "skipped" and "product reset" in item.message
    assert scene.market.calls["pull_orders"] == 0
    [started] = ordershub.events("reset.started")
    assert started.message == "Product reset of Iconic AU started: orders and listings paused until it finishes"

    after = ordershub.run(scene.marketplace, "orders")  # resumed
    assert after.item("1001").outcome == "ok"


def test_a_reset_that_fails_still_resumes_the_account(ordershub: OrdersHub) -> None:
    scene = ordershub.scene(live=True)
    for sku in ("A-1", "A-2", "A-3"):
        scene.market.listings[sku] = listing_for(sku)
    scene.market.fail_enumeration_after = 2

    report = ordershub.run(scene.marketplace, "reset")

    assert report.status is RunStatus.FAILED
    assert not reset_in_progress(ordershub.account_row(scene.marketplace))
    [aborted] = ordershub.events("reset.aborted")
    assert aborted.level == "warning" and "Start the reset again" in aborted.message
    assert ordershub.events("reset.finished") == []


def test_a_reset_keeps_the_account_settings_it_did_not_set(ordershub: OrdersHub) -> None:
    scene = ordershub.scene(live=True)
    ordershub.update_account(scene.marketplace, settings={"remote": scene.market.name, "order_email": "o@x.example"})

    ordershub.run(scene.marketplace, "reset")

    assert ordershub.account_row(scene.marketplace).settings == {"remote": scene.market.name, "order_email": "o@x.example"}


def test_a_transient_failure_in_the_middle_is_left_to_the_runtime(ordershub: OrdersHub) -> None:
    scene = ordershub.scene(live=True)
    scene.market.fail_with = TransientError("503")

    report = ordershub.run(scene.marketplace, "reset")

    assert report.status is RunStatus.FAILED and "503" in (report.error or "")
    assert not reset_in_progress(ordershub.account_row(scene.marketplace))


def test_only_a_marketplace_in_testing_or_live_is_reset(ordershub: OrdersHub) -> None:
    account_id, state = ordershub.account("Draft", status="setup")

    report = ordershub.run(account_id, "reset")

    assert report.item("Draft").outcome == "skipped" and "runs only in Testing or Live" in report.item("Draft").message
    assert state.calls == {}


def test_a_reset_links_listings_made_by_hand_so_stock_reaches_them(ordershub: OrdersHub) -> None:
    scene = ordershub.scene(live=True)
    ordershub.seed("TEE-1", "TEE-2", stock=4, label_id=scene.label_id)
    scene.market.listings["TEE-1"] = listing_for("TEE-1", quantity=9, external_id="ICONIC-77")  # listed by hand
    with ordershub.db.session() as session:  # TEE-2 was listed by the hub once, then taken down by hand
        variant_id = ordershub.variant("TEE-2").id
        bindings.bind(session, scene.marketplace, bindings.LISTING, internal_id=variant_id, external_id="TEE-2",
                      fingerprint="sent-before", sent_at=utcnow())

    ordershub.run(scene.marketplace, "reset")

    [linked] = [b for b in ordershub.bindings(scene.marketplace, bindings.LISTING) if b.external_id == "ICONIC-77"]
    assert linked.internal_id == str(ordershub.variant("TEE-1").id)
    [forgotten] = [b for b in ordershub.bindings(scene.marketplace, bindings.LISTING) if b.external_id == "TEE-2"]
    assert forgotten.fingerprint is None and forgotten.last_sent_at is None  # the listings flow lists it again
    ordershub.run(scene.marketplace, "stock")
    assert scene.market.listings["TEE-1"].quantity == 4  # the stock flow now reaches the hand-made listing


def test_a_listing_claimed_by_a_stale_binding_moves_to_the_matching_variant(ordershub: OrdersHub) -> None:
    scene = ordershub.scene(live=True)
    ordershub.seed("NEW-1", "OLD-1", label_id=scene.label_id)
    scene.market.listings["NEW-1"] = listing_for("NEW-1", external_id="ICONIC-5")
    with ordershub.db.session() as session:
        bindings.bind(session, scene.marketplace, bindings.LISTING, internal_id=ordershub.variant("OLD-1").id,
                      external_id="ICONIC-5")

    assert ordershub.run(scene.marketplace, "reset").item("NEW-1").outcome == "ok"

    [binding] = [b for b in ordershub.bindings(scene.marketplace, bindings.LISTING) if b.external_id == "ICONIC-5"]
    assert binding.internal_id == str(ordershub.variant("NEW-1").id)
