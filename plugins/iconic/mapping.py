"""The Iconic's v2 records <-> canonical records. Pure functions: no HTTP, no settings lookups.

Malformed remote records raise ContractError naming the field; a listing The Iconic cannot take
raises RejectedItem naming the listing field to fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from hub.errors import ContractError, RejectedItem, ValidationError
from hub.records import Address, Listing, Order, OrderLine, validate_record

# Naive v2 timestamps are read as THE ICONIC's local time (the legacy API's convention).
ICONIC_TZ = ZoneInfo("Australia/Sydney")
COUNTRIES = {"australia": "AU", "new zealand": "NZ"}

# Item status -> canonical line status. One Iconic order item is one unit.
LINE_STATUS = {
    "pending": "open", "payment_pending": "open", "ready_to_ship": "open",
    "shipped": "shipped", "delivered": "shipped", "return_rejected": "shipped",
    "canceled": "cancelled", "failed": "failed",
    "returned": "returned", "return_shipped_by_customer": "returned",
    "return_waiting_for_approval": "returned", "return_delivered": "returned",
}
# Listing fields that feed attributes of the same (normalised) name.
BUILTIN_ATTRIBUTES = {"gender": "gender", "colour": "colour", "color": "colour", "colorfamily": "colour",
                      "colourfamily": "colour"}


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# -- time, money, places ------------------------------------------------------------------------


def parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or not value:
        raise ContractError(f"{where}: missing date-time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ContractError(f"{where}: '{value}' is not a date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ICONIC_TZ)


def money(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ContractError(f"{where}: '{value}' is not an amount") from None
    return str(amount.quantize(Decimal("0.01")))


def country_code(value: Any, where: str) -> str:
    text = str(value or "").strip()
    if re.fullmatch(r"[A-Za-z]{2}", text):
        return text.upper()
    code = COUNTRIES.get(text.lower())
    if code is None:
        raise ContractError(f"{where}: unknown country '{text}'")
    return code


# -- orders -------------------------------------------------------------------------------------


def address_from_remote(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ContractError(f"{where}: missing address")
    lines = [str(line) for line in (data.get("address") or []) if line]
    phones = data.get("phone") or []
    return {
        "name": " ".join(str(p) for p in (data.get("firstName"), data.get("lastName")) if p),
        "line1": lines[0] if lines else "",
        "line2": ", ".join(lines[1:]),
        "city": str(data.get("city") or ""),
        "region": str(data.get("region") or ""),
        "postcode": str(data.get("postCode") or ""),
        "country": country_code(data.get("country"), f"{where}.country"),
        "phone": str(phones[0] if isinstance(phones, list) and phones else phones or ""),
        "email": str(data.get("email") or ""),
    }


def group_lines(items: Iterable[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """One canonical line per (seller SKU, line status); every unit's item id is kept for write-back."""
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for index, item in enumerate(items):
        product = item.get("product") if isinstance(item, dict) else None
        sku = product.get("sellerSku") if isinstance(product, dict) else None
        if not sku or "id" not in item:
            raise ContractError(f"{where}.items.{index}: an order item needs id and product.sellerSku")
        status = LINE_STATUS.get(str(item.get("status")))
        if status is None:
            raise ContractError(f"{where}.items.{index}.status: unknown status '{item.get('status')}'")
        line = lines.setdefault((sku, status), {
            "sku": sku, "quantity": 0, "title": str(product.get("name") or ""), "status": status,
            "unit_price": money(item.get("paidPrice", item.get("unitPrice")), f"{where}.items.{index}.paidPrice"),
            "channel_line_ids": [],
        })
        line["quantity"] += 1
        line["channel_line_ids"].append(str(item["id"]))
    return list(lines.values())


def order_status(line_statuses: list[str]) -> str:
    """The canonical order status from its lines: open lines keep it new."""
    if "open" in line_statuses or not line_statuses:
        return "new"
    if all(status == "cancelled" for status in line_statuses):
        return "cancelled"
    if any(status in ("returned", "failed") for status in line_statuses):
        return "returned"
    return "shipped"


