"""The API's operations. Each one validates with a schema from ``web.api.schemas`` and calls the
same hub / ``web.services`` functions as the UI."""

from __future__ import annotations

from typing import Any

from flask import g, jsonify
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from hub import accounts as lifecycle
from hub import labels as labelling
from hub.errors import IllegalTransition, ValidationError
from hub.models import ChannelAccount, Label, Order, Product, SyncRun, User
from web import services
from web.access import actor, db, org_id, owned
from web.api import dump, load_body, load_query, operation, validation_failed
from web.api import schemas as s

PAGE = 100


def _conflict(error: Exception) -> Any:
    return jsonify(error=str(error)), 409


@operation("/me", "GET", "The user the token belongs to", level="viewer", tag="me", response=s.UserOut)
def me():  # type: ignore[no-untyped-def]
    return dump(s.UserOut, db().get(User, g.user.id))


# -- accounts ---------------------------------------------------------------------------------------


@operation("/accounts", "GET", "List channel accounts", level="viewer", tag="accounts", response=s.Account, many=True)
def list_accounts():  # type: ignore[no-untyped-def]
    return dump(s.Account, services.accounts_of(db(), org_id()), many=True)


@operation("/accounts", "POST", "Create a channel account (in Setup)", level="admin", tag="accounts",
           body=s.AccountCreate, response=s.Account, status=201, errors=(400,))
def create_account():  # type: ignore[no-untyped-def]
    """Credentials and settings are validated by the channel's own schemas; errors come back per field
    under ``fields.credentials`` / ``fields.settings``."""
    data = load_body(s.AccountCreate)
    cls = services.channel_class(data["plugin"])
    if cls is None:
        return validation_failed({"plugin": [f"no channel plugin named {data['plugin']!r} is installed"]})
    errors: dict[str, Any] = {}
    credentials = _validate(cls.validate_credentials, data["credentials"], "credentials", errors)
    settings = _validate(cls.validate_settings, data["settings"], "settings", errors)
    if errors:
        return validation_failed(errors)
    try:
        account = lifecycle.create_account(db(), org_id(), data["name"], data["plugin"], data["environment"], credentials,
                                           settings, services.hub().box, actor(), fulfilment_mandatory=cls.fulfilment_mandatory)
    except ValidationError as error:
        return validation_failed(error.messages)
    db().commit()
    return dump(s.Account, account, 201)


