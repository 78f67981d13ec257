"""Fixtures for the web tests: a hub on a fresh SQLite file (``create_all``), the in-memory test
channel, two organisations with users of every role, and a signed-in test client per role.

Set ``CHANNELHUB_WEB_TEST_DATABASE=postgresql`` to run the same tests on the PostgreSQL test server
(each test then gets a schema of its own).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient

from hub import bindings
from hub.accounts import create_account
from hub.app import Hub
from hub.config import Config
from hub.db import Database
from hub.events import emit
from hub.labels import add_rule, assign, create_label
from hub.models import (
    CarrierMap, DuplicateSku, Order, OrderLine, OrderStatus, Product, RunStatus, SyncRun,
    SyncRunItem, Variant,
)
from hub.plugins import ChannelhubPluginManager, set_plugin_manager
from hub.users import create_organisation, create_user
from tests.memory_channel import MemoryPlugin
from web import create_app
from web.auth import new_token
from tests.services import CHROMIUM, CHROMIUM_ARGS, require_chromium  # noqa: F401 - re-exported for the browser tests

PASSWORD = "correct horse battery"
ROLES = ("viewer", "operator", "admin")
_CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


@dataclass
class World:
    """Ids of what the seed created, by organisation ("a" is the one under test, "b" the other)."""

    ids: dict[str, dict[str, int]] = field(default_factory=lambda: {"a": {}, "b": {}})
    emails: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def plugin_manager() -> Iterator[ChannelhubPluginManager]:
    pm = ChannelhubPluginManager()
    pm.register_plugin(MemoryPlugin(), "memory")
    set_plugin_manager(pm)
    yield pm
    set_plugin_manager(None)


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    if os.environ.get("CHANNELHUB_WEB_TEST_DATABASE") == "postgresql":
        from tests.storage_fixtures import postgres_schema_url

        with postgres_schema_url() as url:
            yield url
        return
    yield f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
def hub(tmp_path: Path, database_url: str, plugin_manager: ChannelhubPluginManager) -> Iterator[Hub]:
    config = Config(instance_dir=tmp_path / "instance", database_url=database_url,
                    secret_key=Fernet.generate_key().decode())
    db = Database(database_url)
    db.create_all()
    instance = Hub(config=config, db=db)
    yield instance
    instance.close()


@pytest.fixture
def world(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> World:
    # scrypt is deliberately slow; seeding nine users per test with it would dominate the run.
    # check_password_hash reads the method from the hash, so sign-in works the same.
    from werkzeug.security import generate_password_hash

    import hub.users as users_module

    monkeypatch.setattr(users_module, "generate_password_hash",
                        lambda password: generate_password_hash(password, method="pbkdf2:sha256:1000"))
    return seed(hub)


def seed(hub: Hub) -> World:
    world = World()
    with hub.db.session() as session:
        for org in ("a", "b"):
            organisation = create_organisation(session, f"Brand {org.upper()}", f"brand-{org}")
            ids = world.ids[org]
            ids["organisation"] = organisation.id
            for role in ROLES:
                user = create_user(session, organisation, f"{role}@{org}.example", PASSWORD, role=role)
                ids[f"user_{role}"] = user.id
                world.emails[f"{org}-{role}"] = user.email
                _token, plain = new_token(session, user.id, f"{role} script")
                world.tokens[f"{org}-{role}"] = plain
                ids[f"token_{role}"] = _token.id
            victim = create_user(session, organisation, f"victim@{org}.example", PASSWORD, role="viewer")
            ids["user"] = victim.id
            ids["token"] = new_token(session, victim.id, "victim's script")[0].id
            _seed_catalogue(hub, session, organisation.id, org, ids)
    return world


def _seed_catalogue(hub: Hub, session: Any, organisation_id: int, org: str, ids: dict[str, int]) -> None:
    account = create_account(session, organisation_id, f"Memory {org.upper()}", "memory", "sandbox",
                             {"token": f"tok-{org}-0123456789abcdef"}, {"remote": f"remote-{org}"}, hub.box, "seed")
    ids["account"] = account.id
    label = create_label(session, organisation_id, "Iconic")
    ids["label"] = label.id
    ids["rule"] = add_rule(session, label, "brand", "Acme").id
    product = Product(organisation_id=organisation_id, parent_sku=f"DRESS-{org}", title="Linen dress", brand="Acme",
                      season="SS25", category="Women > Dresses")
    product.variants = [Variant(organisation_id=organisation_id, sku=f"DRESS-{org}-{size}", size=size,
                                price_retail=Decimal("99.00")) for size in ("8", "10")]
    session.add(product)
    session.flush()
    ids["product"] = product.id
    ids["variant"] = product.variants[0].id
    assign(session, label, product.variants[:1])
    bindings.bind(session, account.id, "listing", internal_id=product.variants[0].id, external_id="L-1")
    bindings.record_error(session, account.id, "listing", product.variants[0].id, "E026 missing colour")
    order = Order(organisation_id=organisation_id, account_id=account.id, channel_order_id=f"CO-{org}-1",
                  order_number=f"ORD-{org}-1", status=OrderStatus.ERROR, placed_at=datetime.now(timezone.utc) - timedelta(days=2),
                  customer_name="Jo Citizen", shipping_address={"name": "Jo Citizen", "city": "Sydney"}, total=Decimal("99.00"))
    order.lines = [OrderLine(sku=f"DRESS-{org}-8", quantity=1, unit_price=Decimal("99.00"), title="Linen dress 8")]
    session.add(order)
    session.flush()
    ids["order"] = order.id
    emit(session, organisation_id=organisation_id, account_id=account.id, kind="order.imported",
         message=f"order {order.order_number} imported", data={"order_id": order.id, "order_number": order.order_number})
    run = SyncRun(organisation_id=organisation_id, account_id=account.id, flow="listings", status=RunStatus.PARTIAL,
                  counts={"ok": 1, "rejected": 1}, progress_done=2, progress_total=2,
                  finished_at=datetime.now(timezone.utc))
    run.items = [SyncRunItem(key=f"DRESS-{org}-8", outcome="rejected", field="colour", message="E026 missing colour"),
                 SyncRunItem(key=f"DRESS-{org}-10", outcome="ok")]
    session.add(run)
    session.flush()
    ids["run"] = run.id
    carrier = CarrierMap(account_id=account.id, source_carrier="auspost", channel_carrier="AusPost")
    session.add(carrier)
    session.add(DuplicateSku(organisation_id=organisation_id, source_account_id=account.id, sku=f"DUP-{org}"))
    session.flush()
    ids["map"] = carrier.id


@pytest.fixture
def app(hub: Hub) -> Flask:
    return create_app(hub, {"TESTING": True, "SECRET_KEY": "test-secret"})


@pytest.fixture
def app_without_csrf(hub: Hub) -> Flask:
    return create_app(hub, {"TESTING": True, "SECRET_KEY": "test-secret", "WTF_CSRF_ENABLED": False})


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    match = _CSRF.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, email: str, password: str = PASSWORD) -> Any:
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_token(client)})


class Browser:
    """A signed-in test client that adds the CSRF token to every form post."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.token = csrf_token(client, "/")

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.client.post(path, data={**(data or {}), "csrf_token": self.token}, **kwargs)


