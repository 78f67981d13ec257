"""The admin UI's blueprints, one per area, and the error pages."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DataError


def register_views(app: Flask) -> None:
    from web.views import accounts, audit, catalogue, dashboard, orders, reconciler, runs, settings, users

    for module in (dashboard, accounts, catalogue, orders, runs, reconciler, settings, users, audit):
        app.register_blueprint(module.bp)
    app.register_error_handler(CSRFError, _csrf_error)
    for code in (400, 403, 404, 405, 409, 413, 429):
        app.register_error_handler(code, _error_page)
    # A number too large for the database (SQLite: OverflowError) or a value too long or out of range
    # for its column (PostgreSQL: DataError) is the request's fault, not a server error.
    app.register_error_handler(OverflowError, _out_of_range)
    app.register_error_handler(DataError, _out_of_range)
    app.jinja_env.filters["when"] = _when
    app.jinja_env.filters["ago"] = _ago
    app.jinja_env.filters["due"] = _due


def _wants_json() -> bool:
    return (request.blueprint == "api" or request.path.startswith("/api/")
            or request.accept_mimetypes.best == "application/json")


def _out_of_range(_error: Exception) -> Any:
    message = "A number or text in the request is too large for its field; nothing was changed."
    if _wants_json():
        return jsonify(error=message), 400
    return render_template("error.html", code=400, title=TITLES[400], message=message), 400


def _csrf_error(error: CSRFError) -> Any:
    message = ("The form was not accepted because its security token is missing or expired. "
               "Nothing was changed: go back, reload the page and submit again.")
    if _wants_json():
        return jsonify(error=message), 400
    return render_template("error.html", code=400, title="Form expired", message=message), 400


TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Method not allowed", 409: "Conflict",
          413: "Too large", 429: "Too many requests"}


def _error_page(error: Any) -> Any:
    code = getattr(error, "code", 500) or 500
    message = getattr(error, "description", "") or TITLES.get(code, "Error")
    if _wants_json():
        return jsonify(error=message), code
    return render_template("error.html", code=code, title=TITLES.get(code, "Error"), message=message), code


def _when(moment: Any) -> str:
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _ago(moment: Any) -> str:
    from datetime import datetime, timezone

    if moment is None:
        return "never"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = (datetime.now(timezone.utc) - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            text = f"{int(seconds // size)} {unit}"
            break
    else:
        text = f"{int(seconds)} s"
    return f"in {text}" if future else f"{text} ago"


def _due(moment: Any) -> str:
    """When a flow runs next: "due now" for a moment already past (the next tick takes it)."""
    from datetime import datetime, timezone

    if moment is None:
        return "—"
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return "due now" if aware <= datetime.now(timezone.utc) else _ago(aware)
