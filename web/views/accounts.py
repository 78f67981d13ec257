"""Adding a channel account, its credentials and settings, its lifecycle and flow toggles.

The forms come from the plugin's schemas (``web.forms``); every change goes through
``hub.accounts`` (lifecycle, flows, credentials) or ``web.services`` (settings), which record events.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError as SchemaError
from sqlalchemy import select

from hub import accounts as lifecycle
from hub.errors import IllegalTransition, ValidationError
from hub.models import ChannelAccount, Environment, Label, SyncRun
from hub.netpolicy import check_base_url
from web import forms, services
from web.access import actor, allow, db, org_id, owned
from web.api.schemas import AccountHubSettings

bp = Blueprint("accounts", __name__, url_prefix="/accounts")

CRED, SET = "cred-", "set-"
NAME_MAX = 100


# -- adding ----------------------------------------------------------------------------------------


@bp.route("/new")
@allow("admin")
def new():  # type: ignore[no-untyped-def]
    plugin = request.args.get("plugin", "")
    cls = services.channel_class(plugin) if plugin else None
    if cls is None:
        return render_template("accounts/pick.html", channels=services.installed_channels())
    return _new_form(cls, {}, {}, {}, "", Environment.SANDBOX.value)


def _new_form(cls: Any, creds: dict, settings: dict, errors: dict, name: str, environment: str, status: int = 200,  # type: ignore[no-untyped-def]
              base_url: str = ""):
    return render_template(
        "accounts/new.html", channel=cls, name=name, environment=environment, errors=errors, base_url=base_url,
        environments=[e.value for e in Environment],
        cred_fields=forms.describe(cls.credentials_schema, creds, secret_fields=cls.secret_fields),
        setting_fields=forms.describe(cls.settings_schema, settings, secret_fields=cls.secret_fields),
    ), status


@bp.route("/new", methods=["POST"])
@allow("admin")
def create():  # type: ignore[no-untyped-def]
    plugin = request.form.get("plugin", "")
    cls = services.channel_class(plugin)
    if cls is None:
        abort(400, description=f"no channel plugin named {plugin!r} is installed")
    name, environment = request.form.get("name", "").strip(), request.form.get("environment", "sandbox")
    base_url = request.form.get("base_url", "").strip()
    creds_raw, cred_errors = forms.read(cls.credentials_schema, request.form, CRED, {}, secret_fields=cls.secret_fields)
    settings_raw, set_errors = forms.read(cls.settings_schema, request.form, SET, {}, secret_fields=cls.secret_fields)
    errors = _prefixed(CRED, cred_errors) | _prefixed(SET, set_errors)
    if len(name) > NAME_MAX:  # as the API's AccountCreate; the column holds 100 characters
        errors["name"] = [f"at most {NAME_MAX} characters"]
    if base_url:  # where the workers will send the credentials: never inwards for a real account (SSRF)
        try:
            base_url = check_base_url(base_url, environment)
        except ValidationError as error:
            errors.update(forms.flatten_errors(error.messages))
    try:
        credentials = _validated(cls.validate_credentials, creds_raw, CRED, errors)
        settings = _validated(cls.validate_settings, settings_raw, SET, errors)
        if errors:
            raise ValidationError(errors)
        account = lifecycle.create_account(db(), org_id(), name, plugin, environment, credentials, settings,
                                           services.hub().box, actor(), fulfilment_mandatory=cls.fulfilment_mandatory)
        account.base_url = base_url or None
        if request.form.get("submit") == "activate":
            lifecycle.activate(db(), account, actor())
    except (ValidationError, IllegalTransition) as error:
        db().rollback()
        errors = errors or (forms.flatten_errors(error.messages) if isinstance(error, ValidationError) else {"_schema": [str(error)]})
        typed_creds = {k: v for k, v in forms.typed_values(cls.credentials_schema, request.form, CRED).items()
                       if not forms.is_secret(k, cls.secret_fields)}
        typed_settings = forms.typed_values(cls.settings_schema, request.form, SET)
        return _new_form(cls, typed_creds, typed_settings, errors, name, environment, 400, base_url)
    db().commit()
    flash(f"{account.name} saved ({account.status.value.capitalize()}).", "ok")
    return redirect(url_for("accounts.show", account_id=account.id))


def _validated(validate: Any, raw: dict, prefix: str, errors: dict) -> dict:
    try:
        return validate(raw)
    except ValidationError as error:
        errors.update(_prefixed(prefix, forms.flatten_errors(error.messages)))
        return {}


def _prefixed(prefix: str, errors: dict[str, list[str]]) -> dict[str, list[str]]:
    return {prefix + key: value for key, value in errors.items()}


# -- the account page ---------------------------------------------------------------------------------


@bp.route("/<int:account_id>")
@allow("viewer")
def show(account_id: int):  # type: ignore[no-untyped-def]
    return _page(owned(ChannelAccount, account_id))


def _page(account: ChannelAccount, status: int = 200, **extra: Any):  # type: ignore[no-untyped-def]
    session = db()
    cls = services.channel_class(account.plugin)
    stored = services.stored_credentials(account)
    secrets_ = tuple(cls.secret_fields) if cls else ()
    context: dict[str, Any] = {
        "account": account, "channel": cls, "errors": {},
        "actions": lifecycle.allowed_actions(account), "labels_for_actions": lifecycle.ACTION_LABELS,
        "flows": lifecycle.flows(account), "flow_rows": services.flow_rows(session, account),
        "days_left": lifecycle.days_left_in_testing(account),
        "runs": session.scalars(select(SyncRun).where(SyncRun.account_id == account.id)
                                .order_by(SyncRun.id.desc()).limit(10)).all(),
        "labels": session.scalars(select(Label).where(Label.organisation_id == org_id()).order_by(Label.name)).all(),
        "others": [a for a in services.accounts_of(session, org_id()) if a.id != account.id],
        "cred_fields": forms.describe(cls.credentials_schema, stored, secret_fields=secrets_) if cls else [],
        "setting_fields": forms.describe(cls.settings_schema, account.settings or {}, secret_fields=secrets_) if cls else [],
        "credentials_unreadable": "_error" in services.masked_credentials(account),
        "connection": None,
    }
    context.update(extra)
    return render_template("accounts/show.html", **context), status


@bp.route("/<int:account_id>/credentials", methods=["POST"])
@allow("admin")
def save_credentials(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    cls = _loaded(account)
    stored = services.stored_credentials(account)
    raw, errors = forms.read(cls.credentials_schema, request.form, CRED, stored, secret_fields=cls.secret_fields)
    try:
        if errors:
            raise ValidationError(errors)
        credentials = cls.validate_credentials(raw)
        lifecycle.update_credentials(db(), account, credentials, services.hub().box, actor(), replace=not stored)
    except ValidationError as error:
        db().rollback()
        return _page(account, 400, errors=_prefixed(CRED, forms.flatten_errors(error.messages)))
    db().commit()
    flash("Credentials saved.", "ok")
    return redirect(url_for("accounts.show", account_id=account.id))


@bp.route("/<int:account_id>/settings", methods=["POST"])
@allow("admin")
def save_settings(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    cls = _loaded(account)
    raw, errors = forms.read(cls.settings_schema, request.form, SET, account.settings or {}, secret_fields=cls.secret_fields)
    try:
        if errors:
            raise ValidationError(errors)
        services.save_channel_settings(db(), account, raw, actor())
    except ValidationError as error:
        db().rollback()
        typed = forms.typed_values(cls.settings_schema, request.form, SET)
        fields_ = forms.describe(cls.settings_schema, typed, secret_fields=cls.secret_fields)
        return _page(account, 400, errors=_prefixed(SET, errors or forms.flatten_errors(error.messages)),
                     setting_fields=fields_)
    db().commit()
    flash("Settings saved.", "ok")
    return redirect(url_for("accounts.show", account_id=account.id))


@bp.route("/<int:account_id>/hub-settings", methods=["POST"])
@allow("admin")
def save_hub_settings(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    try:
        data = AccountHubSettings().load(hub_settings_from_form(request.form))
        services.apply_hub_settings(db(), account, data, actor())
    except (SchemaError, ValidationError) as error:
        db().rollback()
        return _page(account, 400, errors=_prefixed("hub-", forms.flatten_errors(error.messages)))
    db().commit()
    flash("Hub settings saved.", "ok")
    return redirect(url_for("accounts.show", account_id=account.id))


def hub_settings_from_form(form: Any) -> dict[str, Any]:
    """The hub-settings form as data for ``AccountHubSettings`` (blank selects mean none)."""
    data: dict[str, Any] = {}
    for name in ("label_id", "source_account_id", "destination_account_id", "fulfilment_account_id"):
        value = form.get(f"hub-{name}", "")
        data[name] = value or None
    for name in ("reserve_stock", "price_field", "inventory_basis"):
        if form.get(f"hub-{name}", "") != "":
            data[name] = form.get(f"hub-{name}")
    for name in ("brand_filter", "season_filter", "warehouses"):
        data[name] = [part.strip() for part in form.get(f"hub-{name}", "").split(",") if part.strip()]
    if "hub-base_url" in form:  # empty: the channel's own API again
        data["base_url"] = form.get("hub-base_url", "").strip() or None
    return data


@bp.route("/<int:account_id>/test", methods=["POST"])
@allow("operator")
def test_connection(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    return _page(account, connection=services.test_connection(account))


@bp.route("/<int:account_id>/go-live")
@allow("admin")
def confirm_go_live(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    return render_template("accounts/go_live.html", account=account, flows=lifecycle.flows(account))


@bp.route("/<int:account_id>/transition", methods=["POST"])
@allow("admin")
def transition(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    action = request.form.get("action", "")
    if action not in lifecycle.ACTION_LABELS:
        abort(400, description=f"unknown action {action!r}")
    if action == lifecycle.GO_LIVE and request.form.get("confirm_name", "").strip() != account.name:
        if request.form.get("confirm_name") is not None:
            flash("The name you typed does not match; the account was not made Live.", "error")
        return redirect(url_for("accounts.confirm_go_live", account_id=account.id))
    try:
        getattr(lifecycle, action)(db(), account, actor())
    except IllegalTransition as error:
        db().rollback()
        flash(str(error), "error")
        return redirect(url_for("accounts.show", account_id=account.id))
    db().commit()
    flash(f"{account.name} is now {account.status.value.capitalize()}.", "ok")
    return redirect(url_for("accounts.show", account_id=account.id))


@bp.route("/<int:account_id>/flows", methods=["POST"])
@allow("admin")
def set_flow(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    cls = services.channel_class(account.plugin)
    flow, enabled = request.form.get("flow", ""), request.form.get("enabled") == "on"
    try:
        lifecycle.set_flow(db(), account, flow, enabled, actor(),
                           fulfilment_mandatory=bool(cls and cls.fulfilment_mandatory))
    except (IllegalTransition, ValidationError) as error:
        db().rollback()
        flash(str(error), "error")
        return redirect(url_for("accounts.show", account_id=account.id))
    db().commit()
    flash(f"{flow.capitalize()} turned {'on' if enabled else 'off'}.", "ok")
    return redirect(url_for("accounts.show", account_id=account.id))


@bp.route("/<int:account_id>/run", methods=["POST"])
@allow("operator")
def run_now(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    flow = request.form.get("flow", "")
    from web.api.schemas import RUNNABLE_FLOWS

    if flow not in RUNNABLE_FLOWS:
        abort(400, description=f"unknown flow {flow!r}; one of {', '.join(RUNNABLE_FLOWS)}")
    db().commit()  # release the read transaction before the runtime writes the run (SQLite)
    run_id = services.enqueue(account.id, flow)
    flash(f"{flow} queued (run {run_id}).", "ok")
    return redirect(url_for("runs.show", run_id=run_id))


def _loaded(account: ChannelAccount) -> Any:
    cls = services.channel_class(account.plugin)
    if cls is None:
        abort(409, description=f"the {account.plugin} plugin is not loaded; its account cannot be edited")
    return cls
