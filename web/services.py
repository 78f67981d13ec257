"""Glue between the views (UI and API) and the hub: lookups, summaries and the few writes that
have no hub function yet. Views stay thin; both the UI and the API call the same functions here."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.accounts import FLOWS, account_credentials
from hub.app import Hub
from hub.channel import Channel
from hub.connections import Connector
from hub.errors import AuthError, ChannelError, ChannelhubError, ConfigurationError, NotFound, ValidationError
from hub.events import emit
from hub.models import (
    Binding, ChannelAccount, DuplicateSku, Fulfilment, Label, Order, OrderStatus, RunStatus, SyncRun,
)
from hub.netpolicy import check_base_url
from hub.scheduling import FLOW_TOGGLES, flow_enabled, next_due
from hub.secrets import mask
from web.forms import is_secret

log = logging.getLogger("channelhub.web")

# Flow toggles as the admin sees them, and the scheduled flows each one switches.
TOGGLE_FLOWS = {"listings": ("listings", "stock"), "reconciler": ("reconcile",), "orders": ("orders",),
                "fulfilments": ("fulfilment",)}


def hub() -> Hub:
    return current_app.extensions["channelhub"]


def connector() -> Connector:
    """The connector that opens channels for this app (tests register sandbox transports on it)."""
    existing = current_app.extensions.get("channelhub.connector")
    if existing is None:
        existing = Connector(box=hub().box, pm=hub().pm)
        current_app.extensions["channelhub.connector"] = existing
    return existing


def channel_class(plugin: str) -> type[Channel] | None:
    try:
        return hub().pm.channel_class(plugin)
    except ConfigurationError:
        return None  # the plugin was uninstalled or switched off: the account is shown, not opened


def installed_channels() -> list[type[Channel]]:
    return sorted(hub().pm.channels.values(), key=lambda c: (c.title or c.name).lower())


def secret_fields(plugin: str) -> tuple[str, ...]:
    cls = channel_class(plugin)
    return tuple(cls.secret_fields) if cls else ()


def stored_credentials(account: ChannelAccount) -> dict[str, Any]:
    """Decrypted credentials for merging a form (never rendered); {} when none or unreadable."""
    try:
        return account_credentials(account, hub().box)
    except ConfigurationError:
        return {}


def masked(values: dict[str, Any], secrets_: tuple[str, ...]) -> dict[str, Any]:
    return {k: (mask(v) if is_secret(k, secrets_) and v else v) for k, v in values.items()}


def masked_credentials(account: ChannelAccount) -> dict[str, Any]:
    try:
        values = account_credentials(account, hub().box)
    except ConfigurationError as error:
        return {"_error": str(error)}
    # Credentials are shown masked even when not named like secrets: an id is half of a key pair.
    declared = secret_fields(account.plugin)
    return {k: mask(v) if (is_secret(k, declared) or isinstance(v, str)) and v else v for k, v in values.items()}


def masked_settings(account: ChannelAccount) -> dict[str, Any]:
    return masked(dict(account.settings or {}), secret_fields(account.plugin))


# -- channel calls ---------------------------------------------------------------------------------


@dataclass
class ConnectionResult:
    ok: bool
    message: str
    seen: dict[str, Any]


def test_connection(account: ChannelAccount) -> ConnectionResult:
    """Ask the channel what the stored credentials can see; every failure becomes a message."""
    if channel_class(account.plugin) is None:
        return ConnectionResult(False, f"the {account.plugin} plugin is not loaded", {})
    try:
        seen = connector().open(account).test_connection()
    except AuthError as error:
        return ConnectionResult(False, f"the channel refused the credentials: {error}", {})
    except NotImplementedError:
        return ConnectionResult(False, "this channel cannot test a connection", {})
    except (ChannelError, ChannelhubError) as error:
        return ConnectionResult(False, f"{type(error).__name__}: {error}", {})
    except Exception as error:  # a plugin bug must not become a 500 on the admin's page
        log.exception("test_connection of account %s failed", account.id)
        return ConnectionResult(False, f"unexpected error from the plugin: {type(error).__name__}: {error}", {})
    return ConnectionResult(True, "connected", dict(seen or {}))


def enqueue(account_id: int, flow: str, *, trigger: str = "manual", params: dict[str, Any] | None = None) -> int:
    return hub().runtime.enqueue(account_id, flow, trigger=trigger, params=params or {})


def latest_run(session: Session, account_id: int, flow: str) -> SyncRun | None:
    return session.scalar(select(SyncRun).where(SyncRun.account_id == account_id, SyncRun.flow == flow)
                          .order_by(SyncRun.queued_at.desc(), SyncRun.id.desc()).limit(1))


@dataclass
class FlowRow:
    flow: str
    enabled: bool
    last: SyncRun | None
    next_due: datetime | None


def flow_rows(session: Session, account: ChannelAccount) -> list[FlowRow]:
    """Each schedulable flow: on or off (toggle and status), its last run, when it runs next."""
    rows = []
    for flow in FLOW_TOGGLES:
        enabled = flow_enabled(account, flow)
        due = next_due(session, account, flow) if enabled else None
        rows.append(FlowRow(flow, enabled, latest_run(session, account.id, flow), due))
    return rows


# -- writes without a hub function ------------------------------------------------------------------


def apply_hub_settings(session: Session, account: ChannelAccount, data: dict[str, Any], actor: str) -> list[str]:
    """Store validated hub settings (``AccountHubSettings``); ids must be this organisation's.

    Records an ``account.settings`` event naming the changed fields. Returns them.
    """
    _check_references(session, account, data)
    if data.get("base_url") is not None:  # where the workers will send the credentials: not inwards (SSRF)
        data = {**data, "base_url": check_base_url(data["base_url"], account.environment.value)}
    changed = []
    for name, value in data.items():
        if getattr(account, name) != value:
            setattr(account, name, value)
            changed.append(name)
    if changed:
        emit(session, organisation_id=account.organisation_id, account_id=account.id, kind="account.settings",
             actor=actor, message=f"{account.name}: settings changed ({', '.join(sorted(changed))})",
             data={"fields": sorted(changed)})
    return changed


def _check_references(session: Session, account: ChannelAccount, data: dict[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    for name in ("source_account_id", "destination_account_id", "fulfilment_account_id"):
        ident = data.get(name)
        if ident is None:
            continue
        other = session.get(ChannelAccount, ident)
        if other is None or other.organisation_id != account.organisation_id:
            errors[name] = [f"no account {ident}"]
        elif other.id == account.id:
            errors[name] = ["an account cannot feed itself"]
    label_id = data.get("label_id")
    if label_id is not None:
        label = session.get(Label, label_id)
        if label is None or label.organisation_id != account.organisation_id:
            errors["label_id"] = [f"no label {label_id}"]
    if errors:
        raise ValidationError(errors)


def save_channel_settings(session: Session, account: ChannelAccount, raw: dict[str, Any], actor: str) -> list[str]:
    """Validate the channel's settings with its schema and store them; names the changed fields."""
    cls = channel_class(account.plugin)
    if cls is None:
        raise ValidationError({"settings": [f"the {account.plugin} plugin is not loaded"]})
    settings = cls.validate_settings(raw)
    old = dict(account.settings or {})
    changed = sorted(k for k in old.keys() | settings.keys() if old.get(k) != settings.get(k))
    if changed:
        account.settings = settings
        emit(session, organisation_id=account.organisation_id, account_id=account.id, kind="account.settings",
             actor=actor, message=f"{account.name}: channel settings changed ({', '.join(changed)})",
             data={"fields": changed})
    return changed


