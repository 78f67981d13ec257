"""Signing in and out, the login rate limit, and personal API tokens.

Login attempts are limited per (client IP, e-mail): ``LOGIN_ATTEMPTS`` failures within
``LOGIN_WINDOW_SECONDS`` (5 per 15 minutes) lock that pair until the oldest failure leaves the window.
The counter is kept in this process (a fleet of N web processes allows N x 5; the scrypt hash keeps
each attempt expensive anyway); a successful sign-in clears it.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.models import ApiToken, User, utcnow
from hub.users import authenticate
from web.access import PUBLIC, allow, db

bp = Blueprint("auth", __name__)

TOKEN_PREFIX = "chub_"


class LoginLimiter:
    """Failed sign-ins per key within a sliding window."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._guard = threading.Lock()

    def blocked_for(self, key: str, limit: int, window: float) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        with self._guard:
            failures = self._prune(key, window)
            if len(failures) < limit:
                return 0.0
            return max(1.0, failures[0] + window - time.monotonic())

    def fail(self, key: str) -> None:
        with self._guard:
            self._failures[key].append(time.monotonic())

    def clear(self, key: str) -> None:
        with self._guard:
            self._failures.pop(key, None)

    def _prune(self, key: str, window: float) -> deque[float]:
        failures = self._failures[key]
        while failures and failures[0] <= time.monotonic() - window:
            failures.popleft()
        return failures


def _limiter() -> LoginLimiter:
    return current_app.extensions.setdefault("channelhub.login_limiter", LoginLimiter())


@bp.route("/login", methods=["GET", "POST"])
@allow(PUBLIC)
def login():  # type: ignore[no-untyped-def]
    email = (request.form.get("email") or "").strip().lower()
    if request.method == "GET":
        return render_template("auth/login.html", email="", next=_safe_next(request.args.get("next")))
    key = f"{request.remote_addr}|{email}"
    wait = _limiter().blocked_for(key, current_app.config["LOGIN_ATTEMPTS"], current_app.config["LOGIN_WINDOW_SECONDS"])
    if wait:
        minutes = int(wait // 60) + 1
        message = f"Too many failed sign-ins for {email}. Try again in about {minutes} minute(s)."
        return render_template("auth/login.html", email=email, error=message, next=_safe_next(request.form.get("next"))), 429
    user = authenticate(db(), email, request.form.get("password") or "")
    if user is None:
        _limiter().fail(key)
        error = "E-mail or password is wrong (or the user is deactivated)."
        return render_template("auth/login.html", email=email, error=error, next=_safe_next(request.form.get("next"))), 401
    _limiter().clear(key)
    session.clear()  # a fresh session on sign-in: a session id planted before login is useless
    session["user_id"] = user.id
    session.permanent = True
    return redirect(_safe_next(request.form.get("next")) or url_for("dashboard.index"))


@bp.route("/logout", methods=["POST"])
@allow(PUBLIC)
def logout():  # type: ignore[no-untyped-def]
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


def _safe_next(target: str | None) -> str:
    """Only a path on this site: ``next=https://evil.example`` must not turn sign-in into a redirector."""
    if not target:
        return ""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return ""
    return target


# -- API tokens ------------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(session_: Session, user_id: int, name: str) -> tuple[ApiToken, str]:
    """A new token for the user; the plain token is returned once and never stored."""
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user_id, name=name.strip()[:100] or "token", token_hash=hash_token(plain))
    session_.add(token)
    session_.flush()
    return token, plain


def user_for_token(session_: Session, plain: str) -> User | None:
    token = session_.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plain)))
    if token is None:
        return None
    token.last_used_at = utcnow()
    session_.commit()  # so "last used" is visible even when the request itself changes nothing
    return session_.get(User, token.user_id)


@bp.route("/me/tokens")
@allow("viewer")  # every user manages their own tokens; a token has exactly its user's role
def tokens():  # type: ignore[no-untyped-def]
    return _tokens_page(None)


def _tokens_page(new_plain: str | None):  # type: ignore[no-untyped-def]
    rows = db().scalars(select(ApiToken).where(ApiToken.user_id == g.user.id).order_by(ApiToken.id)).all()
    return render_template("auth/tokens.html", tokens=rows, new_token=new_plain)


@bp.route("/me/tokens", methods=["POST"])
@allow("viewer")
def create_token():  # type: ignore[no-untyped-def]
    name = (request.form.get("name") or "").strip()
    if not name:
        flash("Give the token a name, e.g. the script that will use it.", "error")
        return redirect(url_for("auth.tokens"))
    _token, plain = new_token(db(), g.user.id, name)
    db().commit()
    # Rendered in this response only (never put in the cookie session, which the client can read).
    return _tokens_page(plain)


@bp.route("/me/tokens/<int:token_id>/revoke", methods=["POST"])
@allow("viewer")
def revoke_token(token_id: int):  # type: ignore[no-untyped-def]
    token = db().get(ApiToken, token_id)
    if token is None or token.user_id != g.user.id:
        from flask import abort

        abort(404)
    db().delete(token)
    db().commit()
    flash(f"Token {token.name!r} revoked.", "info")
    return redirect(url_for("auth.tokens"))
