"""``channelhub demo``: the whole product on one machine, against the four sandboxes.

Read top to bottom, :func:`start_demo` does what a brand's admin and its trading partners would do:

1. **start the sandboxes** of The Iconic, Shopify, Uphance and Starshipit on loopback (fixed ports,
   8101-8104 by default), each with ids that never repeat those of an earlier run;
2. **seed** them: a fashion catalogue of about ``skus`` SKUs in Shopify and a second brand in
   Uphance (``plugins.demo.catalogue``, deterministic, with three problems planted on purpose);
3. **set up** the organisation, an admin user, the label ``the-iconic`` (a rule gives it to every
   product tagged so), and the four channel accounts in Testing: Shopify is the catalogue source of
   The Iconic and the destination of its orders, Starshipit ships them (courier rules), The Iconic's
   carrier map names the carriers; every flow on a short schedule. All of it is found by name when
   it exists already, so a restart on the same ``instance/`` reuses it and only points the accounts
   at the new sandbox ports;
4. **start the runtime** (the embedded pool and ticker). After a restart the sandboxes are new and
   empty, so a product reset of The Iconic account runs first: it finds nothing listed there and the
   next listings run lists everything again (the same thing an admin does when a marketplace lost
   its listings);
5. **start the order simulator**: shoppers buy listed SKUs on The Iconic at a steady pace, and the
   warehouse dispatches (label + tracking) what reached Starshipit a little later;
6. **serve** the admin UI and print how to sign in.

:func:`run_demo` is the command: it starts, prints, waits for Ctrl-C (or SIGTERM) and stops
everything in reverse order. Tests use :func:`start_demo` / :meth:`RunningDemo.stop`.

The demo knows the built-in plugins (their sandboxes, credentials and settings); it imports them
inside functions only, so importing ``plugins.demo.runner`` loads no plugin.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub import accounts as lifecycle
from hub import carrier_maps, labels
from plugins.demo import catalogue as demo_catalogue
from hub.app import Hub
from hub.connections import Connector, set_connector
from hub.embedded import EmbeddedRuntime
from hub.errors import ConfigurationError
from hub.memory import freeze_startup_objects
from hub.models import (
    AccountStatus,
    Binding,
    ChannelAccount,
    DuplicateSku,
    Fulfilment,
    Order,
    Organisation,
    User,
)
from hub.users import authenticate, create_organisation, create_user, set_password

log = logging.getLogger("channelhub.demo")

ACTOR = "demo"
ORGANISATION_NAME = "Demo Fashion House"
ORGANISATION_SLUG = "demo"
ADMIN_EMAIL = "admin@demo.example.com"
LABEL = "the-iconic"
CREDENTIALS_FILE = "demo-credentials.txt"  # in the instance folder, mode 0600
STATE_FILE = "demo-state.json"  # the run counter that keeps sandbox ids apart between runs

SANDBOXES = ("iconic", "shopify", "uphance", "starshipit")
DEFAULT_SANDBOX_PORT = 8101  # iconic 8101, shopify 8102, uphance 8103, starshipit 8104
IDS_PER_RUN = 1_000_000  # each run's sandboxes hand out ids from their own block

ICONIC, SHOPIFY, UPHANCE, STARSHIPIT = "The Iconic (demo)", "Shopify (demo)", "Uphance (demo)", "Starshipit (demo)"

# Seconds between runs of each flow. Production defaults are hours and minutes
# (hub.defaults.FLOW_INTERVALS); the demo wants to show everything within two minutes.
DEMO_SCHEDULES: dict[str, dict[str, float]] = {
    SHOPIFY: {"catalog": 60, "catalog_full": 120},
    UPHANCE: {"catalog": 120, "catalog_full": 900},
    ICONIC: {"listings": 10, "stock": 15, "orders": 10, "fulfilment": 10, "reconcile": 120},
}
# The Iconic's shipment providers (its /v2/orders-shipment-providers) for the carriers Starshipit uses.
CARRIER_MAP = {
    "auspost": ("Australia Post", "https://auspost.com.au/mypost/track/#/details/{tracking}"),
    "startrack": ("StarTrack", "https://startrack.com.au/track/details/{tracking}"),
    "aramex": ("Aramex", "https://www.aramex.com.au/tools/track?l={tracking}"),
    "couriersplease": ("CouriersPlease", "https://www.couriersplease.com.au/tools-track/no/{tracking}"),
}
# Which courier Starshipit books: metro east coast by StarTrack express, the rest by Australia Post.
COURIER_RULES = [
    {"name": "East coast express", "states": ["NSW", "VIC", "ACT"], "carrier": "StarTrack", "service_code": "EXP"},
]
DEFAULT_COURIER = {"carrier": "AusPost", "service_code": "7B05"}
MARKETPLACE_ADDRESS = {"address1": "Level 18, 363 George St", "city": "Sydney", "provinceCode": "NSW", "zip": "2000",
                       "countryCode": "AU"}


@dataclass
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 8000  # the admin UI; 0 picks a free port
    skus: int = 1000
    orders_per_minute: float = 6.0
    sandbox_port: int = DEFAULT_SANDBOX_PORT  # first of four consecutive ports; 0 picks free ports
    dispatch_after: float = 20.0  # seconds from an order reaching Starshipit to its dispatch
    schedules: dict[str, dict[str, float]] | None = None  # per account name; None: DEMO_SCHEDULES
    tick_seconds: float = 2.0  # how often the embedded scheduler looks for due flows
    workers: int = 4
    approval_delay: float = 15.0  # seconds until The Iconic sandbox approves a new product
    seed: int = demo_catalogue.SEED
    serve_web: bool = True


# -- 1. the sandboxes ------------------------------------------------------------------------------


@dataclass
class Sandboxes:
    """The four sandboxes served on loopback: ``apps[name]`` is the WSGI app (``.state`` inside)."""

    apps: dict[str, Any]
    served: dict[str, Any]  # name -> hub.sandbox.ServedSandbox

    def url(self, name: str) -> str:
        return self.served[name].url

    def stop(self) -> None:
        for name in reversed(SANDBOXES):
            served = self.served.pop(name, None)
            if served is not None:
                served.stop()


def start_sandboxes(options: DemoOptions, run_number: int) -> Sandboxes:
    """Build and serve the four sandboxes; each run's ids come from a block of its own."""
    from hub.sandbox import serve
    from plugins.iconic import sandbox as iconic
    from plugins.shopify import sandbox as shopify
    from plugins.starshipit import sandbox as starshipit
    from plugins.uphance import sandbox as uphance

    offset = (run_number - 1) * IDS_PER_RUN
    apps = {
        "iconic": iconic.create_app(options.seed, first_id=1000 + offset, approval_delay=options.approval_delay),
        "shopify": shopify.create_app(options.seed, products=0, id_base=1000 + offset, sender=_no_webhooks),
        "uphance": uphance.create_app(options.seed, products=0),
        "starshipit": starshipit.create_app(options.seed, seed_orders=0, first_order_id=100_001 + offset),
    }
    served: dict[str, Any] = {}
    try:
        for index, name in enumerate(SANDBOXES):
            port = options.sandbox_port + index if options.sandbox_port else 0
            served[name] = serve(apps[name], host="127.0.0.1", port=port)
    except OSError as error:
        Sandboxes(apps, served).stop()
        raise ConfigurationError(
            f"cannot serve the {name} sandbox on port {port}: {error}. Stop what uses it, or choose other "
            "ports with --sandbox-port") from error
    return Sandboxes(apps, served)


