"""Malformed form posts and CSV imports: a clear message, and nothing changed (row counts and the
rows themselves compared before and after). Then every form route under junk: never a 500."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

import web
from hub.app import Hub
from hub.models import Base, ChannelAccount, Event, Label, LabelAssignment

from tests.web.conftest import World
from tests.web.test_permissions import routes, url_for_rule


def as_admin(app: Flask, world: World) -> FlaskClient:
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = world.ids["a"]["user_admin"]
    return client


def snapshot(hub: Hub) -> dict[str, Any]:
    """Row counts of every table, plus the labels, their assignments and the accounts in full."""
    with hub.db.session() as session:
        state: dict[str, Any] = {t.name: session.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}
        state["label rows"] = sorted((l.id, l.name) for l in session.scalars(select(Label)))
        state["assignment rows"] = sorted((a.label_id, a.variant_id, a.source) for a in session.scalars(select(LabelAssignment)))
        state["account rows"] = [
            {c.key: getattr(a, c.key) for c in ChannelAccount.__table__.columns}
            for a in session.scalars(select(ChannelAccount).order_by(ChannelAccount.id))]
        return state


def without_events(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != Event.__tablename__}


CSV_CASES = {
    "not UTF-8": ("latin-1 export", "sku,label\nDRESS-a-8,Étiquette\n".encode("latin-1"), "not UTF-8"),
    "binary": ("a zip renamed .csv", b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe\x00\x01garbage\x00", "not UTF-8"),
    "no header columns": ("wrong header", b"variant,tag\nDRESS-a-8,Iconic\n", "header needs columns sku and label"),
    "only blank lines": ("blank", b"\n\n  \n", "Choose a CSV file"),
    "header only": ("header only", b"sku,label\n", "0 added"),
    "field too large": ("one huge field", b"sku,label\n" + b"X" * 200_000 + b",Iconic\n", "not valid CSV"),
    "unknown label": ("typo in label", b"sku,label\nDRESS-a-8,Iconc\nDRESS-a-10,Nope\n", "no label named"),
    "unknown skus": ("typo in sku", b"sku,label\nDRESS-a-99,Iconic\nDRESS a 8,Iconic\n DRESS-a-10x ,Iconic\n", "no variant or product"),
    "bad action": ("bad action", b"sku,label,action\nDRESS-a-10,Iconic,delete-all\n", "action must be add or remove"),
    "NUL bytes": ("NUL", b"sku,label\nDRESS\x00-a-10,Iconic\n", ""),
    "markup and formulas": ("formula", b"sku,label\n=HYPERLINK(\"http://x\"),<script>alert(1)</script>\n", "no label named"),
}


def test_a_malformed_csv_import_explains_and_changes_nothing(app_without_csrf: Flask, world: World, hub: Hub) -> None:
    client, problems = as_admin(app_without_csrf, world), []
    for case, (_name, data, expected) in CSV_CASES.items():
        before = snapshot(hub)
        response = client.post("/catalogue/labels/import", data={"file": (io.BytesIO(data), "labels.csv")},
                               content_type="multipart/form-data", follow_redirects=True)
        body = response.get_data(as_text=True).replace("&#39;", "'")
        if response.status_code not in (200, 400) or expected not in body or "<script>alert(1)</script>" in body:
            problems.append(f"{case}: {response.status_code}, expected {expected!r} in the page")
        if without_events(snapshot(hub)) != without_events(before):  # an import report event may be written
            problems.append(f"{case}: the import changed something")
    assert not problems, "\n".join(problems)


def test_an_oversized_upload_is_refused_before_it_is_read(app_without_csrf: Flask, world: World, hub: Hub) -> None:
    before = snapshot(hub)
    big = b"sku,label\n" + b"DRESS-a-8,Iconic\n" * (11 * 1024 * 1024 // 17)
    response = as_admin(app_without_csrf, world).post("/catalogue/labels/import", data={"file": (io.BytesIO(big), "l.csv")},
                                                      content_type="multipart/form-data")
    assert response.status_code == 413 and "Too large" in response.get_data(as_text=True)
    assert snapshot(hub) == before


ACCOUNT_FORMS = [
    ("/accounts/new", {"plugin": "memory", "name": "", "environment": "sandbox", "cred-token": "tok-0123456789abcdef"}, "name"),
    ("/accounts/new", {"plugin": "memory", "name": "Shop", "environment": "moon", "cred-token": "tok-0123456789abcdef",
                       "set-remote": "x"}, "environment"),
    ("/accounts/new", {"plugin": "memory", "name": "Memory A", "environment": "sandbox", "cred-token": "tok-0123456789abcdef",
                       "set-remote": "x"}, "already exists"),
    ("/accounts/new", {"plugin": "memory", "name": "Shop", "environment": "sandbox", "set-remote": "x"}, "Missing data"),
    ("/accounts/new", {"plugin": "memory", "name": "N" * 101, "environment": "sandbox", "cred-token": "tok-0123456789abcdef",
                       "set-remote": "x", "submit": "activate", "cred-unknown": "x" * 100_000}, "at most 100 characters"),
    ("/accounts/new", {"plugin": "no-such-channel", "name": "Shop"}, "no channel plugin"),
    ("{account}/credentials", {"cred-token": ""}, None),  # an empty secret keeps the stored one
    ("{account}/settings", {"set-remote": ""}, "Missing data"),
    ("{account}/hub-settings", {"hub-reserve_stock": "lots"}, "Not a valid integer"),
    ("{account}/hub-settings", {"hub-reserve_stock": "-1"}, "reserve_stock"),
    ("{account}/hub-settings", {"hub-reserve_stock": "1e999"}, "reserve_stock"),
    ("{account}/hub-settings", {"hub-reserve_stock": "99999999999999999999999"}, "reserve_stock"),
    ("{account}/hub-settings", {"hub-label_id": "99999999999999999999"}, "label_id"),
    ("{account}/hub-settings", {"hub-label_id": "abc"}, "label_id"),
    ("{account}/hub-settings", {"hub-price_field": "cheapest"}, "price_field"),
    ("{account}/hub-settings", {"hub-inventory_basis": "<b>all</b>"}, "inventory_basis"),
    ("{account}/hub-settings", {"hub-source_account_id": "{account_id}"}, "cannot feed itself"),
    ("{account}/transition", {"action": "explode"}, "unknown action"),
    ("{account}/transition", {"action": "go_live", "confirm_name": "wrong"}, None),
    ("{account}/flows", {"flow": "teleport", "enabled": "on"}, "unknown flow"),
    ("{account}/flows", {"flow": "reconciler", "enabled": "on"}, "Listings"),
    ("{account}/run", {"flow": "../../etc/passwd"}, "unknown flow"),
]


def test_a_malformed_account_form_explains_and_changes_nothing(app_without_csrf: Flask, world: World, hub: Hub) -> None:
    account_id, problems = world.ids["a"]["account"], []
    client = as_admin(app_without_csrf, world)
    for path, data, message in ACCOUNT_FORMS:
        path = path.replace("{account}", f"/accounts/{account_id}")
        data = {k: v.replace("{account_id}", str(account_id)) for k, v in data.items()}
        case = f"POST {path} {str(data)[:80]}"
        before = snapshot(hub)
        response = client.post(path, data=data, follow_redirects=True)
        body = response.get_data(as_text=True).replace("&#39;", "'").replace("&#34;", '"')
        if response.status_code >= 500 or (message is not None and message not in body):
            problems.append(f"{case}: {response.status_code}, expected {message!r} in the page")
        if "x" * 1000 in body or "\x00" in body:
            problems.append(f"{case}: junk echoed back")
        if snapshot(hub) != before:
            problems.append(f"{case}: something changed")
    assert not problems, "\n".join(problems)


TEMPLATES = Path(web.__file__).parent / "templates"
JUNK = {
    "huge": "x" * 50_000,
    "nul": "a\x00b",
    "unicode": "\u202e🧵 Ünïcødé",
    "numbers": "99999999999999999999999999",
    "negative": "-1",
    "float": "1e309",
    "empty": "",
    "markup": "<img src=x onerror=alert(1)>",
    "json": '{"a": [1, {"b": null}], "c": "\\ud800"}',
}


def form_fields() -> list[str]:
    names = set(re.findall(r'name="([\w\-]+)"', "".join(p.read_text() for p in TEMPLATES.rglob("*.html"))))
    return sorted(names - {"csrf_token", "csrf-token", "viewport"} | {"cred-token", "set-remote"})


@pytest.mark.parametrize("junk", sorted(JUNK))
def test_no_form_route_fails_on_junk(app_without_csrf: Flask, world: World, hub: Hub, junk: str) -> None:
    """Every POST form (the admin's, with CSRF off) with every known field set to junk: a page or a
    redirect, never a server error."""
    fields = {name: JUNK[junk] for name in form_fields()}
    problems = []
    for _endpoint, method, rule in routes(app_without_csrf):
        if method != "POST" or rule.rule.startswith(("/api/", "/webhooks/", "/login", "/logout")):
            continue
        client = as_admin(app_without_csrf, world)
        try:
            response = client.post(url_for_rule(rule, world.ids["a"]), data=fields)
        except Exception as error:  # noqa: BLE001 - with TESTING on, a server error surfaces as the exception
            problems.append(f"POST {rule.rule}: {type(error).__name__}: {str(error)[:200]}")
            continue
        if response.status_code >= 500:
            problems.append(f"POST {rule.rule}: {response.status_code}")
    for _endpoint, method, rule in routes(app_without_csrf):  # and every page with every query parameter junk
        if method == "GET" and not rule.rule.startswith("/api/"):
            try:
                code = as_admin(app_without_csrf, world).get(url_for_rule(rule, world.ids["a"]), query_string=fields).status_code
            except Exception as error:  # noqa: BLE001
                problems.append(f"GET {rule.rule}?…: {type(error).__name__}: {str(error)[:200]}")
                continue
            if code >= 500:
                problems.append(f"GET {rule.rule}?…: {code}")
    assert not problems, "\n".join(problems)
