"""Benchmark 3: the order flow end to end, The Iconic -> Shopify + Starshipit -> tracking back.

    .venv/bin/python bench/order_flow.py --orders 1000 --workers 1,2,4 --latency 0,50 --mode embedded,fleet
    .venv/bin/python bench/order_flow.py --quick

For every combination of mode (``embedded``: hub.embedded.EmbeddedRuntime threads in this process;
``fleet``: FleetRuntime + ``hub.workerpool`` RQ worker processes on real Redis), sandbox latency
(ms, set through each sandbox's ``/_control/faults``), number of marketplace accounts and workers:

1. a fresh PostgreSQL schema and, per marketplace account, a "brand" set up by ``plugins.demo.runner.set_up``
   (organisation, label, Shopify = catalogue source + order destination, Starshipit = fulfilment
   with courier rules, The Iconic with its carrier map) against its own Iconic, Shopify and
   Starshipit sandboxes served by one child process per brand. Each brand is its own organisation:
   a brand's orders then push no stock to the other brands' accounts. The catalogue is imported
   by the catalog flow; The Iconic sandbox shows the labelled SKUs as listed. Listings, stock and
   the reconciler are off; ``orders`` and ``fulfilment`` run every ``--interval`` seconds;
2. ``--orders`` orders are placed through The Iconic sandboxes' control API as fast as one client
   process can (round-robin over the accounts); a dispatcher process (the warehouses) dispatches
   every order that reaches Starshipit at once (``/_control/dispatch``: label + tracking);
3. the bench waits until every order's tracking is written back to The Iconic, and reads the stage
   times from the database: Order.created_at (imported), the DESTINATION_ORDER binding (in
   Shopify), the FULFILMENT_ORDER binding (in Starshipit) and the FULFILMENT_SENT binding (tracking
   accepted by The Iconic); placement and dispatch times are the bench's own clock;
4. webhook phase: the scheduled orders run is switched off (interval 1 h) and ``--webhook-orders``
   orders are placed at ``--webhook-rate`` per second, each followed at once by
   ``runtime.enqueue(account, "orders", trigger="webhook", params={"order_ids": [id]})`` - what the
   webhook endpoint does. Its figure is placement -> created in Shopify.

Throughput = orders / (last tracking written back - first placement). Everything runs on one
machine (this process, the sandboxes, PostgreSQL, Redis and the workers share its cores), so the
bench also prints the CPU seconds per 1,000 orders each of them used over the same window (fleet:
the worker pool with its workers (and their work horses with `--fork`); embedded: this process;
the customers placing orders and the warehouses dispatching them are processes of their own):
where the CPU went. On a shared host it varies too (the sandboxes' figure, whose code does not
change, shows how busy the host was), so compare runs of one session.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    SandboxGroup,
    bench_database,
    percentile,
    record,
    tree_cpu_seconds,
)

REDIS_URL = os.environ.get("CHANNELHUB_BENCH_ORDERS_REDIS_URL", "redis://127.0.0.1:6379/11")
CATALOGUE_SKUS = 120
SANDBOX_NAMES = ("iconic", "shopify", "starshipit")
STAGES = ("placed->imported", "imported->in Shopify", "in Shopify->in Starshipit", "dispatched->tracking back",
          "placed->tracking back")

# Targets of issue 10.
TARGET_RATE = 30.0  # orders/s end to end, 2 workers, latency 0
TARGET_SCALE = {2: 1.8, 4: 3.2}  # throughput vs 1 worker at 50 ms
TARGET_WEBHOOK_P95 = 2.0  # s


# -- the sandboxes (built in the child) ----------------------------------------------------------------


# Shopify's GraphQL cost bucket by plan (shared/reference/shopify-api.md section 7.2): points, points/s.
SHOPIFY_PLANS = {"standard": (2000.0, 100.0), "plus": (20000.0, 1000.0)}


def make_brand_sandboxes(brand: int, shopify_plan: str = "standard") -> Any:
    bucket_size, restore_rate = SHOPIFY_PLANS[shopify_plan]

    def factory() -> dict[str, Any]:
        from plugins.demo.runner import _no_webhooks
        from plugins.iconic import sandbox as iconic
        from plugins.shopify import sandbox as shopify
        from plugins.starshipit import sandbox as starshipit

        offset = brand * 1_000_000
        return {
            "iconic": iconic.create_app(7 + brand, first_id=1000 + offset, approval_delay=None),
            "shopify": shopify.create_app(7 + brand, products=0, id_base=1000 + offset, sender=_no_webhooks,
                                          bucket_size=bucket_size, restore_rate=restore_rate),
            "starshipit": starshipit.create_app(7 + brand, seed_orders=0, first_order_id=100_001 + offset),
        }

    return factory


def seed_iconic_listed(app: Any, skus: list[str], brand: int) -> int:
    """The SKUs as listed, approved and active on The Iconic (what the listings flow would leave)."""
    state = app.state
    now = time.time()
    stamp = "2026-01-01T00:00:00+00:00"
    for index, sku in enumerate(skus):
        set_id, product_id = 5_000_000 + brand * 10_000 + index, 7_000_000 + brand * 10_000 + index
        state.product_sets[set_id] = {
            "id": set_id, "name": f"Product {sku}", "sellerSku": sku, "parentSku": sku, "brandId": 1,
            "primaryCategoryId": 11, "description": "", "attributes": {}, "createdAt": stamp, "updatedAt": stamp}
        state.products[product_id] = {
            "id": product_id, "uuid": f"prod-{product_id}", "sellerSku": sku, "shopSku": f"S{product_id}",
            "srcId": str(product_id), "productSetId": set_id, "approvalStatus": "approved", "status": "active",
            "variation": "M", "productIdentifier": "", "name": f"Product {sku}", "price": 49.95, "salePrice": None,
            "saleStartDate": None, "saleEndDate": None, "quantity": 1_000_000, "fulfilledByVenture": False,
            "createdAt": stamp, "updatedAt": stamp, "_createdAt": now}
    return len(state.products)


# -- the hub side ----------------------------------------------------------------------------------------


@dataclass
class Brand:
    index: int
    sandboxes: SandboxGroup
    iconic_id: int = 0
    shopify_id: int = 0
    starshipit_id: int = 0
    skus: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:  # the duck type plugins.demo.runner.set_up wants (Sandboxes.url)
        if name == "uphance":
            return "http://127.0.0.1:9"  # never served: the Uphance account is paused at once
        return self.sandboxes.urls[name]


@contextmanager
def _demo_names(brand: int):  # type: ignore[no-untyped-def]
    """plugins.demo.runner.set_up finds its organisation and admin by fixed names: one set of names per brand."""
    from plugins.demo import runner as demo

    saved = demo.ORGANISATION_NAME, demo.ORGANISATION_SLUG, demo.ADMIN_EMAIL
    demo.ORGANISATION_NAME = f"Bench brand {brand}"
    demo.ORGANISATION_SLUG = f"bench-brand-{brand}"
    demo.ADMIN_EMAIL = f"admin{brand}@bench.example.com"
    try:
        yield
    finally:
        demo.ORGANISATION_NAME, demo.ORGANISATION_SLUG, demo.ADMIN_EMAIL = saved


def set_up_brand(hub: Any, brand: Brand, interval: float, iconic_rate: float | None = None,
                 in_flight: int | None = None) -> None:
    import httpx
    from sqlalchemy import select

    from hub import accounts as lifecycle
    from plugins.demo import catalogue as demo_catalogue
    from plugins.demo import runner as demo
    from hub.jobs import create_run, execute_run
    from hub.locks import LocalLocks
    from hub.models import ChannelAccount, SyncRun, Variant

    catalogue = demo_catalogue.shopify_catalogue(CATALOGUE_SKUS, seed=demo_catalogue.SEED)
    records = catalogue.records()
    for product in records:  # plenty of stock: a burst of orders must not be held as oversold
        for variant in product["variants"]:
            variant["stock"] = {location: 1_000_000 for location in (variant["stock"] or {"Sydney": 0})}
    with httpx.Client(timeout=60) as client:
        demo._control(client, "POST", f"{brand.url('shopify')}/_control/products", {"products": records})
    never = 10 * 365 * 86400.0
    schedules = {demo.SHOPIFY: {"catalog": never, "catalog_full": never},
                 demo.ICONIC: {"orders": interval, "fulfilment": interval, "listings": never, "stock": never,
                               "reconcile": never}}
    options = demo.DemoOptions(skus=CATALOGUE_SKUS, schedules=schedules, serve_web=False)
    with _demo_names(brand.index):
        setup = demo.set_up(hub, brand, options)  # type: ignore[arg-type]
    ids = setup.account_ids
    brand.iconic_id, brand.shopify_id, brand.starshipit_id = ids[demo.ICONIC], ids[demo.SHOPIFY], ids[demo.STARSHIPIT]
    with hub.db.session() as session:
        iconic = session.get(ChannelAccount, brand.iconic_id)
        if iconic_rate is not None:  # The Iconic publishes no quota: the pace is an account setting
            iconic.settings = {**iconic.settings, "requests_per_second": iconic_rate}
        if in_flight is not None:  # requests a run keeps in flight where the channel cannot batch
            iconic.settings = {**iconic.settings, "write_back_concurrency": in_flight}
            shopify = session.get(ChannelAccount, brand.shopify_id)
            shopify.settings = {**shopify.settings, "create_concurrency": in_flight}
        for flow in ("listings", "reconciler"):
            lifecycle.set_flow(session, iconic, flow, False, "bench")
        lifecycle.pause(session, session.get(ChannelAccount, ids[demo.UPHANCE]), "bench")
    # The catalogue, by the catalog flow (also gives the schedule a "last run" for it).
    run_id = create_run(hub.db, brand.shopify_id, "catalog", trigger="manual")
    execute_run(hub.db, run_id, locks=LocalLocks(), retries_left=0, params={})
    with hub.db.session() as session:
        run = session.get(SyncRun, run_id)
        assert run.status.value in ("ok", "partial"), f"catalog import {run.status.value}: {run.error}"
        known = set(session.scalars(select(Variant.sku).where(Variant.organisation_id == setup.organisation_id,
                                                              Variant.active.is_(True),
                                                              Variant.duplicate.is_(False))))
    problems = catalogue.problems
    planted = {problems.duplicate_sku, problems.missing_ean_sku, problems.trailing_space_sku}
    brand.skus = [sku for sku in catalogue.labelled_skus if sku in known and sku not in planted and sku.strip() == sku]
    assert brand.skus, "no orderable SKU after the catalogue import"
    brand.sandboxes.call("iconic", seed_iconic_listed, brand.skus, brand.index)


def set_latency(brands: list[Brand], seconds: float) -> None:
    import httpx

    with httpx.Client(timeout=10) as client:
        for brand in brands:
            for name in SANDBOX_NAMES:
                client.post(f"{brand.url(name)}/_control/faults", json={"latency": seconds}).raise_for_status()


def set_orders_interval(db: Any, brands: list[Brand], seconds: float) -> None:
    from hub.models import ChannelAccount

    with db.session() as session:
        for brand in brands:
            account = session.get(ChannelAccount, brand.iconic_id)
            account.schedules = {**(account.schedules or {}), "orders": seconds}


# -- orders in, parcels out -------------------------------------------------------------------------------


class Shoppers:
    """Places orders on the brands' Iconic sandboxes (control API) and remembers when."""

    def __init__(self, brands: list[Brand], seed: int = 1) -> None:
        import httpx

        from plugins.demo.runner import ADDRESSES, CUSTOMERS

        self.brands, self.rng = brands, random.Random(seed)
        self.customers, self.addresses = CUSTOMERS, ADDRESSES
        self.client = httpx.Client(timeout=30)
        self.placed: dict[str, float] = {}  # order number -> time.time() when the sandbox had it
        self.ids: dict[str, tuple[int, str]] = {}  # order number -> (brand index, Iconic order id)

    def place(self, brand: Brand) -> tuple[str, str]:
        sku = self.rng.choice(brand.skus)
        first, last = self.rng.choice(self.customers)
        street, city, state, postcode = self.rng.choice(self.addresses)
        address = {"firstName": first, "lastName": last, "phone": ["0400000000"], "address": [street, "", "", "", ""],
                   "email": f"{first.lower()}.{last.lower()}@example.com", "city": city, "ward": "", "region": state,
                   "postCode": postcode, "country": "Australia"}
        response = self.client.post(f"{brand.url('iconic')}/_control/orders", json={
            "items": [{"sku": sku, "quantity": 1}], "shipping": address, "billing": address, "force": True,
            "customer": {"firstName": first, "lastName": last}})
        response.raise_for_status()
        body = response.json()
        number = str(body["number"])
        self.placed[number] = time.time()
        self.ids[number] = (brand.index, str(body["id"]))
        return number, str(body["id"])

    def close(self) -> None:
        self.client.close()


