"""The notifications page writes the settings the digest sender reads (``hub.notify``), the password
encrypted; its test e-mail goes out through the same SMTP code as the digests (a real aiosmtpd server)."""

from __future__ import annotations

import html

from sqlalchemy import select, text

from hub import email_notifications, notify
from hub.app import Hub
from hub.events import emit
from hub.models import Event, Organisation
from tests.test_notifications import _free_port, smtp_server  # noqa: F401  (fixture: a real SMTP server)

from .conftest import World

PASSWORD = "smtp-password-123456"
FORM = {"host": "smtp.example", "port": "465", "security": "ssl", "from_address": "hub@brand.example",
        "username": "hub", "password": PASSWORD, "recipients": "ops@brand.example, ada@brand.example",
        "interval_minutes": "5", "enabled": "on"}


def _organisation(hub: Hub, world: World) -> Organisation:
    with hub.db.session() as session:
        return session.get(Organisation, world.ids["a"]["organisation"])


def _raw_row(hub: Hub, world: World) -> str:
    """The organisation's settings column exactly as the database holds it."""
    with hub.db.engine.connect() as connection:
        return str(connection.execute(text("SELECT settings FROM organisations WHERE id = :id"),
                                      {"id": world.ids["a"]["organisation"]}).scalar_one())


def _events(hub: Hub, kind: str) -> list[Event]:
    with hub.db.session() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def test_settings_saved_on_the_page_are_what_the_notifier_loads(signed_in, hub: Hub, world: World) -> None:
    admin = signed_in("admin")

    assert admin.post("/settings/notifications", FORM).status_code == 302

    settings = notify.smtp_settings(_organisation(hub, world))
    assert settings is not None
    assert {k: settings[k] for k in ("host", "port", "from", "to", "starttls", "ssl", "username", "interval_seconds", "enabled")} == {
        "host": "smtp.example", "port": 465, "from": "hub@brand.example", "to": ["ops@brand.example", "ada@brand.example"],
        "starttls": False, "ssl": True, "username": "hub", "interval_seconds": 300, "enabled": True}
    assert settings["kinds"] == list(notify.NOTABLE_KINDS)
    assert notify.smtp_password(settings, hub.box) == PASSWORD
    page = admin.get("/settings/notifications").get_data(as_text=True)  # shown back in the form's own terms
    assert 'value="465"' in page and "<option selected>ssl</option>" in page and 'value="5"' in page
    assert 'value="ops@brand.example, ada@brand.example"' in page and 'value="hub@brand.example"' in page

    admin.post("/settings/notifications", {**FORM, "security": "none", "interval_minutes": "", "password": ""})
    settings = notify.smtp_settings(_organisation(hub, world))
    assert (settings["starttls"], settings["ssl"], settings["interval_seconds"]) == (False, False, notify.DEFAULT_INTERVAL)
    admin.post("/settings/notifications", {**FORM, "security": "starttls", "password": ""})
    assert (notify.smtp_settings(_organisation(hub, world)) or {}).get("starttls") is True


def test_the_password_is_stored_encrypted_and_never_shown(signed_in, hub: Hub, world: World) -> None:
    admin = signed_in("admin")
    admin.post("/settings/notifications", FORM)
    admin.post("/settings/notifications", {**FORM, "password": "", "host": "smtp2.example"})  # empty keeps it

    row = _raw_row(hub, world)
    assert PASSWORD not in row and '"password"' not in row and "password_encrypted" in row
    assert notify.smtp_password(notify.smtp_settings(_organisation(hub, world)), hub.box) == PASSWORD
    with hub.db.engine.connect() as connection:  # nor in the audit log
        assert not any(PASSWORD in str(row) for row in connection.execute(text("SELECT message, data FROM events")))
    page = admin.get("/settings/notifications").get_data(as_text=True)
    assert PASSWORD not in page and "••••3456 stored" in page
    assert [e.data["fields"] for e in _events(hub, "notify.settings")][-1] == ["host"]


def test_validation_errors_show_field_messages_and_change_nothing(signed_in, hub: Hub, world: World) -> None:
    admin = signed_in("admin")
    admin.post("/settings/notifications", FORM)
    before, saved_events = _raw_row(hub, world), len(_events(hub, "notify.settings"))

    bad = admin.post("/settings/notifications", {**FORM, "from_address": "not-an-address", "recipients": "ops@brand.example, nope",
                                                 "port": "0", "interval_minutes": "soon", "password": "new-password-0000000"})

    body = html.unescape(bad.get_data(as_text=True))
    assert bad.status_code == 400 and "nothing was saved" in body
    assert "Not a valid email address." in body and "nope: Not a valid email address." in body
    assert "Must be greater than or equal to 1" in body and "Give the minutes between two digests" in body
    assert 'value="smtp.example"' in body and "new-password-0000000" not in body
    assert _raw_row(hub, world) == before and len(_events(hub, "notify.settings")) == saved_events
    for minutes in ("0", "-5", "1441", "1e400", "nan"):  # a digest interval beyond the look-back would lose events
        refused = admin.post("/settings/notifications", {**FORM, "interval_minutes": minutes})
        assert refused.status_code == 400 and "Give the minutes between two digests" in refused.get_data(as_text=True), minutes
    empty = admin.post("/settings/notifications", {**FORM, "host": " ", "recipients": ""})
    assert empty.status_code == 400 and "Give the SMTP server" in empty.get_data(as_text=True)
    assert "Give at least one recipient." in empty.get_data(as_text=True)
    assert _raw_row(hub, world) == before


