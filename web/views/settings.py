"""Carrier mapping per marketplace account, courier rules (in the fulfilment account's settings),
and e-mail notifications (SMTP settings of the organisation, with a test e-mail)."""

from __future__ import annotations

import json
import smtplib
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError as SchemaError
from sqlalchemy import select

from hub import carrier_maps, email_notifications, notify
from hub.carriers import CANONICAL_CARRIERS
from hub.channel import Role as ChannelRole
from hub.errors import ConfigurationError, ValidationError
from hub.events import emit
from hub.models import CarrierMap, ChannelAccount, Organisation
from hub.secrets import MASK, mask
from web import forms, services
from web.access import actor, allow, db, org_id, owned

bp = Blueprint("settings", __name__, url_prefix="/settings")


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
#
# The page edits ``Organisation.settings["smtp"]`` in the shape the digest sender reads: the one schema
# is ``hub.notify.SmtpSettingsSchema`` and the one writer ``hub.notify.store_smtp_settings`` (which
# encrypts the password). The form keeps friendlier fields and maps them onto that shape.

SECURITY = {"starttls": (True, False), "ssl": (False, True), "none": (False, False)}  # -> (starttls, ssl)
FORM_FIELDS = {"from": "from_address", "to": "recipients", "interval_seconds": "interval_minutes",
               "starttls": "security", "ssl": "security"}  # settings key -> the form field its errors belong to