class Burst:
    """The burst's customers place their orders from a process of their own, forked (``start``)
    before the hub's threads exist: from a thread of the bench, 1,000 placements took the embedded
    hub's interpreter lock, and the burst came slower the more worker threads there were."""

    def __init__(self, shoppers: Shoppers) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_place_on_command, args=(child, shoppers), daemon=True,
                                        name="bench-shoppers")
        self.shoppers = shoppers

    def start(self) -> None:
        self._process.start()

    def place(self, count: int) -> None:
        """``count`` orders round-robin over the brands; the shoppers learn when each was placed."""
        self._conn.send(count)
        placed, ids, error = self._conn.recv()
        self.shoppers.placed.update(placed)
        self.shoppers.ids.update(ids)
        if error:
            raise RuntimeError(f"placing the burst failed: {error}")

    def stop(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
        self._process.join(10)


def _place_on_command(conn: Any, shoppers: Shoppers) -> None:
    while (count := conn.recv()) is not None:
        error = ""
        try:
            for number in range(count):
                shoppers.place(shoppers.brands[number % len(shoppers.brands)])
        except Exception as exc:  # noqa: BLE001 - reported to the bench, which stops
            error = repr(exc)
        conn.send((dict(shoppers.placed), dict(shoppers.ids), error))


class Dispatcher:
    """The warehouses: dispatch every order that reached a brand's Starshipit, at once.

    A child process of its own, as the warehouses are not the hub's: in a thread of the bench it
    took the embedded hub's interpreter lock, whose workers are threads of the same process. Forked
    before the hub's threads start (``start`` before the runtime), like the sandboxes' processes."""

    def __init__(self, brands: list[Brand], poll: float = 0.2) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        urls = [brand.url("starshipit") for brand in brands]
        self._process = context.Process(target=_dispatch_loop, args=(child, urls, poll), daemon=True,
                                        name="bench-dispatcher")
        self.dispatched: dict[str, float] = {}  # order number -> time.time() of its dispatch, as last read
        self.errors = 0

    def start(self) -> None:
        self._process.start()

    def read(self) -> dict[str, float]:
        """The dispatch times so far (the child keeps dispatching)."""
        self._conn.send("read")
        self.dispatched, self.errors = self._conn.recv()
        return self.dispatched

    def stop(self) -> None:
        if self._process.is_alive():
            self._conn.send("stop")
            self.dispatched, self.errors = self._conn.recv()
        self._process.join(30)


def _dispatch_loop(conn: Any, urls: list[str], poll: float) -> None:
    import httpx

    dispatched: dict[str, float] = {}
    errors = 0
    with httpx.Client(timeout=30) as client:
        while True:
            if conn.poll(poll):
                command = conn.recv()
                conn.send((dict(dispatched), errors))
                if command == "stop":
                    return
                continue
            for url in urls:
                try:
                    waiting = client.get(f"{url}/_control/orders", params={"status": "Unshipped,Saved"})
                    for order in waiting.json():
                        if order["order_number"] in dispatched:
                            continue
                        client.post(f"{url}/_control/dispatch", json={"order_id": order["order_id"]}).raise_for_status()
                        dispatched[order["order_number"]] = time.time()
                except Exception:  # noqa: BLE001 - counted, tried again on the next beat
                    errors += 1


# -- the runtimes -------------------------------------------------------------------------------------------


class CpuMeter:
    """CPU the hub, the sandboxes and PostgreSQL use between ``start`` and ``per_thousand``:
    throughput on a shared 2-core machine depends on it. The fleet's hub is the worker pool's
    process tree (work horses included, with --fork); the embedded hub is this process (the customers'
    placing and the warehouses' dispatching are processes of their own, as they are no part of the hub)."""

    def __init__(self, runtime: Any, brands: list[Brand]) -> None:
        self.runtime, self.brands = runtime, brands
        self.begun: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        pool = getattr(self.runtime, "pool", None)
        return {"hub": tree_cpu_seconds([pool.pid]) if pool is not None else time.process_time(),
                "sandboxes": tree_cpu_seconds([brand.sandboxes.process.pid for brand in self.brands]),
                "postgres": tree_cpu_seconds(command="postgres")}

    def start(self) -> None:
        self.begun = self.read()

    def per_thousand(self, orders: int) -> dict[str, float]:
        now = self.read()
        return {part: (now[part] - self.begun[part]) * 1000 / max(1, orders) for part in now}


class Embedded:
    def __init__(self, db: Any, workers: int, tick: float) -> None:
        from hub.embedded import EmbeddedRuntime
        from hub.memory import freeze_startup_objects

        self.runtime = EmbeddedRuntime(db, workers=workers, tick_seconds=tick)
        freeze_startup_objects()  # as `channelhub web` does before it starts the embedded runtime
        self.runtime.start()

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        return self.runtime.enqueue(*args, **kwargs)

    def stop(self) -> None:
        self.runtime.stop(timeout=60)


class Fleet:
    """FleetRuntime in this process (enqueue + a 'scheduler' thread calling enqueue_due, as the fleet's
    tick does), ``hub.workerpool`` with N RQ workers in a subprocess."""

    def __init__(self, db: Any, database_url: str, workers: int, tick: float, secret_key: str, instance: Path) -> None:
        from hub.fleet import FleetRuntime

        self.prefix = f"bench-orders-{uuid.uuid4().hex[:8]}"
        self.runtime = FleetRuntime(db, REDIS_URL, prefix=self.prefix)
        env = {**os.environ, "CHANNELHUB_DATABASE_URL": database_url, "CHANNELHUB_REDIS_URL": REDIS_URL,
               "CHANNELHUB_SECRET_KEY": secret_key, "CHANNELHUB_INSTANCE": str(instance), "PYTHONPATH": str(REPO)}
        code = ("import logging, sys; logging.basicConfig(level=logging.WARNING)\n"
                "from hub.config import load_config\nfrom hub.workerpool import run_worker_pool\n"
                f"sys.exit(run_worker_pool(load_config(), {workers}, lanes=['orders'], prefix={self.prefix!r}, "
                "logging_level='WARNING'))")
        self.log = open(instance / f"workers-{self.prefix}.log", "w")  # noqa: SIM115
        self.pool = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for_workers(workers)
        self._stop = threading.Event()
        self._tick = tick
        self._thread = threading.Thread(target=self._ticker, name="bench-fleet-tick", daemon=True)
        self._thread.start()

    def _wait_for_workers(self, count: int) -> None:
        from rq import Worker

        queue = self.runtime.queues["orders"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(Worker.all(queue=queue)) >= count:
                return
            if self.pool.poll() is not None:
                raise RuntimeError(f"the worker pool exited with {self.pool.returncode}; see {self.log.name}")
            time.sleep(0.1)
        raise RuntimeError("the RQ workers did not register within 60 s")

    def _ticker(self) -> None:
        while not self._stop.wait(self._tick):
            try:
                self.runtime.enqueue_due()
            except Exception:
                logging.getLogger("bench.order_flow").warning("fleet tick failed", exc_info=True)

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        return self.runtime.enqueue(*args, **kwargs)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.pool.poll() is None:
            self.pool.send_signal(signal.SIGTERM)  # warm shutdown: jobs in flight finish
            try:
                self.pool.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.pool.pid, signal.SIGKILL)  # the pool's own process group (start_new_session)
                self.pool.wait(10)
        self.log.close()
        self._clean_redis()
        self.runtime.close()

    def _clean_redis(self) -> None:
        from redis import Redis

        connection = Redis.from_url(REDIS_URL)
        try:
            keys = list(connection.scan_iter(match=f"*{self.prefix}*", count=1000))
            # RQ keeps finished jobs' executions and results under their job ids (which carry the prefix).
            for start in range(0, len(keys), 500):
                connection.delete(*keys[start:start + 500])
            # Outside our keys: our queues' entries in RQ's set of queues, and the (expiring) keys of
            # our dead workers, named by RQ, which list our queues.
            for member in connection.smembers("rq:queues"):
                if self.prefix.encode() in member:
                    connection.srem("rq:queues", member)
            for worker_key in connection.scan_iter(match="rq:worker:*", count=1000):
                if self.prefix.encode() in (connection.hget(worker_key, "queues") or b""):
                    connection.delete(worker_key)
            self.keys_deleted = len(keys)
        finally:
            connection.close()


# -- one configuration ----------------------------------------------------------------------------------------


@dataclass
class Figures:
    mode: str
    latency_ms: int
    accounts: int
    workers: int
    orders: int
    done: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    stages: dict[str, tuple[float, float]] = field(default_factory=dict)
    webhook: tuple[int, float, float, float] | None = None  # (orders, p50, p95, max)
    runs: dict[str, int] = field(default_factory=dict)
    api_calls: int = 0
    iconic_reads: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per 1,000 orders: hub, sandboxes, postgres
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.mode} {self.latency_ms}ms {self.accounts}acct {self.workers}w"