def _no_webhooks(uri: str, headers: dict[str, str], body: bytes) -> int:
    return 200  # the demo polls; nothing subscribes to Shopify's webhooks


# -- 2. the seed catalogues ------------------------------------------------------------------------


@dataclass
class Seeded:
    shopify: demo_catalogue.ShopifyCatalogue
    uphance: demo_catalogue.UphanceCatalogue


def seed_sandboxes(sandboxes: Sandboxes, options: DemoOptions) -> Seeded:
    """Load the catalogues through the sandboxes' control APIs (what a merchant would type in)."""
    from plugins.uphance.sandbox import CHANNELS, PRICE_FACTORS

    shopify = demo_catalogue.shopify_catalogue(options.skus, seed=options.seed)
    price_lists = [{"name": c["channel_name"], "currency": c["currency"], "factor": str(PRICE_FACTORS[c["channel_ID"]])}
                   for c in CHANNELS]
    uphance = demo_catalogue.uphance_catalogue(price_lists, seed=options.seed)
    with httpx.Client(timeout=60) as client:
        _control(client, "POST", f"{sandboxes.url('shopify')}/_control/products", {"products": shopify.records()})
        _control(client, "POST", f"{sandboxes.url('uphance')}/_control/catalogue",
                 {"products": list(uphance.products), "seasons": list(uphance.seasons)})
    return Seeded(shopify, uphance)


