"""Notifications: which events an admin must hear about, and the digest that tells them.

Every notable thing already is an Event row (``hub.events.emit``), so the audit log itself is the
buffer: a digest is "the organisation's notable events not yet reported", and sending one writes a
``notify.digest_sent`` event naming the event ids it covered. That event is both the watermark and
the audit record that the admin was told. Nothing lives only in a process's memory, so a worker
that exits (RQ forks a work horse per job) loses nothing, and any process may send the digest.

- **Notable** kinds (``NOTABLE_KINDS``; per organisation ``settings["smtp"]["kinds"]``): credentials
  refused, fulfilment failures, rejected listings and stock updates, oversells, duplicate SKUs.
- **At most one digest per interval** per organisation (``interval_seconds``, 15 minutes by
  default): the first problem after a quiet spell goes out at once, later ones wait for the
  interval. :func:`flush` decides under a lock on the organisation's row (and a process lock for
  SQLite), so two processes never both send.
- A failed send is recorded (``notify.digest_failed``) and retried after the interval; the events
  stay pending. Events older than ``LOOKBACK`` are not e-mailed any more (the log keeps them).

Senders are plugins: ``hub.email_notifications`` sends the digest over SMTP. Settings live in
``Organisation.settings["smtp"]`` (:class:`SmtpSettingsSchema`); the password is stored encrypted.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import marshmallow
from marshmallow import Schema, fields, pre_load, validate
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub import cursors
from hub.bindings import fingerprint
from hub.errors import ValidationError
from hub.events import emit
from hub.models import ChannelAccount, Event, Organisation
from hub.secrets import CredentialBox

log = logging.getLogger("channelhub.notify")

NOTABLE_KINDS = (
    "flow.auth_failed",
    "fulfilment.failed",
    "listing.rejected",
    "stock.rejected",
    "stock.oversell",
    "catalog.duplicate_sku",
)
DIGEST_SENT = "notify.digest_sent"
DIGEST_FAILED = "notify.digest_failed"
DEFAULT_INTERVAL = 15 * 60
LOOKBACK = timedelta(hours=24)
MAX_LISTED = 200  # events spelled out in one digest; the rest are counted

TITLES = {
    "flow.auth_failed": "Credentials refused",
    "fulfilment.failed": "Fulfilment errors",
    "listing.rejected": "Rejected listings",
    "stock.rejected": "Rejected stock updates",
    "stock.oversell": "Oversold SKUs",
    "catalog.duplicate_sku": "Duplicate SKUs in a source catalogue",
}
NEXT_STEPS = {
    "flow.auth_failed": "Re-enter the account's credentials on its settings page, then run the flow again.",
    "fulfilment.failed": "Check the carrier mapping and tracking number of each order; fix them, then resend the fulfilment.",
    "listing.rejected": "Fix the attributes named in the source catalogue; the SKUs are sent on the next listings run.",
    "stock.rejected": "Check the SKUs on the marketplace (do they still exist there?); stock is pushed again next run.",
    "stock.oversell": "Restock the SKU in the source or cancel an order; the marketplaces show 0 meanwhile.",
    "catalog.duplicate_sku": "Make each SKU unique in the source, then run a full catalogue import.",
}


# -- settings ------------------------------------------------------------------------------------


class SmtpSettingsSchema(Schema):
    """``Organisation.settings["smtp"]``: where digests go and how often."""

    class Meta:
        unknown = marshmallow.EXCLUDE

    host = fields.String(required=True, validate=validate.Length(min=1))
    port = fields.Integer(load_default=587, validate=validate.Range(min=1, max=65535))
    from_ = fields.Email(required=True, data_key="from")
    to = fields.List(fields.Email(), required=True, validate=validate.Length(min=1))
    starttls = fields.Boolean(load_default=True)
    ssl = fields.Boolean(load_default=False)  # implicit TLS (port 465)
    username = fields.String(load_default=None, allow_none=True)
    password_encrypted = fields.String(load_default=None, allow_none=True)
    interval_seconds = fields.Integer(load_default=DEFAULT_INTERVAL, validate=validate.Range(min=1))
    kinds = fields.List(fields.String(), load_default=lambda: list(NOTABLE_KINDS))
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1))
    enabled = fields.Boolean(load_default=True)

    @pre_load
    def split_recipients(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if isinstance(data.get("to"), str):  # "a@x.com, b@x.com" from a form field
            data = {**data, "to": [part.strip() for part in data["to"].split(",") if part.strip()]}
        return data


def smtp_settings(organisation: Organisation, *, include_disabled: bool = False) -> dict[str, Any] | None:
    """The organisation's validated SMTP settings; None when none are set or they are switched off
    (``include_disabled=True`` returns switched-off settings too: a test e-mail uses them).

    Raises ``ValidationError`` for settings that are present but wrong, so that is reported rather
    than silently sending nothing.
    """
    raw = (organisation.settings or {}).get("smtp")
    if not raw:
        return None
    try:
        settings = SmtpSettingsSchema().load(raw)
    except marshmallow.ValidationError as error:
        raise ValidationError(error.messages) from None
    settings["from"] = settings.pop("from_")
    return settings if settings["enabled"] or include_disabled else None


def store_smtp_settings(
    session: Session, organisation: Organisation, data: dict[str, Any], box: CredentialBox, *, actor: str = "system"
) -> dict[str, Any]:
    """Validate and save SMTP settings; a ``password`` given is stored encrypted, never in clear."""
    data = dict(data)
    password = data.pop("password", None)
    stored = dict((organisation.settings or {}).get("smtp") or {})
    stored.update(data)
    if password:
        stored["password_encrypted"] = box.encrypt({"password": password}).decode("ascii")
    try:
        SmtpSettingsSchema().load(stored)
    except marshmallow.ValidationError as error:
        raise ValidationError(error.messages) from None
    organisation.settings = {**(organisation.settings or {}), "smtp": stored}
    changed = sorted(set(data) | ({"password"} if password else set()))
    emit(session, organisation_id=organisation.id, kind="notify.settings", actor=actor,
         message=f"e-mail notification settings changed ({', '.join(changed) or 'nothing'})", data={"fields": changed})
    return stored


def smtp_password(settings: dict[str, Any], box: CredentialBox) -> str | None:
    token = settings.get("password_encrypted")
    return box.decrypt(token.encode("ascii"))["password"] if token else None


# -- what is pending -----------------------------------------------------------------------------


def pending_events(session: Session, organisation_id: int, kinds: list[str], now: datetime) -> list[Event]:
    """Notable events of the last ``LOOKBACK`` that no digest has covered yet, oldest first.

    Matching by id, not by a time watermark: an event written by a long transaction can commit
    after a later one, and must still be reported.
    """
    since = now - LOOKBACK
    reported: set[int] = set()
    digests = session.scalars(select(Event.data).where(
        Event.organisation_id == organisation_id, Event.kind == DIGEST_SENT, Event.created_at >= since - LOOKBACK))
    for data in digests:
        reported.update(int(i) for i in (data or {}).get("event_ids", []))
    events = session.scalars(
        select(Event)
        .where(Event.organisation_id == organisation_id, Event.kind.in_(kinds), Event.created_at >= since)
        .order_by(Event.id)
    )
    return [event for event in events if event.id not in reported]


def last_attempt(session: Session, organisation_id: int) -> datetime | None:
    latest = session.scalar(select(func.max(Event.created_at)).where(
        Event.organisation_id == organisation_id, Event.kind.in_((DIGEST_SENT, DIGEST_FAILED))))
    return _aware(latest) if latest is not None else None


# -- the digest ------------------------------------------------------------------------------------


@dataclass
class Digest:
    organisation_id: int
    organisation_name: str
    events: list[Event]
    subject: str
    body: str


def compose(organisation: Organisation, events: list[Event], account_names: dict[int, str]) -> Digest:
    """One plain-text message: events grouped by kind, each group with what to do next."""
    counts = Counter(event.kind for event in events)
    summary = ", ".join(f"{n} {TITLES.get(kind, kind).lower()}" for kind, n in counts.most_common())
    subject = f"[channelhub] {organisation.name}: {len(events)} problem(s) need attention ({summary})"
    lines = [f"channelhub found {len(events)} problem(s) for {organisation.name} since the last digest.", ""]
    listed = 0
    for kind, count in counts.most_common():
        lines += [f"== {TITLES.get(kind, kind)} ({count}) ==", ""]
        if kind in NEXT_STEPS:
            lines += [f"What to do: {NEXT_STEPS[kind]}", ""]
        for event in (e for e in events if e.kind == kind):
            if listed >= MAX_LISTED:
                break
            when = _aware(event.created_at).strftime("%Y-%m-%d %H:%M UTC")
            where = f" [{account_names[event.account_id]}]" if event.account_id in account_names else ""
            lines.append(f"- {when}{where} {event.message}")
            listed += 1
        lines.append("")
    if listed < len(events):
        lines += [f"... and {len(events) - listed} more in the event log.", ""]
    lines.append("Every event is in the hub's event log. You get at most one digest per interval.")
    return Digest(organisation.id, organisation.name, events, subject, "\n".join(lines))


# -- sending ---------------------------------------------------------------------------------------------


Sender = Callable[[dict[str, Any], Digest], None]


@dataclass
class FlushResult:
    sent: bool
    events: int = 0
    reason: str = ""
    next_due: datetime | None = None
    event_ids: list[int] = field(default_factory=list)


_process_locks: dict[tuple[str, int], threading.Lock] = {}
_process_locks_guard = threading.Lock()


def flush(database: Any, organisation_id: int, send: Sender, *, now: datetime | None = None) -> FlushResult:
    """Send the organisation's digest if anything is pending and the interval has passed.

    ``database`` is a ``hub.db.Database`` or an Engine. Safe to call from any process at any rate.
    """
    engine: Engine = getattr(database, "engine", database)
    moment = _aware(now) if now is not None else datetime.now(timezone.utc)
    with _process_lock(engine, organisation_id), Session(engine, expire_on_commit=False) as session, session.begin():
        # The row lock makes concurrent flushes of one organisation (other processes) take turns.
        organisation = session.get(Organisation, organisation_id, with_for_update=True)
        if organisation is None:
            return FlushResult(False, reason="no such organisation")
        last = last_attempt(session, organisation_id)
        try:
            settings = smtp_settings(organisation)
        except ValidationError as error:
            return _settings_broken(session, organisation, last, moment, error)
        if settings is None:
            return FlushResult(False, reason="notifications are not configured")
        events = pending_events(session, organisation_id, settings["kinds"], moment)
        if not events:
            return FlushResult(False, reason="nothing to report")
        interval = timedelta(seconds=settings["interval_seconds"])
        if last is not None and last + interval > moment:
            return FlushResult(False, len(events), "not due: a digest went out less than an interval ago", last + interval)
        digest = compose(organisation, events, _account_names(session, events))
        ids = [event.id for event in events]
        try:
            send(settings, digest)
        except Exception as error:  # any failure to deliver: record it, keep the events pending
            log.warning("could not send the digest of organisation %s: %s", organisation_id, error)
            emit(session, organisation_id=organisation_id, kind=DIGEST_FAILED, level="error",
                 message=f"could not e-mail the digest of {len(events)} problem(s): {type(error).__name__}: {error}. "
                         "Check the SMTP settings; it is tried again after the interval.",
                 data={"events": len(events), "error": type(error).__name__})
            return FlushResult(False, len(events), f"sending failed: {error}", moment + interval)
        emit(session, organisation_id=organisation_id, kind=DIGEST_SENT,
             message=f"digest of {len(events)} problem(s) e-mailed to {', '.join(settings['to'])}",
             data={"event_ids": ids, "to": settings["to"], "subject": digest.subject})
        return FlushResult(True, len(events), "sent", moment + interval, ids)


def flush_due(database: Any, send: Sender, *, now: datetime | None = None) -> dict[int, FlushResult]:
    """:func:`flush` for every organisation that has notification settings (a scheduler tick calls it)."""
    engine: Engine = getattr(database, "engine", database)
    with Session(engine) as session:
        ids = [org.id for org in session.scalars(select(Organisation)) if (org.settings or {}).get("smtp")]
    return {organisation_id: flush(engine, organisation_id, send, now=now) for organisation_id in ids}


def _settings_broken(
    session: Session, organisation: Organisation, last: datetime | None, moment: datetime, error: ValidationError
) -> FlushResult:
    # Said once per default interval, not on every event, so the log is not flooded.
    interval = timedelta(seconds=DEFAULT_INTERVAL)
    if last is None or last + interval <= moment:
        emit(session, organisation_id=organisation.id, kind=DIGEST_FAILED, level="error",
             message=f"e-mail notifications are not sent: the SMTP settings are invalid ({error}). Fix them in the settings.",
             data={"error": "settings"})
    return FlushResult(False, reason=f"invalid settings: {error}", next_due=moment + interval)


def _process_lock(engine: Engine, organisation_id: int) -> threading.Lock:
    key = (str(engine.url), organisation_id)
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.Lock())


def _account_names(session: Session, events: list[Event]) -> dict[int, str]:
    ids = {event.account_id for event in events if event.account_id is not None}
    if not ids:
        return {}
    query = select(ChannelAccount.id, ChannelAccount.name).where(ChannelAccount.id.in_(ids))
    return {account_id: name for account_id, name in session.execute(query)}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


# -- problems that persist: news only when they change --------------------------------------------------


def report_rejections(
    session: Session,
    account: ChannelAccount,
    kind: str,
    rejected: dict[str, str],
    *,
    run_id: int | None,
    what: str,
    advice: str,
) -> Event | None:
    """One warning event summarising a run's rejected SKUs, written only when the set has changed.

    Flows run every few minutes; a SKU still missing its barcode is not news on every run. The
    fingerprint of the last reported set is kept in a cursor of the account.
    """
    stream = f"notify:{kind}"
    current = fingerprint(sorted(rejected.items())) if rejected else "none"
    if (cursors.read(session, account.id, stream) or "none") == current:
        return None
    cursors.write(session, account.id, stream, current)
    if not rejected:
        return None
    shown = "; ".join(f"{sku}: {message}" for sku, message in sorted(rejected.items())[:10])
    more = f" (+{len(rejected) - 10} more)" if len(rejected) > 10 else ""
    return emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=run_id,
                kind=kind, level="warning",
                message=f"{account.name}: {len(rejected)} {what} rejected: {shown}{more}. {advice}",
                data={"rejected": dict(sorted(rejected.items())[:500]), "count": len(rejected)})
