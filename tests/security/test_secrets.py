"""Channel secrets, end to end: an admin adds an account through the web form, tests its connection
and a job runs against the plugin's sandbox; afterwards no known secret is found in the database
(file bytes and every row), in any log record (everything at DEBUG, httpx included), or in any page
or API response. Enqueued on RQ, no Redis key or value under the run's prefix holds one either."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from redis import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from hub.app import Hub
from hub.connections import Connector, set_connector
from hub.jobs import execute_run
from hub.locks import LocalLocks
from hub.models import Base, ChannelAccount, RunStatus, SyncRun
from hub.plugins import ChannelhubPluginManager
from plugins.shopify.sandbox import create_app as shopify_sandbox
from plugins.starshipit.sandbox import create_app as starshipit_sandbox
from plugins.uphance.sandbox import DEFAULT_EMAIL
from plugins.uphance.sandbox import create_app as uphance_sandbox

from tests.conftest import REDIS_URL
from tests.services import unavailable
from tests.web.conftest import Browser, World

from .helpers import built_in_plugin_manager

SHOP = "acme-secrets.myshopify.com"


@pytest.fixture
def plugin_manager() -> Iterator[ChannelhubPluginManager]:
    yield from built_in_plugin_manager()


@dataclass
class Case:
    plugin: str
    form: dict[str, str]  # the add-account form, secrets included
    secrets: tuple[str, ...]
    sandbox: Callable[[], Any]
    flow: str
    connects: bool = True


def _uphance() -> Any:
    app = uphance_sandbox(seed=7, products=4)
    app.state.users[DEFAULT_EMAIL] = UPHANCE_PASSWORD
    return app


UPHANCE_PASSWORD = "uphance-P4ssw0rd-never-shown-7f3a"
CASES = {
    "shopify": Case(
        "shopify",
        {"cred-shop_domain": SHOP, "cred-access_token": "shpat_known-secret-token-9c1e2d",
         "cred-client_secret": "shpss_known-client-secret-44ab", "set-catalogue_mode": "paged"},
        ("shpat_known-secret-token-9c1e2d", "shpss_known-client-secret-44ab"),
        lambda: shopify_sandbox(seed=7, products=3, shop_domain=SHOP, access_token="shpat_known-secret-token-9c1e2d",
                                client_secret="shpss_known-client-secret-44ab", sender=lambda *a: 200),
        "catalog"),
    "uphance": Case(
        "uphance", {"cred-email": DEFAULT_EMAIL, "cred-password": UPHANCE_PASSWORD, "set-organisation_id": "9579",
                    "set-warehouse": "Sydney DC"},
        (UPHANCE_PASSWORD,), _uphance, "catalog"),
    "starshipit": Case(
        "starshipit", {"cred-api_key": "ssit-known-api-key-5d6e7f", "cred-subscription_key": "ssit-known-sub-key-8a9b0c",
                       "cred-webhook_secret": "ssit-known-hook-secret-1d2e"},
        ("ssit-known-api-key-5d6e7f", "ssit-known-sub-key-8a9b0c", "ssit-known-hook-secret-1d2e"),
        lambda: starshipit_sandbox(seed=7, seed_orders=0, api_keys=("ssit-known-api-key-5d6e7f",),
                                   subscription_keys={"ssit-known-sub-key-8a9b0c": "developer"}),
        "fulfilment"),
    "shopify-refused": Case(  # the remote refuses the token: error paths must not leak it either
        "shopify",
        {"cred-shop_domain": SHOP, "cred-access_token": "shpat_wrong-but-secret-token-0e0e",
         "cred-client_secret": "shpss_wrong-client-secret-7777", "set-catalogue_mode": "paged"},
        ("shpat_wrong-but-secret-token-0e0e", "shpss_wrong-client-secret-7777"),
        lambda: shopify_sandbox(seed=7, products=3, shop_domain=SHOP, sender=lambda *a: 200),
        "catalog", connects=False),
}


def admin_browser(app: Flask, world: World) -> Browser:
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = world.ids["a"]["user_admin"]
    return Browser(client)


def connect_sandbox(app: Flask, hub: Hub, plugin: str, sandbox: Any) -> Connector:
    """One connector for the web process and the job: the plugin's HTTP goes to its sandbox."""
    connector = Connector(box=hub.box, pm=hub.pm, transports={plugin: httpx.WSGITransport(app=sandbox)})
    app.extensions["channelhub.connector"] = connector
    set_connector(connector)
    return connector


def add_account(browser: Browser, case: Case) -> int:
    response = browser.post("/accounts/new", {"plugin": case.plugin, "name": f"{case.plugin} secrets",
                                              "environment": "sandbox", "submit": "activate", **case.form})
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def database_dump(hub: Hub) -> str:
    """Every row of every table as text, plus (SQLite) the bytes of the database files."""
    parts = []
    with hub.db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            parts.extend(repr(tuple(row)) for row in connection.execute(table.select()))
        if hub.db.engine.dialect.name == "postgresql":
            parts.extend(str(row) for row in connection.execute(text("SELECT query FROM pg_stat_activity")))
    url = make_url(str(hub.db.engine.url))
    if url.get_backend_name() == "sqlite" and url.database:
        for path in Path(url.database).parent.glob(Path(url.database).name + "*"):
            parts.append(path.read_bytes().decode("latin-1"))  # -wal and -journal too
    return "\n".join(parts)