def _control(client: httpx.Client, method: str, url: str, body: Any = None) -> Any:
    response = client.request(method, url, json=body)
    response.raise_for_status()
    return response.json()


# -- 3. organisation, users, label, accounts -------------------------------------------------------


@dataclass
class DemoSetup:
    organisation_id: int
    admin_email: str
    admin_password: str
    account_ids: dict[str, int]  # account name -> id
    created: bool  # False when an earlier run's organisation was found and reused
    new_accounts: frozenset[str] = frozenset()  # the accounts this run created (all of them on a first run)

    @property
    def iconic_id(self) -> int:
        return self.account_ids[ICONIC]


def set_up(hub: Hub, sandboxes: Sandboxes, options: DemoOptions) -> DemoSetup:
    """Idempotent: find each thing by name, create what is missing, point accounts at the sandboxes."""
    schedules = options.schedules or DEMO_SCHEDULES
    with hub.db.session() as session:
        organisation = session.scalar(select(Organisation).where(Organisation.slug == ORGANISATION_SLUG))
        created = organisation is None
        if organisation is None:
            organisation = create_organisation(session, ORGANISATION_NAME, ORGANISATION_SLUG, actor=ACTOR)
        password = _admin(session, organisation, hub.config.instance_dir)

        label = labels.create_label(session, organisation.id, LABEL, actor=ACTOR)
        labels.add_rule(session, label, "tag", demo_catalogue.LABEL_TAG, actor=ACTOR)

        found: dict[str, ChannelAccount] = {}
        new: set[str] = set()
        for name, spec in _account_specs(sandboxes).items():
            found[name], created_now = _account(session, hub, organisation.id, name, spec, schedules.get(name, {}))
            if created_now:
                new.add(name)
        iconic = found[ICONIC]
        if ICONIC in new:  # wire the marketplace once; afterwards the admin's choices stand
            iconic.label_id = label.id
            iconic.source_account_id = found[SHOPIFY].id
            iconic.destination_account_id = found[SHOPIFY].id
            iconic.fulfilment_account_id = found[STARSHIPIT].id
            iconic.reserve_stock = 1
            iconic.price_field = "retail"
            for flow in ("listings", "reconciler", "orders", "fulfilments"):
                lifecycle.set_flow(session, iconic, flow, True, ACTOR, fulfilment_mandatory=True)
        for code, (provider, template) in CARRIER_MAP.items():
            try:
                carrier_maps.lookup(session, iconic, code)
            except carrier_maps.UnknownCarrier:
                carrier_maps.set_mapping(session, iconic, code, provider, template)
        for account in found.values():
            if account.status == AccountStatus.SETUP:
                lifecycle.activate(session, account, ACTOR)
        return DemoSetup(organisation.id, ADMIN_EMAIL, password, {name: a.id for name, a in found.items()}, created,
                         frozenset(new))