SAVED_BY_FORM = ("host", "port", "from", "to", "starttls", "ssl", "username", "interval_seconds", "enabled")
# Events older than the look-back are not e-mailed, so a longer interval would lose some.
MAX_INTERVAL_MINUTES = int(notify.LOOKBACK.total_seconds() // 60)


def _stored_smtp(organisation: Organisation) -> dict[str, Any]:
    return dict((organisation.settings or {}).get("smtp") or {})


def _without_legacy(smtp: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Settings in the hub's shape, translated from what this page wrote before it used the hub's
    schema (security, from_address, recipients, and the password in clear), and that old clear
    password (encrypted on the next save, when the old keys are dropped)."""
    smtp = dict(smtp)
    password = smtp.pop("password", None) or None
    security, from_address, recipients = smtp.pop("security", None), smtp.pop("from_address", None), smtp.pop("recipients", None)
    if security in SECURITY and "starttls" not in smtp and "ssl" not in smtp:
        smtp["starttls"], smtp["ssl"] = SECURITY[security]
    if from_address and "from" not in smtp:
        smtp["from"] = from_address
    if recipients and "to" not in smtp:
        smtp["to"] = recipients
    return smtp, password


def _security(smtp: dict[str, Any]) -> str:
    if smtp.get("ssl"):
        return "ssl"
    return "starttls" if smtp.get("starttls", True) else "none"


def _shown(smtp: dict[str, Any]) -> dict[str, Any]:
    """Stored settings as the form shows them; never the password."""
    smtp, _ = _without_legacy(smtp)
    to = smtp.get("to") or []
    interval = smtp.get("interval_seconds")
    return {"host": smtp.get("host", ""), "port": smtp.get("port", 587), "security": _security(smtp),
            "username": smtp.get("username") or "", "from_address": smtp.get("from", ""),
            "recipients": ", ".join(to) if isinstance(to, list) else str(to),
            "interval_minutes": f"{interval / 60:g}" if isinstance(interval, (int, float)) else "",
            "enabled": smtp.get("enabled", True) is not False}


def _typed(form: Any) -> dict[str, Any]:
    """What the admin typed, to show back in a form that failed validation (never the password)."""
    return {"host": form.get("host", ""), "port": form.get("port", ""), "security": form.get("security", "starttls"),
            "username": form.get("username", ""), "from_address": form.get("from_address", ""),
            "recipients": form.get("recipients", ""), "interval_minutes": form.get("interval_minutes", ""),
            "enabled": "enabled" in form}


def _password_mask(smtp: dict[str, Any]) -> str:
    if smtp.get("password_encrypted"):
        try:
            return mask(notify.smtp_password(smtp, services.hub().box))
        except ConfigurationError:
            return MASK  # stored, but written with another key: it has to be typed again
    return mask(smtp["password"]) if smtp.get("password") else ""


def _read_form(form: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The form as (part of) the hub's SMTP settings, and errors the schema cannot name by field."""
    errors: dict[str, list[str]] = {}
    security = form.get("security", "starttls")
    if security not in SECURITY:
        errors["security"] = [f"Must be one of: {', '.join(SECURITY)}."]
        security = "starttls"
    starttls, ssl_ = SECURITY[security]
    data: dict[str, Any] = {
        "host": form.get("host", "").strip(), "port": form.get("port", "").strip() or 587,
        "from": form.get("from_address", "").strip(), "to": form.get("recipients", ""),  # the schema splits on commas
        "starttls": starttls, "ssl": ssl_, "username": form.get("username", "").strip() or None,
        "enabled": "enabled" in form,
    }
    if not data["host"]:
        errors["host"] = ["Give the SMTP server's host name."]
    if not [part for part in data["to"].split(",") if part.strip()]:
        errors["recipients"] = ["Give at least one recipient."]
    minutes = form.get("interval_minutes", "").strip()
    if not minutes:
        data["interval_seconds"] = notify.DEFAULT_INTERVAL
    else:
        try:
            seconds = round(float(minutes) * 60)
        except (ValueError, OverflowError):
            seconds = None
        if seconds is None or not 1 <= seconds <= MAX_INTERVAL_MINUTES * 60:
            errors["interval_minutes"] = [f"Give the minutes between two digests (more than 0, at most {MAX_INTERVAL_MINUTES}: "
                                          "older problems are not e-mailed), or leave it empty for 15."]
        else:
            data["interval_seconds"] = seconds
    return data, errors


def _form_errors(messages: Any, recipients: list[str]) -> dict[str, list[str]]:
    """The schema's errors under the names of the form's fields."""
    if not isinstance(messages, dict):
        return forms.flatten_errors(messages)
    errors: dict[str, list[str]] = {}
    for key, problems in messages.items():
        name = FORM_FIELDS.get(key, key)
        if key == "to" and isinstance(problems, dict):  # per address: name the address
            found = [f"{recipients[int(i)] if str(i).isdigit() and int(i) < len(recipients) else i}: {' '.join(map(str, p))}"
                     for i, p in problems.items()]
        else:
            found = forms.flatten_errors({name: problems}).get(name, [])
        if name not in FORM_FIELDS.values() and name not in ("host", "port", "username", "enabled"):
            name, found = "_schema", [f"{key}: {problem}" for problem in found]  # stored settings the form does not show
        errors.setdefault(name, []).extend(found)
    return errors


def _render_notifications(smtp: dict[str, Any], stored: dict[str, Any], errors: dict[str, list[str]], status: int = 200):  # type: ignore[no-untyped-def]
    return render_template("settings/notifications.html", smtp=smtp, password_mask=_password_mask(stored),
                           errors=errors), status


@bp.route("/notifications")
@allow("viewer")
def notifications():  # type: ignore[no-untyped-def]
    stored = _stored_smtp(db().get(Organisation, org_id()))
    return _render_notifications(_shown(stored), stored, {})


@bp.route("/notifications", methods=["POST"])
@allow("admin")
def save_notifications():  # type: ignore[no-untyped-def]
    organisation = db().get(Organisation, org_id())
    stored = _stored_smtp(organisation)
    current, legacy_password = _without_legacy(stored)
    data, errors = _read_form(request.form)
    recipients = [part.strip() for part in data["to"].split(",") if part.strip()]
    loaded: dict[str, Any] = {}
    try:
        loaded = notify.SmtpSettingsSchema().load({**current, **data})
    except SchemaError as error:
        for name, problems in _form_errors(error.messages, recipients).items():
            errors.setdefault(name, problems)  # the page's own message first
    if errors:
        return _render_notifications(_typed(request.form), stored, errors, 400)
    loaded["from"] = loaded.pop("from_")
    changed = {key: loaded[key] for key in SAVED_BY_FORM if current.get(key, None) != loaded[key] or key not in current}
    password = request.form.get("password", "").strip() or legacy_password  # empty keeps the stored one
    if password:
        changed["password"] = password
    organisation.settings = {**(organisation.settings or {}), "smtp": current}  # drops the old shape's keys and clear password
    try:
        notify.store_smtp_settings(db(), organisation, changed, services.hub().box, actor=actor())
    except ValidationError as error:
        db().rollback()
        return _render_notifications(_typed(request.form), stored, _form_errors(error.messages, recipients), 400)
    db().commit()
    flash("Notification settings saved." if loaded["enabled"] else "Notification settings saved; e-mails are switched off.", "ok")
    return redirect(url_for("settings.notifications"))


@bp.route("/notifications/test", methods=["POST"])
@allow("admin")
def test_email():  # type: ignore[no-untyped-def]
    organisation, to = db().get(Organisation, org_id()), request.form.get("to", "").strip()
    if "@" not in to:
        flash("Give an e-mail address to send the test to.", "error")
        return redirect(url_for("settings.notifications"))
    try:  # the saved settings, loaded as the digests load them (switched off or not: this is a test)
        settings = notify.smtp_settings(organisation, include_disabled=True)
    except ValidationError as error:
        flash(f"The saved SMTP settings are incomplete ({error}); correct and save them first.", "error")
        return redirect(url_for("settings.notifications"))
    if settings is None:
        flash("Save the SMTP settings first.", "error")
        return redirect(url_for("settings.notifications"))
    try:
        email_notifications.send_test_email(settings, services.hub().box, to)
    except (OSError, smtplib.SMTPException, ConfigurationError) as error:
        flash(f"The test e-mail could not be sent: {type(error).__name__}: {error}", "error")
    else:
        flash(f"Test e-mail sent to {to}.", "ok")
    return redirect(url_for("settings.notifications"))
