"""Worker processes die, Redis restarts, PostgreSQL restarts — while orders flow end to end.

- Workers are SIGKILLed at random moments every few seconds, mostly in the middle of a job: the whole
  worker with its work horse (a crashed machine), only the work horse (the OOM killer), or only the
  worker (its horse finishes as an orphan). A new worker takes the dead one's place, as a supervisor
  would start one. The figures must stay the same: every order once in Shopify and in Starshipit,
  every tracking number written back once, none lost.
- Redis is restarted without persistence (every queue, scheduled retry, lock and cron entry is gone)
  and PostgreSQL is stopped and started, twice each, mid-run. Nothing restarts the hub's processes
  here: the hub has to recover by itself (``hub.fleet``: workers and the scheduler wait for Redis
  and start over; every tick fails runs whose worker died and queues again runs whose job Redis lost).

Restarting the shared services disturbs every other test using them, so those scenarios are only in
the full suite (``-m chaos``, ``make chaos``); the quick SIGKILL test runs in ``make test``.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.chaos.harness import (
    Figures,
    describe_faults,
    fault_rates,
    restart_postgres,
    restart_redis,
)

WORKERS = 3


def _recovered(figures: Figures) -> str:
    details = figures.details
    return (f"the ticks failed {details['runs failed as abandoned']} abandoned runs (the schedule ran their flows "
            f"again), queued {details['runs queued again']} runs again and moved {details['overdue jobs moved']} "
            "overdue retries")


def _assert_all_there(figures: Figures, orders: int, finished: bool) -> None:
    assert finished, f"not every order was confirmed in time: {figures.details}"
    assert figures.placed == orders
    assert figures.duplicated == 0, figures.details["duplicated"]
    assert figures.lost == 0, figures.details["missing"]
    assert (figures.imported, figures.destination, figures.fulfilment, figures.tracking) == (orders,) * 4


def _sigkill(world_factory, name: str, orders: int, per_second: float, every: tuple[float, float],
             timeout: float) -> None:
    world = world_factory()
    fleet = world.start_fleet(workers=WORKERS)
    rng = random.Random(20260)
    shopping_ends = time.monotonic() + orders / per_second
    next_kill = [time.monotonic() + rng.uniform(*every)]

    def kill() -> None:
        now = time.monotonic()
        if now >= next_kill[0] and now < shopping_ends + 10:  # kills go on a little past the last order
            fleet.kill_random(rng)
            next_kill[0] = now + rng.uniform(*every)

    figures = Figures(name, f"{orders} orders at {per_second:g}/s, {WORKERS} workers",
                      f"SIGKILL every {every[0]:g}-{every[1]:g} s", "")
    figures, finished = world.run_load(figures, orders, per_second=per_second, timeout=timeout, on_tick=kill)
    kills = figures.details["kills"]
    figures.faults = (f"{sum(kills.values())} SIGKILLs every {every[0]:g}-{every[1]:g} s (80 % aimed at a worker "
                      f"mid-job): {kills.get('machine', 0)} worker with its job, {kills.get('horse', 0)} horse only, "
                      f"{kills.get('worker', 0)} worker only (the last two with --fork workers only)")
    figures.inputs = "a new worker replaces each dead one (a supervisor's job); orders of 1-2 SKUs x 1-2 units"
    figures.notes = _recovered(figures)
    _assert_all_there(figures, orders, finished)
    assert sum(kills.values()) >= 3


@pytest.mark.timeout(240)
def test_sigkilled_workers_quick(world_factory) -> None:
    _sigkill(world_factory, "SIGKILL (quick)", 30, per_second=3, every=(1.5, 3), timeout=180)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_sigkilled_workers(world_factory) -> None:
    _sigkill(world_factory, "SIGKILL", 500, per_second=2, every=(2, 6), timeout=3000)


def _restarts(world_factory, name: str, restart, what: str, orders: int, per_second: float, times: int,
              timeout: float) -> None:
    world = world_factory()
    fleet = world.start_fleet(workers=WORKERS)
    rates = fault_rates(rate_5xx=0.05, rate_429=0.03, rate_timeout=0.01, rate_drop=0.005)
    world.set_faults({**rates, "retry_after": 1.0})  # so retries and deferrals wait in Redis when it goes
    shopping = orders / per_second
    due = [time.monotonic() + shopping * (n + 1) / (times + 1) for n in range(times)]
    done: list[str] = []
    alive_after: list[dict[str, bool]] = []

    def restart_when_busy() -> None:
        if due and time.monotonic() >= due[0] and (world.busy() or time.monotonic() >= due[0] + 10):
            due.pop(0)
            took = restart()
            done.append(f"{took:.1f} s")
            time.sleep(2)
            alive_after.append(fleet.alive())

    figures = Figures(name, f"{orders} orders at {per_second:g}/s, {WORKERS} workers", "", "")
    figures, finished = world.run_load(figures, orders, per_second=per_second, timeout=timeout, on_tick=restart_when_busy)
    figures.faults = (f"{what} restarted {len(done)} times mid-run (down {', '.join(done)}), while a flow ran; "
                      f"plus {describe_faults(rates)}")
    figures.inputs = "no process is restarted for the hub: it must recover by itself"
    figures.notes = f"processes alive 2 s after each restart: {alive_after}; {_recovered(figures)}"
    _assert_all_there(figures, orders, finished)
    assert len(done) == times
    assert all(fleet.alive().values()), f"a hub process died: {fleet.alive()}"


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_redis_restarts_mid_run(world_factory) -> None:
    _restarts(world_factory, "Redis restart", restart_redis, "Redis (no persistence: all queues lost)", 300,
              per_second=3, times=2, timeout=1500)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_postgres_restarts_mid_run(world_factory) -> None:
    _restarts(world_factory, "PostgreSQL restart", restart_postgres, "PostgreSQL (stopped 5 s)", 300,
              per_second=3, times=2, timeout=1500)
