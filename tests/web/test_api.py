"""The REST API: tokens, validation errors per field, lifecycle, labels, runs, and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Flask

from hub.app import Hub
from hub.models import ApiToken

from .conftest import World


def api(app: Flask, world: World, who: str, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {world.tokens[who]}"}
    if isinstance(body, bytes):
        return app.test_client().open(f"/api/v1{path}", method=method, data=body, headers={**headers, "Content-Type": "application/json"})
    return app.test_client().open(f"/api/v1{path}", method=method, json=body, headers=headers)


def test_unknown_token_is_refused(app: Flask, world: World) -> None:
    response = app.test_client().get("/api/v1/accounts", headers={"Authorization": "Bearer chub_nope"})
    assert response.status_code == 401 and "Bearer" in response.get_json()["error"]


def test_token_use_is_recorded(app: Flask, world: World, hub: Hub) -> None:
    assert api(app, world, "a-viewer", "GET", "/me").get_json()["role"] == "viewer"
    with hub.db.session() as session:
        assert session.get(ApiToken, world.ids["a"]["token_viewer"]).last_used_at is not None


def test_create_account_reports_field_errors(app: Flask, world: World) -> None:
    response = api(app, world, "a-admin", "POST", "/accounts", {"name": "", "plugin": "memory", "colour": "red"})
    errors = response.get_json()["fields"]
    assert response.status_code == 400 and "name" in errors and "colour" in errors
    channel = api(app, world, "a-admin", "POST", "/accounts", {"name": "Shop Y", "plugin": "memory", "credentials": {}})
    assert channel.status_code == 400 and channel.get_json()["fields"]["credentials"] == {"token": ["Missing data for required field."]}
    assert api(app, world, "a-admin", "POST", "/accounts", b"not json").status_code == 400


def test_account_lifecycle_over_the_api(app: Flask, world: World) -> None:
    created = api(app, world, "a-admin", "POST", "/accounts", {"name": "Shop Y", "plugin": "memory", "environment": "sandbox",
                                                               "credentials": {"token": "abcdefghijklmnop1234"}, "settings": {"remote": "y"}})
    assert created.status_code == 201
    account = created.get_json()
    assert account["status"] == "setup" and account["credentials"]["token"].startswith("••••")
    path = f"/accounts/{account['id']}"
    assert api(app, world, "a-admin", "POST", f"{path}/transitions", {"action": "go_live"}).status_code == 400
    assert api(app, world, "a-admin", "POST", f"{path}/transitions", {"action": "activate"}).get_json()["status"] == "testing"
    assert api(app, world, "a-admin", "POST", f"{path}/transitions", {"action": "activate"}).status_code == 409
    live = api(app, world, "a-admin", "POST", f"{path}/transitions", {"action": "go_live", "confirm": True})
    assert live.get_json()["status"] == "live"
    assert api(app, world, "a-admin", "PUT", f"{path}/flows/reconciler", {"enabled": True}).status_code == 409
    assert api(app, world, "a-admin", "PUT", f"{path}/flows/listings", {"enabled": True}).get_json()["flows"]["listings"]
    patched = api(app, world, "a-admin", "PATCH", path, {"hub": {"reserve_stock": 3}, "settings": {"remote": "z"}})
    assert patched.get_json()["reserve_stock"] == 3 and patched.get_json()["settings"]["remote"] == "z"
    assert api(app, world, "a-admin", "PATCH", path, {"hub": {"price_field": "cheapest"}}).status_code == 400


def test_run_now_and_runs(app: Flask, world: World, hub: Hub) -> None:
    queued = api(app, world, "a-operator", "POST", f"/accounts/{world.ids['a']['account']}/runs", {"flow": "stock"})
    assert queued.status_code == 202
    run = api(app, world, "a-viewer", "GET", f"/runs/{queued.get_json()['run_id']}").get_json()
    assert run["status"] == "queued" and run["flow"] == "stock"
    detail = api(app, world, "a-viewer", "GET", f"/runs/{world.ids['a']['run']}").get_json()
    assert {item["outcome"] for item in detail["items"]} == {"ok", "rejected"}
    assert api(app, world, "a-operator", "POST", f"/accounts/{world.ids['a']['account']}/runs", {"flow": "dance"}).status_code == 400


def test_labels_and_catalogue(app: Flask, world: World) -> None:
    assert api(app, world, "a-admin", "POST", "/labels", {"name": "   "}).status_code == 400
    label = api(app, world, "a-admin", "POST", "/labels", {"name": "Outlet"}).get_json()
    result = api(app, world, "a-admin", "POST", f"/labels/{label['id']}/assignments", {"skus": ["DRESS-a", "NOPE"]}).get_json()
    assert result == {"added": 2, "removed": 0, "unknown": ["NOPE"]}
    products = api(app, world, "a-viewer", "GET", f"/products?label_id={label['id']}").get_json()
    assert [p["parent_sku"] for p in products] == ["DRESS-a"]
    assert api(app, world, "a-admin", "POST", f"/labels/{label['id']}/rules", {"field": "colour", "value": "x"}).status_code == 400


def test_orders_and_actions(app: Flask, world: World) -> None:
    orders = api(app, world, "a-viewer", "GET", "/orders?status=error").get_json()
    assert [o["order_number"] for o in orders] == ["ORD-a-1"]
    assert api(app, world, "a-viewer", "GET", "/orders?status=lost").status_code == 400
    order_id = world.ids["a"]["order"]
    assert api(app, world, "a-operator", "POST", f"/orders/{order_id}/actions", {"action": "cancel"}).status_code == 400
    assert api(app, world, "a-operator", "POST", f"/orders/{order_id}/actions", {"action": "cancel", "reason": "out of stock"}).status_code == 202


def test_openapi_document_is_valid_and_covers_every_api_route(app: Flask) -> None:
    from openapi_spec_validator import validate

    spec = app.test_client().get("/api/openapi.json").get_json()
    validate(spec)
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
            routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed == documented
    body = spec["paths"]["/api/v1/accounts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/AccountCreate")
