"""Starshipit records <-> canonical records. Pure functions, no I/O.

Outbound: a canonical Order becomes Starshipit's ``order`` body (destination, items, carrier).
Inbound: a shipped Starshipit order (plus, when the list lacks it, a ``/api/track`` result) becomes
a canonical Fulfilment with a canonical carrier code. A malformed remote record raises
ContractError naming the field; an order Starshipit cannot take raises RejectedItem naming it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from hub.carriers import canonical_carrier
from hub.errors import ContractError, RejectedItem
from hub.records import Fulfilment, FulfilmentLine, Order

from plugins.starshipit.rules import CourierChoice, ShipmentFacts

# Field limits from the Create Order operation.
ORDER_NUMBER_MAX = 50
REFERENCE_MAX = 50
SKU_MAX = 50
POST_CODE_MAX = 10
SHIPPING_METHOD_MAX = 100

# Starshipit wants the destination country as a full name ("Australia"). Unknown codes are sent
# as the ISO code itself: Starshipit accepts 2-100 characters and its rules match codes too.
COUNTRY_NAMES: dict[str, str] = {
    "AU": "Australia", "NZ": "New Zealand", "US": "United States", "GB": "United Kingdom", "CA": "Canada",
    "SG": "Singapore", "HK": "Hong Kong", "JP": "Japan", "CN": "China", "KR": "South Korea", "TW": "Taiwan",
    "MY": "Malaysia", "ID": "Indonesia", "TH": "Thailand", "PH": "Philippines", "VN": "Vietnam", "IN": "India",
    "AE": "United Arab Emirates", "DE": "Germany", "FR": "France", "IE": "Ireland", "NL": "Netherlands",
    "IT": "Italy", "ES": "Spain", "SE": "Sweden", "CH": "Switzerland", "FJ": "Fiji", "PG": "Papua New Guinea",
    "NC": "New Caledonia",
}

# Starshipit carrier codes and webhook display names that hub.carriers does not know. Checked
# first; everything else goes through hub.carriers.canonical_carrier. DHL eCommerce
# (`DHLGlobalMail`) is deliberately absent: it is not DHL Express, so it stays unknown.
LOCAL_CARRIERS: dict[str, str] = {
    "startrackcourier": "startrack",
    "teamglobalexpress": "toll",
    "tge": "toll",
    "mytoll": "toll",
    "tollnz": "toll",
    "auspostmail": "auspost",
    "mypostbusiness": "auspost",
    "australiaposteparcel": "auspost",
    "australiapostinternational": "auspost",
    "pace": "nzpost",
    "mynzpostbusiness": "nzpost",
    "dhlexpressgmb": "dhl",
    "fedexinternationalconnect": "fedex",
}

# tracking_status values (an enum) that mean the parcel has left, in the order they happen.
DISPATCHED_STATUSES = frozenset(
    {"Dispatched", "InTransit", "OutForDelivery", "Delivered", "PickupInStore", "AttemptedDelivery",
     "AwaitingCollection", "Exception"}
)


def to_canonical_carrier(name: str | None) -> str | None:
    """The canonical code for a Starshipit carrier code or display name; None when unknown."""
    if not name or not isinstance(name, str):
        return None
    folded = re.sub(r"[^a-z0-9]", "", name.lower())
    return LOCAL_CARRIERS.get(folded) or canonical_carrier(name)


# -- outbound ---------------------------------------------------------------


@dataclass(frozen=True)
class WeightPolicy:
    """Where item weights come from: the canonical order carries none."""

    default_kg: float
    by_sku: dict[str, float]

    def unit_weight(self, sku: str) -> float:
        return self.by_sku.get(sku, self.default_kg)


def shipment_facts(order: Order, weights: WeightPolicy) -> ShipmentFacts:
    """What the courier rules look at."""
    address = order.shipping_address
    weight = sum(weights.unit_weight(line.sku) * line.quantity for line in order.lines)
    return ShipmentFacts(country=address.country, state=address.region, weight_kg=round(weight, 3),
                         shipping_type=order.shipping_method)


def order_body(order: Order, courier: CourierChoice | None, weights: WeightPolicy) -> dict[str, Any]:
    """Starshipit's ``order`` object for a canonical order; RejectedItem names a field it cannot take."""
    _check_length(order.order_number, ORDER_NUMBER_MAX, "order_number", order.order_number)
    body: dict[str, Any] = {
        "order_number": order.order_number,
        "reference": _reference(order),
        "order_date": _utc(order.placed_at),
        "currency": order.currency,
        "destination": destination(order),
        "items": [_item(order, index, weights) for index in range(len(order.lines))],
    }
    method = (courier.shipping_method if courier and courier.shipping_method else order.shipping_method)
    if method:
        body["shipping_method"] = method[:SHIPPING_METHOD_MAX]
    if courier is not None:
        body["carrier"] = courier.carrier
        if courier.service_code:
            body["carrier_service_code"] = courier.service_code
    return {key: value for key, value in body.items() if value not in (None, "")}