def _account_specs(sandboxes: Sandboxes) -> dict[str, dict[str, Any]]:
    """What each demo account is: its plugin, the sandbox's URL, credentials and settings."""
    from plugins.iconic import sandbox as iconic
    from plugins.shopify import sandbox as shopify
    from plugins.starshipit import sandbox as starshipit
    from plugins.uphance import sandbox as uphance

    shop = shopify.Settings()
    return {
        SHOPIFY: {
            "plugin": "shopify", "url": sandboxes.url("shopify"),
            "credentials": {"shop_domain": shop.shop_domain, "access_token": shop.access_token,
                            "client_secret": shop.client_secret},
            # Bulk exports cost a few points of Shopify's query budget whatever the catalogue's size;
            # paged imports of 1,000 SKUs every minute would leave none for creating orders.
            "settings": {"marketplace_name": "The Iconic", "marketplace_address": MARKETPLACE_ADDRESS,
                         "catalogue_mode": "bulk", "bulk_poll_seconds": 0.5},
        },
        UPHANCE: {
            "plugin": "uphance", "url": sandboxes.url("uphance"),
            "credentials": {"email": uphance.DEFAULT_EMAIL, "password": uphance.DEFAULT_PASSWORD},
            "settings": {"organisation_id": uphance.MAIN_ORG["id"], "channel_id": 12, "customer_id": 501,
                         "warehouse": "Sydney DC"},
        },
        STARSHIPIT: {
            "plugin": "starshipit", "url": sandboxes.url("starshipit"),
            "credentials": {"api_key": starshipit.API_KEY, "subscription_key": starshipit.PRODUCTION_KEY},
            "settings": {"tier": "production", "courier_rules": COURIER_RULES, "default_courier": DEFAULT_COURIER},
        },
        ICONIC: {
            "plugin": "iconic", "url": sandboxes.url("iconic"),
            "credentials": {"application_id": iconic.DEFAULT_APPLICATION_ID,
                            "application_secret": iconic.DEFAULT_APPLICATION_SECRET},
            "settings": {"delivery_type": "dropship"},
        },
    }


def _account(session: Session, hub: Hub, organisation_id: int, name: str, spec: dict[str, Any],
             schedules: dict[str, float]) -> tuple[ChannelAccount, bool]:
    """The account called ``name`` (created in Setup if missing: True), pointed at this run's sandbox."""
    account = session.scalar(select(ChannelAccount).where(ChannelAccount.organisation_id == organisation_id,
                                                          ChannelAccount.name == name))
    created = account is None
    if account is None:
        channel = hub.pm.channel_class(spec["plugin"])
        account = lifecycle.create_account(
            session, organisation_id, name, spec["plugin"], "sandbox",
            channel.validate_credentials(spec["credentials"]), channel.validate_settings(spec["settings"]),
            hub.box, ACTOR, fulfilment_mandatory=channel.fulfilment_mandatory)
        account.schedules = dict(schedules)
    account.base_url = spec["url"]
    session.flush()
    return account, created


def _admin(session: Session, organisation: Organisation, instance_dir: Path) -> str:
    """The demo's admin; its password lives in instance/demo-credentials.txt (0600) and is reused."""
    path = Path(instance_dir) / CREDENTIALS_FILE
    stored = _stored_password(path)
    user = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
    if user is not None and stored and authenticate(session, ADMIN_EMAIL, stored) is not None:
        return stored
    password = secrets.token_urlsafe(12)
    if user is None:
        create_user(session, organisation, ADMIN_EMAIL, password, role="admin", name="Demo admin", actor=ACTOR)
    else:
        set_password(session, user, password)  # the file was lost or the password changed: a new one
        user.active = True
    _write_private(path, f"email: {ADMIN_EMAIL}\npassword: {password}\n")
    return password


def _stored_password(path: Path) -> str | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "password" and value.strip():
                return value.strip()
    except OSError:
        return None
    return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def next_run_number(instance_dir: Path) -> int:
    """1 on the first run in this instance folder, then 2, 3...; kept in instance/demo-state.json."""
    path = Path(instance_dir) / STATE_FILE
    try:
        number = int(json.loads(path.read_text()).get("runs", 0)) + 1
    except (OSError, ValueError, AttributeError):
        number = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": number}) + "\n")
    return number


# -- 5. the order simulator ------------------------------------------------------------------------

CUSTOMERS = [("Mia", "Nguyen"), ("Oliver", "Smith"), ("Charlotte", "Brown"), ("Jack", "Wilson"), ("Amelia", "Taylor"),
             ("Noah", "Jones"), ("Isla", "Williams"), ("Leo", "Martin"), ("Ava", "Thompson"), ("Lucas", "White")]
ADDRESSES = [("12 Crown St", "Surry Hills", "NSW", "2010"), ("88 Chapel St", "Windsor", "VIC", "3181"),
             ("5 James St", "Fortitude Valley", "QLD", "4006"), ("210 Murray St", "Perth", "WA", "6000"),
             ("31 Rundle Mall", "Adelaide", "SA", "5000"), ("7 Salamanca Pl", "Hobart", "TAS", "7000"),
             ("40 Lonsdale St", "Braddon", "ACT", "2612"), ("150 Smith St", "Darwin", "NT", "0800")]


