"""The chaos harness: the whole hub under faults, with real processes, Redis, PostgreSQL and sandboxes.

A :class:`World` is one brand's set-up, built the way an admin and its trading partners would build it:

- the sandboxes of The Iconic (one or two marketplaces), Shopify (catalogue source and order
  destination) and Starshipit (fulfilment), served on loopback (``hub.sandbox.serve``) so worker
  processes reach them through the accounts' ``base_url`` like real remote APIs;
- a PostgreSQL schema of its own, migrated from the models; a Redis key prefix of its own on DB 10;
- an organisation, the label ``the-iconic`` (a tag rule), the accounts wired like the demo (The Iconic
  lists Shopify's catalogue, sends its orders to Shopify and to Starshipit, writes Starshipit's
  tracking back), a carrier map, short schedules;
- the catalogue imported and listed by the real ``catalog`` and ``listings`` flows (in this process,
  before any fault is switched on);
- a fleet: ``hub.fleet.run_worker`` processes and one ``hub.fleet.run_scheduler`` process, each in a
  process group of its own so a test can SIGKILL one (with its work horse) and never leaves one behind;
- shoppers (:meth:`World.place_orders`: orders through The Iconic sandbox's control API) and a
  warehouse (:class:`Dispatcher`: Starshipit's control API prints the label and dispatches).

:meth:`World.tally` then counts, per order placed on the marketplace, what each system holds: the
hub's order rows, Shopify orders of that name, Starshipit orders of that number, and the tracking
writes The Iconic accepted. Those counts are the figures (:class:`Figures`) the suite prints and
writes to ``docs/reliability.md``.

Tuned for the time budget, and said so in docs/reliability.md: inside the chaos workers the hub's
HTTP timeout is 1 s (a served "timeout" fault stalls 1.5 s), the first HTTP retry backoff 0.1 s, the
retry intervals of a failed run 2-60 s, The Iconic accounts' pace 100 requests/s (``TUNABLES``, ``PACE``;
Shopify is paced by its cost bucket); the schedules are seconds, not minutes. The logic under test is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from redis import Redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from hub import accounts as lifecycle
from hub import bindings, carrier_maps, labels
from plugins.demo import catalogue as demo_catalogue
from plugins.demo.runner import CARRIER_MAP, COURIER_RULES, DEFAULT_COURIER, MARKETPLACE_ADDRESS
from hub.connections import Connector, set_connector
from hub.db import Database
from hub.jobs import TERMINAL, create_run, execute_run, load_builtin_flows
from hub.locks import LocalLocks
from hub.models import (
    Binding,
    ChannelAccount,
    Event,
    Fulfilment,
    Order,
    OrderStatus,
    Product,
    RunStatus,
    SyncRun,
)
from hub.plugins import get_plugin_manager
from hub.sandbox import FaultMiddleware, ServedSandbox, serve
from hub.secrets import CredentialBox
from hub.users import create_organisation
from tests.services import unavailable

log = logging.getLogger("channelhub.chaos")
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the sandboxes' request lines would drown the figures

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("CHANNELHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CHANNELHUB_CHAOS_REDIS_URL", "redis://127.0.0.1:6379/10")

ACTOR = "chaos"
LABEL = "the-iconic"
# hub.defaults tunables the chaos workers set before they import anything else (see the module
# docstring): seconds, not minutes, so faults cost the suite seconds too. The logic is unchanged.
TUNABLES = {
    "HTTP_TIMEOUT_SECONDS": 1.0,  # default 30 s: a request the server never answers
    "HTTP_BACKOFF_BASE_SECONDS": 0.1,  # default 0.5 s, doubled per retry of a 5xx / timeout / drop
    "JOB_RETRY_INTERVALS": [2, 5, 10, 30, 60],  # default 10, 30, 60, 300, 900 s: a run that raised TransientError
}
SERVED_TIMEOUT = 1.5  # how long a served "timeout" fault stalls: longer than the client waits
# The Iconic accounts' requests_per_second (default 25): the sandboxes set no limit, and pacing is
# not what these tests are about.
PACE = 100
STOCK = 100_000  # units per SKU per location: the load tests never run out
# Schedules of the load tests (seconds). Production runs minutes; the figures are about correctness.
SCHEDULES = {"orders": 1, "fulfilment": 1, "stock": 20, "listings": 3600, "reconcile": 86400}
SOURCE_SCHEDULES = {"catalog": 3600, "catalog_full": 86400}

ADDRESSES = [("12 Crown St", "Surry Hills", "NSW", "2010"), ("88 Chapel St", "Windsor", "VIC", "3181"),
             ("5 James St", "Fortitude Valley", "QLD", "4006"), ("210 Murray St", "Perth", "WA", "6000")]


# Restarting the shared services (only the full `chaos` suite does; it disturbs everyone's tests).
# The environment variables let a developer point the suite at private instances instead.
REDIS_STOP = os.environ.get("CHANNELHUB_CHAOS_REDIS_STOP", "redis-cli -p 6379 shutdown nosave")
REDIS_START = os.environ.get(
    "CHANNELHUB_CHAOS_REDIS_START",
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis '
    "--logfile /var/log/redis/ci.log")
_CLUSTER = "$(ls /etc/postgresql | head -1) main"
POSTGRES_STOP = os.environ.get("CHANNELHUB_CHAOS_POSTGRES_STOP",
                               f"pg_ctlcluster --skip-systemctl-redirect {_CLUSTER} stop -m fast")
POSTGRES_START = os.environ.get("CHANNELHUB_CHAOS_POSTGRES_START",
                                f"pg_ctlcluster --skip-systemctl-redirect {_CLUSTER} start")


def restart_redis(down_for: float = 3.0) -> float:
    """Stop Redis (its data is lost: no persistence), keep it down ``down_for`` s, start it; seconds it took."""
    started = time.monotonic()
    subprocess.run(REDIS_STOP, shell=True, check=False, capture_output=True, timeout=30)
    time.sleep(down_for)
    subprocess.run(REDIS_START, shell=True, check=True, capture_output=True, timeout=30)
    probe = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    for _ in range(100):
        try:
            probe.ping()
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.1)
    probe.close()
    return time.monotonic() - started


def restart_postgres(down_for: float = 5.0) -> float:
    """Stop PostgreSQL (every connection is cut, open transactions roll back), keep it down
    ``down_for`` s, start it again; seconds until it answered."""
    started = time.monotonic()
    subprocess.run(POSTGRES_STOP, shell=True, check=True, capture_output=True, timeout=120)
    time.sleep(down_for)
    subprocess.run(POSTGRES_START, shell=True, check=True, capture_output=True, timeout=120)
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2})
    for _ in range(120):
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.5)
    engine.dispose()
    return time.monotonic() - started


def fault_rates(rate_5xx: float = 0.10, rate_429: float = 0.05, rate_timeout: float = 0.02,
                rate_drop: float = 0.01) -> dict[str, float]:
    """The issue's fault mix: 10 % 5xx, 5 % 429, 2 % timeouts, 1 % dropped connections."""
    return {"rate_5xx": rate_5xx, "rate_429": rate_429, "rate_timeout": rate_timeout, "rate_drop": rate_drop}