# -- summaries ---------------------------------------------------------------------------------------


def open_errors(session: Session, organisation_id: int) -> dict[str, int]:
    """What needs an admin now, by kind (zero counts left out)."""
    accounts = select(ChannelAccount.id).where(ChannelAccount.organisation_id == organisation_id)
    day_ago = datetime.now(timezone.utc) - timedelta(days=1)
    counts = {
        "rejected listings": session.scalar(select(func.count()).select_from(Binding).where(
            Binding.account_id.in_(accounts), Binding.kind == "listing", Binding.last_error.is_not(None))),
        "orders in error": session.scalar(select(func.count()).select_from(Order).where(
            Order.organisation_id == organisation_id, Order.status == OrderStatus.ERROR)),
        "fulfilment errors": session.scalar(select(func.count()).select_from(Fulfilment).join(Order).where(
            Order.organisation_id == organisation_id, Fulfilment.status == "error")),
        "failed runs (24 h)": session.scalar(select(func.count()).select_from(SyncRun).where(
            SyncRun.organisation_id == organisation_id, SyncRun.status == RunStatus.FAILED,
            SyncRun.queued_at >= day_ago)),
        "duplicate SKUs": session.scalar(select(func.count()).select_from(DuplicateSku).where(
            DuplicateSku.organisation_id == organisation_id)),
    }
    return {kind: int(n or 0) for kind, n in counts.items() if n}


def orders_per_day(session: Session, organisation_id: int, days: int = 30, today: date | None = None) -> list[tuple[date, int]]:
    """Orders placed per day for the last ``days`` days, oldest first, zero days included."""
    today = today or datetime.now(timezone.utc).date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    placed = func.coalesce(Order.placed_at, Order.created_at)
    # Counted in Python: date truncation is spelt differently on SQLite and PostgreSQL, and a
    # month of one organisation's order timestamps is small.
    moments = session.scalars(select(placed).where(Order.organisation_id == organisation_id, placed >= since))
    counts = Counter(_as_utc(m).date() for m in moments if m is not None)
    return [(first + timedelta(days=i), counts.get(first + timedelta(days=i), 0)) for i in range(days)]


def _as_utc(moment: datetime | str) -> datetime:
    if isinstance(moment, str):  # SQLite returns coalesce() of timestamps as text
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def accounts_of(session: Session, organisation_id: int) -> list[ChannelAccount]:
    return list(session.scalars(select(ChannelAccount).where(ChannelAccount.organisation_id == organisation_id)
                                .order_by(ChannelAccount.name)))


def require(condition: bool, message: str) -> None:
    if not condition:
        raise NotFound(message)


__all__ = ["FLOWS"]
