"""The demo end to end: the four sandboxes, the seed, the accounts, every flow, the simulator, the UI.

``start_demo`` runs in-process on free ports with a small catalogue and schedules of a few seconds,
for a bounded time, against a fresh instance folder. What each assertion depends on:

| assertion | needs |
|---|---|
| sandboxes seeded, organisation / admin / label / accounts in Testing, carrier map, UI serves | ``plugins.demo.runner`` only |
| duplicate SKU recorded | the ``catalog`` flow (duplicate detection) |
| missing EAN is a rejected listing | the ``catalog`` and ``listings`` flows (required-attribute check) |
| trailing-space SKU reported | the Shopify channel handing the variant to the ``catalog`` flow, which rejects it |
| listings on The Iconic sandbox | ``catalog`` + ``listings`` flows, **and the Shopify channel giving products a gender** |
| an order created in Shopify | the above + the ``orders`` flow (import, routing to Shopify and Starshipit) |
| tracking written back to The Iconic | the above + the ``fulfilment`` flow and the carrier map |
| restart: same organisation, user, password, accounts; new sandbox URLs; product reset | ``plugins.demo.runner`` + the ``reset`` flow |

"""

from __future__ import annotations

import logging
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from hub.app import open_hub
from hub.config import load_config
from plugins.demo.runner import (
    ADMIN_EMAIL,
    CREDENTIALS_FILE,
    ICONIC,
    SHOPIFY,
    STARSHIPIT,
    UPHANCE,
    DemoOptions,
    RunningDemo,
    run_demo,
    start_demo,
)
from hub.models import (
    AccountStatus,
    CarrierMap,
    ChannelAccount,
    DuplicateSku,
    Event,
    Label,
    Order,
    Organisation,
    SyncRun,
    SyncRunItem,
    User,
    Variant,
)
from hub.users import authenticate

pytestmark = pytest.mark.timeout(180)

SKUS = 60
RUN_SECONDS = 50  # the first run is watched at most this long
FAST = {
    SHOPIFY: {"catalog": 8, "catalog_full": 30},
    UPHANCE: {"catalog": 30},
    ICONIC: {"listings": 3, "stock": 3, "orders": 3, "fulfilment": 3, "reconcile": 15},
}


def options(**changes: Any) -> DemoOptions:
    values: dict[str, Any] = dict(port=0, sandbox_port=0, skus=SKUS, orders_per_minute=30, dispatch_after=2,
                                  schedules=FAST, tick_seconds=0.5, approval_delay=5)
    values.update(changes)
    return DemoOptions(**values)


def open_instance(folder: Path):  # type: ignore[no-untyped-def]
    return open_hub(load_config({"CHANNELHUB_INSTANCE": str(folder)}))