def stage_times(db: Any, numbers: list[str]) -> dict[str, dict[str, float]]:
    """Per order number: imported, in_shopify, in_starshipit, written_back (epoch seconds)."""
    from sqlalchemy import Integer, cast, select

    from hub import bindings
    from hub.models import Binding, Fulfilment, Order

    out: dict[str, dict[str, float]] = {}
    with db.session() as session:
        for number, created in session.execute(select(Order.order_number, Order.created_at)
                                               .where(Order.order_number.in_(numbers))):
            out[number] = {"imported": created.timestamp()}
        for kind, key in ((bindings.DESTINATION_ORDER, "in_shopify"), (bindings.FULFILMENT_ORDER, "in_starshipit")):
            rows = session.execute(select(Order.order_number, Binding.created_at)
                                   .join(Binding, cast(Binding.internal_id, Integer) == Order.id)
                                   .where(Binding.kind == kind, Order.order_number.in_(numbers)))
            for number, created in rows:
                out.setdefault(number, {})[key] = created.timestamp()
        rows = session.execute(select(Order.order_number, Binding.created_at)
                               .join(Fulfilment, Fulfilment.order_id == Order.id)
                               .join(Binding, cast(Binding.internal_id, Integer) == Fulfilment.id)
                               .where(Binding.kind == bindings.FULFILMENT_SENT, Order.order_number.in_(numbers)))
        for number, created in rows:
            stamps = out.setdefault(number, {})
            stamps["written_back"] = min(stamps.get("written_back", created.timestamp()), created.timestamp())
    return out