@pytest.fixture
def signed_in(app: Flask, world: World) -> Any:
    """``signed_in("admin")`` -> a Browser signed in as org A's admin (or "b-admin" for org B)."""
    stack = ExitStack()

    def make(who: str) -> Browser:
        key = who if "-" in who else f"a-{who}"
        client = app.test_client()
        response = sign_in(client, world.emails[key])
        assert response.status_code == 302, response.get_data(as_text=True)
        return Browser(client)

    yield make
    stack.close()


# -- live server and Chromium, for the browser journeys ------------------------------------------------

@contextmanager
def live_server(hub: Hub, *, workers: int = 2, config: dict[str, Any] | None = None) -> Iterator[str]:
    """The app on a loopback port (werkzeug, threaded) with the embedded runtime started (no ticker),
    so "Run now" and "Retry" really run flows. Yields the base URL; stops both afterwards."""
    import threading

    from werkzeug.serving import make_server

    from hub.embedded import EmbeddedRuntime

    runtime = EmbeddedRuntime(hub.db, workers=workers, tick_seconds=3600)
    hub._runtime = runtime
    runtime.start(ticker=False)
    httpd = make_server("127.0.0.1", 0, create_app(hub, {"SECRET_KEY": "browser-test", **(config or {})}), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="channelhub-test-web", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        runtime.stop()


@contextmanager
def chromium_page(base_url: str, *, timeout_ms: int = 10_000) -> Iterator[Any]:
    """A Playwright page in headless Debian Chromium, relative URLs resolved against ``base_url``;
    ``confirm()`` dialogs are accepted."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(timeout_ms)
            page.on("dialog", lambda dialog: dialog.accept())
            yield page
        finally:
            browser.close()