def order_from_remote(order: dict[str, Any], items: list[dict[str, Any]]) -> Order:
    number = order.get("number")
    where = f"order {number}"
    if not number or "id" not in order:
        raise ContractError("an order needs id and number", detail={k: order.get(k) for k in ("id", "number")})
    if not items:
        raise ContractError(f"{where}: The Iconic returned the order without order items")
    addresses = order.get("address") if isinstance(order.get("address"), dict) else {}
    shipping = address_from_remote(addresses.get("shipping"), f"{where}.address.shipping")
    billing = address_from_remote(addresses["billing"], f"{where}.address.billing") if addresses.get("billing") else None
    lines = group_lines(items, where)
    customer = order.get("customer") or {}
    # Built typed and checked in place (hub.records.validate_record): every scheduled pull maps the
    # whole re-read window, and parsing it back through the schema was half of an idle orders run's
    # CPU. A record the check doubts takes the schema round trip, which words the error.
    record = Order(
        channel_order_id=str(order["id"]), order_number=str(number),
        lines=[OrderLine(**{**line, "unit_price": _decimal(line["unit_price"])}) for line in lines],
        shipping_address=Address(**shipping), billing_address=Address(**billing) if billing else None,
        placed_at=parse_time(order.get("createdAt"), f"{where}.createdAt"),
        changed_at=_changed_at(order, items, where),
        status=order_status([line["status"] for line in lines]),
        currency=str(order.get("currency") or "AUD"),
        customer_name=" ".join(str(p) for p in (customer.get("firstName"), customer.get("lastName")) if p),
        customer_email=(billing or shipping)["email"],
        total=_decimal(money(order.get("grandTotal"), f"{where}.grandTotal")),
        raw={**order, "items": items},
    )
    try:
        validate_record(record)
    except ValidationError as error:
        raise ContractError(f"{where}: {error}", detail=error.messages) from None
    return record


def _changed_at(order: dict[str, Any], items: list[dict[str, Any]], where: str) -> datetime:
    """The latest update of the order or any of its items: the orders cursor follows it."""
    stamps = [order.get("updatedAt"), *(item.get("updatedAt") for item in items)]
    times = [parse_time(stamp, f"{where}.updatedAt") for stamp in stamps if stamp]
    return max(times) if times else parse_time(order.get("createdAt"), f"{where}.createdAt")


# -- listings -----------------------------------------------------------------------------------


def find_category(tree: list[dict[str, Any]], wanted: str) -> int | None:
    """A leaf category id by id, full path ("Women > Dresses") or a leaf name that is unique."""
    leaves: list[tuple[int, list[str]]] = []

    def walk(nodes: list[dict[str, Any]], path: list[str]) -> None:
        for node in nodes:
            here = [*path, str(node.get("name", ""))]
            children = node.get("children") or []
            if children:
                walk(children, here)
            else:
                leaves.append((int(node["id"]), here))

    walk(tree, [])
    text = wanted.strip()
    if text.isdigit():
        return next((cid for cid, _ in leaves if cid == int(text)), None)
    target = [normalise(part) for part in re.split(r">|/", text) if part.strip()]
    matches = [cid for cid, path in leaves if [normalise(p) for p in path[-len(target):]] == target]
    return matches[0] if len(matches) == 1 else None


def attribute_values(listing: Listing, attributes: list[dict[str, Any]], category: str) -> dict[str, Any]:
    """The ``attributes`` object of a product set, keyed by attribute id; RejectedItem if one is missing."""
    given = {normalise(key): value for key, value in listing.attributes.items()}
    values: dict[str, Any] = {}
    for attribute in attributes:
        names = {normalise(str(attribute.get(k) or "")) for k in ("name", "label", "feedName")} - {""}
        value = _listing_value(listing, given, names)
        label = str(attribute.get("label") or attribute.get("name"))
        field = _field_for(names)
        if value in (None, ""):
            if attribute.get("isMandatory"):
                raise RejectedItem(f"{label} is missing; The Iconic requires it for category {category}",
                                   key=listing.sku, field=field)
            continue
        values[str(attribute["id"])] = _option_id(value, attribute, label, listing.sku, field)
    return values


def _listing_value(listing: Listing, given: dict[str, Any], names: set[str]) -> Any:
    for name in names:
        if name in given:
            return given[name]
        if name in BUILTIN_ATTRIBUTES:
            return getattr(listing, BUILTIN_ATTRIBUTES[name])
    return None


def _field_for(names: set[str]) -> str:
    builtin = next((BUILTIN_ATTRIBUTES[n] for n in sorted(names) if n in BUILTIN_ATTRIBUTES), None)
    return builtin or f"attributes.{sorted(names)[0]}"


def _option_id(value: Any, attribute: dict[str, Any], label: str, sku: str, field: str) -> Any:
    options = attribute.get("options") or []
    if not options:
        return value
    for option in options:
        if normalise(str(option.get("name"))) == normalise(str(value)) or option.get("id") == value:
            return option["id"]
    allowed = ", ".join(str(o.get("name")) for o in options)
    raise RejectedItem(f"{label} '{value}' is not accepted by The Iconic; use one of: {allowed}", key=sku, field=field)


