"""Every sandbox injects faults while orders flow end to end through real RQ workers.

The Iconic (marketplace), Shopify (order destination, catalogue source) and Starshipit (fulfilment)
each answer 10 % of requests with a 5xx, 5 % with a 429, let 2 % time out and drop 1 % of
connections, while shoppers place orders on The Iconic and the warehouse dispatches what reaches
Starshipit. Every order must be created exactly once in Shopify and in Starshipit, its tracking
written back to The Iconic exactly once, and none lost.

The quick test (60 orders) runs in ``make test``; the full one (1,000 orders) in ``make chaos``.
"""

from __future__ import annotations

import time

import pytest

from tests.chaos.harness import Figures, describe_faults, fault_rates

WORKERS = 3


def _scenario(world_factory, name: str, orders: int, per_second: float, retry_after: float, timeout: float,
              lose_every: float) -> None:
    world = world_factory()
    world.start_fleet(workers=WORKERS)
    rates = fault_rates()
    world.set_faults({**rates, "retry_after": retry_after})
    faults = f"{describe_faults(rates)} on all 3 sandboxes (429 with Retry-After {retry_after:g} s)"
    figures = Figures(name, f"{orders} orders at {per_second:g}/s, {WORKERS} workers", faults,
                      "orders of 1-2 SKUs x 1-2 units; dispatch 0.5 s after Starshipit has them")
    shopping_ends = time.monotonic() + orders / per_second
    next_loss = [time.monotonic() + lose_every]

    def lose_answers() -> None:  # one order create per destination applied, its answer lost
        if time.monotonic() >= next_loss[0] and time.monotonic() < shopping_ends:
            world.lose_next_answers(1)
            next_loss[0] = time.monotonic() + lose_every

    figures, finished = world.run_load(figures, orders, per_second=per_second, timeout=timeout, on_tick=lose_answers)
    injected = figures.details["injected"]
    figures.faults += (f": {sum(injected.values())} faults in {figures.details['requests']} requests; plus "
                       f"{world.answers_lost} order creates per destination applied with the answer lost")
    figures.inputs += f"; an answer lost after the commit every {lose_every:g} s"
    figures.notes = (f"faults injected {injected}; tracking writes refused by The Iconic "
                     f"{figures.details['refused_tracking_writes']}")
    assert finished, f"not every order was confirmed in {timeout:.0f} s: {figures.details}"
    assert figures.placed == orders
    assert figures.duplicated == 0, figures.details["duplicated"]
    assert figures.lost == 0, figures.details["missing"]
    assert (figures.imported, figures.destination, figures.fulfilment, figures.tracking) == (orders,) * 4
    assert sum(injected.values()) > 0


@pytest.mark.timeout(240)
def test_orders_flow_end_to_end_under_faults_quick(world_factory) -> None:
    _scenario(world_factory, "faults (quick)", 60, per_second=6, retry_after=0.5, timeout=180, lose_every=2)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_orders_flow_end_to_end_under_faults(world_factory) -> None:
    _scenario(world_factory, "faults", 1000, per_second=4, retry_after=1.0, timeout=3000, lose_every=5)