def test_unticking_enabled_switches_the_digests_off(signed_in, hub: Hub, world: World) -> None:
    admin = signed_in("admin")
    admin.post("/settings/notifications", {k: v for k, v in FORM.items() if k != "enabled"})
    organisation = _organisation(hub, world)
    assert notify.smtp_settings(organisation) is None
    assert notify.smtp_settings(organisation, include_disabled=True)["host"] == "smtp.example"
    assert "checked" not in admin.get("/settings/notifications").get_data(as_text=True).split('name="enabled"')[1].split(">")[0]


def test_settings_of_the_old_page_are_rewritten_encrypted_on_the_next_save(signed_in, hub: Hub, world: World) -> None:
    with hub.db.session() as session:  # what this page used to write: its own shape, the password in clear
        session.get(Organisation, world.ids["a"]["organisation"]).settings = {"smtp": {
            "host": "smtp.example", "port": 587, "security": "starttls", "username": "hub", "password": PASSWORD,
            "from_address": "hub@brand.example", "recipients": ["ops@brand.example"]}}
    admin = signed_in("admin")
    page = admin.get("/settings/notifications").get_data(as_text=True)
    assert 'value="hub@brand.example"' in page and 'value="ops@brand.example"' in page and PASSWORD not in page

    form = {**FORM, "port": "587", "security": "starttls", "recipients": "ops@brand.example", "password": ""}
    assert admin.post("/settings/notifications", form).status_code == 302

    row = _raw_row(hub, world)
    assert PASSWORD not in row and "from_address" not in row and "security" not in row
    settings = notify.smtp_settings(_organisation(hub, world))
    assert settings["to"] == ["ops@brand.example"] and notify.smtp_password(settings, hub.box) == PASSWORD


def test_the_test_button_delivers_through_the_digest_sending_code(signed_in, hub: Hub, world: World, smtp_server) -> None:  # noqa: F811
    inbox, port = smtp_server
    admin = signed_in("admin")
    admin.post("/settings/notifications", {**FORM, "host": "127.0.0.1", "port": str(port), "security": "none",
                                           "password": "s3cret-pw"})

    response = admin.post("/settings/notifications/test", {"to": "qa@brand.example"}, follow_redirects=True)

    assert "Test e-mail sent to qa@brand.example." in response.get_data(as_text=True)
    [(_, recipients, message)] = inbox.wait_for(1)
    assert recipients == ["qa@brand.example"]
    assert message["From"] == "hub@brand.example" and message["Subject"] == email_notifications.TEST_SUBJECT
    assert inbox.logins == [("hub", "s3cret-pw")]  # the stored password, decrypted with the hub's key


def test_a_test_e_mail_that_cannot_be_sent_says_why(signed_in, hub: Hub, world: World) -> None:
    admin = signed_in("admin")
    assert "Save the SMTP settings first" in admin.post("/settings/notifications/test", {"to": "qa@brand.example"},
                                                        follow_redirects=True).get_data(as_text=True)
    admin.post("/settings/notifications", {**FORM, "host": "127.0.0.1", "port": str(_free_port()), "security": "none"})
    response = admin.post("/settings/notifications/test", {"to": "qa@brand.example"}, follow_redirects=True)
    assert "The test e-mail could not be sent: ConnectionRefusedError" in response.get_data(as_text=True)


def test_a_digest_configured_on_the_page_is_e_mailed(signed_in, hub: Hub, world: World, smtp_server) -> None:  # noqa: F811
    inbox, port = smtp_server
    signed_in("admin").post("/settings/notifications", {**FORM, "host": "127.0.0.1", "port": str(port), "security": "none",
                                                        "username": ""})
    organisation_id = world.ids["a"]["organisation"]
    with hub.db.session() as session:
        emit(session, organisation_id=organisation_id, kind="stock.oversell", level="error", message="DRESS-a-8 is oversold by 1")

    result = notify.flush(hub.db, organisation_id, email_notifications.send_email)

    assert result.sent, result.reason
    [(_, recipients, message)] = inbox.wait_for(1)
    assert recipients == ["ops@brand.example", "ada@brand.example"]
    assert "DRESS-a-8 is oversold by 1" in message.get_payload(decode=True).decode()
