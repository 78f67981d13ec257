"""Carrier mapping per marketplace account, courier rules (in the fulfilment account's settings),
and e-mail notifications (SMTP settings of the organisation, with a test e-mail)."""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from marshmallow import Schema, fields, validate
from marshmallow import ValidationError as SchemaError
from sqlalchemy import select

from hub import carrier_maps
from hub.carriers import CANONICAL_CARRIERS
from hub.channel import Role as ChannelRole
from hub.errors import ValidationError
from hub.events import emit
from hub.models import CarrierMap, ChannelAccount, Organisation
from hub.secrets import mask
from web import forms, services
from web.access import actor, allow, db, org_id, owned

bp = Blueprint("settings", __name__, url_prefix="/settings")

SMTP_TIMEOUT = 10  # seconds: the admin is waiting for the page


# -- carrier mapping ------------------------------------------------------------------------------------


def _marketplaces() -> list[ChannelAccount]:
    accounts = services.accounts_of(db(), org_id())
    return [a for a in accounts if (cls := services.channel_class(a.plugin)) is None or cls.has_role(ChannelRole.MARKETPLACE)]


@bp.route("/carriers")
@allow("viewer")
def carriers():  # type: ignore[no-untyped-def]
    accounts = _marketplaces()
    account_id = request.args.get("account_id", type=int) or (accounts[0].id if accounts else None)
    account = owned(ChannelAccount, account_id) if account_id else None
    maps = db().scalars(select(CarrierMap).where(CarrierMap.account_id == account.id).order_by(CarrierMap.source_carrier)).all() if account else []
    return render_template("settings/carriers.html", accounts=accounts, account=account, maps=maps,
                           carriers=CANONICAL_CARRIERS)


