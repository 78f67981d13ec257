"""The web application: admin UI, REST API (``/api/v1``) with its OpenAPI document, and inbound webhooks.

``create_app(hub)`` builds the Flask app around a :class:`hub.app.Hub`; the views only translate HTTP
to calls of hub functions and back. Every route declares who may use it (``web.access.allow``);
a route without a declaration is refused to everybody but admins, and the test-suite fails on it.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from hub.app import Hub, open_hub

csrf = CSRFProtect()

SESSION_HOURS = 12  # a working day: an admin signs in once a day, a stolen cookie dies the same day


def create_app(hub: Hub | None = None, config_overrides: dict[str, Any] | None = None) -> Flask:
    """The Flask app for ``hub`` (``open_hub()`` when None); ``config_overrides`` go into ``app.config``."""
    hub = hub or open_hub()
    app = Flask(__name__)
    app.config.update(_default_config(hub))
    app.config.update(config_overrides or {})
    app.extensions["channelhub"] = hub
    _register(app, hub)
    return app


def serve(hub: Hub, host: str = "127.0.0.1", port: int = 8000, *, threads: bool = True) -> None:
    """What ``channelhub web`` runs: the app on werkzeug's threaded server (put a reverse proxy with
    TLS in front of it in production, and set ``CHANNELHUB_ENV=production`` for Secure cookies)."""
    from werkzeug.serving import run_simple

    run_simple(host, port, create_app(hub), threaded=threads, use_reloader=False)


def _default_config(hub: Hub) -> dict[str, Any]:
    production = os.environ.get("CHANNELHUB_ENV", "").lower() == "production"
    return {
        "SECRET_KEY": os.environ.get("CHANNELHUB_WEB_SECRET") or _web_secret(hub.config.instance_dir),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=SESSION_HOURS),
        "WTF_CSRF_TIME_LIMIT": SESSION_HOURS * 3600,  # a form left open all day still submits
        "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,  # CSV uploads and webhook bodies; anything larger is refused
        "CHANNELHUB_PRODUCTION": production,
        "LOGIN_ATTEMPTS": 5,
        "LOGIN_WINDOW_SECONDS": 15 * 60,
    }


def _web_secret(instance_dir: Path) -> str:
    """The session-signing key: kept in the instance folder (mode 0600) so sessions survive restarts.

    A fleet of web processes must share it: set ``CHANNELHUB_WEB_SECRET`` there instead.
    """
    path = Path(instance_dir) / "web_secret.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip() or _replace_empty(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _replace_empty(path: Path) -> str:
    value = secrets.token_urlsafe(48)
    path.write_text(value)
    return value


def _register(app: Flask, hub: Hub) -> None:
    from web import access, auth, webhooks
    from web.api import api_bp
    from web.api.docs import docs_bp
    from web.views import register_views

    access.init_app(app)  # before CSRF: an anonymous POST gets sent to sign in, not a CSRF error
    csrf.init_app(app)
    app.register_blueprint(auth.bp)
    register_views(app)
    app.register_blueprint(api_bp)
    app.register_blueprint(docs_bp)
    app.register_blueprint(webhooks.bp)
    csrf.exempt(api_bp)  # bearer tokens are not sent by browsers on their own: no CSRF to guard against
    csrf.exempt(webhooks.bp)  # the channel authenticates itself (signature or URL secret)
    hub.pm.hook.channelhub_register_routes(app=app)
    app.after_request(_security_headers)


# Defence in depth behind Jinja's escaping: no inline or foreign script runs even if a value slips
# through unescaped, no other site can frame the admin UI (clickjacking), no MIME sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _security_headers(response: Any) -> Any:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
