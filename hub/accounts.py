"""The channel account lifecycle: Setup -> Testing -> Live, Paused from anywhere, and flow toggles.

- **Setup**: the admin enters credentials and settings; nothing runs.
- **Testing** ("Save and Activate"): flows run against the channel, the reconciler only reports.
  Lasts ``testing_days`` (30 by default); then :func:`promote_due_accounts` (the scheduler) makes it
  Live. Time spent paused does not count. An admin may go live early, or go back to Setup.
- **Live**: the real thing. It never goes back to Setup (its listings and orders are real); it is
  paused instead.
- **Paused**: every flow stops; Resume returns to the state it was paused from.

Every transition is checked against :data:`ALLOWED_TRANSITIONS`, refused with
:class:`~hub.errors.IllegalTransition` and a message meant for the admin, and recorded as an
``account.transition`` event with its actor. Flow toggles are recorded as ``account.flow``.

All functions take the caller's Session and leave committing to it. They lock the account row
(``SELECT ... FOR UPDATE`` on PostgreSQL) so an admin's click and the scheduler cannot interleave.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import defaults
from hub.errors import ConfigurationError, IllegalTransition, ValidationError
from hub.events import emit
from hub.models import AccountStatus, ChannelAccount, Environment
from hub.secrets import CredentialBox

SETUP, TESTING, LIVE, PAUSED = AccountStatus.SETUP, AccountStatus.TESTING, AccountStatus.LIVE, AccountStatus.PAUSED

ACTIVATE, GO_LIVE, PAUSE, RESUME, BACK_TO_SETUP = "activate", "go_live", "pause", "resume", "back_to_setup"

# action -> {from status: to status}. ``None`` as a target means "the status it was paused from".
ALLOWED_TRANSITIONS: Final[Mapping[str, Mapping[AccountStatus, AccountStatus | None]]] = MappingProxyType(
    {
        ACTIVATE: {SETUP: TESTING},
        GO_LIVE: {TESTING: LIVE},
        PAUSE: {SETUP: PAUSED, TESTING: PAUSED, LIVE: PAUSED},
        RESUME: {PAUSED: None},
        BACK_TO_SETUP: {TESTING: SETUP},
    }
)

ACTION_LABELS: Final[Mapping[str, str]] = MappingProxyType(
    {
        ACTIVATE: "Save and Activate",
        GO_LIVE: "Go Live",
        PAUSE: "Pause",
        RESUME: "Resume",
        BACK_TO_SETUP: "Back to Setup",
    }
)

# Refusals that deserve more than the generic "only possible from ..." message.
_REFUSALS: Final[Mapping[tuple[str, AccountStatus], str]] = MappingProxyType(
    {
        (BACK_TO_SETUP, LIVE): "a Live account cannot go back to Setup: its listings and orders are real. "
        "Pause it instead (Paused stops every flow), then change what needs changing and Resume.",
        (GO_LIVE, SETUP): "it is still in Setup; Save and Activate it first, so that it is tested before it goes live.",
        (ACTIVATE, TESTING): "it is already in Testing.",
        (ACTIVATE, LIVE): "it is already Live.",
        (GO_LIVE, LIVE): "it is already Live.",
        (PAUSE, PAUSED): "it is already paused.",
        (RESUME, SETUP): "it is not paused.",
        (RESUME, TESTING): "it is not paused.",
        (RESUME, LIVE): "it is not paused.",
        (BACK_TO_SETUP, SETUP): "it is already in Setup.",
    }
)

SCHEDULER = "scheduler"

FLOWS: Final[tuple[str, ...]] = ("listings", "reconciler", "orders", "fulfilments")
_FLOW_COLUMNS: Final[Mapping[str, str]] = MappingProxyType({flow: f"{flow}_enabled" for flow in FLOWS})


# -- lifecycle -----------------------------------------------------------------------------------


def allowed_actions(account: ChannelAccount) -> list[str]:
    """The actions the UI should offer for the account's current status, in table order."""
    return [action for action, moves in ALLOWED_TRANSITIONS.items() if account.status in moves]


def activate(session: Session, account: ChannelAccount, actor: str, now: datetime | None = None) -> ChannelAccount:
    """Setup -> Testing ("Save and Activate"). Needs stored credentials; starts the testing clock."""
    _lock(session, account)
    _require_allowed(account, ACTIVATE)
    if not account.credentials_encrypted:
        raise IllegalTransition(
            f"Cannot activate {account.name!r}: it has no credentials yet. "
            "Enter the channel's credentials and save them, then activate."
        )
    account.testing_started_at = _now(now)
    account.live_at = None
    return _move(session, account, ACTIVATE, TESTING, actor)


