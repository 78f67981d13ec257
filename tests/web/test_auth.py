"""Sign-in: rate limit, session cookie flags, safe redirects, deactivated users."""

from __future__ import annotations

from flask import Flask

from hub.app import Hub
from hub.models import User
from web import create_app

from .conftest import World, csrf_token, sign_in


def test_anonymous_is_sent_to_sign_in_and_back(app: Flask, world: World) -> None:
    client = app.test_client()
    response = client.get("/orders?status=error")
    assert response.status_code == 302 and "/login?next=/orders?status%3Derror" in response.headers["Location"]
    token = csrf_token(client)
    back = client.post("/login", data={"email": world.emails["a-viewer"], "password": "correct horse battery",
                                       "next": "/orders?status=error", "csrf_token": token})
    assert back.headers["Location"] == "/orders?status=error"


def test_next_never_leaves_the_site(app: Flask, world: World) -> None:
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/login", data={"email": world.emails["a-viewer"], "password": "correct horse battery",
                                           "next": "//evil.example/", "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_login_attempts_are_rate_limited_per_ip_and_email(app: Flask, world: World) -> None:
    client = app.test_client()
    for _ in range(5):
        assert sign_in(client, world.emails["a-admin"], "wrong password!").status_code == 401
    blocked = sign_in(client, world.emails["a-admin"])  # even the right password waits now
    assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.get_data(as_text=True)
    assert sign_in(client, world.emails["a-viewer"]).status_code == 302  # another e-mail is unaffected


def test_session_cookie_is_httponly_lax_and_secure_in_production(hub: Hub, world: World) -> None:
    app = create_app(hub, {"TESTING": True, "SECRET_KEY": "x", "SESSION_COOKIE_SECURE": True})
    client = app.test_client()
    response = sign_in(client, world.emails["a-viewer"])
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_deactivated_user_is_signed_out_at_once(signed_in, hub: Hub, world: World) -> None:
    viewer = signed_in("viewer")
    with hub.db.session() as session:
        session.get(User, world.ids["a"]["user_viewer"]).active = False
    assert viewer.get("/").status_code == 302


def test_logout_ends_the_session(signed_in) -> None:
    viewer = signed_in("viewer")
    assert viewer.post("/logout").status_code == 302
    assert viewer.get("/").status_code == 302


def test_tokens_are_shown_once_and_stored_hashed(signed_in, hub: Hub) -> None:
    viewer = signed_in("viewer")
    body = viewer.post("/me/tokens", {"name": "my script"}).get_data(as_text=True)
    assert "chub_" in body
    assert "chub_" not in viewer.get("/me/tokens").get_data(as_text=True)