def count_written_back(db: Any, numbers: set[str]) -> int:
    from sqlalchemy import Integer, cast, func, select

    from hub import bindings
    from hub.models import Binding, Fulfilment, Order

    with db.session() as session:
        return session.scalar(select(func.count(func.distinct(Order.id))).join(Fulfilment, Fulfilment.order_id == Order.id)
                              .join(Binding, cast(Binding.internal_id, Integer) == Fulfilment.id)
                              .where(Binding.kind == bindings.FULFILMENT_SENT)) or 0


def count_in_shopify(db: Any, numbers: list[str]) -> int:
    from sqlalchemy import Integer, cast, func, select

    from hub import bindings
    from hub.models import Binding, Order

    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Binding)
                              .join(Order, cast(Binding.internal_id, Integer) == Order.id)
                              .where(Binding.kind == bindings.DESTINATION_ORDER, Order.order_number.in_(numbers))) or 0


def write_timeline(db: Any, path: Path, label: str, origin: float) -> None:
    """Append every run of the configuration (seconds from the first placement) to a CSV file: where
    workers waited and which runs were long is what the throughput figure cannot show."""
    import csv

    from sqlalchemy import func, select

    from hub.models import SyncRun, SyncRunItem

    def since(moment: Any) -> str:
        return f"{moment.timestamp() - origin:.2f}" if moment is not None else ""

    with db.session() as session:
        rows = session.execute(select(SyncRun).where(SyncRun.flow != "catalog").order_by(SyncRun.id)).scalars().all()
        # What each run did, by the first word of its items' messages ("imported", "routed", a carrier...).
        did: dict[int, dict[str, int]] = {}
        first_word = func.split_part(SyncRunItem.message, " ", 1)
        for run_id, word, count in session.execute(select(SyncRunItem.run_id, first_word, func.count())
                                                   .group_by(SyncRunItem.run_id, first_word)):
            did.setdefault(run_id, {})[word] = count
        fresh = not path.exists()
        with path.open("a", newline="") as handle:
            out = csv.writer(handle)
            if fresh:
                out.writerow(["config", "run", "account", "flow", "trigger", "status", "queued", "started",
                              "finished", "api_calls", "counts", "did"])
            for run in rows:
                out.writerow([label, run.id, run.account_id, run.flow, run.trigger, getattr(run.status, "value", run.status),
                              since(run.queued_at), since(run.started_at), since(run.finished_at), run.api_calls,
                              " ".join(f"{k}={v}" for k, v in sorted((run.counts or {}).items())),
                              " ".join(f"{k}={v}" for k, v in sorted(did.get(run.id, {}).items()))])