def describe_faults(rates: dict[str, float]) -> str:
    names = {"rate_5xx": "5xx", "rate_429": "429", "rate_timeout": "timeouts", "rate_drop": "dropped connections"}
    parts = [f"{rates[key] * 100:g}% {label}" for key, label in names.items() if rates.get(key)]
    return ", ".join(parts) if parts else "none"


# -- services --------------------------------------------------------------------------------------


def redis_connection() -> Redis:
    connection = Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        connection.ping()
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        unavailable(f"Redis at {REDIS_URL}", error)
    return connection


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL pinned (``search_path``) to a fresh schema with the hub's tables; dropped afterwards."""
    schema = f"chaos_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:  # noqa: BLE001
        admin.dispose()
        unavailable(f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()}", error)
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)
    db = Database(url)
    db.create_all()
    db.dispose()
    try:
        yield url
    finally:
        for _ in range(30):  # PostgreSQL may be restarting (the restart scenario): wait for it
            try:
                with admin.begin() as connection:
                    connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                    connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                break
            except Exception:  # noqa: BLE001
                time.sleep(1)
        admin.dispose()


def purge_prefix(connection: Redis, prefix: str) -> None:
    """Delete every Redis key this prefix created (queues, jobs, registries, locks, the cron entry)."""
    try:
        connection.zrem("rq:cron_jobs", f"{prefix}-tick")
        keys = list(connection.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            connection.delete(*keys[start:start + 500])
    except Exception:
        log.warning("could not purge Redis keys of %s", prefix, exc_info=True)


# -- sandboxes -------------------------------------------------------------------------------------


class Serialized:
    """One request at a time through a sandbox whose state has no lock of its own (The Iconic's):
    a real API is consistent; a test must not count races inside the emulator as the hub's bugs."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.lock = threading.RLock()

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        with self.lock:
            return [b"".join(self.app(environ, start_response))]


class TrackingWrites:
    """Counts the tracking writes The Iconic sandbox accepted (set-to-ready-to-ship answered 2xx),
    per order item, and the ones it refused — inside the fault layer, so only requests that reached it."""

    PATH = "/v2/orders/statuses/set-to-ready-to-ship"

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.accepted: Counter[int] = Counter()  # order item id -> accepted writes
        self.refused = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        if environ.get("PATH_INFO") != self.PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        import io

        environ["wsgi.input"] = io.BytesIO(raw)
        status: list[str] = []

        def capture(code: str, headers: list, exc_info: Any = None) -> Any:
            status.append(code)
            return start_response(code, headers, exc_info) if exc_info else start_response(code, headers)

        body = b"".join(self.app(environ, capture))
        try:
            items = [int(item["id"]) for item in json.loads(raw or b"{}").get("orderItems") or []]
        except (ValueError, TypeError, KeyError):
            items = []
        with self.lock:
            if status and status[0].startswith("2"):
                self.accepted.update(items)
            else:
                self.refused += 1
        return [body]


@dataclass
class Sandbox:
    name: str
    app: FaultMiddleware
    served: ServedSandbox
    writes: TrackingWrites | None = None

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def state(self) -> Any:
        return self.app.state  # type: ignore[attr-defined]

    def set_faults(self, **knobs: Any) -> None:
        self.app.faults.update(knobs)

    def clear_faults(self) -> None:
        self.app.faults.update({key: 0.0 for key in fault_rates()})


def start_iconic(name: str, seed: int, first_id: int) -> Sandbox:
    from plugins.iconic import sandbox as iconic

    app = iconic.create_app(seed, first_id=first_id, approval_delay=0)
    writes = TrackingWrites(Serialized(app.app))
    app.app = writes
    app.faults.update({"timeout_seconds": SERVED_TIMEOUT, "seed": seed})
    return Sandbox(name, app, serve(app), writes)


def start_shopify(seed: int) -> Sandbox:
    from plugins.shopify import sandbox as shopify

    app = shopify.create_app(seed, products=0, sender=lambda *_: 200, bucket_size=100_000, restore_rate=10_000)
    app.faults.update({"timeout_seconds": SERVED_TIMEOUT, "seed": seed + 1})
    return Sandbox("shopify", app, serve(app))


def start_starshipit(seed: int) -> Sandbox:
    from plugins.starshipit import sandbox as starshipit

    app = starshipit.create_app(seed, seed_orders=0, tier_rates={"developer": 2.0, "production": 1000.0})
    app.faults.update({"timeout_seconds": SERVED_TIMEOUT, "seed": seed + 2})
    return Sandbox("starshipit", app, serve(app))


# -- the fleet -------------------------------------------------------------------------------------

WORKER_CODE = """\
import json, logging, sys
import hub.defaults
for name, value in json.loads(sys.argv[3]).items():
    setattr(hub.defaults, name, value)
from hub.config import load_config
from hub.fleet import run_worker
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
run_worker(load_config(), prefix=sys.argv[1], name=sys.argv[2], logging_level="WARNING")
"""
SCHEDULER_CODE = """\
import logging, sys
from hub.config import load_config
from hub.fleet import run_scheduler
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
run_scheduler(load_config(), prefix=sys.argv[1], interval=int(sys.argv[2]), name=sys.argv[1] + "-cron")
"""


FLEET_MARK = "CHANNELHUB_CHAOS_FLEET"  # in the environment of every process a Fleet starts (and their forks)


class Fleet:
    """The hub's processes: workers and one scheduler, each the leader of its own process group.

    RQ's work horse puts itself in a process group of its own, and a killed worker leaves its horse
    (and RQ's scheduler process) behind as orphans; so every process of the fleet carries
    ``CHANNELHUB_CHAOS_FLEET=<prefix>`` in its environment (forks inherit it), and :meth:`stop` ends
    every process that carries it: nothing outlives the test.
    """

    def __init__(self, logs: Path, env: dict[str, str], prefix: str, redis: Redis) -> None:
        self.logs = logs
        self.env = {**env, FLEET_MARK: prefix}
        self.prefix = prefix
        self.redis = redis
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.everything: list[subprocess.Popen[bytes]] = []
        self._count = 0
        self.kills: Counter[str] = Counter()

    def _spawn(self, label: str, code: str, *args: str) -> subprocess.Popen[bytes]:
        self._count += 1
        out = open(self.logs / f"{self._count:03d}-{label}.log", "wb")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=self.env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.everything.append(process)
        return process

    def start_worker(self) -> str:
        name = f"{self.prefix}-w{self._count + 1}"
        self.workers[name] = self._spawn("worker", WORKER_CODE, self.prefix, name, json.dumps(TUNABLES))
        return name

    def start_scheduler(self, interval: int = 1) -> None:
        self.scheduler = self._spawn("scheduler", SCHEDULER_CODE, self.prefix, str(interval))

    def start(self, workers: int, *, scheduler: bool = True) -> None:
        for _ in range(workers):
            self.start_worker()
        if scheduler:
            self.start_scheduler()

    def members(self) -> list[int]:
        """Every live process of this fleet, orphans included."""
        mark = f"{FLEET_MARK}={self.prefix}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def children(self, name: str) -> list[int]:
        process = self.workers.get(name)
        if process is None:
            return []
        try:
            listed = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in listed.split()]

    def horses(self, name: str) -> list[int]:
        """The worker's work horse while it runs a job (its other child is RQ's scheduler process)."""
        schedulers = set()
        for key in self.redis.scan_iter(match="rq:scheduler:*", count=1000):
            pid = self.redis.hget(key, "pid")
            if pid:
                schedulers.add(int(pid))
        return [pid for pid in self.children(name) if pid not in schedulers]

    def busy(self, name: str) -> bool:
        """Whether the worker is in the middle of a job: it has a work horse (a forking worker) or RQ
        lists it busy (a worker that runs its jobs itself, the default)."""
        if self.horses(name):
            return True
        keys = [f"rq:worker:{name}", *self.redis.scan_iter(match=f"rq:worker:{name}.*", count=1000)]  # restarts
        return any(self.redis.hget(key, "state") == b"busy" for key in keys)

    def kill_random(self, rng: random.Random) -> str:
        """SIGKILL a worker, mostly one in the middle of a job: all its processes (a crashed machine),
        only its work horse (the OOM killer), or only the worker (its horse finishes as an orphan).
        A worker that runs its jobs itself has no horse: any kill is the crashed machine's.
        A supervisor (systemd, Kubernetes) starts a new worker in place of a dead one; so does this."""
        busy = [name for name in sorted(self.workers) if self.busy(name)]
        name = rng.choice(busy if busy and rng.random() < 0.8 else sorted(self.workers))
        process = self.workers[name]
        how = rng.choice(("machine", "machine", "horse", "worker"))
        horses = self.horses(name)
        if how in ("horse", "worker") and not horses:
            how = "machine"
        if how == "horse":
            for pid in horses:
                _kill(pid)
        elif how == "worker":
            _kill(process.pid)
        else:
            for pid in self.children(name):
                _killpg(pid)  # the horse leads a group of its own
                _kill(pid)
            _killpg(process.pid)
        self.kills[how] += 1
        if how != "horse":
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                _killpg(process.pid)
            del self.workers[name]
            self.start_worker()
        return how

    def alive(self) -> dict[str, bool]:
        state = {name: process.poll() is None for name, process in self.workers.items()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.poll() is None
        return state

    def restart_dead(self) -> list[str]:
        """What a supervisor does: start a new process for every one that exited."""
        restarted = []
        for name, process in list(self.workers.items()):
            if process.poll() is not None:
                del self.workers[name]
                restarted.append(name)
                self.start_worker()
        if self.scheduler is not None and self.scheduler.poll() is not None:
            restarted.append("scheduler")
            self.start_scheduler()
        return restarted

    def output(self, tail: int = 3000) -> str:
        return "\n".join(f"== {path.name}\n{path.read_text(errors='replace')[-tail:]}"
                         for path in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM every worker and the scheduler, then SIGKILL every process of the fleet still alive."""
        for process in self.everything:
            _killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 8
        for process in self.everything:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _ in range(50):
            left = self.members()
            if not left:
                break
            for pid in left:
                _kill(pid)
            time.sleep(0.1)
        for process in self.everything:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.workers.clear()
        self.scheduler = None


def _kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- figures ---------------------------------------------------------------------------------------


@dataclass
class Figures:
    """One scenario's outcome: what was tried and what each system ended up holding."""

    scenario: str
    load: str
    faults: str
    inputs: str
    placed: int = 0
    imported: int = 0  # hub order rows
    destination: int = 0  # Shopify: orders created (distinct marketplace orders)
    fulfilment: int = 0  # Starshipit
    tracking: int | None = 0  # orders whose tracking The Iconic holds (None: not part of the scenario)
    duplicated: int = 0  # extra copies anywhere (hub rows, Shopify, Starshipit, tracking writes)
    lost: int = 0  # orders placed that some system lacks at the end
    seconds: float = 0.0
    notes: str = ""
    passed: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    HEADER = ("scenario", "load", "faults injected", "inputs tried", "created (hub / Shopify / Starshipit / tracking)",
              "duplicated", "lost", "time")

    def row(self) -> tuple[str, ...]:
        counts = (self.imported, self.destination, self.fulfilment, self.tracking)
        created = " / ".join("-" if n is None else str(n) for n in counts) + f" of {self.placed}"
        return (self.scenario, self.load, self.faults, self.inputs, created, str(self.duplicated), str(self.lost),
                f"{self.seconds:.0f} s")


FIGURES: list[Figures] = []  # every scenario of this test session; conftest prints and writes them


def record(figures: Figures) -> Figures:
    """Keep a scenario's figures for the summary table, and print them now (``-s`` shows them live)."""
    FIGURES.append(figures)
    print("\n" + text_table([figures]) + f"\n{figures.details}")
    return figures


def markdown_table(rows: list[Figures]) -> str:
    lines = ["| " + " | ".join(Figures.HEADER) + " |", "|" + "---|" * len(Figures.HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in figures.row()) + " |" for figures in rows]
    return "\n".join(lines)


def text_table(rows: list[Figures]) -> str:
    cells = [Figures.HEADER] + [figures.row() for figures in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(Figures.HEADER))]
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