def _validate(validate: Any, raw: dict[str, Any], key: str, errors: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate(raw)
    except ValidationError as error:
        errors[key] = error.messages
        return {}


@operation("/accounts/<int:account_id>", "GET", "One channel account", level="viewer", tag="accounts", response=s.Account)
def get_account(account_id: int):  # type: ignore[no-untyped-def]
    return dump(s.Account, owned(ChannelAccount, account_id))


@operation("/accounts/<int:account_id>", "PATCH", "Change an account's settings or credentials", level="admin",
           tag="accounts", body=s.AccountSettingsUpdate, response=s.Account, errors=(400, 404))
def update_account(account_id: int):  # type: ignore[no-untyped-def]
    """``settings`` and ``credentials`` are merged into the stored ones (a credential left out is kept)."""
    account = owned(ChannelAccount, account_id)
    data = load_body(s.AccountSettingsUpdate)
    cls = services.channel_class(account.plugin)
    try:
        services.apply_hub_settings(db(), account, data["hub"], actor())
        if data["settings"] is not None:
            services.save_channel_settings(db(), account, {**(account.settings or {}), **data["settings"]}, actor())
        if data["credentials"] is not None and cls is not None:
            stored = services.stored_credentials(account)
            credentials = cls.validate_credentials({**stored, **data["credentials"]})
            lifecycle.update_credentials(db(), account, credentials, services.hub().box, actor(), replace=not stored)
    except ValidationError as error:
        db().rollback()
        return validation_failed(error.messages)
    db().commit()
    return dump(s.Account, account)


@operation("/accounts/<int:account_id>/transitions", "POST", "Move an account through its lifecycle", level="admin",
           tag="accounts", body=s.Transition, response=s.Account, errors=(400, 404, 409))
def transition(account_id: int):  # type: ignore[no-untyped-def]
    """``go_live`` needs ``confirm: true``: going live lists real products and takes real orders."""
    account = owned(ChannelAccount, account_id)
    data = load_body(s.Transition)
    if data["action"] == lifecycle.GO_LIVE and not data["confirm"]:
        return validation_failed({"confirm": ["going live must be confirmed with confirm: true"]})
    try:
        getattr(lifecycle, data["action"])(db(), account, actor())
    except IllegalTransition as error:
        db().rollback()
        return _conflict(error)
    db().commit()
    return dump(s.Account, account)


@operation("/accounts/<int:account_id>/flows/<flow>", "PUT", "Turn a flow (listings, reconciler, orders, fulfilments) on or off",
           level="admin", tag="accounts", body=s.FlowToggle, response=s.Account, errors=(400, 404, 409))
def set_flow(account_id: int, flow: str):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    data = load_body(s.FlowToggle)
    cls = services.channel_class(account.plugin)
    try:
        lifecycle.set_flow(db(), account, flow, data["enabled"], actor(), fulfilment_mandatory=bool(cls and cls.fulfilment_mandatory))
    except ValidationError as error:
        db().rollback()
        return validation_failed(error.messages)
    except IllegalTransition as error:
        db().rollback()
        return _conflict(error)
    db().commit()
    return dump(s.Account, account)


@operation("/accounts/<int:account_id>/runs", "POST", "Run a flow now", level="operator", tag="runs",
           body=s.RunRequest, response=s.Queued, status=202, errors=(400, 404))
def run_now(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    data = load_body(s.RunRequest)
    db().commit()
    return dump(s.Queued, {"run_id": services.enqueue(account.id, data["flow"], params=data["params"])}, 202)


@operation("/accounts/<int:account_id>/test", "POST", "Test the account's connection", level="operator", tag="accounts")
def test_connection(account_id: int):  # type: ignore[no-untyped-def]
    """Returns ``{ok, message, seen}``: what the stored credentials can see on the channel."""
    result = services.test_connection(owned(ChannelAccount, account_id))
    return jsonify(ok=result.ok, message=result.message, seen=result.seen)


# -- labels and catalogue ---------------------------------------------------------------------------


@operation("/labels", "GET", "List labels with their rules", level="viewer", tag="labels", response=s.Label, many=True)
def list_labels():  # type: ignore[no-untyped-def]
    rows = db().scalars(select(Label).where(Label.organisation_id == org_id()).options(selectinload(Label.rules)).order_by(Label.name))
    return dump(s.Label, list(rows), many=True)


@operation("/labels", "POST", "Create a label (or return the existing one)", level="admin", tag="labels",
           body=s.LabelCreate, response=s.Label, status=201, errors=(400,))
def create_label():  # type: ignore[no-untyped-def]
    data = load_body(s.LabelCreate)
    try:
        label = labelling.create_label(db(), org_id(), data["name"], actor=actor())
    except ValidationError as error:  # e.g. a name of spaces only
        return validation_failed(error.messages)
    db().commit()
    return dump(s.Label, label, 201)


@operation("/labels/<int:label_id>/rules", "POST", "Add a label rule (applied on the next catalogue import)",
           level="admin", tag="labels", body=s.LabelRuleCreate, response=s.LabelRule, status=201, errors=(400, 404))
def add_rule(label_id: int):  # type: ignore[no-untyped-def]
    label = owned(Label, label_id)
    data = load_body(s.LabelRuleCreate)
    try:
        rule = labelling.add_rule(db(), label, data["field"], data["value"], actor=actor())
    except ValidationError as error:
        return validation_failed(error.messages)
    db().commit()
    return dump(s.LabelRule, rule, 201)


@operation("/labels/<int:label_id>/assignments", "POST", "Give a label to SKUs, or take it off", level="admin",
           tag="labels", body=s.LabelAssign, response=s.LabelAssignResult, errors=(400, 404))
def assign_label(label_id: int):  # type: ignore[no-untyped-def]
    label = owned(Label, label_id)
    data = load_body(s.LabelAssign)
    if data["remove"]:
        resolved = labelling.variants_for_keys(db(), org_id(), data["skus"])
        variants = [v for key in data["skus"] for v in resolved.get(key, [])]
        result = {"added": 0, "removed": labelling.unassign(db(), label, variants, actor=actor()),
                  "unknown": [k for k in data["skus"] if k not in resolved]}
    else:
        outcome = labelling.assign_skus(db(), label, data["skus"], actor=actor())
        result = {"added": outcome.added, "removed": 0, "unknown": outcome.unknown}
    db().commit()
    return dump(s.LabelAssignResult, result)


@operation("/products", "GET", "List products with their variants", level="viewer", tag="catalogue",
           query=s.CatalogueQuery, response=s.Product, many=True)
def list_products():  # type: ignore[no-untyped-def]
    from web.views.catalogue import product_query

    args = load_query(s.CatalogueQuery)
    rows = db().scalars(product_query(args).options(selectinload(Product.variants))
                        .offset((args["page"] - 1) * PAGE).limit(PAGE))
    return dump(s.Product, list(rows), many=True)


@operation("/products/<int:product_id>", "GET", "One product with its variants", level="viewer", tag="catalogue",
           response=s.Product)
def get_product(product_id: int):  # type: ignore[no-untyped-def]
    return dump(s.Product, owned(Product, product_id))


# -- orders and runs ------------------------------------------------------------------------------------


@operation("/orders", "GET", "List orders", level="viewer", tag="orders", query=s.OrderQuery, response=s.Order, many=True)
def list_orders():  # type: ignore[no-untyped-def]
    from web.views.orders import order_query

    args = load_query(s.OrderQuery)
    rows = db().scalars(order_query(args).offset((args["page"] - 1) * PAGE).limit(PAGE))
    return dump(s.Order, list(rows), many=True)


@operation("/orders/<int:order_id>", "GET", "One order with lines and addresses", level="viewer", tag="orders",
           response=s.OrderDetail)
def get_order(order_id: int):  # type: ignore[no-untyped-def]
    return dump(s.OrderDetail, owned(Order, order_id))


@operation("/orders/<int:order_id>/actions", "POST", "Retry routing, resend the fulfilment, or cancel", level="operator",
           tag="orders", body=s.OrderAction, response=s.Queued, status=202, errors=(400, 404))
def order_action(order_id: int):  # type: ignore[no-untyped-def]
    from web.views.orders import queue_action

    order = owned(Order, order_id)
    data = load_body(s.OrderAction)
    if data["action"] == "cancel" and not data["reason"].strip():
        return validation_failed({"reason": ["a reason is required to cancel"]})
    return dump(s.Queued, {"run_id": queue_action(order, data["action"], data["reason"].strip())}, 202)


@operation("/runs", "GET", "Recent runs (newest first)", level="viewer", tag="runs", response=s.Run, many=True)
def list_runs():  # type: ignore[no-untyped-def]
    rows = db().scalars(select(SyncRun).where(SyncRun.organisation_id == org_id()).order_by(SyncRun.id.desc()).limit(PAGE))
    return dump(s.Run, list(rows), many=True)


@operation("/runs/<int:run_id>", "GET", "One run with its per-item outcomes", level="viewer", tag="runs",
           response=s.RunDetail)
def get_run(run_id: int):  # type: ignore[no-untyped-def]
    return dump(s.RunDetail, owned(SyncRun, run_id))


