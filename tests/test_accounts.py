"""The account lifecycle and flow toggles, on SQLite and PostgreSQL.

The allowed moves are written out here independently of ``hub.accounts.ALLOWED_TRANSITIONS`` and
every status x action pair is tried, so a change to the table has to be a deliberate one.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import accounts, migrate
from hub.db import Database
from hub.errors import ConfigurationError, IllegalTransition, ValidationError
from hub.models import AccountStatus, ChannelAccount, Event, Organisation
from hub.secrets import CredentialBox
from tests.storage_fixtures import box, database, organisation, postgres_schema_url  # noqa: F401  (fixtures)

ADMIN = "admin@brand.example"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)

STATUSES = ["setup", "testing", "live", "paused"]
ACTIONS = ["activate", "go_live", "pause", "resume", "back_to_setup"]
# (status, action) -> resulting status; every pair not listed must be refused.
# The paused account of the matrix was paused from Testing.
EXPECTED = {
    ("setup", "activate"): "testing",
    ("testing", "go_live"): "live",
    ("setup", "pause"): "paused",
    ("testing", "pause"): "paused",
    ("live", "pause"): "paused",
    ("paused", "resume"): "testing",
    ("testing", "back_to_setup"): "setup",
}


def _create(session: Session, organisation_id: int, box: CredentialBox, **kwargs) -> ChannelAccount:  # type: ignore[no-untyped-def]
    credentials = kwargs.pop("credentials", {"user_id": "seller@example.com", "api_key": "k" * 32})
    return accounts.create_account(
        session, organisation_id, kwargs.pop("name", f"iconic-{uuid.uuid4().hex[:6]}"), "iconic", "sandbox",
        credentials, {}, box, ADMIN, **kwargs,
    )


def _bring_to(session: Session, account: ChannelAccount, status: str, paused_from: str = "testing") -> None:
    """Reach ``status`` through legal moves only."""
    if status == "setup":
        return
    if status == "paused" and paused_from == "setup":
        accounts.pause(session, account, ADMIN, T0)
        return
    accounts.activate(session, account, ADMIN, T0)
    if status == "live" or (status == "paused" and paused_from == "live"):
        accounts.go_live(session, account, ADMIN, T0 + timedelta(days=1))
    if status == "paused":
        accounts.pause(session, account, ADMIN, T0 + timedelta(days=2))


def _events(session: Session, account_id: int, kind: str = "account.transition") -> list[Event]:
    return list(session.scalars(select(Event).where(Event.account_id == account_id, Event.kind == kind).order_by(Event.id)))


def test_table_matches_the_expected_moves() -> None:
    table = {(source.value, action) for action, moves in accounts.ALLOWED_TRANSITIONS.items() for source in moves}
    assert table == set(EXPECTED)


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", ACTIONS)
def test_every_status_and_action(database: Database, organisation: Organisation, box: CredentialBox, status: str, action: str) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        _bring_to(session, account, status)
        account_id, events_before = account.id, len(_events(session, account.id))
    assert account.status.value == status

    expected = EXPECTED.get((status, action))
    move = getattr(accounts, action)
    if expected is None:
        with pytest.raises(IllegalTransition, match=repr(account.name)), database.session() as session:
            move(session, session.get(ChannelAccount, account_id), ADMIN, T0 + timedelta(days=3))
        with database.session() as session:
            assert session.get(ChannelAccount, account_id).status.value == status
            assert len(_events(session, account_id)) == events_before
        return

    with database.session() as session:
        move(session, session.get(ChannelAccount, account_id), ADMIN, T0 + timedelta(days=3))
    with database.session() as session:
        assert session.get(ChannelAccount, account_id).status.value == expected
        last = _events(session, account_id)[-1]
        assert (last.actor, last.data["from"], last.data["to"], last.data["action"]) == (ADMIN, status, expected, action)


@pytest.mark.parametrize("status", STATUSES)
def test_allowed_actions_for_the_ui(database: Database, organisation: Organisation, box: CredentialBox, status: str) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        _bring_to(session, account, status)
        assert accounts.allowed_actions(account) == [a for a in ACTIONS if (status, a) in EXPECTED]


def test_live_cannot_go_back_to_setup_and_is_told_to_pause(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with pytest.raises(IllegalTransition, match="Pause it instead"), database.session() as session:
        account = _create(session, organisation.id, box)
        _bring_to(session, account, "live")
        accounts.back_to_setup(session, account, ADMIN)


def test_activation_needs_credentials(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with pytest.raises(IllegalTransition, match="no credentials"), database.session() as session:
        accounts.activate(session, _create(session, organisation.id, box, credentials={}), ADMIN)


@pytest.mark.parametrize("paused_from", ["setup", "testing", "live"])
def test_resume_returns_to_where_it_was_paused(
    database: Database, organisation: Organisation, box: CredentialBox, paused_from: str
) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        _bring_to(session, account, "paused", paused_from=paused_from)
        assert account.paused_from.value == paused_from
        accounts.resume(session, account, "operator@brand.example", T0 + timedelta(days=3))
        assert (account.status.value, account.paused_from, account.paused_at) == (paused_from, None, None)
        last = _events(session, account.id)[-1]
        assert last.actor == "operator@brand.example" and last.data == {"from": "paused", "to": paused_from, "action": "resume"}


def test_transitions_are_logged_in_order_with_their_actors(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        accounts.activate(session, account, "alice", T0)
        accounts.pause(session, account, "bob", T0 + timedelta(hours=1))
        accounts.resume(session, account, "carol", T0 + timedelta(hours=2))
        accounts.go_live(session, account, "dave", T0 + timedelta(hours=3))
        account_id = account.id
    with database.session() as session:
        logged = [(e.actor, e.data["from"], e.data["to"]) for e in _events(session, account_id)]
        created = _events(session, account_id, "account.created")
    assert logged == [
        ("alice", "setup", "testing"),
        ("bob", "testing", "paused"),
        ("carol", "paused", "testing"),
        ("dave", "testing", "live"),
    ]
    assert [e.actor for e in created] == [ADMIN]


# -- testing period --------------------------------------------------------------------------------


def _promoted_ids(session: Session, now: datetime, organisation_id: int) -> list[int]:
    # The database is shared by the module: look only at this test's organisation.
    return [a.id for a in accounts.promote_due_accounts(session, now) if a.organisation_id == organisation_id]


def test_testing_goes_live_after_thirty_days(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        untouched = _create(session, organisation.id, box)  # stays in Setup
        accounts.activate(session, account, ADMIN, T0)
        account_id, untouched_id = account.id, untouched.id
        assert account.testing_days == 30
        assert accounts.days_left_in_testing(account, T0) == 30
        assert accounts.days_left_in_testing(account, T0 + timedelta(days=29, hours=1)) == 1

    with database.session() as session:
        assert _promoted_ids(session, T0 + timedelta(days=30) - timedelta(seconds=1), organisation.id) == []
    with database.session() as session:
        assert _promoted_ids(session, T0 + timedelta(days=30), organisation.id) == [account_id]
    with database.session() as session:
        assert _promoted_ids(session, T0 + timedelta(days=31), organisation.id) == []  # once only
        account = session.get(ChannelAccount, account_id)
        assert account.status is AccountStatus.LIVE
        assert accounts._aware(account.live_at) == T0 + timedelta(days=30)
        assert accounts.days_left_in_testing(account, T0 + timedelta(days=31)) is None
        last = _events(session, account_id)[-1]
        assert (last.actor, last.data["from"], last.data["to"]) == ("scheduler", "testing", "live")
        assert "30-day" in last.data["reason"]
        assert session.get(ChannelAccount, untouched_id).status is AccountStatus.SETUP


def test_a_shorter_testing_period_is_honoured(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        account.testing_days = 7
        accounts.activate(session, account, ADMIN, T0)
        account_id = account.id
    with database.session() as session:
        assert _promoted_ids(session, T0 + timedelta(days=7), organisation.id) == [account_id]


def test_paused_time_does_not_count_towards_testing(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        accounts.activate(session, account, ADMIN, T0)
        accounts.pause(session, account, ADMIN, T0 + timedelta(days=10))
        assert accounts.days_left_in_testing(account, T0 + timedelta(days=15)) == 20  # frozen while paused
        account_id = account.id
    with database.session() as session:
        assert _promoted_ids(session, T0 + timedelta(days=45), organisation.id) == []  # paused: never promoted
        accounts.resume(session, session.get(ChannelAccount, account_id), ADMIN, T0 + timedelta(days=20))
    with database.session() as session:
        account = session.get(ChannelAccount, account_id)
        assert accounts.days_left_in_testing(account, T0 + timedelta(days=20)) == 20
        assert _promoted_ids(session, T0 + timedelta(days=39), organisation.id) == []
    with database.session() as session:
        assert _promoted_ids(session, T0 + timedelta(days=40), organisation.id) == [account_id]


def test_back_to_setup_restarts_the_testing_clock(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        accounts.activate(session, account, ADMIN, T0)
        accounts.back_to_setup(session, account, ADMIN, T0 + timedelta(days=20))
        assert account.testing_started_at is None
        accounts.activate(session, account, ADMIN, T0 + timedelta(days=21))
        assert accounts.days_left_in_testing(account, T0 + timedelta(days=30)) == 21


def test_scheduler_skips_an_account_an_admin_has_locked(box: CredentialBox) -> None:
    # Row locks are a PostgreSQL matter (SQLite serialises writers), so this one runs there only.
    with postgres_schema_url() as url:
        database = Database(url)
        try:
            migrate.upgrade(database.engine)
            with database.session() as session:
                session.add(organisation := Organisation(name="Brand", slug="brand"))
                session.flush()
                account = _create(session, organisation.id, box)
                accounts.activate(session, account, ADMIN, T0)
                account_id = account.id
            with database.session() as admin:
                accounts.pause(admin, admin.get(ChannelAccount, account_id), ADMIN, T0 + timedelta(days=31))
                with database.session() as scheduler:  # the admin's transaction still holds the row
                    assert _promoted_ids(scheduler, T0 + timedelta(days=31), organisation.id) == []
            with database.session() as session:
                assert session.get(ChannelAccount, account_id).status is AccountStatus.PAUSED
        finally:
            database.dispose()


# -- flows -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", accounts.FLOWS)
def test_each_flow_toggles_and_is_logged(database: Database, organisation: Organisation, box: CredentialBox, flow: str) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        if flow == "reconciler":
            accounts.set_flow(session, account, "listings", True, ADMIN)
        accounts.set_flow(session, account, flow, True, "alice")
        accounts.set_flow(session, account, flow, True, "alice")  # no change: nothing logged
        assert accounts.flows(account)[flow] is True
        accounts.set_flow(session, account, flow, False, "bob")
        assert accounts.flows(account)[flow] is False
        logged = [(e.actor, e.data) for e in _events(session, account.id, "account.flow") if e.data["flow"] == flow]
    assert logged == [("alice", {"flow": flow, "enabled": True}), ("bob", {"flow": flow, "enabled": False})]


def test_reconciler_needs_listings(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with pytest.raises(IllegalTransition, match="Turn Listings on first"), database.session() as session:
        accounts.set_flow(session, _create(session, organisation.id, box), "reconciler", True, ADMIN)


def test_turning_listings_off_turns_the_reconciler_off(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        accounts.set_flow(session, account, "listings", True, ADMIN)
        accounts.set_flow(session, account, "reconciler", True, ADMIN)
        accounts.set_flow(session, account, "listings", False, ADMIN)
        assert (account.listings_enabled, account.reconciler_enabled) == (False, False)
        last_two = [e.data for e in _events(session, account.id, "account.flow")][-2:]
    assert last_two == [
        {"flow": "reconciler", "enabled": False, "reason": "Listings was turned off"},
        {"flow": "listings", "enabled": False},
    ]


def test_mandatory_fulfilments_cannot_be_turned_off(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box, fulfilment_mandatory=True)
        assert account.fulfilments_enabled  # a channel that demands write-back starts with it on
        account_id = account.id
    with pytest.raises(IllegalTransition, match="requires carrier and tracking"), database.session() as session:
        accounts.set_flow(session, session.get(ChannelAccount, account_id), "fulfilments", False, ADMIN, fulfilment_mandatory=True)
    with database.session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account.fulfilments_enabled
        accounts.set_flow(session, account, "fulfilments", False, ADMIN)  # optional for other channels
        assert not account.fulfilments_enabled


def test_unknown_flow_is_a_validation_error(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with pytest.raises(ValidationError, match="unknown flow 'stock'"), database.session() as session:
        accounts.set_flow(session, _create(session, organisation.id, box), "stock", True, ADMIN)


def test_orders_are_third_party_managed_when_fulfilments_are_off(
    database: Database, organisation: Organisation, box: CredentialBox
) -> None:
    with database.session() as session:
        account = _create(session, organisation.id, box)
        accounts.set_flow(session, account, "orders", True, ADMIN)
        assert accounts.is_third_party_managed(account)
        accounts.set_flow(session, account, "fulfilments", True, ADMIN)
        assert not accounts.is_third_party_managed(account)


# -- creation and credentials ------------------------------------------------------------------


def test_create_account_validates(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with database.session() as session:
        _create(session, organisation.id, box, name="The Iconic")
    with pytest.raises(ValidationError, match="already exists"), database.session() as session:
        _create(session, organisation.id, box, name="The Iconic")
    with pytest.raises(ValidationError, match="name: a name is required"), database.session() as session:
        _create(session, organisation.id, box, name="  ")
    with pytest.raises(ValidationError, match="environment"), database.session() as session:
        accounts.create_account(session, organisation.id, "x", "iconic", "moon", {}, {}, box, ADMIN)


def test_credentials_are_encrypted_and_events_name_fields_only(
    database: Database, organisation: Organisation, box: CredentialBox
) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    with database.session() as session:
        account = _create(session, organisation.id, box, credentials={"user_id": "u", "api_key": secret})
        assert secret.encode() not in account.credentials_encrypted
        assert accounts.account_credentials(account, box) == {"user_id": "u", "api_key": secret}

        accounts.update_credentials(session, account, {"api_key": secret + "2"}, box, ADMIN)  # merge
        assert accounts.account_credentials(account, box) == {"user_id": "u", "api_key": secret + "2"}
        accounts.update_credentials(session, account, {"api_key": secret + "2"}, box, ADMIN)  # unchanged
        accounts.update_credentials(session, account, {"user_id": None, "region": "AU"}, box, ADMIN)
        assert accounts.account_credentials(account, box) == {"api_key": secret + "2", "region": "AU"}
        logged = _events(session, account.id, "account.credentials")
        everything = " ".join(f"{e.message} {e.data}" for e in session.scalars(select(Event).where(Event.account_id == account.id)))
    assert [e.data["fields"] for e in logged] == [["api_key"], ["region", "user_id"]]
    assert secret not in everything


def test_credentials_cannot_be_emptied_outside_setup(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    with pytest.raises(ValidationError, match="cannot be emptied"), database.session() as session:
        account = _create(session, organisation.id, box)
        accounts.activate(session, account, ADMIN, T0)
        accounts.update_credentials(session, account, {}, box, ADMIN, replace=True)


def test_replacing_credentials_recovers_from_a_lost_key(database: Database, organisation: Organisation, box: CredentialBox) -> None:
    new_box = CredentialBox(Fernet.generate_key())
    with database.session() as session:
        account = _create(session, organisation.id, box)
        with pytest.raises(ConfigurationError, match="secret key has changed"):
            accounts.update_credentials(session, account, {"api_key": "new"}, new_box, ADMIN)  # merging must read
        accounts.update_credentials(session, account, {"api_key": "new"}, new_box, ADMIN, replace=True)
        assert accounts.account_credentials(account, new_box) == {"api_key": "new"}
        assert _events(session, account.id, "account.credentials")[-1].data == {"fields": ["api_key"]}


def test_rotate_credentials_re_encrypts_with_the_first_key(database: Database, organisation: Organisation) -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    with database.session() as session:
        account_id = _create(session, organisation.id, CredentialBox(old_key)).id
        lost_id = _create(session, organisation.id, CredentialBox(Fernet.generate_key())).id
    with database.session() as session:
        # An account no listed key can read is reported, and does not stop the others.
        result = accounts.rotate_credentials(session, CredentialBox([new_key, old_key]))
        assert account_id in result.rotated and lost_id in result.unreadable
    with database.session() as session:
        account = session.get(ChannelAccount, account_id)
        assert accounts.account_credentials(account, CredentialBox(new_key))["api_key"] == "k" * 32