def go_live(session: Session, account: ChannelAccount, actor: str, now: datetime | None = None) -> ChannelAccount:
    """Testing -> Live before the testing period has ended (an admin's decision)."""
    _lock(session, account)
    _require_allowed(account, GO_LIVE)
    account.live_at = _now(now)
    return _move(session, account, GO_LIVE, LIVE, actor)


def pause(session: Session, account: ChannelAccount, actor: str, now: datetime | None = None) -> ChannelAccount:
    """Setup / Testing / Live -> Paused, remembering where it was so Resume can go back."""
    _lock(session, account)
    _require_allowed(account, PAUSE)
    account.paused_from = account.status
    account.paused_at = _now(now)
    return _move(session, account, PAUSE, PAUSED, actor)


def resume(session: Session, account: ChannelAccount, actor: str, now: datetime | None = None) -> ChannelAccount:
    """Paused -> the status it was paused from. The pause does not count towards testing."""
    _lock(session, account)
    _require_allowed(account, RESUME)
    target = account.paused_from or SETUP  # a row paused by hand without paused_from: safest place
    if target == TESTING and account.testing_started_at is not None and account.paused_at is not None:
        paused_for = _now(now) - _aware(account.paused_at)
        account.testing_started_at = _aware(account.testing_started_at) + max(paused_for, timedelta(0))
    account.paused_from = None
    account.paused_at = None
    return _move(session, account, RESUME, target, actor)


def back_to_setup(session: Session, account: ChannelAccount, actor: str, now: datetime | None = None) -> ChannelAccount:
    """Testing -> Setup (to change credentials or settings); the testing clock starts again next time."""
    _lock(session, account)
    _require_allowed(account, BACK_TO_SETUP)
    account.testing_started_at = None
    return _move(session, account, BACK_TO_SETUP, SETUP, actor)


def promote_due_accounts(session: Session, now: datetime | None = None) -> list[ChannelAccount]:
    """Make Live every Testing account whose testing period has ended; the scheduler calls this.

    Rows an admin is changing right now are skipped (``SKIP LOCKED``); the next tick takes them.
    """
    when = _now(now)
    candidates = session.scalars(
        select(ChannelAccount)
        .where(ChannelAccount.status == TESTING, ChannelAccount.testing_started_at.is_not(None))
        .order_by(ChannelAccount.id)
        .with_for_update(skip_locked=True)
    ).all()
    promoted = []
    for account in candidates:
        ends = testing_ends_at(account)
        if ends is not None and ends <= when:
            account.live_at = when
            reason = f"the {account.testing_days}-day testing period ended"
            promoted.append(_move(session, account, GO_LIVE, LIVE, SCHEDULER, reason=reason))
    return promoted


def testing_ends_at(account: ChannelAccount) -> datetime | None:
    """When the testing period ends (paused time excluded so far), or None outside Testing."""
    in_testing = account.status == TESTING or (account.status == PAUSED and account.paused_from == TESTING)
    if not in_testing or account.testing_started_at is None:
        return None
    return _aware(account.testing_started_at) + timedelta(days=account.testing_days)


def days_left_in_testing(account: ChannelAccount, now: datetime | None = None) -> int | None:
    """Whole days (rounded up) until the account goes Live by itself; None when not in Testing.

    While paused the count stands still, as the pause does not count towards testing.
    """
    ends = testing_ends_at(account)
    if ends is None:
        return None
    reference = _aware(account.paused_at) if account.status == PAUSED and account.paused_at else _now(now)
    remaining = (ends - reference).total_seconds() / 86400
    return max(0, math.ceil(remaining))


# -- flows -----------------------------------------------------------------------------------------


def flows(account: ChannelAccount) -> dict[str, bool]:
    return {flow: bool(getattr(account, column)) for flow, column in _FLOW_COLUMNS.items()}


