"""Courier rules: validated with clear errors, and the first matching rule picks the carrier."""

from __future__ import annotations

from typing import Any

import pytest

from hub.errors import ValidationError
from plugins.starshipit.channel import StarshipitChannel
from plugins.starshipit.mapping import WeightPolicy, shipment_facts
from plugins.starshipit.rules import choose_courier, courier_choice, courier_rule
from tests.plugins.starshipit.helpers import make_order

RULES: list[dict[str, Any]] = [
    {"name": "international", "countries": ["nz", "US"], "carrier": "DHL", "service_code": "P"},
    {"name": "express", "shipping_types": ["Express"], "carrier": "StarTrack", "service_code": "EXP"},
    {"name": "heavy WA", "states": ["WA"], "min_weight_kg": 5, "carrier": "Fastways"},
    {"name": "light", "max_weight_kg": 0.5, "carrier": "Sendle"},
]
SETTINGS: dict[str, Any] = {"courier_rules": RULES, "default_courier": {"carrier": "AusPost", "service_code": "7B05"},
                            "default_item_weight_kg": 0.4}


def pick(order: Any) -> tuple[str, str]:
    config = StarshipitChannel.validate_settings(SETTINGS)
    rules = [courier_rule(rule) for rule in config["courier_rules"]]
    weights = WeightPolicy(config["default_item_weight_kg"], {})
    choice, why = choose_courier(rules, courier_choice(config["default_courier"]), shipment_facts(order, weights))
    assert choice is not None
    return choice.carrier, why


@pytest.mark.parametrize("order,carrier,why", [
    (make_order(country="NZ", region="Auckland"), "DHL", "rule 1 (international)"),
    # international wins over express: the first match wins
    (make_order(country="US", shipping_method="express"), "DHL", "rule 1 (international)"),
    (make_order(shipping_method="EXPRESS "), "StarTrack", "rule 2 (express)"),
    (make_order(region="WA", quantity=13), "Fastways", "rule 3 (heavy WA)"),  # 5.2 kg
    (make_order(region="WA", quantity=2), "AusPost", "default courier"),  # 0.8 kg: not heavy, not light
    (make_order(region="VIC", quantity=1), "Sendle", "rule 4 (light)"),  # 0.4 kg
    (make_order(region="VIC", quantity=3), "AusPost", "default courier"),
])
def test_courier_rules_pick_the_expected_carrier(order: Any, carrier: str, why: str) -> None:
    assert pick(order) == (carrier, why)


def test_without_a_default_starshipit_chooses() -> None:
    rules = [courier_rule(StarshipitChannel.validate_settings({"courier_rules": [RULES[0]]})["courier_rules"][0])]
    facts = shipment_facts(make_order(country="AU"), WeightPolicy(0.5, {}))
    choice, why = choose_courier(rules, None, facts)
    assert choice is None and "Starshipit's own rules" in why


def test_sku_weights_override_the_default_weight() -> None:
    facts = shipment_facts(make_order(quantity=2, sku="COAT-1"), WeightPolicy(0.5, {"COAT-1": 2.25}))
    assert facts.weight_kg == 4.5


@pytest.mark.parametrize("rule,field,text", [
    ({"countries": ["AU"], "carrier": "auspost"}, "courier_rules.0.carrier", "write 'AusPost'"),
    ({"countries": ["AU"], "carrier": "Australia Post"}, "courier_rules.0.carrier", "not a Starshipit carrier code"),
    ({"countries": ["AU"], "carrier": "StarTrak"}, "courier_rules.0.carrier", "Did you mean 'StarTrack'"),
    ({"countries": ["Australia"], "carrier": "AusPost"}, "courier_rules.0.countries.0", "ISO 3166"),
    ({"carrier": "AusPost"}, "courier_rules.0.countries", "at least one condition"),
    ({"min_weight_kg": 5, "max_weight_kg": 1, "carrier": "AusPost"}, "courier_rules.0.max_weight_kg", "min_weight_kg"),
    ({"min_weight_kg": -1, "carrier": "AusPost"}, "courier_rules.0.min_weight_kg", "greater than or equal to 0"),
    ({"states": ["NSW"]}, "courier_rules.0.carrier", "required"),
    ({"states": ["NSW"], "carrier": "AusPost", "colour": "red"}, "courier_rules.0.colour", "Unknown field"),
])
def test_bad_rules_are_refused_naming_the_field(rule: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StarshipitChannel.validate_settings({"courier_rules": [rule]})
    flat = _flatten(caught.value.messages)
    assert field in flat, flat
    assert text in " ".join(flat[field])


def test_bad_tier_and_default_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        StarshipitChannel.validate_settings({"tier": "enterprise", "default_courier": {"carrier": "Fastway"}})
    flat = _flatten(caught.value.messages)
    assert "developer" in " ".join(flat["tier"]) and "Fastways" in " ".join(flat["default_courier.carrier"])


def test_loaded_settings_stay_plain_data_and_reload_the_same() -> None:
    loaded = StarshipitChannel.validate_settings(SETTINGS)
    assert StarshipitChannel.validate_settings(loaded) == loaded
    assert isinstance(loaded["courier_rules"][0], dict)


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: [str(m) for m in (messages if isinstance(messages, list) else [messages])]}
