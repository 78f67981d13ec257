"""Forged webhooks, end to end through ``POST /webhooks/<account>/<secret>``, per built-in plugin
that takes webhooks: a bad signature, a wrong secret, or a tampered body gets 401, queues nothing and
leaves a ``webhook.rejected`` warning in the audit log (never echoing what was sent); a replayed
delivery is dropped (200, nothing queued) and leaves a ``webhook.duplicate`` event."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flask import Flask

from hub.accounts import create_account
from hub.app import Hub
from hub.plugins import ChannelhubPluginManager
from plugins.starshipit.sandbox import API_KEY, DEVELOPER_KEY
from plugins.uphance.sandbox import DEFAULT_EMAIL, DEFAULT_PASSWORD

from tests.web.conftest import World

from .helpers import built_in_plugin_manager, events, webhook_runs

SHOPIFY_SECRET = "shpss_client-secret-0123456789abcdef"
UPHANCE_SECRET = "uphance-url-secret-0123456789abcdef"
STARSHIPIT_SECRET = "starshipit-hook-secret-0123456789"


@pytest.fixture
def plugin_manager() -> Iterator[ChannelhubPluginManager]:
    yield from built_in_plugin_manager()


@dataclass
class Hook:
    """How one plugin's webhooks look: a genuine delivery, and forgeries of it."""

    plugin: str
    credentials: dict[str, str]
    settings: dict[str, str]
    url_secret: str
    body: bytes
    sign: Callable[[bytes, str], dict[str, str]]  # (body, secret) -> headers
    secret: str