def leaks(secrets: tuple[str, ...], **texts: str) -> list[str]:
    return [f"{secret!r} in {where}" for where, body in texts.items() for secret in secrets if secret in body]


@pytest.mark.parametrize("name", sorted(CASES))
def test_secrets_are_encrypted_at_rest_and_never_logged_or_shown(
        app: Flask, hub: Hub, world: World, caplog: pytest.LogCaptureFixture, name: str) -> None:
    case = CASES[name]
    caplog.set_level(logging.DEBUG)  # the root logger: httpx, the hub, the plugins, everything
    for noisy in ("httpx", "httpcore", "channelhub", "hub", "plugins", "werkzeug"):
        caplog.set_level(logging.DEBUG, logger=noisy)  # restored after the test
    browser = admin_browser(app, world)
    connect_sandbox(app, hub, case.plugin, case.sandbox())
    shown: list[str] = []
    try:
        account_id = add_account(browser, case)
        tested = browser.post(f"/accounts/{account_id}/test").get_data(as_text=True)
        shown.append(tested)
        assert ("Connected" in tested) is case.connects, tested
        run_id = int(browser.post(f"/accounts/{account_id}/run", {"flow": case.flow}).headers["Location"].rsplit("/", 1)[1])
        with hub.db.session() as session:
            params = session.get(SyncRun, run_id).params
        execute_run(hub.db, run_id, locks=LocalLocks(), retries_left=0, params=params)
        with hub.db.session() as session:
            run = session.get(SyncRun, run_id)
            assert run.status in (RunStatus.OK, RunStatus.PARTIAL, RunStatus.FAILED), run.status
            if case.connects and case.flow == "catalog":
                assert run.status == RunStatus.OK, run.error  # the job really talked to the sandbox
            account = session.get(ChannelAccount, account_id)
            assert account.credentials_encrypted and hub.box.decrypt(account.credentials_encrypted)
        for path in (f"/accounts/{account_id}", f"/runs/{run_id}", "/audit", "/", "/runs"):
            shown.append(browser.get(path).get_data(as_text=True))
        headers = {"Authorization": f"Bearer {world.tokens['a-admin']}"}
        for path in (f"/api/v1/accounts/{account_id}", "/api/v1/accounts", f"/api/v1/runs/{run_id}"):
            shown.append(app.test_client().get(path, headers=headers).get_data(as_text=True))
    finally:
        set_connector(None)
    logged = caplog.text + "\n".join(repr(record.__dict__) for record in caplog.records)
    problems = leaks(case.secrets, database=database_dump(hub), logs=logged, pages="\n".join(shown))
    assert not problems, "\n".join(problems)
    assert any("••••" in page for page in shown)  # what is shown instead


@pytest.fixture
def redis_connection() -> Iterator[Redis]:
    connection = Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except Exception as error:  # noqa: BLE001 - any failure to reach it means "not available"
        unavailable("Redis", error)
    yield connection
    connection.close()


def redis_values(connection: Redis, prefix: str) -> dict[bytes, list[bytes]]:
    """Every key mentioning ``prefix`` with all its values (hash fields, list items, members)."""
    found: dict[bytes, list[bytes]] = {}
    for key in connection.scan_iter(match=f"*{prefix}*", count=500):
        kind = connection.type(key).decode()
        values: list[bytes] = []
        if kind == "string":
            values = [connection.get(key) or b""]
        elif kind == "hash":
            values = [item for pair in connection.hgetall(key).items() for item in pair]
        elif kind == "list":
            values = list(connection.lrange(key, 0, -1))
        elif kind == "set":
            values = list(connection.smembers(key))
        elif kind == "zset":
            values = list(connection.zrange(key, 0, -1))
        found[key] = [key, *values]
    return found


def readable(value: bytes) -> str:
    """The value as text, and decompressed when it is RQ's zlib-compressed pickle."""
    texts = [value.decode("latin-1")]
    try:
        texts.append(zlib.decompress(value).decode("latin-1"))
    except zlib.error:
        pass
    return "\n".join(texts)


def test_a_job_on_rq_carries_no_secret(app: Flask, hub: Hub, world: World, redis_connection: Redis) -> None:
    from hub.fleet import FleetRuntime
    from tests.runtime_fixtures import fresh_prefix, purge_prefix

    case = CASES["shopify"]
    prefix = fresh_prefix()
    hub._runtime = FleetRuntime(hub.db, connection=redis_connection, prefix=prefix)
    browser = admin_browser(app, world)
    connect_sandbox(app, hub, case.plugin, case.sandbox())
    try:
        account_id = add_account(browser, case)
        response = browser.post(f"/accounts/{account_id}/run", {"flow": "catalog"})
        run_id = int(response.headers["Location"].rsplit("/", 1)[1])
        job = hub._runtime.job(run_id)  # type: ignore[attr-defined]
        assert job is not None and list(job.args) == [run_id] and not job.kwargs
        stored = redis_values(redis_connection, prefix)
        assert any(job.id.encode() in key for key in stored), "the job hash was not found under the prefix"
        everything = "\n".join(readable(value) for values in stored.values() for value in values)
        assert str(run_id) in everything  # the scan does see the job's data
        problems = leaks(case.secrets, redis=everything, job_meta=repr(job.meta), description=job.description or "")
        assert not problems, "\n".join(problems)
    finally:
        set_connector(None)
        hub._runtime = None
        purge_prefix(redis_connection, prefix)