def _reference(order: Order) -> str:
    # The marketplace's own order id, so a packer can find the order at the marketplace too.
    reference = order.channel_order_id if order.channel_order_id != order.order_number else order.note
    return reference[:REFERENCE_MAX]


def destination(order: Order) -> dict[str, Any]:
    address = order.shipping_address
    _check_length(address.postcode, POST_CODE_MAX, "shipping_address.postcode", order.order_number)
    fields = {
        "name": address.name,
        "company": address.company,
        "building": address.line2,
        "street": address.line1,
        # Australian labels print the suburb; the canonical address calls it city.
        "suburb": address.city,
        "city": address.city,
        "state": address.region,
        "post_code": address.postcode,
        "country": COUNTRY_NAMES.get(address.country.upper(), address.country),
        "phone": address.phone,
        "email": address.email or order.customer_email,
    }
    return {key: value for key, value in fields.items() if value}


def _item(order: Order, index: int, weights: WeightPolicy) -> dict[str, Any]:
    line = order.lines[index]
    _check_length(line.sku, SKU_MAX, f"lines.{index}.sku", order.order_number)
    item: dict[str, Any] = {
        "sku": line.sku,
        "description": line.title or line.sku,
        "quantity": line.quantity,
        "weight": weights.unit_weight(line.sku),
    }
    if line.unit_price is not None:
        item["value"] = float(line.unit_price)
    return item


def _check_length(value: str, limit: int, field: str, key: str) -> None:
    if len(value) > limit:
        raise RejectedItem(
            f"{field} {_short(value)} is {len(value)} characters; Starshipit accepts at most {limit}",
            key=key, field=field,
        )


def _utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(moment: datetime) -> str:
    """A UTC timestamp for ``since_*`` parameters."""
    return _utc(moment) or ""


# -- inbound ----------------------------------------------------------------


@dataclass(frozen=True)
class Shipment:
    """What Starshipit says about one shipped order, before it becomes a canonical Fulfilment."""

    order_id: str
    order_number: str
    carrier: str  # Starshipit code or display name, as given
    service: str
    tracking_number: str
    tracking_url: str
    status: str  # tracking_status enum; "" when the list did not say
    shipped_at: datetime | None
    lines: tuple[FulfilmentLine, ...]


