"""Courier rules: which Starshipit carrier and service an order is sent with.

An admin sets the rules in the hub (the account's settings), not in Starshipit, so the choice is
visible next to the marketplace that produced the order. Each rule has conditions on the
destination country, state, parcel weight or the marketplace's shipping type, and one action
(carrier code, service code, shipping method). Conditions in a rule must all hold; the values
listed in one condition are alternatives. The first matching rule wins; otherwise the default.

The module is pure: marshmallow schemas that validate what the admin typed (they load plain data,
so the settings stay JSON), the dataclasses built from it, and a function that picks a rule for
facts already computed from the order.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

# Starshipit's carrier codes (the value of `carrier` on an order). The Update Order enum and the
# typed client agree on these; a rule naming anything else would be refused by Starshipit later,
# so it is refused here, when the admin can still fix it.
STARSHIPIT_CARRIER_CODES: tuple[str, ...] = (
    "AusPost", "StarTrack", "StarTrackCourier", "Fastways", "CouriersPlease", "Sendle", "DHL", "TNT",
    "TollPriority", "TollIPEC", "MyToll", "TollNZ", "CourierPost", "NZPost", "Pace", "MyNZPostBusiness",
    "PostHaste", "CastleParcels", "NZCouriers", "NOW", "Sub60", "PlainLabel", "PlainLabel2", "PlainLabel3",
    "PlainLabel4", "PlainLabel5", "UPS", "Urgent", "DPDNL", "PBT", "DHLGlobalMail", "HunterExpress",
    "InXpress", "QuantiumSolutions", "QuantiumSolutionsNZ", "PickupInStore", "PackAndSend", "Seko",
    "Zoom2u", "DHLParcelEurope", "DPDLocalUK", "DPDUK", "RoyalMail", "DeutschePost", "USPS", "DHLUS",
    "SingaporePost", "DHLParcelUK", "BorderExpress", "Hermes", "MyPostBusiness", "Sherpa", "FedEx",
    "Rendr", "Uber", "DirectFreight", "AmazonEasyShip", "AlliedExpress", "AmazonShipping", "AusPostMail",
    "DHLExpressGMB", "FedExInternationalConnect",
)
_CODES_BY_FOLDED = {code.lower(): code for code in STARSHIPIT_CARRIER_CODES}


def _check_carrier(value: str) -> None:
    if value in STARSHIPIT_CARRIER_CODES:
        return
    folded = _CODES_BY_FOLDED.get(value.lower())
    if folded:
        raise ValidationError(f"Starshipit carrier codes are case-sensitive: write {folded!r}, not {value!r}.")
    close = difflib.get_close_matches(value, STARSHIPIT_CARRIER_CODES, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValidationError(
        f"{value!r} is not a Starshipit carrier code.{hint} Use the code (e.g. 'AusPost', 'Fastways' for Aramex), "
        "not the display name."
    )


class CourierChoiceSchema(Schema):
    """The action of a rule (or the default): what Starshipit ships the order with."""

    carrier = fields.String(required=True, validate=_check_carrier,
                            metadata={"description": "Starshipit carrier code, e.g. AusPost, StarTrack, Fastways"})
    service_code = fields.String(load_default="", validate=validate.Length(max=20),
                                 metadata={"description": "carrier_service_code, e.g. 7B05 (AusPost), EXP (StarTrack)"})
    shipping_method = fields.String(load_default="", validate=validate.Length(max=100),
                                    metadata={"description": "Starshipit shipping_method; blank = the marketplace's"})


class CourierRuleSchema(CourierChoiceSchema):
    """One rule: conditions (all must hold) and the courier they choose."""

    name = fields.String(load_default="", validate=validate.Length(max=100))
    countries = fields.List(
        fields.String(validate=validate.Regexp(r"^\s*[A-Za-z]{2}\s*$", error="must be an ISO 3166 two-letter code")),
        load_default=list, metadata={"description": "destination countries (ISO codes); any of them"})
    states = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list,
                         metadata={"description": "destination states/regions, e.g. NSW; any of them"})
    min_weight_kg = fields.Float(load_default=None, allow_none=True, allow_nan=False, validate=validate.Range(min=0))
    max_weight_kg = fields.Float(load_default=None, allow_none=True, allow_nan=False, validate=validate.Range(min=0))
    shipping_types = fields.List(fields.String(validate=validate.Length(min=1)), load_default=list,
                                 metadata={"description": "the marketplace's shipping type, e.g. express; any of them"})

    @validates_schema
    def check_conditions(self, data: dict[str, Any], **_: Any) -> None:
        low, high = data.get("min_weight_kg"), data.get("max_weight_kg")
        if low is not None and high is not None and low > high:
            raise ValidationError(f"must not be below min_weight_kg ({low} kg)", field_name="max_weight_kg")
        conditions = ("countries", "states", "shipping_types", "min_weight_kg", "max_weight_kg")
        if not any(data.get(name) not in (None, []) for name in conditions):
            raise ValidationError(
                "a rule needs at least one condition (countries, states, min_weight_kg, max_weight_kg or "
                "shipping_types); use default_courier for the catch-all", field_name="countries")


@dataclass(frozen=True)
class CourierChoice:
    carrier: str
    service_code: str = ""
    shipping_method: str = ""


@dataclass(frozen=True)
class CourierRule:
    choice: CourierChoice
    name: str = ""
    countries: list[str] | tuple[str, ...] = ()
    states: list[str] | tuple[str, ...] = ()
    min_weight_kg: float | None = None
    max_weight_kg: float | None = None
    shipping_types: list[str] | tuple[str, ...] = ()

    def matches(self, facts: ShipmentFacts) -> bool:
        return (
            _in(facts.country, self.countries)
            and _in(facts.state, self.states)
            and _in(facts.shipping_type, self.shipping_types)
            and (self.min_weight_kg is None or facts.weight_kg >= self.min_weight_kg)
            and (self.max_weight_kg is None or facts.weight_kg <= self.max_weight_kg)
        )


@dataclass(frozen=True)
class ShipmentFacts:
    """What the rules look at, computed from a canonical order."""

    country: str
    state: str
    weight_kg: float
    shipping_type: str


def _in(value: str, allowed: list[str] | tuple[str, ...]) -> bool:
    """An empty condition holds for everything; otherwise compare without case or outer spaces."""
    if not allowed:
        return True
    folded = value.strip().casefold()
    return any(folded == candidate.strip().casefold() for candidate in allowed)


def choose_courier(rules: list[CourierRule], default: CourierChoice | None, facts: ShipmentFacts) -> tuple[CourierChoice | None, str]:
    """The courier for an order and why (the rule's name or position), first match winning."""
    for position, rule in enumerate(rules, start=1):
        if rule.matches(facts):
            return rule.choice, f"rule {position}" + (f" ({rule.name})" if rule.name else "")
    if default is not None:
        return default, "default courier"
    return None, "no rule matched and no default: Starshipit's own rules choose"


def courier_choice(data: dict[str, Any]) -> CourierChoice:
    return CourierChoice(data["carrier"], data.get("service_code", ""), data.get("shipping_method", ""))


def courier_rule(data: dict[str, Any]) -> CourierRule:
    """A rule from data already loaded by CourierRuleSchema."""
    return CourierRule(
        choice=courier_choice(data), name=data.get("name", ""),
        countries=tuple(data.get("countries", ())), states=tuple(data.get("states", ())),
        min_weight_kg=data.get("min_weight_kg"), max_weight_kg=data.get("max_weight_kg"),
        shipping_types=tuple(data.get("shipping_types", ())),
    )