def set_flow(
    session: Session,
    account: ChannelAccount,
    flow: str,
    enabled: bool,
    actor: str,
    *,
    fulfilment_mandatory: bool = False,
) -> ChannelAccount:
    """Turn one flow on or off. Flows may be set in any status; they run only in Testing and Live.

    Rules:
    - ``fulfilments`` cannot be turned off when the channel makes fulfilment write-back mandatory
      (``Channel.fulfilment_mandatory``, passed in by the caller).
    - ``reconciler`` can only be on while ``listings`` is on: it corrects what the listings flow
      publishes, and with listings off it would remove every listing. Turning listings off
      therefore turns the reconciler off too (recorded as its own event).
    - Setting a flow to the value it already has changes nothing and records nothing.
    """
    if flow not in _FLOW_COLUMNS:
        raise ValidationError({"flow": [f"unknown flow {flow!r}; one of {', '.join(FLOWS)}"]}, field="flow")
    _lock(session, account)
    enabled = bool(enabled)
    if flow == "fulfilments" and not enabled and fulfilment_mandatory:
        raise IllegalTransition(
            f"Cannot turn Fulfilments off for {account.name!r}: the {account.plugin} channel requires "
            "carrier and tracking to be written back for every order."
        )
    if flow == "reconciler" and enabled and not account.listings_enabled:
        raise IllegalTransition(
            f"Cannot turn the Reconciler on for {account.name!r} while Listings is off: "
            "the reconciler corrects what the listings flow publishes. Turn Listings on first."
        )
    if flow == "listings" and not enabled and account.reconciler_enabled:
        _toggle(session, account, "reconciler", False, actor, reason="Listings was turned off")
    _toggle(session, account, flow, enabled, actor)
    return account


def is_third_party_managed(account: ChannelAccount) -> bool:
    """Orders of an account with Fulfilments off are fulfilled elsewhere: imported, never written back."""
    return not account.fulfilments_enabled


def _toggle(session: Session, account: ChannelAccount, flow: str, enabled: bool, actor: str, reason: str = "") -> None:
    column = _FLOW_COLUMNS[flow]
    if bool(getattr(account, column)) == enabled:
        return
    setattr(account, column, enabled)
    state = "on" if enabled else "off"
    message = f"{account.name}: {flow.capitalize()} turned {state}" + (f" ({reason})" if reason else "")
    data: dict[str, Any] = {"flow": flow, "enabled": enabled}
    if reason:
        data["reason"] = reason
    _emit(session, account, "account.flow", message, actor, data)


# -- creation and credentials ----------------------------------------------------------------------


def create_account(
    session: Session,
    organisation_id: int,
    name: str,
    plugin: str,
    environment: Environment | str,
    credentials: Mapping[str, Any],
    settings: Mapping[str, Any],
    box: CredentialBox,
    actor: str,
    *,
    fulfilment_mandatory: bool = False,
) -> ChannelAccount:
    """A new account in Setup with its credentials encrypted. Flows start off, except Fulfilments
    when the channel makes it mandatory."""
    name = (name or "").strip()
    errors = _creation_errors(session, organisation_id, name, plugin, environment)
    if errors:
        raise ValidationError(errors)
    account = ChannelAccount(
        organisation_id=organisation_id,
        name=name,
        plugin=plugin,
        environment=Environment(environment),
        settings=dict(settings),
        credentials_encrypted=box.encrypt(credentials) if credentials else None,
        status=SETUP,
        testing_days=defaults.TESTING_DAYS,
        fulfilments_enabled=fulfilment_mandatory,
    )
    session.add(account)
    session.flush()
    data = {"plugin": plugin, "environment": account.environment.value, "credential_fields": sorted(credentials)}
    _emit(session, account, "account.created", f"{name}: created ({plugin}, {account.environment.value})", actor, data)
    return account


def _creation_errors(
    session: Session, organisation_id: int, name: str, plugin: str, environment: Environment | str
) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["a name is required"]
    elif session.scalar(
        select(ChannelAccount.id).where(ChannelAccount.organisation_id == organisation_id, ChannelAccount.name == name)
    ):
        errors["name"] = [f"an account named {name!r} already exists"]
    if not plugin:
        errors["plugin"] = ["a channel is required"]
    try:
        Environment(environment)
    except ValueError:
        errors["environment"] = [f"must be one of {', '.join(e.value for e in Environment)}"]
    return errors


