"""CSRF: every state-changing form route refuses a post without the token, and nothing changes."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from hub.app import Hub
from hub.models import Event

from .conftest import World, csrf_token, sign_in
from .test_permissions import routes, url_for_rule

EXEMPT = ("/api/", "/webhooks/")  # bearer tokens and channel signatures: nothing ambient to forge


def test_every_form_post_needs_the_csrf_token(app: Flask, world: World, hub: Hub) -> None:
    client = app.test_client()
    assert sign_in(client, world.emails["a-admin"]).status_code == 302
    with hub.db.session() as session:
        events_before = session.scalar(select(func.count()).select_from(Event))
    problems = []
    for _endpoint, method, rule in routes(app):
        if method == "GET" or rule.rule.startswith(EXEMPT):
            continue
        response = client.open(url_for_rule(rule, world.ids["a"]), method=method, data={"name": "x", "action": "pause"})
        if response.status_code != 400 or "security token" not in response.get_data(as_text=True):
            problems.append(f"{method} {rule.rule}: {response.status_code}")
    assert not problems, "\n".join(problems)
    with hub.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == events_before


def test_sign_in_form_needs_the_csrf_token(app: Flask, world: World) -> None:
    client = app.test_client()
    response = client.post("/login", data={"email": world.emails["a-admin"], "password": "correct horse battery"})
    assert response.status_code == 400
    token = csrf_token(client)
    ok = client.post("/login", data={"email": world.emails["a-admin"], "password": "correct horse battery", "csrf_token": token})
    assert ok.status_code == 302


def test_api_and_webhooks_are_exempt_but_need_their_own_authentication(app: Flask, world: World) -> None:
    client = app.test_client()
    assert client.post("/api/v1/labels", json={"name": "x"}).status_code == 401
    response = client.post("/api/v1/labels", json={"name": "Outlet"},
                           headers={"Authorization": f"Bearer {world.tokens['a-admin']}"})
    assert response.status_code == 201