class OrderSimulator:
    """Shoppers and a warehouse: places marketplace orders and dispatches what reached Starshipit.

    Every ``60 / orders_per_minute`` seconds it buys one or two listed SKUs that The Iconic shows as
    available (``POST /_control/orders``); every second it dispatches, through Starshipit's control
    API, each order that has waited there ``dispatch_after`` seconds (label, carrier, tracking).
    """

    def __init__(self, iconic_url: str, starshipit_url: str, *, orders_per_minute: float, dispatch_after: float,
                 seed: int = demo_catalogue.SEED) -> None:
        self.iconic_url, self.starshipit_url = iconic_url, starshipit_url
        self.interval = 60.0 / orders_per_minute if orders_per_minute > 0 else None
        self.dispatch_after = dispatch_after
        self.rng = random.Random(seed)
        self.placed: list[str] = []  # order numbers
        self.dispatched: list[str] = []
        self.skipped = 0  # attempts with nothing to buy yet
        self._seen: dict[int, float] = {}  # Starshipit order id -> when first seen unshipped
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=10)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="channelhub-demo-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._client.close()

    def _loop(self) -> None:
        next_order = time.monotonic() + (self.interval or 0)
        while not self._stop.wait(1.0):
            try:
                if self.interval is not None and time.monotonic() >= next_order:
                    self.place_order()
                    next_order += self.interval
                self.dispatch_due()
            except httpx.HTTPError as error:  # a sandbox hiccup: try again on the next beat
                log.warning("demo simulator: %s", error)

    def place_order(self) -> str | None:
        """Buy what The Iconic shows as available; None when nothing is listed with stock yet."""
        products = self._client.get(f"{self.iconic_url}/_control/products").json()["products"]
        candidates = [p["sellerSku"] for p in products if p["status"] == "active" and p["available"] > 0]
        if not candidates:
            self.skipped += 1
            return None
        skus = self.rng.sample(candidates, 2 if len(candidates) > 1 and self.rng.random() < 0.2 else 1)
        first, last = self.rng.choice(CUSTOMERS)
        street, city, state, postcode = self.rng.choice(ADDRESSES)
        address = {"firstName": first, "lastName": last, "phone": ["0400000000"], "address": [street, "", "", "", ""],
                   "email": f"{first.lower()}.{last.lower()}@example.com", "city": city, "ward": "", "region": state,
                   "postCode": postcode, "country": "Australia"}
        response = self._client.post(f"{self.iconic_url}/_control/orders", json={
            "items": [{"sku": sku, "quantity": 1} for sku in skus], "shipping": address, "billing": address,
            "customer": {"firstName": first, "lastName": last}})
        if response.status_code == 409:  # sold out between the look and the purchase
            self.skipped += 1
            return None
        response.raise_for_status()
        number = str(response.json()["number"])
        self.placed.append(number)
        return number

    def dispatch_due(self) -> list[str]:
        """Dispatch every Starshipit order that has waited long enough; returns their numbers."""
        now = time.monotonic()
        done = []
        for order in self._client.get(f"{self.starshipit_url}/_control/orders").json():
            if order.get("status") not in ("Unshipped", "Saved"):
                continue
            first_seen = self._seen.setdefault(order["order_id"], now)
            if now - first_seen < self.dispatch_after:
                continue
            response = self._client.post(f"{self.starshipit_url}/_control/dispatch", json={"order_id": order["order_id"]})
            response.raise_for_status()
            self.dispatched.append(order["order_number"])
            done.append(order["order_number"])
        return done


# -- 4 and 6: the runtime, the web server, and the whole demo ---------------------------------------


