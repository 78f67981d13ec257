"""Canonical carrier codes: the one vocabulary between fulfilment systems and marketplaces.

A fulfilment plugin maps its own carrier names onto these codes (Starshipit's ``Fastways`` is
``aramex``; Uphance's ``australia_post`` is ``auspost``); a marketplace account's CarrierMap maps
them onto the provider names that marketplace accepts. An unknown name stays unknown rather than
being guessed, and the fulfilment flow reports it to the admin.
"""

from __future__ import annotations

import re

CANONICAL_CARRIERS: dict[str, str] = {
    "auspost": "Australia Post",
    "startrack": "StarTrack",
    "aramex": "Aramex (formerly Fastway)",
    "couriersplease": "CouriersPlease",
    "sendle": "Sendle",
    "dhl": "DHL Express",
    "tnt": "TNT",
    "toll": "Toll",
    "fedex": "FedEx",
    "ups": "UPS",
    "nzpost": "NZ Post",
    "allied": "Allied Express",
    "hunter": "Hunter Express",
    "directfreight": "Direct Freight Express",
}

# Names seen in the wild for each canonical code, compared after normalising case and punctuation.
_ALIASES: dict[str, tuple[str, ...]] = {
    "auspost": ("australia post", "australia_post", "auspost", "ap", "eparcel", "australiapost"),
    "startrack": ("startrack", "star track", "star_track", "startrack express"),
    "aramex": ("aramex", "fastway", "fastways", "aramex australia"),
    "couriersplease": ("couriers please", "couriersplease", "couriers_please", "cpl"),
    "sendle": ("sendle",),
    "dhl": ("dhl", "dhl express", "dhl_express"),
    "tnt": ("tnt", "tnt express", "tnt australia"),
    "toll": ("toll", "toll ipec", "toll priority"),
    "fedex": ("fedex", "fed ex"),
    "ups": ("ups",),
    "nzpost": ("nz post", "nzpost", "new zealand post", "courierpost"),
    "allied": ("allied", "allied express"),
    "hunter": ("hunter", "hunter express"),
    "directfreight": ("direct freight", "direct freight express", "directfreight"),
}

_LOOKUP = {re.sub(r"[^a-z0-9]", "", alias): code for code, aliases in _ALIASES.items() for alias in aliases}


def canonical_carrier(name: str | None) -> str | None:
    """The canonical code for a carrier name as some system spells it, or None when unknown."""
    if not name:
        return None
    return _LOOKUP.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def carrier_title(code: str) -> str:
    return CANONICAL_CARRIERS.get(code, code)
