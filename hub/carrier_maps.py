"""Carrier mapping and tracking-number checks, used before a shipment is written to a marketplace.

A shipment arrives from a fulfilment system with a *canonical* carrier code (``hub.carriers``:
``auspost``, ``startrack``...). Each marketplace account has a CarrierMap saying which of the
marketplace's own provider names that carrier is (The Iconic wants the exact ``name`` from its
shipment-provider list). A carrier without a mapping is never guessed: the admin gets an error that
says which carrier and which account, and where to add the mapping.

Tracking numbers are checked before anything is sent, because marketplaces answer a bad one with an
opaque code (The Iconic: ``E026 invalid tracking number``) and some keep the bad value.
Allowed: ASCII letters, digits and the dash ``-``, 4 to 60 characters. Spaces (a pasted number with a
stray space is the most common mistake) and every other character are refused with the reason.
"""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.carriers import CANONICAL_CARRIERS, canonical_carrier
from hub.errors import ValidationError
from hub.models import CarrierMap, ChannelAccount

TRACKING_MIN_LENGTH = 4  # shorter than any real consignment number: a typo or a placeholder
TRACKING_MAX_LENGTH = 60  # the longest formats in use (e.g. DHL piece ids) are well under this
_TRACKING_ALLOWED = re.compile(r"^[A-Za-z0-9-]+$")
TRACKING_ALLOWED_DESCRIPTION = "letters A-Z, digits 0-9 and the dash '-'"


class UnknownCarrier(ValidationError):
    """The shipment's carrier has no mapping on the marketplace account."""

    def __init__(self, carrier: str, account_name: str) -> None:
        self.carrier = carrier
        super().__init__(
            {"carrier": [f"carrier {carrier!r} has no mapping for account {account_name!r}: add it under Carrier mapping"]},
            field="carrier",
        )


class InvalidTracking(ValidationError):
    """The tracking number would be refused by the marketplace (or is plainly wrong)."""

    def __init__(self, tracking: str, reason: str) -> None:
        self.tracking = tracking
        self.reason = reason
        super().__init__({"tracking_number": [f"tracking number {tracking!r} {reason}"]}, field="tracking_number")


# -- carriers ------------------------------------------------------------------------------------


def carrier_code(carrier: str) -> str:
    """The canonical code for a carrier as a shipment names it; an unknown name stays as it is."""
    if carrier in CANONICAL_CARRIERS:
        return carrier
    return canonical_carrier(carrier) or carrier.strip()


def lookup(session: Session, account: ChannelAccount, carrier: str) -> CarrierMap:
    """The account's mapping for ``carrier`` (a canonical code, or any spelling of one).

    Raises ``UnknownCarrier`` naming the carrier and the account when there is none.
    """
    code = carrier_code(carrier or "")
    names = {code.lower(), (carrier or "").strip().lower()} - {""}
    mapping = session.scalar(
        select(CarrierMap)
        .where(CarrierMap.account_id == account.id, func.lower(CarrierMap.source_carrier).in_(names))
        .order_by(CarrierMap.id)
        .limit(1)
    )
    if mapping is None:
        raise UnknownCarrier(carrier or "(none)", account.name)
    return mapping


def set_mapping(
    session: Session, account: ChannelAccount, source_carrier: str, channel_carrier: str, tracking_url_template: str = ""
) -> CarrierMap:
    """Map a carrier (stored as its canonical code when it is a known one) to the marketplace's name."""
    code = carrier_code(source_carrier)
    if not code or not channel_carrier.strip():
        raise ValidationError({"carrier": ["both the carrier and the marketplace's provider name are required"]}, field="carrier")
    mapping = session.scalar(select(CarrierMap).where(CarrierMap.account_id == account.id, CarrierMap.source_carrier == code))
    if mapping is None:
        mapping = CarrierMap(account_id=account.id, source_carrier=code)
        session.add(mapping)
    mapping.channel_carrier = channel_carrier.strip()
    mapping.tracking_url_template = tracking_url_template
    session.flush()
    return mapping


def tracking_url(mapping: CarrierMap, tracking: str, given: str = "") -> str:
    """The shipment's own tracking URL, else the mapping's template with ``{tracking}`` filled in."""
    if given:
        return given
    if mapping.tracking_url_template and "{tracking}" in mapping.tracking_url_template:
        return mapping.tracking_url_template.replace("{tracking}", tracking)
    return ""


# -- tracking numbers ----------------------------------------------------------------------------


def tracking_problem(tracking: str | None) -> str | None:
    """Why the tracking number would be refused, or None when it is acceptable."""
    if not tracking:
        return "is empty"
    for position, character in enumerate(tracking, start=1):
        if character.isspace():
            kind = "a space" if character == " " else f"whitespace ({unicodedata.name(character, repr(character))})"
            return f"contains {kind} at position {position}: remove it"
        if not _TRACKING_ALLOWED.fullmatch(character):
            return f"contains {character!r} at position {position}; only {TRACKING_ALLOWED_DESCRIPTION} are allowed"
    if len(tracking) < TRACKING_MIN_LENGTH:
        return f"is too short ({len(tracking)} characters; at least {TRACKING_MIN_LENGTH})"
    if len(tracking) > TRACKING_MAX_LENGTH:
        return f"is too long ({len(tracking)} characters; at most {TRACKING_MAX_LENGTH})"
    return None


def validate_tracking(tracking: str | None) -> str:
    """Return the tracking number unchanged, or raise ``InvalidTracking`` with the reason."""
    problem = tracking_problem(tracking)
    if problem is not None:
        raise InvalidTracking(tracking or "", problem)
    return tracking  # type: ignore[return-value]