class _WebServer:
    """The admin UI on werkzeug's threaded server, in a thread, so Ctrl-C reaches the main thread."""

    def __init__(self, hub: Hub, host: str, port: int) -> None:
        from werkzeug.serving import make_server

        from web import create_app

        try:
            self.server = make_server(host, port, create_app(hub), threaded=True)
        except OSError as error:
            raise ConfigurationError(f"cannot serve the admin UI on {host}:{port}: {error}. "
                                     "Choose another port with --port") from error
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="channelhub-demo-web", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@dataclass
class RunningDemo:
    hub: Hub
    options: DemoOptions
    run_number: int
    sandboxes: Sandboxes
    seeded: Seeded
    setup: DemoSetup
    runtime: EmbeddedRuntime
    simulator: OrderSimulator
    web: _WebServer | None
    previous_connector: Connector | None
    reset_run_id: int | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def web_url(self) -> str | None:
        return self.web.url if self.web is not None else None

    def status(self) -> dict[str, Any]:
        return demo_status(self.hub, self.setup)

    def stop(self) -> None:
        """Stop in reverse order of starting: UI, simulator, runtime (running flows finish), sandboxes."""
        if self._stopped:
            return
        self._stopped = True
        if self.web is not None:
            self.web.stop()
        self.simulator.stop()
        self.runtime.stop(timeout=30)
        self.sandboxes.stop()
        # A flow still waiting out a rate limit past the timeout keeps this hub's connector (and its
        # key); handing it the process default would make it open another instance folder's key.
        lingering = [t for t in threading.enumerate() if t.name.startswith("channelhub-worker") and t.is_alive()]
        if not lingering:
            set_connector(self.previous_connector)


def start_demo(hub: Hub, options: DemoOptions | None = None) -> RunningDemo:
    """Everything of the module docstring, in that order; returns a handle to stop it."""
    options = options or DemoOptions()
    if options.skus < demo_catalogue.MIN_SKUS:
        raise ConfigurationError(f"--skus must be at least {demo_catalogue.MIN_SKUS} (got {options.skus})")
    if options.orders_per_minute < 0:
        raise ConfigurationError(f"--orders-per-minute must not be negative (got {options.orders_per_minute:g})")
    run_number = next_run_number(hub.config.instance_dir)
    sandboxes = start_sandboxes(options, run_number)
    previous = _current_connector()
    runtime: EmbeddedRuntime | None = None
    simulator: OrderSimulator | None = None
    try:
        seeded = seed_sandboxes(sandboxes, options)
        setup = set_up(hub, sandboxes, options)
        # Flows open channels through the process's connector: give it this hub's credential key.
        set_connector(Connector(box=hub.box, pm=hub.pm))
        runtime = EmbeddedRuntime(hub.db, workers=options.workers, tick_seconds=options.tick_seconds)
        hub._runtime = runtime  # the web UI's "Run now" and the demo share this pool
        reset_run_id = None
        if ICONIC not in setup.new_accounts:
            # New sandboxes, old memories: re-match The Iconic's listings before anything is pushed.
            reset_run_id = runtime.enqueue(setup.iconic_id, "reset", trigger="manual")
        freeze_startup_objects()
        runtime.start()
        simulator = OrderSimulator(sandboxes.url("iconic"), sandboxes.url("starshipit"),
                                   orders_per_minute=options.orders_per_minute, dispatch_after=options.dispatch_after,
                                   seed=options.seed + run_number)
        simulator.start()
        web = _WebServer(hub, options.host, options.port) if options.serve_web else None
    except BaseException:
        if simulator is not None:
            simulator.stop()
        if runtime is not None:
            runtime.stop()
        sandboxes.stop()
        set_connector(previous)
        raise
    return RunningDemo(hub, options, run_number, sandboxes, seeded, setup, runtime, simulator, web, previous,
                       reset_run_id)


def _current_connector() -> Connector | None:
    import hub.connections as connections

    return connections._current  # noqa: SLF001 - restored on stop, so a test's connector survives the demo


def run_demo(hub: Hub, *, host: str = "127.0.0.1", port: int = 8000, skus: int = 1000,
             orders_per_minute: float = 6.0, sandbox_port: int = DEFAULT_SANDBOX_PORT,
             status_every: float = 30.0, out: Callable[[str], None] = print) -> None:
    """``channelhub demo``: start everything, print how to sign in, wait for Ctrl-C, stop cleanly."""
    if hub.config.fleet:
        out("Note: CHANNELHUB_REDIS_URL is set, but the demo always runs its flows in this process.")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # five servers' request lines would drown the status
    options = DemoOptions(host=host, port=port, skus=skus, orders_per_minute=orders_per_minute,
                          sandbox_port=sandbox_port)
    demo = start_demo(hub, options)
    stop = threading.Event()
    previous_term = _on_sigterm(stop)
    try:
        out(banner(demo))
        while not stop.wait(status_every):
            out(status_line(demo.status(), demo.simulator))
    except KeyboardInterrupt:
        pass
    finally:
        out("Stopping the demo: the web server, the simulator, running flows, the sandboxes...")
        demo.stop()
        _restore_sigterm(previous_term)
        out(f"Stopped. Everything the hub knows is kept in {hub.config.instance_dir}; `make demo` starts it again.")


