"""Who may use which route, and the per-request database session scoped to the user's organisation.

Every view declares its level with :func:`allow` (``PUBLIC``, or the lowest role that may use it);
:func:`enforce` runs before every request and refuses the rest. A view that declares nothing is
treated as admin-only (fail closed) and ``tests/web/test_permissions.py`` fails on it, so a new route
cannot ship without a decision. Plugins adding pages through ``channelhub_register_routes`` use
``web.access.allow`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g, jsonify, redirect, request, session, url_for
from sqlalchemy.orm import Session, sessionmaker

from hub.models import Role, User

PUBLIC = "public"
LEVELS = (PUBLIC, Role.VIEWER.value, Role.OPERATOR.value, Role.ADMIN.value)
RANK = {level: rank for rank, level in enumerate(LEVELS)}

F = TypeVar("F", bound=Callable[..., Any])


def allow(level: str | Role) -> Callable[[F], F]:
    """Declare who may use a view: ``PUBLIC`` or the lowest role (``viewer`` < ``operator`` < ``admin``)."""
    value = level.value if isinstance(level, Role) else level
    if value not in RANK:
        raise ValueError(f"unknown access level {level!r}; one of {', '.join(LEVELS)}")

    def mark(view: F) -> F:
        view.access = value  # type: ignore[attr-defined]
        return view

    return mark


def required_level(app: Flask, endpoint: str) -> str | None:
    """The declared level of an endpoint; None when the view declares nothing."""
    if endpoint == "static":
        return PUBLIC
    view = app.view_functions.get(endpoint)
    return getattr(view, "access", None)


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in user as views see it: read fresh every request, so a role change bites at once."""

    id: int
    organisation_id: int
    email: str
    name: str
    role: str

    def can(self, level: str) -> bool:
        return RANK[self.role] >= RANK[level]


def init_app(app: Flask) -> None:
    app.extensions["channelhub.sessions"] = sessionmaker(app.extensions["channelhub"].db.engine, expire_on_commit=False)
    app.before_request(enforce)
    app.teardown_request(_close_session)
    app.context_processor(lambda: {"current_user": g.get("user"), "can": _can})


def db() -> Session:
    """This request's session. Views commit explicitly; whatever is not committed is rolled back."""
    if "db" not in g:
        g.db = current_app.extensions["channelhub.sessions"]()
    return g.db


def _close_session(_exc: BaseException | None) -> None:
    session_ = g.pop("db", None)
    if session_ is not None:
        session_.close()  # rolls back anything uncommitted: a failed request leaves nothing half-done


def _can(level: str) -> bool:
    user = g.get("user")
    return bool(user and user.can(level))


def enforce() -> Any:
    """Refuse the request unless the signed-in user (or API token) has the endpoint's level."""
    if request.endpoint is None:
        return None  # 404 / 405: Flask answers
    level = required_level(current_app, request.endpoint) or Role.ADMIN.value
    api = request.blueprint == "api"
    g.user = _token_user() if api else _session_user()
    if level == PUBLIC:
        return None
    if g.user is None:
        return _unauthenticated(api)
    if not g.user.can(level):
        return _forbidden(api, level)
    return None


def _session_user() -> CurrentUser | None:
    user_id = session.get("user_id")
    if not isinstance(user_id, int):
        return None
    return _as_current(db().get(User, user_id))


def _token_user() -> CurrentUser | None:
    from web.auth import user_for_token  # late: auth imports this module

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return _as_current(user_for_token(db(), token.strip()))


def _as_current(user: User | None) -> CurrentUser | None:
    if user is None or not user.active:
        return None
    return CurrentUser(user.id, user.organisation_id, user.email, user.name or user.email, user.role.value)


def _unauthenticated(api: bool) -> Any:
    if api:
        return jsonify(error="authentication required: send 'Authorization: Bearer <token>'"), 401
    target = request.full_path if request.method == "GET" else request.referrer or "/"
    return redirect(url_for("auth.login", next=target.rstrip("?")))


def _forbidden(api: bool, level: str) -> Any:
    message = f"this needs the {level} role; you are {g.user.role}"
    if api:
        return jsonify(error=message), 403
    abort(403, description=message)


def org_id() -> int:
    return g.user.organisation_id


MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL; a larger one cannot exist (and SQLite overflows on it)


def owned(model: type, ident: Any) -> Any:
    """The row of ``model`` with this id in the user's organisation; 404 for any other (never 403,
    which would confirm that another organisation's id exists)."""
    if not isinstance(ident, int) or not 0 < ident <= MAX_ID:
        abort(404)
    row = db().get(model, ident)
    if row is None or getattr(row, "organisation_id", None) != org_id():
        abort(404)
    return row


def actor() -> str:
    """How the audit log names the user behind this request."""
    via = " (API)" if request.blueprint == "api" else ""
    return f"{g.user.email}{via}"
