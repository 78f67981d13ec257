"""Sessions, CSRF and sign-in throttling beyond ``tests/web/test_auth.py`` and ``test_csrf.py``
(which cover: every form POST without a token is refused and changes nothing; cookie flags with
``SESSION_COOKIE_SECURE`` forced; five failures lock an e-mail out, other e-mails unaffected)."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select

from hub.app import Hub
from hub.models import Label
from web import create_app

from tests.web.conftest import PASSWORD, World, csrf_token, sign_in


def label_count(hub: Hub) -> int:
    with hub.db.session() as session:
        return session.scalar(select(func.count()).select_from(Label))


def test_a_csrf_token_is_bound_to_its_session(app: Flask, world: World, hub: Hub) -> None:
    """A token lifted from the attacker's own session does not work in the victim's."""
    attacker, victim = app.test_client(), app.test_client()
    assert sign_in(attacker, world.emails["b-admin"]).status_code == 302
    assert sign_in(victim, world.emails["a-admin"]).status_code == 302
    stolen = csrf_token(attacker, "/")
    before = label_count(hub)
    forged = victim.post("/catalogue/labels", data={"name": "Forged", "csrf_token": stolen})
    assert forged.status_code == 400 and "security token" in forged.get_data(as_text=True)
    assert victim.post("/catalogue/labels", data={"name": "Forged", "csrf_token": "garbage"}).status_code == 400
    assert label_count(hub) == before
    assert victim.post("/catalogue/labels", data={"name": "Real", "csrf_token": csrf_token(victim, "/")}).status_code == 302
    assert label_count(hub) == before + 1


def test_signing_out_and_in_again_invalidates_old_tokens(app: Flask, world: World, hub: Hub) -> None:
    client = app.test_client()
    sign_in(client, world.emails["a-admin"])
    old = csrf_token(client, "/")
    client.post("/logout", data={"csrf_token": old})
    sign_in(client, world.emails["a-admin"])
    before = label_count(hub)
    assert client.post("/catalogue/labels", data={"name": "Stale", "csrf_token": old}).status_code == 400
    assert label_count(hub) == before


def cookies(response: object) -> list[str]:
    return [value for key, value in response.headers if key.lower() == "set-cookie"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("production", [True, False])
def test_session_cookie_flags_follow_channelhub_env(hub: Hub, world: World, monkeypatch: pytest.MonkeyPatch,
                                                    production: bool) -> None:
    if production:
        monkeypatch.setenv("CHANNELHUB_ENV", "production")
    else:
        monkeypatch.delenv("CHANNELHUB_ENV", raising=False)
    app = create_app(hub, {"TESTING": True, "SECRET_KEY": "cookie-test"})
    client = app.test_client()
    before, after = cookies(client.get("/login")), cookies(sign_in(client, world.emails["a-viewer"]))
    assert before and after, "no session cookie was set"
    for cookie in before + after:
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert "httponly" in attributes and "samesite=lax" in cookie.lower().replace(" ", ""), cookie
        assert ("secure" in attributes) is production, cookie
    assert all("expires=" in cookie.lower() for cookie in after)  # signed in: it dies after SESSION_HOURS


def test_the_lockout_survives_a_fresh_cookie_jar_and_case_tricks(app: Flask, world: World) -> None:
    email = world.emails["a-admin"]
    for variant in (email, email.upper(), f"  {email}", email.title(), email):
        assert sign_in(app.test_client(), variant, "wrong password!").status_code == 401
    fresh = app.test_client()  # no cookies: the counter is per (IP, e-mail), not per session
    assert sign_in(fresh, email).status_code == 429
    assert sign_in(fresh, email.upper()).status_code == 429


def test_unknown_e_mails_are_throttled_and_answered_like_wrong_passwords(app: Flask, world: World) -> None:
    unknown = [sign_in(app.test_client(), "nobody@nowhere.example", "whatever-123") for _ in range(5)]
    wrong = sign_in(app.test_client(), world.emails["a-viewer"], "whatever-123")
    assert {r.status_code for r in unknown} == {401} and wrong.status_code == 401
    message = "E-mail or password is wrong"
    assert message in unknown[0].get_data(as_text=True) and message in wrong.get_data(as_text=True)
    assert sign_in(app.test_client(), "nobody@nowhere.example", "whatever-123").status_code == 429


def test_the_lockout_ends_after_the_window_and_success_resets_it(app: Flask, world: World,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import web.auth

    now = [1000.0]
    monkeypatch.setattr(web.auth.time, "monotonic", lambda: now[0])
    email = world.emails["a-operator"]
    for _ in range(4):
        sign_in(app.test_client(), email, "wrong password!")
    assert sign_in(app.test_client(), email, PASSWORD).status_code == 302  # clears the counter
    for _ in range(4):
        assert sign_in(app.test_client(), email, "wrong password!").status_code == 401
    assert sign_in(app.test_client(), email, "wrong password!").status_code == 401  # the 5th failure
    assert sign_in(app.test_client(), email, PASSWORD).status_code == 429
    now[0] += app.config["LOGIN_WINDOW_SECONDS"] - 5
    assert sign_in(app.test_client(), email, PASSWORD).status_code == 429
    now[0] += 10
    assert sign_in(app.test_client(), email, PASSWORD).status_code == 302