def update_credentials(
    session: Session,
    account: ChannelAccount,
    credentials: Mapping[str, Any],
    box: CredentialBox,
    actor: str,
    *,
    replace: bool = False,
) -> ChannelAccount:
    """Store new credentials, encrypted. By default the given fields are merged into the stored ones
    (a form that leaves a secret untouched need not send it back); a value of None removes a field.
    ``replace=True`` stores exactly ``credentials`` and also works when the old key is lost.

    The event records which fields changed, never their values.
    """
    _lock(session, account)
    old, readable = _stored_credentials(account, box, tolerate_lost_key=replace)
    new = {} if replace else dict(old)
    new.update(credentials)
    new = {name: value for name, value in new.items() if value is not None}
    if not new and account.status != SETUP:
        raise ValidationError(
            {"credentials": [f"{account.name!r} is {account.status.value}: its credentials cannot be emptied"]},
            field="credentials",
        )
    changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    if not changed and readable:
        return account
    account.credentials_encrypted = box.encrypt(new) if new else None
    what = ", ".join(changed) if changed else "unreadable ones replaced"
    message = f"{account.name}: credentials changed ({what})"
    _emit(session, account, "account.credentials", message, actor, {"fields": changed})
    return account


def account_credentials(account: ChannelAccount, box: CredentialBox) -> dict[str, Any]:
    """The decrypted credentials ({} when none are stored). Never log or render the result."""
    if not account.credentials_encrypted:
        return {}
    return box.decrypt(account.credentials_encrypted)


@dataclass(frozen=True)
class Rotation:
    """What :func:`rotate_credentials` did: accounts re-encrypted, and those no key could read."""

    rotated: list[int] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)


def rotate_credentials(session: Session, box: CredentialBox) -> Rotation:
    """Re-encrypt every account's credentials with the box's first key.

    Run after putting a new key first in ``CHANNELHUB_SECRET_KEY`` (``new,old``); once it reports no
    unreadable account the old key can be removed. An account none of the keys can read is left as
    it is and reported, so one broken account does not hold up the others; its admin re-enters them.
    """
    result = Rotation()
    query = select(ChannelAccount).where(ChannelAccount.credentials_encrypted.is_not(None)).order_by(ChannelAccount.id)
    for account in session.scalars(query.with_for_update()):
        try:
            account.credentials_encrypted = box.rotate(account.credentials_encrypted)  # type: ignore[arg-type]
        except ConfigurationError:
            result.unreadable.append(account.id)
        else:
            result.rotated.append(account.id)
    session.flush()
    return result


def _stored_credentials(
    account: ChannelAccount, box: CredentialBox, *, tolerate_lost_key: bool
) -> tuple[dict[str, Any], bool]:
    """The stored credentials and whether they could be read."""
    try:
        return account_credentials(account, box), True
    except ConfigurationError:
        if not tolerate_lost_key:
            raise
        return {}, False  # the key changed: replacing them is exactly how the admin recovers


# -- internals -----------------------------------------------------------------------------------


def _require_allowed(account: ChannelAccount, action: str) -> None:
    if account.status in ALLOWED_TRANSITIONS[action]:
        return
    label = ACTION_LABELS[action]
    reason = _REFUSALS.get((action, account.status))
    if reason is None:
        sources = ", ".join(status.value.capitalize() for status in ALLOWED_TRANSITIONS[action])
        reason = f"it is {account.status.value.capitalize()}, and {label} is possible only from {sources}."
    raise IllegalTransition(f"Cannot {label} {account.name!r}: {reason}")


def _move(
    session: Session, account: ChannelAccount, action: str, target: AccountStatus, actor: str, reason: str = ""
) -> ChannelAccount:
    source = account.status
    account.status = target
    data: dict[str, Any] = {"from": source.value, "to": target.value, "action": action}
    if reason:
        data["reason"] = reason
    message = f"{account.name}: {source.value} -> {target.value} ({reason or ACTION_LABELS[action]})"
    _emit(session, account, "account.transition", message, actor, data)
    return account


def _emit(session: Session, account: ChannelAccount, kind: str, message: str, actor: str, data: dict[str, Any]) -> None:
    emit(
        session,
        organisation_id=account.organisation_id,
        account_id=account.id,
        kind=kind,
        message=message,
        actor=actor,
        data=data,
    )


def _lock(session: Session, account: ChannelAccount) -> None:
    """Write pending changes, then re-read the row under a lock so the checks see the latest status."""
    if account not in session:
        session.add(account)
    session.flush()
    session.refresh(account, with_for_update=True)


def _now(now: datetime | None) -> datetime:
    return datetime.now(timezone.utc) if now is None else _aware(now)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for DateTime(timezone=True); the hub stores UTC only.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