# -- the world -------------------------------------------------------------------------------------


@dataclass
class Placed:
    iconic: str  # which marketplace sandbox
    order_id: int  # The Iconic's order id (the hub's channel_order_id)
    number: str
    items: list[dict[str, Any]]


class World:
    """One brand on the hub, its sandboxes and its fleet (see the module docstring)."""

    def __init__(self, tmp: Path, pg_url: str, redis: Redis, *, marketplaces: int = 1, skus: int = 30,
                 seed: int = 11) -> None:
        self.tmp = tmp
        self.pg_url = pg_url
        self.redis = redis
        self.prefix = f"chaos-{uuid.uuid4().hex[:10]}"
        self.seed = seed
        self.rng = random.Random(seed)
        self.key = Fernet.generate_key().decode()
        self.box = CredentialBox(self.key.encode())
        self.db = Database(pg_url)
        self.sandboxes: dict[str, Sandbox] = {}
        self.account_ids: dict[str, int] = {}
        self.webhook_secrets: dict[str, str] = {}
        self.organisation_id = 0
        self.placed: list[Placed] = []
        self.place_errors = 0
        self.expected = 0  # orders the shoppers were asked to place
        self.answers_lost = 0  # creates armed to lose their answer after the commit, per destination
        self._lock = threading.Lock()
        self.fleet: Fleet | None = None
        self.dispatcher: Dispatcher | None = None
        self.marketplaces = [f"iconic{n}" if n else "iconic" for n in range(marketplaces)]
        self.catalogue = demo_catalogue.shopify_catalogue(max(skus, demo_catalogue.MIN_SKUS), seed=demo_catalogue.SEED)
        problems = self.catalogue.problems
        planted = {problems.duplicate_sku, problems.missing_ean_sku, problems.trailing_space_sku}
        self.skus = [sku for sku in self.catalogue.labelled_skus if sku not in planted and sku.strip() == sku]
        self._http = httpx.Client(timeout=30)
        self.started = time.monotonic()

    # set-up

    def start_sandboxes(self) -> None:
        for n, name in enumerate(self.marketplaces):
            self.sandboxes[name] = start_iconic(name, self.seed + 10 * n, first_id=10_000 * (n + 1))
        self.sandboxes["shopify"] = start_shopify(self.seed)
        self.sandboxes["starshipit"] = start_starshipit(self.seed)
        records = self.catalogue.records()
        for record in records:
            for variant in record["variants"]:
                variant["stock"] = {location: STOCK for location in demo_catalogue.LOCATIONS}
        self.control("shopify", "POST", "/_control/products", {"products": records})

    def control(self, sandbox: str, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, self.sandboxes[sandbox].url + path, json=body)
        response.raise_for_status()
        return response.json()

    def set_up(self, *, schedules: dict[str, float] | None = None, settings: dict[str, Any] | None = None) -> None:
        """Organisation, label, accounts (Testing), carrier map; then import and list the catalogue."""
        from plugins.iconic import sandbox as iconic
        from plugins.shopify import sandbox as shopify
        from plugins.starshipit import sandbox as starshipit

        shop = shopify.Settings()
        pm = get_plugin_manager()
        with self.db.session() as session:
            organisation = create_organisation(session, f"Chaos {self.prefix}", self.prefix, actor=ACTOR)
            self.organisation_id = organisation.id
            label = labels.create_label(session, organisation.id, LABEL, actor=ACTOR)
            labels.add_rule(session, label, "tag", demo_catalogue.LABEL_TAG, actor=ACTOR)

            def account(name: str, plugin: str, url: str, credentials: dict[str, Any], settings: dict[str, Any],
                        schedules_: dict[str, float]) -> ChannelAccount:
                channel = pm.channel_class(plugin)
                row = lifecycle.create_account(
                    session, organisation.id, name, plugin, "sandbox", channel.validate_credentials(credentials),
                    channel.validate_settings(settings), self.box, ACTOR, fulfilment_mandatory=channel.fulfilment_mandatory)
                row.base_url = url
                row.schedules = dict(schedules_)
                return row

            shop_account = account("Shopify", "shopify", self.sandboxes["shopify"].url,
                                   {"shop_domain": shop.shop_domain, "access_token": shop.access_token,
                                    "client_secret": shop.client_secret},
                                   {"marketplace_name": "The Iconic", "marketplace_address": MARKETPLACE_ADDRESS,
                                    "bulk_poll_seconds": 0.2}, SOURCE_SCHEDULES)
            ship_account = account("Starshipit", "starshipit", self.sandboxes["starshipit"].url,
                                   {"api_key": starshipit.API_KEY, "subscription_key": starshipit.PRODUCTION_KEY},
                                   {"tier": "production", "courier_rules": COURIER_RULES,
                                    "default_courier": DEFAULT_COURIER}, {})
            found = {"shopify": shop_account, "starshipit": ship_account}
            for n, name in enumerate(self.marketplaces):
                self.webhook_secrets[name] = f"whsec-{self.prefix}-{n:04d}"
                market = account(f"The Iconic {n + 1}", "iconic", self.sandboxes[name].url,
                                 {"application_id": iconic.DEFAULT_APPLICATION_ID,
                                  "application_secret": iconic.DEFAULT_APPLICATION_SECRET,
                                  "webhook_secret": self.webhook_secrets[name]},
                                 {"delivery_type": "dropship", "requests_per_second": PACE}, schedules or SCHEDULES)
                # Hub-level settings (oversell_policy...) live beside the channel's; its schema drops them.
                market.settings = {**market.settings, **(settings or {})}
                market.label_id = label.id
                market.source_account_id = shop_account.id
                market.destination_account_id = shop_account.id
                market.fulfilment_account_id = ship_account.id
                market.price_field = "retail"
                for flow in ("listings", "orders", "fulfilments"):
                    lifecycle.set_flow(session, market, flow, True, ACTOR, fulfilment_mandatory=True)
                for code, (provider, template) in CARRIER_MAP.items():
                    carrier_maps.set_mapping(session, market, code, provider, template)
                found[name] = market
            session.flush()
            self.account_ids = {name: row.id for name, row in found.items()}
        set_connector(Connector(box=self.box, pm=pm))
        self.run_inline("shopify", "catalog")
        self._genders_from_tags()
        for name in self.marketplaces:
            self.run_inline(name, "listings")
        with self.db.session() as session:
            for row in session.scalars(select(ChannelAccount).where(ChannelAccount.organisation_id == self.organisation_id)):
                lifecycle.activate(session, row, ACTOR)

    def _genders_from_tags(self) -> None:
        """The seed catalogue keeps gender in a ``gender:<Women|Men|Unisex>`` tag; the Shopify plugin
        does not read it (yet), so the set-up copies it, as an admin fixing the catalogue would."""
        with self.db.session() as session:
            for product in session.scalars(select(Product).where(Product.organisation_id == self.organisation_id)):
                tag = next((t for t in product.tags or [] if str(t).startswith("gender:")), None)
                if not product.gender and tag:
                    product.gender = str(tag).split(":", 1)[1]

    def run_inline(self, account: str, flow: str, **params: Any) -> SyncRun:
        """One run in this process, the way a worker runs it (no faults are on during set-up)."""
        load_builtin_flows()
        run_id = create_run(self.db, self.account_ids[account], flow, trigger="manual")
        execute_run(self.db, run_id, locks=LocalLocks(), retries_left=0, params=params)
        with self.db.session() as session:
            run = session.get(SyncRun, run_id)
            assert run is not None
            assert run.status in (RunStatus.OK, RunStatus.PARTIAL), f"{flow} of {account} ended {run.status}: {run.error}"
            return run

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "CHANNELHUB_DATABASE_URL": self.pg_url,
            "CHANNELHUB_REDIS_URL": REDIS_URL,
            "CHANNELHUB_SECRET_KEY": self.key,
            "CHANNELHUB_INSTANCE": str(self.tmp / "instance"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
        })
        return env

    def start_fleet(self, workers: int = 3, *, scheduler: bool = True) -> Fleet:
        logs = self.tmp / "logs"
        logs.mkdir(exist_ok=True)
        self.fleet = Fleet(logs, self.env(), self.prefix, self.redis)
        self.fleet.start(workers, scheduler=scheduler)
        return self.fleet

    def set_faults(self, rates: dict[str, float], *, sandboxes: list[str] | None = None) -> None:
        for name in sandboxes or list(self.sandboxes):
            self.sandboxes[name].set_faults(**rates)

    def clear_faults(self) -> None:
        for sandbox in self.sandboxes.values():
            sandbox.clear_faults()

    def lose_next_answers(self, count: int = 1) -> None:
        """The next ``count`` order creates in Shopify and in Starshipit are applied, then their answer is
        lost (a 500 / a dropped connection after the commit): the case the fault layer cannot produce,
        since it fails requests before they reach the sandbox, and the one idempotent creates exist for."""
        shop, ship = self.sandboxes["shopify"].state, self.sandboxes["starshipit"].state
        with shop.lock:
            shop.timeouts_pending += count
        with ship.lock:
            ship.timeouts_after_apply += count
        self.answers_lost += count

    # shoppers and the warehouse

    def place_order(self, marketplace: str = "iconic", skus: list[str] | None = None, quantity: int | None = None,
                    force: bool = False) -> Placed | None:
        """A shopper buys one or two SKUs (1-2 units each) on a marketplace (its control API: no faults)."""
        chosen = skus or self.rng.sample(self.skus, 2 if self.rng.random() < 0.25 else 1)
        street, city, state, postcode = self.rng.choice(ADDRESSES)
        address = {"firstName": "Sam", "lastName": "Shopper", "phone": ["0400000000"], "address": [street, "", "", "", ""],
                   "email": "sam@example.com", "city": city, "ward": "", "region": state, "postCode": postcode,
                   "country": "Australia"}
        items = [{"sku": sku, "quantity": quantity or self.rng.choice((1, 1, 1, 2))} for sku in chosen]
        response = self._http.post(self.sandboxes[marketplace].url + "/_control/orders",
                                   json={"items": items, "shipping": address, "billing": address, "force": force})
        if response.status_code >= 400:
            with self._lock:
                self.place_errors += 1
            return None
        order = response.json()
        placed = Placed(marketplace, int(order["id"]), str(order["number"]), items)
        with self._lock:
            self.placed.append(placed)
        return placed

    def place_orders(self, count: int, *, per_second: float, marketplace: str = "iconic") -> threading.Thread:
        """Place ``count`` orders at a steady pace in a thread; join it to wait for the last one."""
        self.expected += count

        def shop() -> None:
            start = time.monotonic()
            for n in range(count):
                delay = start + n / per_second - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.place_order(marketplace)

        thread = threading.Thread(target=shop, name="chaos-shoppers", daemon=True)
        thread.start()
        return thread

    def start_dispatcher(self, after: float = 1.0) -> Dispatcher:
        self.dispatcher = Dispatcher(self.sandboxes["starshipit"], after)
        self.dispatcher.start()
        return self.dispatcher

    # reading back

    def hub_orders(self) -> dict[tuple[int, str], list[Order]]:
        with self.db.session() as session:
            rows = list(session.scalars(select(Order).where(Order.organisation_id == self.organisation_id)))
        found: dict[tuple[int, str], list[Order]] = defaultdict(list)
        for row in rows:
            found[(row.account_id, row.channel_order_id)].append(row)
        return found

    def progress(self) -> dict[str, Any]:
        with self.db.session() as session:
            statuses = dict(session.execute(
                select(Order.status, func.count()).where(Order.organisation_id == self.organisation_id)
                .group_by(Order.status)).all())
            runs = dict(session.execute(
                select(SyncRun.status, func.count()).where(SyncRun.organisation_id == self.organisation_id)
                .group_by(SyncRun.status)).all())
        found = {"placed": len(self.placed), "orders": {s.value: n for s, n in statuses.items()},
                 "runs": {s.value: n for s, n in runs.items()},
                 "dispatched": len(self.dispatcher.dispatched) if self.dispatcher else 0}
        stuck = self.stuck()
        if stuck:
            found["waiting"] = stuck
        return found

    def stuck(self, older_than: float = 20.0) -> list[str]:
        """Pending runs older than ``older_than`` seconds, with what RQ says of their job."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        now = time.time()
        found = []
        for run in self.pending_runs():
            since = run.started_at or run.queued_at
            if since is None or now - since.timestamp() < older_than:
                continue
            try:
                job = Job.fetch(run.job_id or "", connection=self.redis)
                state = f"job {job.get_status(refresh=False).value}, {job.retries_left} retries left"
            except NoSuchJobError:
                state = "no job"
            except Exception as error:  # noqa: BLE001 - Redis may be restarting
                state = f"job unknown ({type(error).__name__})"
            found.append(f"run {run.id} {run.flow} {run.status.value} {now - since.timestamp():.0f}s: {state}")
        return found

    def done(self) -> bool:
        """Every order placed is confirmed in the hub (tracking accepted by the marketplace)."""
        if len(self.placed) + self.place_errors < self.expected:
            return False
        with self.db.session() as session:
            confirmed = session.scalar(select(func.count()).select_from(Order).where(
                Order.organisation_id == self.organisation_id, Order.status == OrderStatus.CONFIRMED))
        return confirmed >= len(self.placed)

    def wait_until_done(self, timeout: float, *, every: float = 10.0, on_tick: Callable[[], None] | None = None,
                        out: Callable[[str], None] = print) -> bool:
        deadline = time.monotonic() + timeout
        last = 0.0
        while time.monotonic() < deadline:
            if on_tick is not None:
                on_tick()
            try:
                if self.done():
                    return True
                if time.monotonic() - last >= every:
                    last = time.monotonic()
                    out(f"[chaos {time.monotonic() - self.started:5.0f}s] {self.progress()}")
            except Exception as error:  # noqa: BLE001 - the database may be restarting
                out(f"[chaos] progress not readable: {type(error).__name__}: {str(error).splitlines()[0]}")
            time.sleep(0.5)
        return False

    def tally(self, figures: Figures) -> Figures:
        """Count, per order placed, what each system holds; fill created/duplicated/lost."""
        shop_state = self.sandboxes["shopify"].state
        ship_state = self.sandboxes["starshipit"].state
        with shop_state.lock:
            shopify_names = Counter(str(order.name) for order in shop_state.orders.values())
        with ship_state.lock:
            starshipit_numbers = Counter(str(s.order["order_number"]) for s in ship_state.orders.values())
        hub = self.hub_orders()
        with self.db.session() as session:
            fulfilments = Counter(session.scalars(
                select(Fulfilment.order_id).join(Order).where(Order.organisation_id == self.organisation_id,
                                                               Fulfilment.status == "sent")))
            sent_bindings = Counter(b.internal_id for b in session.scalars(
                select(Binding).where(Binding.kind == bindings.FULFILMENT_SENT,
                                      Binding.account_id.in_([self.account_ids[m] for m in self.marketplaces]))))
        duplicated: Counter[str] = Counter()
        lost: Counter[str] = Counter()
        missing: dict[str, list[str]] = defaultdict(list)
        tracked = 0
        imported = destination = fulfilment = 0
        for placed in self.placed:
            rows = hub.get((self.account_ids[placed.iconic], str(placed.order_id)), [])
            imported += bool(rows)
            duplicated["hub"] += max(0, len(rows) - 1)
            if not rows:
                lost["hub"] += 1
                missing["hub"].append(placed.number)
            copies = shopify_names.get(placed.number, 0)
            destination += bool(copies)
            duplicated["shopify"] += max(0, copies - 1)
            if not copies:
                lost["shopify"] += 1
                missing["shopify"].append(placed.number)
            copies = starshipit_numbers.get(placed.number, 0)
            fulfilment += bool(copies)
            duplicated["starshipit"] += max(0, copies - 1)
            if not copies:
                lost["starshipit"] += 1
                missing["starshipit"].append(placed.number)
            marketplace = self.sandboxes[placed.iconic]
            items = [item for item in marketplace.state.items.values() if item["orderId"] == placed.order_id]
            codes = {((item.get("shipment") or {}).get("trackingCode")) for item in items}
            writes = [marketplace.writes.accepted.get(item["id"], 0) for item in items] if marketplace.writes else []
            if items and None not in codes and all(item["status"] == "shipped" for item in items):
                tracked += 1
            else:
                lost["tracking"] += 1
                missing["tracking"].append(placed.number)
            duplicated["tracking writes"] += sum(max(0, n - 1) for n in writes)
            if rows:
                duplicated["hub shipments"] += max(0, fulfilments.get(rows[0].id, 0) - 1)
        duplicated["sent bindings"] += sum(max(0, n - 1) for n in sent_bindings.values())
        figures.placed = len(self.placed)
        figures.imported, figures.destination, figures.fulfilment, figures.tracking = imported, destination, fulfilment, tracked
        figures.duplicated = sum(duplicated.values())
        lost_orders = {number for numbers in missing.values() for number in numbers}
        figures.lost = len(lost_orders)
        figures.seconds = time.monotonic() - self.started
        injected: Counter[str] = Counter()
        calls = 0
        for sandbox in self.sandboxes.values():
            injected.update(sandbox.app.injected)
            calls += sandbox.app.total_calls
        with shop_state.lock:
            left = shop_state.timeouts_pending
        with ship_state.lock:
            left_ship = ship_state.timeouts_after_apply
        figures.details.update({
            "answers lost after commit": {"shopify": self.answers_lost - left, "starshipit": self.answers_lost - left_ship},
            "duplicated": dict(duplicated), "lost": dict(lost), "missing": {k: v[:10] for k, v in missing.items()},
            "injected": dict(injected), "requests": calls, "place_errors": self.place_errors,
            "refused_tracking_writes": sum(s.writes.refused for s in self.sandboxes.values() if s.writes),
        })
        if self.fleet is not None:
            figures.details["kills"] = dict(self.fleet.kills)
        return figures

    def failed_runs(self, limit: int = 10) -> list[str]:
        with self.db.session() as session:
            runs = session.scalars(select(SyncRun).where(SyncRun.organisation_id == self.organisation_id,
                                                         SyncRun.status == RunStatus.FAILED)
                                   .order_by(SyncRun.id.desc()).limit(limit))
            return [f"{run.flow} #{run.id}: {run.error}" for run in runs]

    def events(self, kind: str) -> list[Event]:
        with self.db.session() as session:
            return list(session.scalars(select(Event).where(Event.organisation_id == self.organisation_id,
                                                            Event.kind == kind).order_by(Event.id)))

    def pending_runs(self) -> list[SyncRun]:
        with self.db.session() as session:
            return list(session.scalars(select(SyncRun).where(SyncRun.organisation_id == self.organisation_id,
                                                              SyncRun.status.not_in(TERMINAL))))

    def busy(self) -> bool:
        """Some run is queued, running or waiting for a retry right now (a restart then hits it mid-run)."""
        try:
            return any(run.status == RunStatus.RUNNING and run.flow in ("orders", "fulfilment")
                       for run in self.pending_runs())
        except Exception:  # noqa: BLE001
            return False

    def recoveries(self) -> dict[str, int]:
        """What the ticks had to recover (``hub.fleet`` logs each recovery): runs failed as abandoned,
        pending runs queued again, overdue retries moved onto their queues."""
        import ast
        import re

        found = {"runs failed as abandoned": 0, "runs queued again": 0, "overdue jobs moved": 0}
        if self.fleet is None:
            return found
        pattern = re.compile(r"recovery: moved overdue jobs (\[.*?\]), failed runs (\[.*?\]), queued again (\[.*?\])")
        for moved, failed, requeued in pattern.findall(self.fleet.output(tail=10**9)):
            found["overdue jobs moved"] += len(ast.literal_eval(moved))
            found["runs failed as abandoned"] += len(ast.literal_eval(failed))
            found["runs queued again"] += len(ast.literal_eval(requeued))
        return found

    def run_load(self, figures: Figures, orders: int, *, per_second: float, timeout: float, marketplace: str = "iconic",
                 on_tick: Callable[[], None] | None = None) -> tuple[Figures, bool]:
        """Place ``orders`` at ``per_second`` while ``on_tick`` does its damage; wait until every order is
        confirmed (or ``timeout``), then count. Returns the figures (recorded) and whether it finished."""
        if self.dispatcher is None:
            self.start_dispatcher(after=0.5)
        self.place_orders(orders, per_second=per_second, marketplace=marketplace)
        finished = self.wait_until_done(timeout, every=15, on_tick=on_tick)
        self.tally(figures)
        figures.passed = finished and figures.lost == 0 and figures.duplicated == 0 and figures.placed == orders
        figures.details["finished"] = finished
        figures.details.update(self.recoveries())
        if not finished:
            figures.details["still waiting"] = self.stuck(0)[:10]
            figures.details["failed runs"] = self.failed_runs(5)
        return record(figures), finished

    # tear-down

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.fleet is not None:
            self.fleet.stop()
        for sandbox in self.sandboxes.values():
            try:
                sandbox.served.stop()
            except Exception:  # noqa: BLE001 - tear-down goes on; the server thread is a daemon
                log.warning("could not stop the %s sandbox", sandbox.name, exc_info=True)
        self._http.close()
        set_connector(None)
        purge_prefix(self.redis, self.prefix)
        self.db.dispose()


class Dispatcher:
    """The warehouse: every order Starshipit holds unshipped for ``after`` seconds is dispatched
    (label printed, tracking number given, status Dispatched) through its control API."""

    def __init__(self, sandbox: Sandbox, after: float) -> None:
        self.sandbox = sandbox
        self.after = after
        self.dispatched: list[str] = []
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-warehouse", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        state = self.sandbox.state
        while not self._stop.wait(0.5):
            now = time.monotonic()
            with state.lock:
                waiting = [s for s in state.orders.values() if s.order.get("status") in ("Unshipped", "Saved")]
                for stored in waiting:
                    first = self._seen.setdefault(stored.order["order_id"], now)
                    if now - first < self.after:
                        continue
                    state.print_label(stored, None, None, None)
                    state.set_tracking(stored, "Dispatched", notify=False)
                    self.dispatched.append(stored.order["order_number"])
