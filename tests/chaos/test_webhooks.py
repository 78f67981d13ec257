"""Duplicate and out-of-order webhook deliveries, together with overlapping polls from several workers.

The Iconic calls the hub's webhook endpoint (the real Flask app, served on loopback, queueing onto the
real fleet) for every order: "Order Created" one to three times, and "Order Items Status Changed" one
or two times — each copy at a random moment within three seconds of the order, so a status change
often arrives before the creation and copies of different orders interleave. Meanwhile the schedule
polls every second and another thread queues extra orders runs every 0.3 s, so webhook-triggered
targeted pulls and full polls of the same account overlap on four workers (the per-account lock
defers the overlap; the database keeps each order once).

Every repeated delivery must be answered "duplicate" (and run nothing), every order must be created
once in Shopify and in Starshipit and its tracking written back once, none lost.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from werkzeug.serving import make_server

from hub.app import Hub
from hub.config import Config
from hub.fleet import FleetRuntime
from tests.chaos.harness import REDIS_URL, Figures, World

WORKERS = 4


class WebhookSender:
    """The Iconic's webhook deliveries, at random moments, in random order, some repeated."""

    def __init__(self, world: World, tmp: Path, seed: int) -> None:
        config = Config(instance_dir=tmp / "web-instance", database_url=world.pg_url, redis_url=REDIS_URL,
                        secret_key=world.key)
        self.runtime = FleetRuntime(world.db, connection=world.redis, prefix=world.prefix)
        self.hub = Hub(config=config, db=world.db, _runtime=self.runtime)
        from web import create_app

        self.server = make_server("127.0.0.1", 0, create_app(self.hub), threaded=True)
        threading.Thread(target=self.server.serve_forever, name="chaos-web", daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.world = world
        self.rng = random.Random(seed)
        self.pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="chaos-webhook")
        self.client = httpx.Client(timeout=30)
        self.answers: Counter[str] = Counter()
        self.sent = 0
        self.distinct: set[bytes] = set()
        self.early_status = 0  # a status change delivered before the order's first "created"
        self._lock = threading.Lock()

    def order_placed(self, marketplace: str, order_id: int, number: str) -> None:
        created = json.dumps({"event": "onOrderCreated", "payload": {"OrderId": order_id, "OrderNr": number}}).encode()
        changed = json.dumps({"event": "onOrderItemsStatusChanged",
                              "payload": {"OrderId": order_id, "NewStatus": "pending"}}).encode()
        copies = [(created, self.rng.uniform(0, 3)) for _ in range(self.rng.choice((1, 2, 2, 3)))]
        copies += [(changed, self.rng.uniform(0, 3)) for _ in range(self.rng.choice((1, 2)))]
        first_created = min(at for body, at in copies if body == created)
        with self._lock:
            self.early_status += any(body == changed and at < first_created for body, at in copies)
            self.distinct.update({created, changed})
        account_id = self.world.account_ids[marketplace]
        url = f"{self.url}/webhooks/{account_id}/{self.world.webhook_secrets[marketplace]}"
        for body, at in copies:
            self.pool.submit(self._deliver, url, body, at)

    def _deliver(self, url: str, body: bytes, delay: float) -> None:
        time.sleep(delay)
        try:
            response = self.client.post(url, content=body, headers={"Content-Type": "application/json"})
            answer = f"{response.status_code} {response.json().get('status', response.json().get('error'))}"
        except Exception as error:  # noqa: BLE001 - counted, and the test fails on it
            answer = f"error {type(error).__name__}"
        with self._lock:
            self.sent += 1
            self.answers[answer] += 1

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


class ExtraPolls:
    """Orders runs queued every ``every`` seconds besides the schedule's, from another thread."""

    def __init__(self, runtime: FleetRuntime, account_id: int, every: float) -> None:
        self.runtime, self.account_id, self.every = runtime, account_id, every
        self.queued = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-polls", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.runtime.enqueue(self.account_id, "orders", trigger="manual")
            self.queued += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _scenario(world_factory, tmp_path: Path, name: str, orders: int, per_second: float, timeout: float) -> None:
    world = world_factory()
    world.start_fleet(workers=WORKERS)
    sender = WebhookSender(world, tmp_path, seed=orders)
    polls = ExtraPolls(sender.runtime, world.account_ids["iconic"], every=0.3)
    placed_before = 0

    def deliver_webhooks() -> None:
        nonlocal placed_before
        for placed in world.placed[placed_before:]:
            sender.order_placed(placed.iconic, placed.order_id, placed.number)
        placed_before = len(world.placed)

    try:
        figures = Figures(name, f"{orders} orders at {per_second:g}/s, {WORKERS} workers", "", "")
        figures, finished = world.run_load(figures, orders, per_second=per_second, timeout=timeout,
                                           on_tick=deliver_webhooks)
    finally:
        polls.stop()
        sender.stop()
    duplicates = sender.sent - len(sender.distinct)
    figures.faults = (f"{sender.sent} webhook deliveries for {len(sender.distinct)} distinct events: {duplicates} "
                      f"repeats, {sender.early_status} orders whose status change came before their creation")
    figures.inputs = (f"polls every 1 s plus {polls.queued} extra orders runs queued every 0.3 s, overlapping the "
                      "webhook-triggered targeted pulls")
    raced = sender.answers["202 queued"] - len(sender.distinct)
    figures.notes = (f"webhook answers: {dict(sender.answers)}; repeats answered 'queued' because they raced the "
                     f"first copy: {raced} (a harmless extra targeted pull each; see what does not work)")
    figures.details["webhook answers"] = dict(sender.answers)
    assert finished, f"not every order was confirmed in time: {figures.details}"
    assert figures.duplicated == 0, figures.details["duplicated"]
    assert figures.lost == 0, figures.details["missing"]
    assert (figures.imported, figures.destination, figures.fulfilment, figures.tracking) == (orders,) * 4
    # Every delivery is answered: queued the first time, "duplicate" after. A repeat that arrives while
    # the first copy is still being recorded can be queued too (web/webhooks.py: bindings.bind hands
    # back the winner's row, so _first_delivery cannot tell it lost the race); its extra targeted pull
    # is harmless, as the order figures show, and the count is in the figures.
    assert sender.answers["202 queued"] + sender.answers["200 duplicate"] == sender.sent, sender.answers
    assert sender.answers["202 queued"] >= len(sender.distinct)
    assert sender.answers["200 duplicate"] > 0 and sender.early_status > 0


@pytest.mark.timeout(240)
def test_duplicate_and_out_of_order_webhooks_with_overlapping_polls_quick(world_factory, tmp_path) -> None:
    _scenario(world_factory, tmp_path, "webhooks + polls (quick)", 30, per_second=5, timeout=180)


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_duplicate_and_out_of_order_webhooks_with_overlapping_polls(world_factory, tmp_path) -> None:
    _scenario(world_factory, tmp_path, "webhooks + polls", 400, per_second=4, timeout=1800)