def wait_for(check, until: float, every: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it returns something truthy or the monotonic deadline passes; its last answer."""
    while True:
        answer = check()
        if answer or time.monotonic() >= until:
            return answer
        time.sleep(every)


def rows(demo: RunningDemo, query: Any) -> list[Any]:
    with demo.hub.db.session() as session:
        return list(session.scalars(query))


def items(demo: RunningDemo, account: str, flow: str, key: str | None = None) -> list[SyncRunItem]:
    query = (select(SyncRunItem).join(SyncRun).where(SyncRun.account_id == demo.setup.account_ids[account],
                                                       SyncRun.flow == flow).order_by(SyncRunItem.id))
    if key is not None:
        query = query.where(SyncRunItem.key == key)
    return rows(demo, query)


def sandbox(demo: RunningDemo, name: str, path: str) -> Any:
    return httpx.get(f"{demo.sandboxes.url(name)}{path}", timeout=10).json()


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_demo_end_to_end(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="channelhub.channel")
    hub = open_instance(tmp_path)
    started = time.monotonic()
    deadline = started + RUN_SECONDS
    demo = start_demo(hub, options())
    try:
        problems = demo.seeded.shopify.problems

        # -- plugins.demo.runner itself: seed, setup, UI -------------------------------------------------------
        assert sandbox(demo, "shopify", "/_control/state")["variants"] == SKUS
        assert demo.setup.created
        with hub.db.session() as session:
            accounts = {a.name: a for a in session.scalars(select(ChannelAccount))}
            assert set(accounts) == {ICONIC, SHOPIFY, UPHANCE, STARSHIPIT}
            assert all(a.status == AccountStatus.TESTING for a in accounts.values())
            iconic = accounts[ICONIC]
            assert (iconic.source_account_id, iconic.destination_account_id, iconic.fulfilment_account_id) == (
                accounts[SHOPIFY].id, accounts[SHOPIFY].id, accounts[STARSHIPIT].id)
            assert session.get(Label, iconic.label_id).name == "the-iconic"
            assert iconic.listings_enabled and iconic.reconciler_enabled and iconic.orders_enabled
            assert iconic.fulfilments_enabled
            assert iconic.schedules["orders"] == 3
            assert {m.source_carrier for m in session.scalars(select(CarrierMap))} >= {"auspost", "startrack"}
            assert accounts[ICONIC].base_url == demo.sandboxes.url("iconic")
            assert authenticate(session, ADMIN_EMAIL, demo.setup.admin_password) is not None
        credentials = tmp_path / CREDENTIALS_FILE
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert demo.setup.admin_password in credentials.read_text()
        assert httpx.get(f"{demo.web_url}/login", timeout=10).status_code == 200

        # -- the catalog flow: duplicate SKU recorded ---------------------------------------------------
        duplicate = wait_for(lambda: rows(demo, select(DuplicateSku).where(DuplicateSku.sku == problems.duplicate_sku)),
                             deadline)
        assert duplicate, f"duplicate SKU {problems.duplicate_sku} was not recorded"
        assert rows(demo, select(Variant.duplicate).where(Variant.sku == problems.duplicate_sku)) == [True]
        assert wait_for(lambda: rows(demo, select(Event).where(Event.kind == "catalog.duplicate_sku")), deadline)

        # -- the listings flow: missing EAN rejected before anything is sent -----------------------
        rejected = wait_for(lambda: [i for i in items(demo, ICONIC, "listings", problems.missing_ean_sku)
                                     if i.outcome == "rejected"], deadline)
        assert rejected, f"{problems.missing_ean_sku} (no EAN) was not reported as a rejected listing"
        assert rejected[0].field == "barcode" and "barcode (EAN)" in rejected[0].message
        assert wait_for(lambda: rows(demo, select(Event).where(Event.kind == "listing.rejected")), deadline)

        # -- the trailing-space SKU -------------------------------------------------------------------
        spaced = [i for i in items(demo, SHOPIFY, "catalog") if i.key.strip() == problems.trailing_space_sku.strip()
                  and i.outcome == "rejected"]
        assert spaced, f"{problems.trailing_space_sku!r} was not rejected by the catalog flow"

        # -- listings on The Iconic, orders in Shopify, tracking written back -----------------------------
        listed = wait_for(lambda: sandbox(demo, "iconic", "/_control/products")["products"], deadline)
        reasons = {i.message for i in items(demo, ICONIC, "listings") if i.outcome == "rejected"}
        assert listed, f"no listings on The Iconic in {RUN_SECONDS} s; rejections: {reasons}"
        skus = {p["sellerSku"] for p in listed}
        assert problems.missing_ean_sku not in skus and problems.duplicate_sku not in skus
        assert skus <= set(demo.seeded.shopify.labelled_skus)

        in_shopify = wait_for(lambda: sandbox(demo, "shopify", "/_control/state")["orders"], deadline)
        assert in_shopify, f"no order reached Shopify in {RUN_SECONDS} s (placed: {demo.simulator.placed})"
        assert all("channelhub" in order["tags"] for order in in_shopify)
        assert {o["name"] for o in in_shopify} <= set(demo.simulator.placed)

        def tracked() -> list[dict[str, Any]]:
            orders = sandbox(demo, "iconic", "/_control/orders")["orders"]
            return [o for o in orders if any(i["trackingCode"] and i["status"] == "shipped" for i in o["items"])]

        shipped = wait_for(tracked, deadline)
        assert shipped, f"no tracking reached The Iconic in {RUN_SECONDS} s (dispatched: {demo.simulator.dispatched})"
        assert shipped[0]["items"][0]["shippingProvider"] in ("Australia Post", "StarTrack")
        confirmed = rows(demo, select(Order).where(Order.order_number == shipped[0]["number"]))
        assert confirmed and confirmed[0].status.value in ("fulfilled", "confirmed")
        assert time.monotonic() - started < 60
    finally:
        demo.stop()
        hub.close()
    assert all(not thread.is_alive() for thread in threading.enumerate() if thread.name.startswith("channelhub-"))


def test_restart_reuses_the_instance(tmp_path: Path) -> None:
    hub = open_instance(tmp_path)
    first = start_demo(hub, options(orders_per_minute=0))
    try:
        first_urls = {name: first.sandboxes.url(name) for name in ("iconic", "shopify")}
        password = first.setup.admin_password
        ids = dict(first.setup.account_ids)
        wait_for(lambda: rows(first, select(SyncRun).where(SyncRun.flow == "catalog", SyncRun.finished_at.is_not(None))),
                 time.monotonic() + 20)
    finally:
        first.stop()
        hub.close()

    hub = open_instance(tmp_path)  # a new process would open the same instance folder
    second = start_demo(hub, options(orders_per_minute=0))
    try:
        assert not second.setup.created and second.run_number == 2
        assert second.setup.account_ids == ids
        assert second.setup.admin_password == password
        with hub.db.session() as session:
            assert session.scalar(select(func.count()).select_from(Organisation)) == 1
            assert session.scalar(select(func.count()).select_from(User)) == 1
            assert session.scalar(select(func.count()).select_from(ChannelAccount)) == 4
            assert session.scalar(select(func.count()).select_from(Label)) == 1
            assert authenticate(session, ADMIN_EMAIL, password) is not None
            accounts = {a.name: a for a in session.scalars(select(ChannelAccount))}
            assert accounts[ICONIC].base_url == second.sandboxes.url("iconic") != first_urls["iconic"]
            assert accounts[SHOPIFY].base_url == second.sandboxes.url("shopify") != first_urls["shopify"]
            assert all(a.status == AccountStatus.TESTING for a in accounts.values())
        # The new Iconic sandbox is empty: a product reset re-matches before anything is pushed.
        assert second.reset_run_id is not None
        finished = wait_for(lambda: rows(second, select(SyncRun.status).where(SyncRun.id == second.reset_run_id,
                                                                            SyncRun.finished_at.is_not(None))),
                            time.monotonic() + 20)
        assert finished and finished[0].value in ("ok", "partial"), finished
        # Ids of this run's sandboxes never repeat the first run's (orders, listings, shipments).
        assert second.sandboxes.apps["starshipit"].state.next_id > 1_000_000
        assert second.sandboxes.apps["iconic"].state.next_id() > 1_000_000
        assert second.sandboxes.apps["shopify"].state.next_id("Order") > "gid://shopify/Order/1000000"
    finally:
        second.stop()
        hub.close()


def test_run_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """``run_demo`` (the command) prints the sign-in details, and Ctrl-C stops everything it started."""
    hub = open_instance(tmp_path)
    printed: list[str] = []
    ports: list[int] = []

    def out(text: str) -> None:
        printed.append(text)
        if "Sign in as" in text:
            ports.extend(int(line.rsplit(":", 1)[1].split("/")[0]) for line in text.splitlines()
                         if line.strip().startswith("Admin UI"))
            raise KeyboardInterrupt  # what Ctrl-C does to the main thread

    try:
        run_demo(hub, port=0, skus=SKUS, orders_per_minute=0, sandbox_port=0, out=out)
    finally:
        hub.close()
    banner = printed[0]
    assert ADMIN_EMAIL in banner and "Password" in banner and "http://127.0.0.1:" in banner
    assert printed[-1].startswith("Stopped.")
    assert ports and port_is_free(ports[0])
    assert not [t for t in threading.enumerate() if t.name.startswith(("channelhub-", "sandbox:")) and t.is_alive()]


def test_seed_catalogue_is_deterministic_and_plants_three_problems() -> None:
    from plugins.demo import catalogue as seed

    first, again = seed.shopify_catalogue(1000), seed.shopify_catalogue(1000)
    assert first.records() == again.records()  # same catalogue on every run and machine
    assert len(first.skus) == 1000 and len(seed.shopify_catalogue(60).skus) == 60
    problems = first.problems
    assert first.skus.count(problems.duplicate_sku) == 2
    holders = [p for p in first.products if problems.duplicate_sku in {v.sku for v in p.variants}]
    assert len(holders) == 2  # on two different products, as a copy-paste mistake would be
    assert problems.trailing_space_sku.endswith(" ") and problems.trailing_space_sku in first.skus
    missing = [v for p in first.products for v in p.variants if not v.barcode]
    assert [v.sku for v in missing] == [problems.missing_ean_sku]
    barcodes = [v.barcode for p in first.products for v in p.variants if v.barcode]
    assert len(set(barcodes)) == len(barcodes)
    assert all(len(b) == 13 and int(b[-1]) == seed.ean_check_digit(b[:12]) for b in barcodes)
    for sku in (problems.duplicate_sku, problems.missing_ean_sku, problems.trailing_space_sku):
        assert sku in first.labelled_skus  # the planted problems are in what The Iconic should list
    assert {p.season for p in first.products} == {"AW25", "SS26"}
    assert len({p.brand for p in first.products}) == 4
    assert all(f"gender:{p.gender}" in p.tags and f"season:{p.season}" in p.tags for p in first.products)
    assert 0 < len(first.labelled_skus) < len(first.skus)
    with pytest.raises(ValueError):
        seed.shopify_catalogue(seed.MIN_SKUS - 1)

    uphance = seed.uphance_catalogue([{"name": "Wholesale AUD", "currency": "AUD"}])
    assert uphance == seed.uphance_catalogue([{"name": "Wholesale AUD", "currency": "AUD"}])
    assert {p["brand"] for p in uphance.products} == {seed.UPHANCE_BRAND}
    assert {s["name"] for s in uphance.seasons} == {"AW25", "SS26"}
    assert not set(uphance.skus) & set(first.skus)
