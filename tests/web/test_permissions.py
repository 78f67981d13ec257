"""Every route's access rule, generated from the app's url_map: a new route without a declared rule,
or with a rule the server does not enforce, fails here.

Matrix: anonymous / viewer / operator / admin against every (rule, method); and an admin of one
organisation against every id-bearing route filled with the other organisation's ids (404, never
the data, never 403 which would confirm the id exists).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask

from web.access import PUBLIC, RANK, required_level

from .conftest import World

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PARAMS = {"account_id": "account", "order_id": "order", "run_id": "run", "product_id": "product", "label_id": "label",
          "rule_id": "rule", "map_id": "map", "user_id": "user", "token_id": "token"}
FIXED = {"secret": "not-the-secret", "flow": "listings"}


def routes(app: Flask) -> list[tuple[str, str, Any]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted(set(rule.methods or ()) & set(METHODS)):
            found.append((rule.endpoint, method, rule))
    return found


def url_for_rule(rule: Any, ids: dict[str, int]) -> str:
    values = {name: FIXED.get(name, ids.get(PARAMS.get(name, ""), 1)) for name in rule.arguments}
    path = rule.rule
    for name, value in values.items():
        path = re.sub(rf"<(?:\w+:)?{name}>", str(value), path)
    return path


def request(app: Flask, world: World, who: str | None, method: str, path: str, api: bool) -> Any:
    client = app.test_client()
    headers = {"Accept": "text/html"}
    if who and api:
        headers["Authorization"] = f"Bearer {world.tokens[who]}"
    elif who:
        org, role = who.split("-")
        with client.session_transaction() as session:
            session["user_id"] = world.ids[org][f"user_{role}"]
    kwargs: dict[str, Any] = {"headers": headers}
    if api and method != "GET":
        kwargs["json"] = {}
    return client.open(path, method=method, **kwargs)


def test_every_route_declares_who_may_use_it(app: Flask) -> None:
    missing = sorted({endpoint for endpoint, _m, _r in routes(app) if required_level(app, endpoint) is None})
    assert not missing, f"routes without an access rule (decorate them with web.access.allow): {missing}"


def test_undeclared_route_is_refused_to_all_but_admins(app_without_csrf: Flask, world: World) -> None:
    app_without_csrf.add_url_rule("/undeclared", "undeclared", lambda: "secret page")
    assert request(app_without_csrf, world, "a-operator", "GET", "/undeclared", False).status_code == 403
    assert request(app_without_csrf, world, "a-admin", "GET", "/undeclared", False).status_code == 200


@pytest.mark.parametrize("who", [None, "viewer", "operator", "admin"])
def test_role_matrix(app_without_csrf: Flask, world: World, who: str | None) -> None:
    app, problems = app_without_csrf, []
    for endpoint, method, rule in routes(app):
        level = required_level(app, endpoint)
        if level == PUBLIC:
            continue
        api = rule.rule.startswith("/api/v1")
        response = request(app, world, f"a-{who}" if who else None, method, url_for_rule(rule, world.ids["a"]), api)
        code = response.status_code
        if who is None:
            expected_ok = code == 401 if api else (code == 302 and "/login" in response.headers["Location"])
        elif RANK[who] < RANK[level]:
            expected_ok = code == 403
        else:
            expected_ok = code not in (401, 403) and code < 500 and "/login" not in response.headers.get("Location", "")
        if not expected_ok:
            problems.append(f"{method} {rule.rule} ({level}) as {who or 'anonymous'}: {code}")
    assert not problems, "\n".join(problems)


def test_other_organisations_ids_are_not_found(app_without_csrf: Flask, world: World) -> None:
    app, problems = app_without_csrf, []
    for endpoint, method, rule in routes(app):
        if required_level(app, endpoint) == PUBLIC or not (set(rule.arguments) & set(PARAMS)):
            continue
        api = rule.rule.startswith("/api/v1")
        response = request(app, world, "a-admin", method, url_for_rule(rule, world.ids["b"]), api)
        if response.status_code != 404:
            problems.append(f"{method} {rule.rule} with organisation B's ids: {response.status_code}")
    assert not problems, "\n".join(problems)


def test_other_organisations_ids_in_forms_are_not_found(app_without_csrf: Flask, world: World) -> None:
    b = world.ids["b"]
    label = request_form(app_without_csrf, world, "/catalogue/labels/assign", {"label_id": b["label"], "variant_id": b["variant"]})
    reset = request_form(app_without_csrf, world, "/catalogue/reset", {"account_id": b["account"]})
    assert (label.status_code, reset.status_code) == (404, 404)


def request_form(app: Flask, world: World, path: str, data: dict[str, Any]) -> Any:
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = world.ids["a"]["user_admin"]
    return client.post(path, data=data)


def test_listing_pages_show_only_the_own_organisation(app_without_csrf: Flask, world: World) -> None:
    client = app_without_csrf.test_client()
    with client.session_transaction() as session:
        session["user_id"] = world.ids["a"]["user_viewer"]
    for path in ("/", "/catalogue", "/orders", "/runs", "/audit", "/catalogue/duplicates", "/catalogue/listings", "/reconciler"):
        body = client.get(path).get_data(as_text=True)
        assert "Memory B" not in body and "ORD-b-1" not in body and "DRESS-b" not in body and "DUP-b" not in body, path
    runs = client.get(f"/runs/progress.json?ids={world.ids['b']['run']}").get_json()
    assert runs == {"runs": []}
