"""Built-in plugin: e-mail the admin a digest of notable events over SMTP.

Registered through the ``channelhub`` entry-point group like any third-party plugin. It implements
``channelhub_event``: when a notable event (``hub.notify``) of an organisation with SMTP settings
commits, it arms a timer for that organisation; the timer calls :func:`hub.notify.flush`, which
e-mails every pending notable event in one digest if the interval since the last one has passed,
and otherwise says when it will have, so the timer waits until then.

Timers are a courtesy of long-lived processes (the embedded runtime, the web app). The events wait
in the database, so a process that exits before its timer fires loses nothing: the next notable
event, or a scheduler tick calling :func:`flush_due`, sends them.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from sqlalchemy import Engine, event as sa_event
from sqlalchemy.orm import Session, object_session

from hub import notify
from hub.errors import ValidationError
from hub.hookspecs import hookimpl
from hub.models import Organisation
from hub.secrets import CredentialBox

log = logging.getLogger("channelhub.email")

_ORGANISATIONS = "channelhub.email_notifications.organisations"
_PENDING = "channelhub.notify.pending"  # session.info key: organisations with notable events this transaction


# -- sending one digest ---------------------------------------------------------------------------


def send_email(settings: dict[str, Any], digest: notify.Digest) -> None:
    """Deliver ``digest`` with the organisation's SMTP settings (STARTTLS / implicit TLS, optional login)."""
    message = _message(settings, settings["to"], digest.subject, digest.body)
    _deliver(settings, message, lambda: _password(settings))


TEST_SUBJECT = "channelhub test e-mail"
TEST_BODY = "If you can read this, channelhub can send you notifications with these SMTP settings."


def send_test_email(settings: dict[str, Any], box: CredentialBox, to: str) -> None:
    """Send a test message to ``to`` exactly as digests are sent (same connection, TLS and login).

    ``settings`` are validated SMTP settings (``notify.SmtpSettingsSchema``, with ``from``); ``box``
    decrypts the stored password. Raises ``OSError`` / ``smtplib.SMTPException`` when it fails, and
    ``ConfigurationError`` when the password was stored with another key.
    """
    message = _message(settings, [to], TEST_SUBJECT, TEST_BODY)
    _deliver(settings, message, lambda: notify.smtp_password(settings, box))


def _message(settings: dict[str, Any], to: list[str], subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings["from"]
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="channelhub")
    message.set_content(body)
    return message


def _deliver(settings: dict[str, Any], message: EmailMessage, password: Callable[[], str | None]) -> None:
    """Open the SMTP connection the settings describe, log in if a user name is set, and send."""
    context = ssl.create_default_context()
    smtp_class = smtplib.SMTP_SSL if settings["ssl"] else smtplib.SMTP
    options: dict[str, Any] = {"timeout": settings["timeout"]}
    if settings["ssl"]:
        options["context"] = context
    with smtp_class(settings["host"], settings["port"], **options) as smtp:
        if settings["starttls"] and not settings["ssl"]:
            smtp.starttls(context=context)
        if settings.get("username"):
            smtp.login(settings["username"], password() or "")
        smtp.send_message(message)


def _password(settings: dict[str, Any]) -> str | None:
    if not settings.get("password_encrypted"):
        return None
    from hub.connections import get_connector  # the process's credential key

    return notify.smtp_password(settings, get_connector().box)


def flush_due(database: Any, *, now: datetime | None = None) -> dict[int, notify.FlushResult]:
    """Send every organisation's due digest by e-mail; for a scheduler tick or ``channelhub`` command."""
    return notify.flush_due(database, send_email, now=now)


# -- timers ---------------------------------------------------------------------------------------------


