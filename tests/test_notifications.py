"""Notifications: notable events reach the admin as an e-mail digest, at most one per interval.

The e-mail tests talk to a real SMTP server (aiosmtpd) started by the test on a loopback port.
"""

from __future__ import annotations

import email
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from hub import email_notifications, notify
from hub.errors import ValidationError
from hub.events import emit
from hub.models import Event, Organisation
from tests.flows_fixtures_a import flowhub, product, variant  # noqa: F401  (fixture)
from tests.storage_fixtures import box, database, organisation  # noqa: F401  (fixtures)

# -- a real SMTP server ----------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler and authenticator: keeps what it received, and who logged in."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, list[str], Message]] = []
        self.logins: list[tuple[str, str]] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        with self._arrived:
            self.messages.append((time.monotonic(), list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def __call__(self, server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret-pw")

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[float, list[str], Message]]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox, auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def mailing(flowhub):  # noqa: F811
    """The built-in e-mail plugin registered on the test's plugin manager; its timers cleaned up after."""
    flowhub.pm.register_plugin(email_notifications, "email_notifications")
    yield flowhub
    email_notifications.timers.cancel_all()


def _configure(flowhub, port: int, **extra) -> None:
    settings = {"host": "127.0.0.1", "port": port, "from": "hub@brand.example", "to": "ops@brand.example, ada@brand.example",
                "starttls": False, **extra}
    with flowhub.db.session() as session:
        notify.store_smtp_settings(session, session.get(Organisation, flowhub.organisation_id), settings, flowhub.box,
                                   actor="ada@brand.example")


def _emit(flowhub, kind: str, message: str, **fields) -> int:
    with flowhub.db.session() as session:
        event = emit(session, organisation_id=flowhub.organisation_id, kind=kind, message=message, **fields)
        session.flush()  # emit leaves writing to the session's next flush; the test wants the id now
        return event.id


# -- e-mail over SMTP ---------------------------------------------------------------------------------------


def test_a_digest_of_notable_events_is_e_mailed_over_smtp(mailing, smtp_server):
    inbox, port = smtp_server
    _configure(mailing, port, username="hub", password="s3cret-pw")
    with mailing.db.session() as session:  # one transaction, two notable events and one routine one
        emit(session, organisation_id=mailing.organisation_id, kind="listing.rejected", level="warning",
             message="iconic: 1 listing(s) rejected: TEE-S: missing barcode (EAN).")
        emit(session, organisation_id=mailing.organisation_id, kind="stock.pushed", message="TEE-M: iconic now shows 3")
        emit(session, organisation_id=mailing.organisation_id, kind="stock.oversell", level="error",
             message="TEE-M is oversold by 1")

    [(_, recipients, message)] = inbox.wait_for(1)

    assert recipients == ["ops@brand.example", "ada@brand.example"]
    assert message["From"] == "hub@brand.example"
    assert "2 problem(s) need attention" in message["Subject"]
    body = message.get_payload(decode=True).decode()
    assert "TEE-S: missing barcode (EAN)" in body and "TEE-M is oversold by 1" in body
    assert "now shows 3" not in body
    assert notify.NEXT_STEPS["stock.oversell"] in body
    assert inbox.logins == [("hub", "s3cret-pw")]
    assert email_notifications.timers.wait_idle(5)
    [sent] = mailing.events(notify.DIGEST_SENT)
    assert len(sent.data["event_ids"]) == 2
    with mailing.db.session() as session:  # the password is stored encrypted, never in clear
        stored = session.get(Organisation, mailing.organisation_id).settings["smtp"]
        assert "password" not in stored and "s3cret-pw" not in str(stored)
    assert "s3cret-pw" not in str([e.data for e in mailing.events("notify.settings")])


def test_at_most_one_digest_per_interval(mailing, smtp_server):
    inbox, port = smtp_server
    _configure(mailing, port, interval_seconds=1)

    _emit(mailing, "fulfilment.failed", "order M-1: unknown carrier 'Couriers Please'")
    first = inbox.wait_for(1)
    _emit(mailing, "flow.auth_failed", "orders failed: the channel refused the account's credentials")
    _emit(mailing, "stock.oversell", "TEE-S is oversold by 2")
    time.sleep(0.3)
    assert len(inbox.messages) == 1  # the interval has not passed: they wait

    both = inbox.wait_for(2)

    assert len(both) == 2
    assert both[1][0] - first[0][0] >= 0.9
    body = both[1][2].get_payload(decode=True).decode()
    assert "oversold by 2" in body and "refused the account's credentials" in body
    assert "Couriers Please" not in body  # already told
    assert email_notifications.timers.wait_idle(5)
    assert len(inbox.messages) == 2


def test_a_rejected_listing_in_a_flow_reaches_the_admin_by_e_mail(mailing, smtp_server):
    inbox, port = smtp_server
    _configure(mailing, port)
    source_id, _ = mailing.source(products=[product("TEE", variant("TEE-S", barcode=""))])
    mailing.run(source_id, "catalog")
    mailing.give_label("Iconic", "TEE")
    market_id, _ = mailing.marketplace(source_id=source_id)

    mailing.run(market_id, "listings")

    [(_, _, message)] = inbox.wait_for(1)
    body = message.get_payload(decode=True).decode()
    assert "Rejected listings (1)" in body and "[iconic]" in body and "TEE-S: missing barcode (EAN)" in body


def test_a_failed_delivery_is_recorded_and_the_events_stay_pending(mailing, smtp_server):
    inbox, port = smtp_server
    _configure(mailing, _free_port())  # nothing listens there
    _emit(mailing, "fulfilment.failed", "order M-2: tracking number rejected")

    deadline = time.monotonic() + 10
    while not mailing.events(notify.DIGEST_FAILED) and time.monotonic() < deadline:
        time.sleep(0.05)
    [failed] = mailing.events(notify.DIGEST_FAILED)
    assert failed.level == "error" and "Check the SMTP settings" in failed.message
    email_notifications.timers.cancel_all()  # it would try again in 15 minutes; the test moves the clock instead

    _configure(mailing, port)
    later = datetime.now(timezone.utc) + timedelta(minutes=16)
    result = email_notifications.flush_due(mailing.db, now=later)[mailing.organisation_id]

    assert result.sent and result.events == 1
    [(_, _, message)] = inbox.wait_for(1)
    assert "tracking number rejected" in message.get_payload(decode=True).decode()


# -- the digest's rules, without a network ---------------------------------------------------------------


@pytest.fixture
def outbox(flowhub):  # noqa: F811
    sent: list[notify.Digest] = []
    _configure(flowhub, 2525)
    return sent, lambda settings, digest: sent.append(digest)


def test_flush_sends_what_is_pending_once_and_waits_for_the_interval(flowhub, outbox):
    sent, send = outbox
    start = datetime.now(timezone.utc)
    first = _emit(flowhub, "listing.rejected", "A-1: missing gender")
    _emit(flowhub, "catalog.imported", "routine")

    assert notify.flush(flowhub.db, flowhub.organisation_id, send, now=start).sent
    assert [[e.id for e in d.events] for d in sent] == [[first]]

    second = _emit(flowhub, "stock.oversell", "A-1 is oversold by 1")
    waiting = notify.flush(flowhub.db, flowhub.organisation_id, send, now=start + timedelta(minutes=5))
    assert (waiting.sent, waiting.events) == (False, 1)
    assert waiting.next_due is not None and waiting.next_due > start + timedelta(minutes=14)
    nothing_new = notify.flush(flowhub.db, flowhub.organisation_id, send, now=start + timedelta(minutes=16))
    assert nothing_new.sent and [e.id for e in sent[-1].events] == [second]
    assert notify.flush(flowhub.db, flowhub.organisation_id, send, now=start + timedelta(hours=1)).reason == "nothing to report"


def test_a_rolled_back_event_is_never_sent_and_kinds_are_configurable(flowhub, outbox):
    sent, send = outbox
    with pytest.raises(RuntimeError):
        with flowhub.db.session() as session:
            emit(session, organisation_id=flowhub.organisation_id, kind="stock.oversell", message="never happened")
            raise RuntimeError("the flow failed after emitting")
    assert notify.flush(flowhub.db, flowhub.organisation_id, send).reason == "nothing to report"

    _configure(flowhub, 2525, kinds=["catalog.imported"])
    _emit(flowhub, "catalog.imported", "imported 3 products")
    _emit(flowhub, "stock.oversell", "not wanted by this organisation")
    assert notify.flush(flowhub.db, flowhub.organisation_id, send).sent
    assert [e.message for e in sent[0].events] == ["imported 3 products"]


def test_invalid_settings_are_refused_when_saved_and_reported_when_found(flowhub, outbox):
    sent, send = outbox
    with flowhub.db.session() as session:
        org = session.get(Organisation, flowhub.organisation_id)
        with pytest.raises(ValidationError, match="to"):
            notify.store_smtp_settings(session, org, {"to": "not-an-address"}, flowhub.box)
        org.settings = {"smtp": {"host": "smtp.example", "from": "hub@brand.example"}}  # edited behind its back
    _emit(flowhub, "stock.oversell", "A-1 is oversold by 1")

    result = notify.flush(flowhub.db, flowhub.organisation_id, send)

    assert not result.sent and "invalid settings" in result.reason and sent == []
    [failed] = flowhub.events(notify.DIGEST_FAILED)
    assert "SMTP settings are invalid" in failed.message


def test_an_organisation_without_settings_gets_no_mail(flowhub):
    _emit(flowhub, "stock.oversell", "A-1 is oversold by 1")
    assert notify.flush(flowhub.db, flowhub.organisation_id, lambda *_: pytest.fail("sent")).reason == (
        "notifications are not configured")
    with flowhub.db.session() as session:
        assert session.scalars(select(Event).where(Event.kind.like("notify.digest%"),
                                                   Event.organisation_id == flowhub.organisation_id)).all() == []


def test_a_test_e_mail_goes_out_like_a_digest_even_when_switched_off(flowhub, smtp_server):  # noqa: F811
    inbox, port = smtp_server
    _configure(flowhub, port, username="hub", password="s3cret-pw", enabled=False)
    with flowhub.db.session() as session:
        organisation = session.get(Organisation, flowhub.organisation_id)
        assert notify.smtp_settings(organisation) is None  # no digests...
        settings = notify.smtp_settings(organisation, include_disabled=True)

    email_notifications.send_test_email(settings, flowhub.box, "qa@brand.example")  # ...but the test is allowed

    [(_, recipients, message)] = inbox.wait_for(1)
    assert recipients == ["qa@brand.example"] and message["To"] == "qa@brand.example"
    assert message["From"] == "hub@brand.example" and message["Subject"] == email_notifications.TEST_SUBJECT
    assert inbox.logins == [("hub", "s3cret-pw")]