@bp.route("/carriers/<int:account_id>", methods=["POST"])
@allow("admin")
def save_carrier(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    form = request.form
    try:
        carrier_maps.set_mapping(db(), account, form.get("source_carrier", ""), form.get("channel_carrier", ""),
                                 form.get("tracking_url_template", "").strip())
    except ValidationError as error:
        db().rollback()
        flash(str(error), "error")
        return redirect(url_for("settings.carriers", account_id=account.id))
    emit(db(), organisation_id=account.organisation_id, account_id=account.id, kind="carrier_map.saved", actor=actor(),
         message=f"{account.name}: carrier {form.get('source_carrier')} -> {form.get('channel_carrier')}")
    db().commit()
    flash("Carrier mapping saved.", "ok")
    return redirect(url_for("settings.carriers", account_id=account.id))


@bp.route("/carriers/map/<int:map_id>/delete", methods=["POST"])
@allow("admin")
def delete_carrier(map_id: int):  # type: ignore[no-untyped-def]
    mapping = db().get(CarrierMap, map_id)
    account = db().get(ChannelAccount, mapping.account_id) if mapping else None
    if mapping is None or account is None or account.organisation_id != org_id():
        abort(404)
    db().delete(mapping)
    emit(db(), organisation_id=account.organisation_id, account_id=account.id, kind="carrier_map.deleted", actor=actor(),
         message=f"{account.name}: carrier mapping for {mapping.source_carrier} removed")
    db().commit()
    flash("Carrier mapping removed.", "ok")
    return redirect(url_for("settings.carriers", account_id=account.id))


# -- courier rules ------------------------------------------------------------------------------------------

RULE_SETTINGS = ("courier_rules", "default_courier")


def _rule_accounts() -> list[ChannelAccount]:
    """Accounts whose channel keeps courier rules in its settings (Starshipit does)."""
    found = []
    for account in services.accounts_of(db(), org_id()):
        cls = services.channel_class(account.plugin)
        if cls is not None and "courier_rules" in cls.settings_schema().load_fields:
            found.append(account)
    return found


@bp.route("/courier-rules")
@allow("viewer")
def courier_rules():  # type: ignore[no-untyped-def]
    rows = [(a, {k: json.dumps((a.settings or {}).get(k), indent=2) for k in RULE_SETTINGS}) for a in _rule_accounts()]
    return render_template("settings/courier_rules.html", rows=rows, errors={})


@bp.route("/courier-rules/<int:account_id>", methods=["POST"])
@allow("admin")
def save_courier_rules(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    if account not in _rule_accounts():
        abort(404)
    merged = dict(account.settings or {})
    errors: dict[str, list[str]] = {}
    for key in RULE_SETTINGS:
        raw = request.form.get(key, "").strip()
        try:
            merged[key] = json.loads(raw) if raw else None
        except ValueError as error:
            errors[key] = [f"is not valid JSON ({error.msg} at line {error.lineno})"]
    if "default_courier" in merged and merged["default_courier"] is None:
        merged.pop("default_courier")
    if merged.get("courier_rules") is None:
        merged["courier_rules"] = []
    try:
        if errors:
            raise ValidationError(errors)
        services.save_channel_settings(db(), account, merged, actor())
    except ValidationError as error:
        db().rollback()
        typed = {k: request.form.get(k, "") for k in RULE_SETTINGS}
        rows = [(a, typed if a.id == account.id else {k: json.dumps((a.settings or {}).get(k), indent=2) for k in RULE_SETTINGS})
                for a in _rule_accounts()]
        return render_template("settings/courier_rules.html", rows=rows, errors={account.id: forms.flatten_errors(error.messages)}), 400
    db().commit()
    flash(f"Courier rules of {account.name} saved.", "ok")
    return redirect(url_for("settings.courier_rules"))


# -- notifications ------------------------------------------------------------------------------------------


class SmtpSettings(Schema):
    host = fields.String(required=True, validate=validate.Length(min=1, max=255))
    port = fields.Integer(load_default=587, validate=validate.Range(min=1, max=65535))
    security = fields.String(load_default="starttls", validate=validate.OneOf(["starttls", "ssl", "none"]))
    username = fields.String(load_default="")
    password = fields.String(load_default="")
    from_address = fields.Email(required=True)
    recipients = fields.List(fields.Email(), load_default=list,
                             metadata={"description": "who is told about errors (comma-separated)"})


def _smtp() -> dict[str, Any]:
    organisation = db().get(Organisation, org_id())
    return dict((organisation.settings or {}).get("smtp") or {})


@bp.route("/notifications")
@allow("viewer")
def notifications():  # type: ignore[no-untyped-def]
    smtp = _smtp()
    shown = {**smtp, "password": "", "recipients": ", ".join(smtp.get("recipients", []))}
    return render_template("settings/notifications.html", smtp=shown, password_mask=mask(smtp["password"]) if smtp.get("password") else "",
                           errors={})


@bp.route("/notifications", methods=["POST"])
@allow("admin")
def save_notifications():  # type: ignore[no-untyped-def]
    stored = _smtp()
    raw = {k: v.strip() for k, v in request.form.items() if k in SmtpSettings().fields and v.strip()}
    raw["recipients"] = [r.strip() for r in request.form.get("recipients", "").split(",") if r.strip()]
    if not raw.get("password") and stored.get("password"):
        raw["password"] = stored["password"]  # an empty password field keeps the stored one
    try:
        smtp = SmtpSettings().load(raw)
    except SchemaError as error:
        shown = {**{k: v for k, v in request.form.items() if k != "password"}}
        return render_template("settings/notifications.html", smtp=shown, password_mask=mask(stored["password"]) if stored.get("password") else "",
                               errors=forms.flatten_errors(error.messages)), 400
    organisation = db().get(Organisation, org_id())
    organisation.settings = {**(organisation.settings or {}), "smtp": smtp}  # reassigned: JSON columns track by identity
    emit(db(), organisation_id=organisation.id, kind="notifications.saved", actor=actor(),
         message=f"SMTP settings saved (host {smtp['host']})")
    db().commit()
    flash("Notification settings saved.", "ok")
    return redirect(url_for("settings.notifications"))


@bp.route("/notifications/test", methods=["POST"])
@allow("admin")
def test_email():  # type: ignore[no-untyped-def]
    smtp, to = _smtp(), request.form.get("to", "").strip()
    if not smtp.get("host"):
        flash("Save the SMTP settings first.", "error")
        return redirect(url_for("settings.notifications"))
    if "@" not in to:
        flash("Give an e-mail address to send the test to.", "error")
        return redirect(url_for("settings.notifications"))
    try:
        send_mail(smtp, to, "channelhub test e-mail", "If you can read this, channelhub can send you notifications.")
    except (OSError, smtplib.SMTPException) as error:
        flash(f"The test e-mail could not be sent: {type(error).__name__}: {error}", "error")
    else:
        flash(f"Test e-mail sent to {to}.", "ok")
    return redirect(url_for("settings.notifications"))


def send_mail(smtp: dict[str, Any], to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = smtp["from_address"], to, subject
    message.set_content(body)
    security = smtp.get("security", "starttls")
    client_class = smtplib.SMTP_SSL if security == "ssl" else smtplib.SMTP
    with client_class(smtp["host"], int(smtp.get("port", 587)), timeout=SMTP_TIMEOUT) as client:
        if security == "starttls":
            client.starttls(context=ssl.create_default_context())
        if smtp.get("username"):
            client.login(smtp["username"], smtp.get("password", ""))
        client.send_message(message)