class DigestTimers:
    """At most one armed timer per (database, organisation); firing flushes, and re-arms if not yet due.

    An event that commits while a flush is running may have been missed by it, so arming during a
    flush makes the timer go again right after (the flush decides whether that is due yet).
    """

    def __init__(self) -> None:
        self._guard = threading.Condition()
        self._timers: dict[tuple[str, int], threading.Timer] = {}
        self._firing: set[tuple[str, int]] = set()
        self._again: set[tuple[str, int]] = set()

    def arm(self, engine: Engine, organisation_id: int, delay: float = 0.0) -> None:
        key = (str(engine.url), organisation_id)
        with self._guard:
            if key in self._firing:
                self._again.add(key)
                return
            if key in self._timers:
                return  # already going to flush: everything pending is read from the database then
            timer = threading.Timer(max(0.0, delay), self._fire, args=(engine, organisation_id))
            timer.daemon = True
            timer.name = f"channelhub-digest-{organisation_id}"
            self._timers[key] = timer
            timer.start()

    def _fire(self, engine: Engine, organisation_id: int) -> None:
        key = (str(engine.url), organisation_id)
        with self._guard:
            self._timers.pop(key, None)
            self._firing.add(key)
        result = None
        try:
            result = notify.flush(engine, organisation_id, send_email)
        except Exception:  # a broken database must not kill the process; the next event tries again
            log.exception("flushing the digest of organisation %s failed", organisation_id)
        finally:
            with self._guard:
                self._firing.discard(key)
                again = key in self._again
                self._again.discard(key)
                self._guard.notify_all()
        if result is not None and not result.sent and result.events and result.next_due is not None:
            wait = (result.next_due - datetime.now(timezone.utc)).total_seconds()
            self.arm(engine, organisation_id, wait + 0.05)
        elif again:
            self.arm(engine, organisation_id)

    def cancel_all(self) -> None:
        """Stop every armed timer (tests, and a process shutting down); a running flush finishes."""
        with self._guard:
            timers, self._timers = list(self._timers.values()), {}
            self._again.clear()
        for timer in timers:
            timer.cancel()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no timer is armed or flushing; False if ``timeout`` passed first (tests)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._guard:
                timers = list(self._timers.values())
                if not timers and not self._firing:
                    return True
                if self._firing:
                    self._guard.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if timers:
                timers[0].join(min(remaining, 0.1))


timers = DigestTimers()


# -- the hook ---------------------------------------------------------------------------------------------


@hookimpl
def channelhub_event(event: Any) -> None:
    if event.kind.startswith("notify."):
        return  # the digest's own bookkeeping is never news
    session = object_session(event)
    if session is None:
        return
    # Held in the session: its identity map is weak, and a flow's session would otherwise reload the
    # organisation for every event it emits.
    held = session.info.setdefault(_ORGANISATIONS, {})
    organisation = held.get(event.organisation_id)
    if organisation is None:
        with session.no_autoflush:  # a flush here would write this event alone, ahead of its batch
            organisation = held[event.organisation_id] = session.get(Organisation, event.organisation_id)
    raw = ((organisation.settings or {}) if organisation is not None else {}).get("smtp")
    # Cheap checks first: this hook sees every event, including one per pushed quantity.
    if not raw or event.kind not in (raw.get("kinds") or notify.NOTABLE_KINDS):
        return
    try:
        if notify.smtp_settings(organisation) is None:
            return  # switched off
    except ValidationError:
        pass  # the flush reports the broken settings to the admin
    # Armed once the transaction commits. The flush reads committed events only, so an event that
    # was rolled back is never sent even if a later commit of this session arms a timer anyway.
    pending: set[tuple[Engine, int]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = set()
        sa_event.listen(session, "after_commit", _after_commit)
    bind = session.get_bind()
    pending.add((getattr(bind, "engine", bind), event.organisation_id))


def _after_commit(session: Session) -> None:
    for engine, organisation_id in session.info.pop(_PENDING, set()):
        timers.arm(engine, organisation_id)
    session.info[_PENDING] = set()


@hookimpl
def channelhub_tick(db: Any, now: datetime) -> None:
    """Send digests left due by a process that exited before its timer fired (RQ work horses)."""
    flush_due(db, now=now)
