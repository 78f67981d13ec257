"""The last unit of a SKU sold on two marketplaces at once.

Two Iconic marketplaces list the same catalogue from Shopify; a SKU has one unit left, both show 1, and
a shopper on each buys it at the same moment. The two accounts' orders runs then import, check and
route concurrently. Expected: the oversell is detected (a ``stock.oversell`` error event, which is in
the admin's notification digest), the policy of the marketplace that sold the later order is applied
(``hold``: the order waits in error, held; ``cancel``: it is cancelled on its marketplace with a
reason), exactly one order reaches Shopify and Starshipit, and both marketplaces show 0 after the
stock push those runs make — no scheduled stock run needed.

The quick test runs the two orders runs in two threads of this process; the full one races ten SKUs
through the real fleet.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from hub import notify
from hub.flows import orders as orders_flow
from hub.models import Order, OrderStatus
from tests.chaos.harness import Figures, World, record

LOCATIONS = ("Sydney Warehouse", "Melbourne Store")


def _last_units(world: World, skus: list[str], policy: str) -> None:
    """One unit of each SKU left in Shopify, imported and listed on both marketplaces (which show 1)."""
    for sku in skus:
        for location, units in zip(LOCATIONS, (1, 0), strict=True):
            world.control("shopify", "POST", "/_control/stock", {"sku": sku, "available": units, "location": location})
    world.set_up(settings={"oversell_policy": policy})
    for marketplace in world.marketplaces:
        world.run_inline(marketplace, "stock")
    assert all(_shows(world, m, sku) == 1 for m in world.marketplaces for sku in skus)


def _shows(world: World, marketplace: str, sku: str) -> int:
    state = world.sandboxes[marketplace].state
    with world.sandboxes[marketplace].app.app.app.lock:  # the sandbox's own request lock (TrackingWrites > Serialized)
        return next(p["available"] for p in state.products_view() if p["sellerSku"] == sku)


def _outcome(world: World, skus: list[str], policy: str) -> dict[str, object]:
    with world.db.session() as session:
        orders = list(session.scalars(select(Order).where(Order.organisation_id == world.organisation_id)))
        for order in orders:
            order.lines  # noqa: B018
    by_sku: dict[str, Counter] = {sku: Counter() for sku in skus}
    for order in orders:
        state = "held" if orders_flow.is_held(order) else order.status.value
        for line in order.lines:
            if line.sku in by_sku:
                by_sku[line.sku][state] += 1
    shopify = Counter(str(order.name) for order in world.sandboxes["shopify"].state.orders.values())
    starshipit = Counter(str(s.order["order_number"]) for s in world.sandboxes["starshipit"].state.orders.values())
    return {"by_sku": by_sku, "shopify": shopify, "starshipit": starshipit, "orders": orders,
            "shows": {(m, sku): _shows(world, m, sku) for m in world.marketplaces for sku in skus}}


def _check(world: World, skus: list[str], policy: str, outcome: dict, figures: Figures) -> None:
    loser = "held" if policy == "hold" else OrderStatus.CANCELLED.value
    winners = [o for o in outcome["orders"] if o.status is OrderStatus.ROUTED or o.status is OrderStatus.CONFIRMED]
    figures.placed = len(outcome["orders"])
    figures.imported = len(outcome["orders"])
    figures.destination = sum(1 for o in winners if outcome["shopify"][o.order_number] == 1)
    figures.fulfilment = sum(1 for o in winners if outcome["starshipit"][o.order_number] == 1)
    figures.tracking = None  # nothing is dispatched here
    figures.duplicated = sum(max(0, n - 1) for n in (*outcome["shopify"].values(), *outcome["starshipit"].values()))
    losers = [o for o in outcome["orders"] if o not in winners]
    figures.lost = sum(1 for o in losers if outcome["shopify"][o.order_number] or outcome["starshipit"][o.order_number])
    oversells = {e.data["sku"] for e in world.events("stock.oversell")}
    with world.db.session() as session:
        digest = {e.data.get("sku") for e in notify.pending_events(session, world.organisation_id,
                                                                   list(notify.NOTABLE_KINDS), datetime.now(UTC))
                  if e.kind == "stock.oversell"}
    nonzero = {key: value for key, value in outcome["shows"].items() if value != 0}
    figures.notes = (f"{policy}: per SKU {[dict(c) for c in outcome['by_sku'].values()]}; oversell events for "
                     f"{len(oversells)} of {len(skus)} SKUs (all in the admin's digest: {oversells == digest}); "
                     f"marketplaces not at 0 after the push: {nonzero or 'none'}")
    figures.details.update({"policy": policy, "oversold SKUs reported": sorted(oversells), "not at 0": nonzero})
    record(figures)
    for sku, states in outcome["by_sku"].items():
        assert states == Counter({"routed": 1, loser: 1}), (sku, states)
    assert figures.destination == figures.fulfilment == len(skus) and figures.duplicated == 0
    assert figures.lost == 0, "an order the policy took back reached the order system"
    assert oversells == set(skus) and digest == set(skus)
    assert not nonzero, f"marketplaces still offering a unit that is gone: {nonzero}"
    if policy == "cancel":
        iconic_items = [i for m in world.marketplaces for i in world.sandboxes[m].state.items.values()]
        assert Counter(i["status"] for i in iconic_items)["canceled"] == len(skus)
        assert len(world.events("order.oversell_cancelled")) == len(skus)
    else:
        assert len(world.events("order.held")) == len(skus)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy", ["hold", "cancel"])
def test_the_last_unit_sold_on_two_marketplaces_at_once_quick(pg_url, chaos_redis, tmp_path, policy) -> None:
    world = World(tmp_path, pg_url, chaos_redis, marketplaces=2)
    try:
        world.start_sandboxes()
        sku = world.skus[0]
        _last_units(world, [sku], policy)
        world.place_order("iconic", [sku], 1)
        world.place_order("iconic1", [sku], 1)  # both at once: each marketplace still showed 1
        errors: list[BaseException] = []

        def orders_run(marketplace: str) -> None:
            try:
                world.run_inline(marketplace, "orders")
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=orders_run, args=(m,)) for m in world.marketplaces]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        figures = Figures(f"last unit, two marketplaces at once ({policy}, quick)", "1 SKU with 1 unit, 2 orders",
                          "both marketplaces sell it at the same moment; their orders runs run concurrently",
                          f"oversell_policy={policy}")
        figures.seconds = time.monotonic() - world.started
        _check(world, [sku], policy, _outcome(world, [sku], policy), figures)
    finally:
        world.close()


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.parametrize("policy", ["hold", "cancel"])
def test_the_last_units_race_through_the_fleet(world_factory, policy) -> None:
    """Ten SKUs down to their last unit, each bought on both marketplaces at the same moment, while
    three workers run both accounts' orders flows every second."""
    world = world_factory(marketplaces=2, set_up=False)
    skus = world.skus[:10]
    _last_units(world, skus, policy)
    world.start_fleet(workers=3)
    for sku in skus:
        world.place_order("iconic", [sku], 1)
        world.place_order("iconic1", [sku], 1)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with world.db.session() as session:
            waiting = session.scalar(select(Order.id).where(Order.organisation_id == world.organisation_id,
                                                            Order.status == OrderStatus.IMPORTED).limit(1))
            count = len(list(session.scalars(select(Order.id).where(Order.organisation_id == world.organisation_id))))
        if count == 2 * len(skus) and waiting is None and not [r for r in world.pending_runs() if r.flow == "stock"]:
            break
        time.sleep(0.5)
    figures = Figures(f"last units race through the fleet ({policy})", f"{len(skus)} SKUs with 1 unit each, "
                      f"{2 * len(skus)} orders, 3 workers",
                      "each SKU bought on both marketplaces at the same moment; both orders flows every second",
                      f"oversell_policy={policy}")
    figures.seconds = time.monotonic() - world.started
    _check(world, skus, policy, _outcome(world, skus, policy), figures)