def run_summary(db: Any) -> tuple[dict[str, int], int]:
    from sqlalchemy import func, select

    from hub.models import SyncRun

    with db.session() as session:
        rows = session.execute(select(SyncRun.flow, SyncRun.trigger, SyncRun.status, func.count(),
                                      func.coalesce(func.sum(SyncRun.api_calls), 0))
                               .group_by(SyncRun.flow, SyncRun.trigger, SyncRun.status)).all()
    runs: dict[str, int] = {}
    calls = 0
    for flow, trigger, status, count, api in rows:
        if flow == "catalog":
            continue
        key = f"{flow}/{getattr(trigger, 'value', trigger)}/{getattr(status, 'value', status)}"
        runs[key] = runs.get(key, 0) + count
        calls += int(api)
    return runs, calls


def bench_config(args: argparse.Namespace, mode: str, latency_ms: int, accounts: int, workers: int) -> Figures:
    from cryptography.fernet import Fernet

    from hub.config import Config
    from hub.connections import Connector, set_connector
    from hub.plugins import get_plugin_manager
    from hub.secrets import CredentialBox

    figures = Figures(mode, latency_ms, accounts, workers, args.orders)
    print(f"[{figures.label}] setting up", flush=True)
    key = Fernet.generate_key().decode()
    brands: list[Brand] = []
    runtime: Any = None
    dispatcher: Dispatcher | None = None
    shoppers: Shoppers | None = None
    burst: Burst | None = None
    with tempfile.TemporaryDirectory() as folder, bench_database("postgresql", Path(folder)) as db:
        try:
            url = db.engine.url.render_as_string(hide_password=False)
            config = Config(instance_dir=Path(folder), database_url=url, redis_url=REDIS_URL if mode == "fleet" else None,
                            secret_key=key)
            connector = Connector(box=CredentialBox(key.encode()), pm=get_plugin_manager())
            set_connector(connector)

            class _Hub:  # what plugins.demo.runner.set_up uses of hub.app.Hub
                pass

            hub = _Hub()
            hub.db, hub.config, hub.pm, hub.box = db, config, connector.pm, connector.box  # type: ignore[attr-defined]
            for index in range(accounts):
                brand = Brand(index, SandboxGroup(make_brand_sandboxes(index, args.shopify_plan)))
                brands.append(brand)
                set_up_brand(hub, brand, args.interval, args.iconic_rate, args.in_flight)
            set_latency(brands, latency_ms / 1000)

            dispatcher = Dispatcher(brands)
            dispatcher.start()  # forked before the runtime's threads exist
            shoppers = Shoppers(brands)
            burst = Burst(shoppers)
            burst.start()  # likewise
            runtime = Embedded(db, workers, args.tick) if mode == "embedded" else \
                Fleet(db, url, workers, args.tick, key, Path(folder))
            meter = CpuMeter(runtime, brands)

            # -- throughput: a burst of orders spread round-robin over the accounts
            meter.start()
            started = time.time()
            burst.place(args.orders)
            burst.stop()
            placing = time.time() - started
            numbers = list(shoppers.placed)
            print(f"[{figures.label}] placed {len(numbers)} orders in {placing:.1f}s", flush=True)
            deadline = time.time() + args.timeout
            done = 0
            while time.time() < deadline:
                done = count_written_back(db, set(numbers))
                if done >= len(numbers):
                    break
                # The figures come from the stored timestamps, not from this loop: it only needs to
                # notice the end, and in embedded mode it shares the workers' process (and GIL).
                time.sleep(1.0)
            figures.cpu = meter.per_thousand(len(numbers))
            stamps = stage_times(db, numbers)
            dispatcher.read()
            written = [s["written_back"] for s in stamps.values() if "written_back" in s]
            figures.done = len(written)
            figures.seconds = (max(written) - min(shoppers.placed.values())) if written else float("nan")
            if figures.done < len(numbers):
                figures.notes.append(f"only {figures.done}/{len(numbers)} written back within {args.timeout:.0f}s")
                figures.seconds = args.timeout + placing
            figures.rate = figures.done / figures.seconds if figures.seconds else 0.0
            series: dict[str, list[float]] = {stage: [] for stage in STAGES}
            for number, s in stamps.items():
                placed, dispatched = shoppers.placed.get(number), dispatcher.dispatched.get(number)
                pairs = (("placed->imported", placed, s.get("imported")),
                         ("imported->in Shopify", s.get("imported"), s.get("in_shopify")),
                         ("in Shopify->in Starshipit", s.get("in_shopify"), s.get("in_starshipit")),
                         ("dispatched->tracking back", dispatched, s.get("written_back")),
                         ("placed->tracking back", placed, s.get("written_back")))
                for stage, a, b in pairs:
                    if a is not None and b is not None:
                        series[stage].append(max(0.0, b - a))
            figures.stages = {stage: (percentile(v, 0.5), percentile(v, 0.95)) for stage, v in series.items()}
            print(f"[{figures.label}] {figures.done} orders end to end in {figures.seconds:.1f}s = "
                  f"{figures.rate:.1f}/s; " + ", ".join(f"{k} p50 {a:.2f}s p95 {b:.2f}s"
                                                        for k, (a, b) in figures.stages.items()), flush=True)

            # -- webhook-triggered import
            if args.webhook_orders:
                set_orders_interval(db, brands, 3600)
                time.sleep(max(1.0, args.interval * 2))  # let scheduled runs already queued finish
                hooked: list[str] = []
                gap = 1.0 / args.webhook_rate
                next_at = time.monotonic()
                for index in range(args.webhook_orders):
                    brand = brands[index % accounts]
                    number, order_id = shoppers.place(brand)
                    runtime.enqueue(brand.iconic_id, "orders", trigger="webhook", params={"order_ids": [order_id]})
                    hooked.append(number)
                    next_at += gap
                    time.sleep(max(0.0, next_at - time.monotonic()))
                deadline = time.time() + args.timeout
                while time.time() < deadline and count_in_shopify(db, hooked) < len(hooked):
                    time.sleep(0.2)
                stamps = stage_times(db, hooked)
                waits = [stamps[n]["in_shopify"] - shoppers.placed[n] for n in hooked
                         if "in_shopify" in stamps.get(n, {})]
                figures.webhook = (len(waits), percentile(waits, 0.5), percentile(waits, 0.95),
                                   max(waits) if waits else float("nan"))
                if len(waits) < len(hooked):
                    figures.notes.append(f"webhook: only {len(waits)}/{len(hooked)} in Shopify within {args.timeout:.0f}s")
                print(f"[{figures.label}] webhook import of {len(waits)} orders at {args.webhook_rate:g}/s: p50 "
                      f"{figures.webhook[1]:.2f}s p95 {figures.webhook[2]:.2f}s max {figures.webhook[3]:.2f}s", flush=True)
        finally:
            if burst is not None:
                burst.stop()  # also when the bench failed before the burst was placed
            if dispatcher is not None:
                dispatcher.stop()
                if dispatcher.errors:
                    figures.notes.append(f"dispatcher retried {dispatcher.errors} times")
            if shoppers is not None:
                shoppers.close()
            if runtime is not None:
                runtime.stop()
            figures.runs, figures.api_calls = run_summary(db)
            if args.timeline and shoppers is not None and shoppers.placed:
                write_timeline(db, Path(args.timeline), figures.label, min(shoppers.placed.values()))
            throttled: dict[str, int] = {}
            for brand in brands:
                try:
                    for name, (calls, statuses) in brand.sandboxes.calls().items():
                        figures.requests[name] = figures.requests.get(name, 0) + sum(calls.values())
                        throttled[name] = throttled.get(name, 0) + statuses.get("429", 0)
                        if name == "iconic":
                            figures.iconic_reads += calls.get(("GET", "/v2/orders"), 0)
                except Exception:  # noqa: BLE001 - the counts are a diagnostic
                    figures.notes.append("request counts unavailable")
                brand.sandboxes.stop()
            if any(throttled.values()):  # each costs the run its Retry-After
                figures.notes.append("429 answers: " + ", ".join(f"{name} {n}" for name, n in sorted(throttled.items()) if n))
            set_connector(None)
    return figures