def order_id_of(order: dict[str, Any]) -> str:
    value = order.get("order_id") if isinstance(order, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value in ("", 0):
        raise ContractError(f"Starshipit order without a usable order_id: {_short(value)}", detail={"field": "order_id"})
    return str(value)


def shipment_from_order(order: dict[str, Any]) -> Shipment:
    """Read a shipped order from ``/api/orders/shipped`` or ``/api/orders``; tracking may be blank."""
    if not isinstance(order, dict):
        raise ContractError(f"a Starshipit order must be an object, got {type(order).__name__}")
    number = _text(order, "order_number", required=True)
    package = _first_tracked_package(order.get("packages"))
    return Shipment(
        order_id=order_id_of(order),
        order_number=number,
        carrier=_text(order, "carrier") or _text(order, "carrier_name"),
        service=_text(package, "carrier_service_code") or _text(order, "carrier_service_code"),
        tracking_number=_text(package, "tracking_number"),
        tracking_url=_text(package, "tracking_url"),
        status=_text(package, "delivery_status"),
        shipped_at=_timestamp(package.get("label_created_date") or order.get("shipped_date")),
        lines=tuple(_lines(order.get("items"))),
    )


def merge_tracking(shipment: Shipment, results: dict[str, Any]) -> Shipment:
    """Fill what ``/api/track`` knows (tracking number, URL, status, service) into a shipment."""
    if not isinstance(results, dict):
        raise ContractError("Starshipit /api/track answered without a `results` object")
    return replace(
        shipment,
        carrier=shipment.carrier or _text(results, "carrier_name"),
        service=shipment.service or _text(results, "carrier_service"),
        tracking_number=shipment.tracking_number or _text(results, "tracking_number"),
        tracking_url=shipment.tracking_url or _text(results, "tracking_url"),
        status=_text(results, "tracking_status") or shipment.status,
        shipped_at=shipment.shipped_at or _timestamp(results.get("shipment_date")),
    )


def to_fulfilment(shipment: Shipment) -> Fulfilment:
    """The canonical Fulfilment. An unknown carrier is passed through as Starshipit named it, so the
    fulfilment flow reports it to the admin instead of the hub guessing."""
    if not shipment.tracking_number:
        raise ContractError(f"shipped order {shipment.order_number} has no tracking number",
                            detail={"field": "packages.tracking_number"})
    return Fulfilment(
        order_number=shipment.order_number,
        carrier=to_canonical_carrier(shipment.carrier) or shipment.carrier or "unknown",
        tracking_number=shipment.tracking_number,
        lines=list(shipment.lines),
        service=shipment.service,
        tracking_url=shipment.tracking_url,
        shipped_at=shipment.shipped_at,
        # A replaced label gives a new tracking number and so a new fulfilment binding.
        external_id=f"{shipment.order_id}:{shipment.tracking_number}",
    )


def _first_tracked_package(packages: Any) -> dict[str, Any]:
    if packages is None:
        return {}
    if not isinstance(packages, list):
        raise ContractError("Starshipit order `packages` must be a list", detail={"field": "packages"})
    tracked = [p for p in packages if isinstance(p, dict) and p.get("tracking_number")]
    return tracked[0] if tracked else {}


def _lines(items: Any) -> list[FulfilmentLine]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ContractError("Starshipit order `items` must be a list", detail={"field": "items"})
    lines = []
    for index, item in enumerate(items):
        sku = _text(item, "sku") if isinstance(item, dict) else ""
        quantity = item.get("quantity") if isinstance(item, dict) else None
        if not sku:
            continue  # Starshipit allows free-text items (e.g. a gift card) that match no SKU
        if isinstance(quantity, bool) or not isinstance(quantity, (int, float)) or quantity < 1:
            raise ContractError(f"Starshipit item {index} ({sku[:80]}) has no valid quantity: {_short(quantity)}",
                                detail={"field": f"items.{index}.quantity"})
        lines.append(FulfilmentLine(sku=sku, quantity=int(quantity)))
    return lines


def _text(record: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = record.get(key)
    if value is None or value == "":
        if required:
            raise ContractError(f"Starshipit record is missing `{key}`", detail={"field": key})
        return ""
    if isinstance(value, (dict, list, bool)):
        raise ContractError(f"Starshipit field `{key}` should be text, got {type(value).__name__}",
                            detail={"field": key})
    return str(value).strip()


def _short(value: Any, limit: int = 80) -> str:
    """A value for an error message: a 100 kB field must not become a 100 kB message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _timestamp(value: Any) -> datetime | None:
    """Starshipit timestamps are UTC, with or without a zone and with 2-7 fraction digits."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    text = re.sub(r"\.(\d{6})\d+", r".\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# -- webhooks ---------------------------------------------------------------


@dataclass(frozen=True)
class TrackingUpdate:
    order_number: str
    tracking_number: str
    tracking_status: str
    carrier: str | None  # canonical, or None when unknown
    carrier_name: str
    delivery_id: str


def tracking_update(payload: Any) -> TrackingUpdate:
    """Read a tracking webhook body. Starshipit has no event id, so the delivery id is a digest of
    the snapshot's identity: the same status reported twice is the same delivery."""
    if not isinstance(payload, dict):
        raise ContractError("a Starshipit tracking webhook must be a JSON object")
    number = _text(payload, "order_number", required=True)
    tracking = _text(payload, "tracking_number")
    status = _text(payload, "tracking_status")
    updated = _text(payload, "last_updated_date")
    digest = hashlib.sha256("|".join((number, tracking, status, updated)).encode()).hexdigest()[:32]
    name = _text(payload, "carrier_name")
    return TrackingUpdate(number, tracking, status, to_canonical_carrier(name), name, digest)
