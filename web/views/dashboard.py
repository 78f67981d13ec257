"""The dashboard: every account with its status and flows, open errors, and orders per day."""

from __future__ import annotations

from flask import Blueprint, render_template

from hub.accounts import days_left_in_testing
from web import services
from web.access import allow, db, org_id
from web.chart import bar_chart

bp = Blueprint("dashboard", __name__)


@bp.route("/")
@allow("viewer")
def index():  # type: ignore[no-untyped-def]
    session = db()
    accounts = services.accounts_of(session, org_id())
    rows = [(account, services.flow_rows(session, account), days_left_in_testing(account)) for account in accounts]
    series = services.orders_per_day(session, org_id())
    return render_template("dashboard.html", rows=rows, errors=services.open_errors(session, org_id()),
                           chart=bar_chart(series, title="Orders per day, last 30 days"),
                           total_orders=sum(n for _d, n in series))
