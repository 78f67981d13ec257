"""Orders: the list with filters, one order with its lines, references and timeline, and actions.

Actions do not change the order here: they queue the flow that owns the change (orders, fulfilment)
with the order's id, so the same code path as the schedule does the work and records it.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError as SchemaError
from sqlalchemy import or_, select

from hub.events import emit
from hub.models import Binding, ChannelAccount, Event, Order, OrderStatus
from web import services
from web.access import actor, allow, db, org_id, owned
from web.api.schemas import OrderQuery

bp = Blueprint("orders", __name__, url_prefix="/orders")

PAGE = 50


def order_query(filters: dict[str, Any]) -> Any:
    """The organisation's orders narrowed by ``OrderQuery`` filters (shared with the API)."""
    query = select(Order).where(Order.organisation_id == org_id())
    if filters.get("account_id"):
        query = query.where(Order.account_id == filters["account_id"])
    if filters.get("status"):
        query = query.where(Order.status == OrderStatus(filters["status"]))
    if filters.get("since"):
        query = query.where(Order.placed_at >= datetime.combine(filters["since"], time.min, timezone.utc))
    if filters.get("until"):
        query = query.where(Order.placed_at < datetime.combine(filters["until"] + timedelta(days=1), time.min, timezone.utc))
    return query.order_by(Order.placed_at.desc().nulls_last(), Order.id.desc())


@bp.route("")
@allow("viewer")
def index():  # type: ignore[no-untyped-def]
    try:
        filters = OrderQuery().load(request.args.to_dict())
        error = None
    except SchemaError as problem:
        filters, error = {"page": 1}, "; ".join(f"{k}: {', '.join(v)}" for k, v in problem.messages.items())
    page = filters["page"]
    orders = db().scalars(order_query(filters).offset((page - 1) * PAGE).limit(PAGE)).all()
    accounts = services.accounts_of(db(), org_id())
    return render_template("orders/index.html", orders=orders, accounts=accounts, names={a.id: a.name for a in accounts},
                           statuses=[s.value for s in OrderStatus], args=request.args, page=page, page_size=PAGE,
                           error=error), (400 if error else 200)


@bp.route("/<int:order_id>")
@allow("viewer")
def show(order_id: int):  # type: ignore[no-untyped-def]
    order = owned(Order, order_id)
    names = {a.id: a.name for a in services.accounts_of(db(), org_id())}
    return render_template("orders/show.html", order=order, names=names, references=references(order),
                           timeline=timeline(order))


def references(order: Order) -> list[Binding]:
    """The bindings that name this order on other systems (import, destination, fulfilment)."""
    keys = [str(order.id), order.order_number, order.channel_order_id]
    accounts = select(ChannelAccount.id).where(ChannelAccount.organisation_id == order.organisation_id)
    return list(db().scalars(select(Binding).where(
        Binding.account_id.in_(accounts), Binding.kind != "listing",
        or_(Binding.internal_id.in_(keys), Binding.external_id.in_(keys))).order_by(Binding.created_at)))


def timeline(order: Order) -> list[Event]:
    """Events about this order: those carrying its id or number in their data, oldest first."""
    query = select(Event).where(Event.organisation_id == order.organisation_id, Event.created_at >= order.created_at - timedelta(days=1))
    candidates = db().scalars(query.where(Event.account_id.in_([order.account_id, order.destination_account_id]))
                              .order_by(Event.id).limit(5000))
    wanted = {str(order.id), order.order_number, order.channel_order_id}
    return [event for event in candidates if _mentions(event, wanted)]


def _mentions(event: Event, wanted: set[str]) -> bool:
    data = event.data or {}
    values = {str(data.get(key)) for key in ("order_id", "order_number", "channel_order_id") if data.get(key) is not None}
    return bool(values & wanted)


ACTIONS = {"retry_routing": ("orders", "routing"), "resend_fulfilment": ("fulfilment", "fulfilment resend"),
           "cancel": ("orders", "cancellation")}


def queue_action(order: Order, action: str, reason: str) -> int:
    """Queue the flow that performs ``action`` for this order; shared by the UI and the API."""
    flow, what = ACTIONS[action]
    params: dict[str, Any] = {"order_id": order.id}
    if action == "resend_fulfilment":
        params["resend"] = True
    if action == "cancel":
        params.update(cancel=True, reason=reason)
    emit(db(), organisation_id=order.organisation_id, account_id=order.account_id, kind=f"order.{action}_requested",
         actor=actor(), message=f"order {order.order_number}: {what} requested" + (f" ({reason})" if reason else ""),
         data={"order_id": order.id, "order_number": order.order_number, "reason": reason or None})
    db().commit()
    return services.enqueue(order.account_id, flow, params=params)


@bp.route("/<int:order_id>/action", methods=["POST"])
@allow("operator")
def action(order_id: int):  # type: ignore[no-untyped-def]
    order = owned(Order, order_id)
    name, reason = request.form.get("action", ""), request.form.get("reason", "").strip()
    if name not in ACTIONS:
        abort(400, description=f"unknown action {name!r}")
    if name == "cancel" and not reason:
        flash("Give a reason to cancel the order: the marketplace asks for one.", "error")
        return redirect(url_for("orders.show", order_id=order.id))
    run_id = queue_action(order, name, reason)
    flash(f"{ACTIONS[name][1].capitalize()} queued (run {run_id}).", "ok")
    return redirect(url_for("orders.show", order_id=order.id))