# -- the report ----------------------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def report(args: argparse.Namespace, results: list[Figures]) -> None:
    lines = [(f"PostgreSQL, {'Redis ' + REDIS_URL + ', ' if 'fleet' in args.modes else ''}sandboxes (Iconic, Shopify, "
             f"Starshipit per account) in one child process per account over loopback. {args.orders} orders placed "
             f"in a burst, round-robin over the accounts; orders/fulfilment every {args.interval:g} s, ticker "
             f"{args.tick:g} s; dispatch as soon as an order is in Starshipit. Webhook phase: "
             f"{args.webhook_orders} orders at {args.webhook_rate:g}/s, scheduled orders runs off. The Iconic paced at "
             f"{args.iconic_rate or 'the account default of 25':} requests/s per account; "
             f"{args.in_flight or 'the default of 4'} write-back / orderCreate request(s) in flight per run; "
             "Shopify's cost bucket "
             f"of the {args.shopify_plan} plan ({SHOPIFY_PLANS[args.shopify_plan][0]:,.0f} points, "
             f"{SHOPIFY_PLANS[args.shopify_plan][1]:,.0f}/s: {SHOPIFY_PLANS[args.shopify_plan][1] / 10:,.0f} "
             "orderCreates/s per shop)."), "",
             ("| mode | latency | accounts | workers | orders/s end to end | wall | "
              + " | ".join(f"{s} p50 / p95" for s in STAGES) + " | webhook import p50 / p95 | runs | API calls | "
              "requests Iconic / Shopify / Starshipit (of which Iconic GET /v2/orders) | "
              "CPU s per 1,000 orders: hub / sandboxes / PostgreSQL | notes |"),
             "|---|---|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|---|---|---|"]
    for f in results:
        hook = f"{fmt(f.webhook[1])} / **{fmt(f.webhook[2])} s** ({f.webhook[0]})" if f.webhook else "—"
        runs = ", ".join(f"{k} {v}" for k, v in sorted(f.runs.items()))
        cpu = " / ".join(f"{f.cpu[part]:.1f}" for part in ("hub", "sandboxes", "postgres")) if f.cpu else "—"
        lines.append(f"| {f.mode} | {f.latency_ms} ms | {f.accounts} | {f.workers} | **{f.rate:.1f}** "
                     f"({f.done}/{f.orders}) | {f.seconds:.1f} s | " +
                     " | ".join(f"{fmt(a)} / {fmt(b)} s" for a, b in f.stages.values()) +
                     f" | {hook} | {runs} | {f.api_calls} | {f.requests.get('iconic', 0)} / {f.requests.get('shopify', 0)} / "
                     f"{f.requests.get('starshipit', 0)} ({f.iconic_reads}) | {cpu} | {'; '.join(f.notes) or '—'} |")
    lines += ["", "Targets:", ""]
    summary: list[str] = []
    by = {(f.mode, f.latency_ms, f.accounts, f.workers): f for f in results}
    for mode in args.modes:
        for accounts in args.accounts:
            two = by.get((mode, 0, accounts, 2))
            if two:
                met = two.rate >= TARGET_RATE
                lines.append(f"- {mode}, {accounts} account(s), 2 workers, 0 ms: {two.rate:.1f} orders/s / "
                             f"{TARGET_RATE:g} = **{two.rate / TARGET_RATE:.2f}** ({'met' if met else 'NOT met'})")
                summary.append(f"{mode} {accounts}acct 2w 0ms {two.rate:.1f}/s ({'met' if met else 'not met'})")
            one = by.get((mode, 50, accounts, 1))
            for workers, target in TARGET_SCALE.items():
                many = by.get((mode, 50, accounts, workers))
                if one and many and one.rate:
                    scale = many.rate / one.rate
                    met = scale >= target
                    lines.append(f"- {mode}, {accounts} account(s), 50 ms: {workers} workers / 1 worker = "
                                 f"{many.rate:.1f} / {one.rate:.1f} = **{scale:.2f}x** (target {target}x: "
                                 f"{'met' if met else 'NOT met'})")
                    summary.append(f"{mode} {accounts}acct 50ms {workers}w/1w {scale:.2f}x ({'met' if met else 'not met'})")
    hooks = [f for f in results if f.webhook and f.webhook[0]]
    if hooks:
        worst = max(hooks, key=lambda f: f.webhook[2])
        met = all(f.webhook[2] <= TARGET_WEBHOOK_P95 and f.webhook[0] == args.webhook_orders for f in hooks)
        lines.append(f"- webhook-triggered import p95 <= {TARGET_WEBHOOK_P95:g} s: worst {worst.webhook[2]:.2f} s "
                     f"({worst.label}) = **{worst.webhook[2] / TARGET_WEBHOOK_P95:.2f}** of the target "
                     f"({'met' if met else 'NOT met'} in every configuration)")
        summary.append(f"webhook p95 worst {worst.webhook[2]:.2f}s ({'met' if met else 'not met'})")
    record("order_flow", "; ".join(summary) or "no targets measured", lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000, help="orders per configuration (default 1000)")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts (default 1,2,4)")
    parser.add_argument("--latency", default="0,50", help="comma-separated sandbox latencies in ms (default 0,50)")
    parser.add_argument("--mode", default="embedded,fleet", help="embedded, fleet or both (default both)")
    parser.add_argument("--accounts", default="1,4", help="comma-separated numbers of Iconic accounts (default 1,4)")
    parser.add_argument("--interval", type=float, default=1.0, help="orders/fulfilment schedule, seconds (default 1)")
    parser.add_argument("--iconic-rate", type=float, default=None,
                        help="The Iconic account setting requests_per_second (default: the account default, 25)")
    parser.add_argument("--in-flight", type=int, default=None,
                        help="requests a run keeps in flight where the channel has no batch call: The Iconic's "
                             "write_back_concurrency and Shopify's create_concurrency (default: the accounts' 4; "
                             "1 sends one after another)")
    parser.add_argument("--shopify-plan", choices=sorted(SHOPIFY_PLANS), default="standard",
                        help="the Shopify sandbox's cost bucket (default standard: 10 orderCreates/s per shop)")
    parser.add_argument("--tick", type=float, default=0.5, help="scheduler tick, seconds (default 0.5)")
    parser.add_argument("--webhook-orders", type=int, default=60, help="orders of the webhook phase (0: skip)")
    parser.add_argument("--webhook-rate", type=float, default=4.0, help="webhook orders per second (default 4)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a phase after this many seconds")
    parser.add_argument("--timeline", default=None,
                        help="append every run (account, flow, queued/started/finished seconds) to this CSV file")
    parser.add_argument("--quick", action="store_true",
                        help="< 90 s: 40 orders, embedded and fleet, 4 accounts, 2 workers, 0 ms, 8 webhook orders")
    args = parser.parse_args(argv)
    if args.quick:
        args.orders, args.workers, args.latency, args.accounts = 40, "2", "0", "4"
        args.webhook_orders, args.timeout = 8, 30.0
    args.modes = [m for m in str(args.mode).split(",") if m]
    if set(args.modes) - {"embedded", "fleet"}:
        parser.error("--mode: embedded and/or fleet")
    args.workers = [int(w) for w in str(args.workers).split(",") if w]
    args.latency = [int(x) for x in str(args.latency).split(",") if x]
    args.accounts = [int(a) for a in str(args.accounts).split(",") if a]

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("channelhub.audit").setLevel(logging.CRITICAL)  # oversell/route events are figures here
    from hub.jobs import load_builtin_flows

    load_builtin_flows()
    results: list[Figures] = []
    for mode in args.modes:
        for latency in args.latency:
            for accounts in args.accounts:
                for workers in args.workers:
                    results.append(bench_config(args, mode, latency, accounts, workers))
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
