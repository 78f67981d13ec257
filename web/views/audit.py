"""The audit log: events with filters, including why each pushed quantity is what it is."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from flask import Blueprint, render_template, request
from sqlalchemy import select

from hub.models import Event
from web import services
from web.access import allow, db, org_id

bp = Blueprint("audit", __name__, url_prefix="/audit")

PAGE = 100
SEARCH_MAX = 200  # longer search text matches nothing useful, and SQLite refuses LIKE patterns over 50,000 bytes


@bp.route("")
@allow("viewer")
def index():  # type: ignore[no-untyped-def]
    args = request.args
    query = select(Event).where(Event.organisation_id == org_id())
    if args.get("kind"):
        query = query.where(Event.kind.startswith(args["kind"].strip()[:SEARCH_MAX], autoescape=True))
    if args.get("level") in ("info", "warning", "error"):
        query = query.where(Event.level == args["level"])
    if args.get("account_id", type=int):
        query = query.where(Event.account_id == args.get("account_id", type=int))
    if args.get("q"):
        query = query.where(Event.message.ilike(f"%{args['q'].strip()[:SEARCH_MAX]}%"))
    since, until = _date(args.get("since")), _date(args.get("until"))
    if since:
        query = query.where(Event.created_at >= datetime.combine(since, time.min, timezone.utc))
    if until:
        query = query.where(Event.created_at < datetime.combine(until + timedelta(days=1), time.min, timezone.utc))
    page = max(1, args.get("page", 1, type=int))
    events = db().scalars(query.order_by(Event.id.desc()).offset((page - 1) * PAGE).limit(PAGE)).all()
    names = {a.id: a.name for a in services.accounts_of(db(), org_id())}
    return render_template("audit.html", events=events, names=names, args=args, page=page, page_size=PAGE)


def _date(value: str | None):  # type: ignore[no-untyped-def]
    try:
        return datetime.strptime(value, "%Y-%m-%d").date() if value else None
    except ValueError:
        return None