def check_prices(listing: Listing) -> None:
    if listing.price <= 0:
        raise RejectedItem("price must be above 0 on The Iconic", key=listing.sku, field="price")
    if listing.sale_price is not None and listing.sale_price >= listing.price:
        raise RejectedItem("sale price must be below the price", key=listing.sku, field="sale_price")


def product_fields(listing: Listing) -> dict[str, Any]:
    """The product (variation) part of a create call."""
    return {"sellerSku": listing.sku, "variation": listing.size or "One Size", "name": listing.title,
            "productIdentifier": listing.barcode, "status": "active" if listing.active else "inactive"}


def product_set_body(listing: Listing, brand_id: int, category_id: int, attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        **product_fields(listing), "parentSku": listing.parent_sku, "brandId": brand_id,
        "primaryCategoryId": category_id, "description": listing.description, "attributes": attributes,
        "price": float(listing.price), "salePrice": _float(listing.sale_price),
    }


def price_row(listing: Listing, product_id: int, current: dict[str, Any] | None, country: str,
              keep_marketplace_sale: bool) -> dict[str, Any]:
    """Every price field, always: The Iconic writes an omitted one as NULL and so ends a running sale.

    With ``keep_marketplace_sale`` a sale set in Seller Center survives when the hub has none.
    """
    current = current or {}
    sale_price = _float(listing.sale_price)
    keep = sale_price is None and keep_marketplace_sale and current.get("salePrice") is not None \
        and float(current["salePrice"]) < float(listing.price)
    if keep:
        sale_price = float(current["salePrice"])
    carry_dates = sale_price is not None and current.get("salePrice") is not None
    return {"productId": product_id, "country": country, "price": float(listing.price), "salePrice": sale_price,
            "saleStartDate": current.get("saleStartDate") if carry_dates else None,
            "saleEndDate": current.get("saleEndDate") if carry_dates else None}


def quantity_to_write(free_quantity: int, reserved: int) -> int:
    """The ``quantity`` to send so that The Iconic's ``available`` equals the hub's free quantity.

    The Iconic shows ``quantity - reservedStock``; the hub's free quantity already excludes those
    reserved units (held back while the order waits, then gone from the source once routed), so they
    are added back rather than subtracted twice.
    """
    return max(0, free_quantity) + max(0, reserved)


def listing_from_remote(product_set: dict[str, Any], product: dict[str, Any], stock: dict[str, Any] | None) -> Listing:
    """What The Iconic shows for one product, in the hub's terms (quantity = available to sell)."""
    sku = product.get("sellerSku")
    if not sku or "id" not in product:
        raise ContractError(f"product set {product_set.get('id')}: a product needs id and sellerSku")
    where = f"product {sku}"
    stock = stock or {}
    brand, category = product_set.get("brand") or {}, product_set.get("primaryCategory") or {}
    return Listing(
        sku=sku, parent_sku=str(product_set.get("parentSku") or product_set.get("sellerSku") or sku),
        title=str(product.get("name") or product_set.get("name") or sku),
        price=Decimal(money(product.get("price"), f"{where}.price") or "0"),
        sale_price=_decimal(money(product.get("salePrice"), f"{where}.salePrice")),
        quantity=max(0, int(stock.get("available", stock.get("quantity", 0)) or 0)),
        description=str(product_set.get("description") or ""), brand=str(brand.get("name") or ""),
        category=str(category.get("name") or ""), barcode=str(product.get("productIdentifier") or ""),
        size=str(product.get("variation") or ""), active=product.get("status") == "active",
        external_id=str(product["id"]),
        attributes={"status": product.get("status"), "approval_status": product.get("approvalStatus"),
                    "shop_sku": product.get("shopSku"), "product_set_id": product_set.get("id"),
                    "reserved": int(stock.get("reservedStock", 0) or 0)},
    )


def approval_message(product: dict[str, Any]) -> str:
    status = product.get("approvalStatus")
    return "pending approval" if status == "pending" else ("" if status in (None, "approved") else str(status))


# -- fulfilment ---------------------------------------------------------------------------------


def provider_name(carrier: str, providers: list[dict[str, Any]]) -> str | None:
    """The provider name as The Iconic spells it, matched without regard to case or spacing."""
    wanted = normalise(carrier)
    return next((str(p["name"]) for p in providers if normalise(str(p.get("name", ""))) == wanted), None)


def reason_name(reason: str, reasons: list[dict[str, Any]], kind: str) -> str | None:
    wanted = normalise(reason)
    return next((str(r["name"]) for r in reasons
                 if r.get("type") == kind and normalise(str(r.get("name", ""))) == wanted), None)


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