def _on_sigterm(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: stop.set())


def _restore_sigterm(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


# -- what the user sees ----------------------------------------------------------------------------


def demo_status(hub: Hub, setup: DemoSetup) -> dict[str, Any]:
    """Counts for the status line (and the tests): listed SKUs, orders by status, shipments sent."""
    with hub.db.session() as session:
        iconic = setup.iconic_id
        listed = session.scalar(select(func.count()).select_from(Binding).where(
            Binding.account_id == iconic, Binding.kind == "listing", Binding.last_error.is_(None),
            Binding.fingerprint.is_not(None)))
        orders = dict(session.execute(select(Order.status, func.count()).where(Order.account_id == iconic)
                                      .group_by(Order.status)).all())
        sent = session.scalar(select(func.count()).select_from(Fulfilment).join(Order).where(
            Order.account_id == iconic, Fulfilment.status == "sent"))
        duplicates = session.scalar(select(func.count()).select_from(DuplicateSku).where(
            DuplicateSku.organisation_id == setup.organisation_id))
    return {"listed": listed or 0, "orders": {status.value: count for status, count in orders.items()},
            "shipments_sent": sent or 0, "duplicate_skus": duplicates or 0}


def status_line(status: dict[str, Any], simulator: OrderSimulator) -> str:
    orders = status["orders"]
    waiting = orders.get("imported", 0) + orders.get("error", 0)
    return (f"[demo] listed on The Iconic: {status['listed']} | orders placed {len(simulator.placed)}, "
            f"in Shopify {sum(orders.values()) - waiting}, waiting {waiting} | dispatched {len(simulator.dispatched)}, "
            f"tracking written back {status['shipments_sent']} | duplicate SKUs {status['duplicate_skus']}")


def banner(demo: RunningDemo) -> str:
    setup, seeded = demo.setup, demo.seeded
    problems = seeded.shopify.problems
    ui = demo.web_url or "(not served)"
    lines = [
        "",
        "channelhub demo is running" + ("" if setup.created else f" (run {demo.run_number}: accounts reused, "
                                                                 "The Iconic re-matched by a product reset)"),
        "",
        f"  Admin UI      {ui}/",
        f"  Sign in as    {setup.admin_email}",
        f"  Password      {setup.admin_password}",
        f"                (kept in {Path(demo.hub.config.instance_dir) / CREDENTIALS_FILE}, mode 0600)",
        "",
        "  Sandboxes (in memory, seeded afresh on every start):",
        f"    The Iconic  {demo.sandboxes.url('iconic')}    listings: /_control/products  orders: /_control/orders",
        f"    Shopify     {demo.sandboxes.url('shopify')}    orders: /_control/state",
        f"    Uphance     {demo.sandboxes.url('uphance')}",
        f"    Starshipit  {demo.sandboxes.url('starshipit')}    orders: /_control/orders",
        "",
        f"  Catalogue: {len(seeded.shopify.skus)} SKUs in Shopify ({len(seeded.shopify.products)} styles, "
        f"{len(seeded.shopify.labelled_skus)} labelled '{LABEL}'), {len(seeded.uphance.skus)} SKUs of "
        f"{demo_catalogue.UPHANCE_BRAND} in Uphance.",
        "  Planted problems, and where to find them:",
        f"    duplicate SKU {problems.duplicate_sku!r}: Dashboard, Catalogue > Duplicate SKUs",
        f"    missing EAN on {problems.missing_ean_sku!r}: Syncs > a listings run (rejected items), Audit log",
        f"    trailing space in {problems.trailing_space_sku!r}: Syncs > a catalog run (rejected records)",
        f"  Orders: {demo.options.orders_per_minute:g} a minute on The Iconic, dispatched by Starshipit after "
        f"{demo.options.dispatch_after:g} s.",
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)
