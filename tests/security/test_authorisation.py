"""Authorisation beyond ``tests/web/test_permissions.py`` (which covers every (route, method) for
anonymous / viewer / operator / admin, and every id in a URL path filled with the other
organisation's ids). Here: ids of another organisation carried in bodies, query strings and forms;
the API never accepting the browser's session cookie; tokens of deactivated users; other users'
tokens; and GET never changing anything."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import func, select

from hub.app import Hub
from hub.models import ApiToken, Base, ChannelAccount, LabelAssignment, User

from tests.web.conftest import World, sign_in
from tests.web.test_permissions import routes, url_for_rule


def api(app: Flask, world: World, who: str, method: str, path: str, body: Any = None) -> Any:
    return app.test_client().open(f"/api/v1{path}", method=method, json=body,
                                  headers={"Authorization": f"Bearer {world.tokens[who]}"})


def as_user(app: Flask, world: World, who: str) -> Any:
    org, role = who.split("-")
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = world.ids[org][f"user_{role}"]
    return client


def label_assignments(hub: Hub, variant_id: int) -> int:
    with hub.db.session() as session:
        return session.scalar(select(func.count()).select_from(LabelAssignment).where(LabelAssignment.variant_id == variant_id))


def test_api_refuses_links_to_another_organisations_accounts_and_labels(app: Flask, world: World, hub: Hub) -> None:
    a, b = world.ids["a"], world.ids["b"]
    for field, other in (("label_id", b["label"]), ("source_account_id", b["account"]),
                         ("destination_account_id", b["account"]), ("fulfilment_account_id", b["account"])):
        response = api(app, world, "a-admin", "PATCH", f"/accounts/{a['account']}", {"hub": {field: other}})
        assert response.status_code == 400 and field in response.get_json()["fields"], field
    with hub.db.session() as session:
        account = session.get(ChannelAccount, a["account"])
        assert (account.label_id, account.source_account_id, account.destination_account_id) == (None, None, None)


def test_api_filters_never_reach_into_another_organisation(app: Flask, world: World) -> None:
    b = world.ids["b"]
    assert api(app, world, "a-viewer", "GET", f"/products?label_id={b['label']}").get_json() == []
    assert api(app, world, "a-viewer", "GET", f"/orders?account_id={b['account']}").get_json() == []
    everything = api(app, world, "a-viewer", "GET", "/products?q=DRESS").get_json()
    assert [p["parent_sku"] for p in everything] == ["DRESS-a"]


def test_api_label_assignment_cannot_touch_another_organisations_skus(app: Flask, world: World, hub: Hub) -> None:
    before = label_assignments(hub, world.ids["b"]["variant"])
    result = api(app, world, "a-admin", "POST", f"/labels/{world.ids['a']['label']}/assignments",
                 {"skus": ["DRESS-b", "DRESS-b-8", "DRESS-b-10"]}).get_json()
    assert result == {"added": 0, "removed": 0, "unknown": ["DRESS-b", "DRESS-b-8", "DRESS-b-10"]}
    assert label_assignments(hub, world.ids["b"]["variant"]) == before


def test_forms_refuse_another_organisations_ids(app_without_csrf: Flask, world: World, hub: Hub) -> None:
    a, b = world.ids["a"], world.ids["b"]
    admin = as_user(app_without_csrf, world, "a-admin")
    hub_settings = admin.post(f"/accounts/{a['account']}/hub-settings",
                              data={"hub-label_id": b["label"], "hub-source_account_id": b["account"]})
    assert hub_settings.status_code == 400
    before = label_assignments(hub, b["variant"])
    admin.post("/catalogue/labels/assign", data={"label_id": a["label"], "variant_id": b["variant"]})
    admin.post("/catalogue/labels/import", data={"csv": "sku,label\nDRESS-b-8,Iconic\nDRESS-b,Iconic\n"})
    assert label_assignments(hub, b["variant"]) == before
    assert admin.get(f"/catalogue/listings?account_id={b['account']}").status_code == 404
    for path in (f"/catalogue?label_id={b['label']}", f"/orders?account_id={b['account']}", f"/audit?account_id={b['account']}"):
        body = admin.get(path).get_data(as_text=True)
        assert "DRESS-b" not in body and "ORD-b-1" not in body and "Memory B" not in body, path


def test_api_ignores_the_browser_session_cookie(app: Flask, world: World) -> None:
    """The API is exempt from CSRF because only a bearer token authenticates it: a signed-in
    browser (which a forged cross-site request would ride on) gets 401 there."""
    client = app.test_client()
    assert sign_in(client, world.emails["a-admin"]).status_code == 302
    assert client.get("/").status_code == 200
    for method, path, body in (("GET", "/api/v1/accounts", None), ("POST", "/api/v1/labels", {"name": "Forged"}),
                               ("POST", f"/api/v1/accounts/{world.ids['a']['account']}/transitions", {"action": "pause"})):
        assert client.open(path, method=method, json=body).status_code == 401, path


def test_a_deactivated_users_token_stops_working(app: Flask, world: World, hub: Hub) -> None:
    assert api(app, world, "a-operator", "GET", "/me").status_code == 200
    with hub.db.session() as session:
        session.get(User, world.ids["a"]["user_operator"]).active = False
    assert api(app, world, "a-operator", "GET", "/me").status_code == 401


def test_a_role_change_applies_to_tokens_at_once(app: Flask, world: World, hub: Hub) -> None:
    assert api(app, world, "a-admin", "POST", "/labels", {"name": "Before"}).status_code == 201
    with hub.db.session() as session:
        session.get(User, world.ids["a"]["user_admin"]).role = "viewer"
    assert api(app, world, "a-admin", "POST", "/labels", {"name": "After"}).status_code == 403


def test_nobody_revokes_another_users_token_even_an_admin(app_without_csrf: Flask, world: World, hub: Hub) -> None:
    victim_token = world.ids["a"]["token"]  # a viewer's token in the admin's own organisation
    response = as_user(app_without_csrf, world, "a-admin").post(f"/me/tokens/{victim_token}/revoke")
    assert response.status_code == 404
    with hub.db.session() as session:
        assert session.get(ApiToken, victim_token) is not None
    page = as_user(app_without_csrf, world, "a-admin").get("/me/tokens").get_data(as_text=True)
    assert "victim&#39;s script" not in page and "victim's script" not in page


def test_get_never_changes_anything(app_without_csrf: Flask, world: World, hub: Hub) -> None:
    """State changes only through POST/PUT/PATCH (which need CSRF or a token): following a link,
    an <img src>, or a prefetch changes nothing, for any GET route."""

    def counts() -> dict[str, Any]:
        with hub.db.session() as session:
            rows = {table.name: session.scalar(select(func.count()).select_from(table)) for table in Base.metadata.sorted_tables}
            rows["accounts"] = [(a.status, a.listings_enabled, a.updated_at) for a in session.scalars(select(ChannelAccount))]
            return rows

    before = counts()
    admin = as_user(app_without_csrf, world, "a-admin")
    for _endpoint, method, rule in routes(app_without_csrf):
        if method == "GET" and not rule.rule.startswith("/api/"):
            assert admin.get(url_for_rule(rule, world.ids["a"])).status_code < 500, rule.rule
    assert counts() == before