def shopify_headers(body: bytes, secret: str) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {"X-Shopify-Hmac-Sha256": digest, "X-Shopify-Topic": "inventory_levels/update",
            "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            "X-Shopify-Shop-Domain": "acme.myshopify.com", "Content-Type": "application/json"}


def starshipit_headers(body: bytes, secret: str) -> dict[str, str]:
    return {"X-Starshipit-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


HOOKS = {
    "shopify": Hook(
        "shopify", {"shop_domain": "acme.myshopify.com", "access_token": "shpat_0123456789abcdef",
                    "client_secret": SHOPIFY_SECRET}, {}, "anything",
        json.dumps({"inventory_item_id": 42, "location_id": 7, "available": 3}).encode(), shopify_headers, SHOPIFY_SECRET),
    "uphance": Hook(
        "uphance", {"email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD}, {"webhook_secret": UPHANCE_SECRET},
        UPHANCE_SECRET, json.dumps({"event": "product_update", "product": {"id": 5, "updated_at": "2026-05-01T00:00:00Z"}}).encode(),
        lambda body, secret: {"Content-Type": "application/json"}, UPHANCE_SECRET),
    "starshipit": Hook(
        "starshipit", {"api_key": API_KEY, "subscription_key": DEVELOPER_KEY, "webhook_secret": STARSHIPIT_SECRET}, {},
        "anything", json.dumps({"order_number": "ICO-1", "tracking_number": "TRK1", "tracking_status": "Dispatched",
                                "carrier_name": "Australia Post", "last_updated_date": "2026-05-01T00:00:00Z"}).encode(),
        starshipit_headers, STARSHIPIT_SECRET),
}


@pytest.fixture(params=sorted(HOOKS))
def hook(request: pytest.FixtureRequest) -> Hook:
    return HOOKS[request.param]


@pytest.fixture
def account_id(hub: Hub, world: World, hook: Hook) -> int:
    with hub.db.session() as session:
        account = create_account(session, world.ids["a"]["organisation"], f"{hook.plugin} hooks", hook.plugin, "sandbox",
                                 hook.credentials, hook.settings, hub.box, "test")
        return account.id


def post(app: Flask, account_id: int, url_secret: str, body: bytes, headers: dict[str, str]) -> object:
    return app.test_client().post(f"/webhooks/{account_id}/{url_secret}", data=body, headers=headers)


def test_a_genuine_delivery_is_queued_once_and_a_replay_is_dropped_and_recorded(app: Flask, hub: Hub, hook: Hook,
                                                                                account_id: int) -> None:
    headers = hook.sign(hook.body, hook.secret)
    first = post(app, account_id, hook.url_secret, hook.body, headers)
    assert first.status_code == 202, first.get_data(as_text=True)  # type: ignore[attr-defined]
    replay = post(app, account_id, hook.url_secret, hook.body, headers)
    assert replay.status_code == 200 and replay.get_json()["status"] == "duplicate"  # type: ignore[attr-defined]
    assert len(webhook_runs(hub, account_id)) == 1
    [duplicate] = events(hub, "webhook.duplicate", account_id)
    assert "received before" in duplicate.message


def forgeries(hook: Hook) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    genuine = hook.sign(hook.body, hook.secret)
    tampered = hook.body.replace(b"5", b"6").replace(b"TRK1", b"TRK2").replace(b"3}", b"99}")
    assert tampered != hook.body
    cases = {"tampered body": (hook.url_secret, tampered, genuine)}
    if hook.plugin == "uphance":  # unsigned: the secret in the callback URL is the proof
        cases["wrong URL secret"] = ("guessed-secret-0123456789abcdef", hook.body, genuine)
        cases["no URL secret"] = ("-", hook.body, genuine)
        del cases["tampered body"]  # nothing signs the body; a forger without the URL secret is refused above
    else:
        cases["signed with another secret"] = (hook.url_secret, hook.body, hook.sign(hook.body, "not-the-secret-000000"))
        cases["no signature"] = (hook.url_secret, hook.body, {k: v for k, v in genuine.items() if "Sig" not in k and "Hmac" not in k})
        cases["garbage signature"] = (hook.url_secret, hook.body, {**genuine, **{k: "%%%not-base64%%%" for k in genuine
                                                                                if "Sig" in k or "Hmac" in k}})
    return cases


def test_forgeries_are_refused_queue_nothing_and_are_logged(app: Flask, hub: Hub, hook: Hook, account_id: int) -> None:
    cases = forgeries(hook)
    for name, (url_secret, body, headers) in cases.items():
        response = post(app, account_id, url_secret, body, headers)
        assert response.status_code == 401, f"{hook.plugin}: {name}: {response.status_code}"  # type: ignore[attr-defined]
    assert webhook_runs(hub, account_id) == []
    rejected = events(hub, "webhook.rejected", account_id)
    assert len(rejected) == len(cases) and {e.level for e in rejected} == {"warning"}
    for event in rejected:
        text = event.message + json.dumps(event.data)
        assert hook.secret not in text and "guessed-secret" not in text and "not-the-secret" not in text
    # the genuine delivery still gets through afterwards: refusals did not poison the delivery id
    assert post(app, account_id, hook.url_secret, hook.body, hook.sign(hook.body, hook.secret)).status_code == 202  # type: ignore[attr-defined]


def test_a_valid_signature_for_one_account_does_not_open_another(app: Flask, hub: Hub, world: World, hook: Hook,
                                                                account_id: int) -> None:
    """Same plugin, another organisation with another secret: the first account's delivery is refused."""
    other_secret = "another-organisations-secret-42424242"
    credentials = {**hook.credentials, **({"client_secret": other_secret} if hook.plugin == "shopify" else {}),
                   **({"webhook_secret": other_secret} if hook.plugin == "starshipit" else {})}
    settings = {**hook.settings, **({"webhook_secret": other_secret} if hook.plugin == "uphance" else {})}
    with hub.db.session() as session:
        other = create_account(session, world.ids["b"]["organisation"], "theirs", hook.plugin, "sandbox", credentials,
                               settings, hub.box, "test").id
    response = post(app, other, hook.url_secret, hook.body, hook.sign(hook.body, hook.secret))
    assert response.status_code == 401  # type: ignore[attr-defined]
    [event] = events(hub, "webhook.rejected", other)
    assert event.organisation_id == world.ids["b"]["organisation"]
    assert webhook_runs(hub, other) == [] and webhook_runs(hub, account_id) == []
