"""Shopify records <-> canonical records: pure functions, no I/O.

Remote shapes are the GraphQL Admin API 2026-07 shapes (camelCase, ``gid://shopify/...`` ids) and,
for webhooks, the REST representation Shopify delivers. A payload missing something the API promises
raises ContractError naming the field; a Shopify record the hub cannot represent (a blank SKU, an
untracked shipment) is reported by the caller, never turned into a KeyError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.carriers import canonical_carrier
from hub.channel import WebhookAction
from hub.errors import ContractError, RejectedItem
from hub.records import Address, Fulfilment, FulfilmentLine, Order, OrderLine, Product, StockLevel, Variant

#: Marks every order the hub creates: the tag, and the order's sourceName. Orders carrying it are the
#: hub's own and are never taken for orders placed in Shopify.
HUB_MARKER = "channelhub"
QUANTITY_NAMES = ("available", "on_hand", "committed")
_SIZE_OPTIONS = {"size"}
_COLOUR_OPTIONS = {"color", "colour"}
_UNSAFE_SKU = re.compile(r"^\s|\s$|[\x00-\x1f]")


@dataclass(frozen=True)
class Marketplace:
    """The party a marketplace order is billed to: the marketplace itself, never the shopper."""

    name: str
    email: str | None = None
    phone: str | None = None
    address: dict[str, str] | None = None  # MailingAddressInput fields


# -- catalogue -------------------------------------------------------------------------------------


def sku_problem(sku: Any) -> str | None:
    """Why a Shopify SKU cannot be used as a hub SKU, or None when it can."""
    if not isinstance(sku, str) or not sku.strip():
        return "has no SKU"
    if _UNSAFE_SKU.search(sku):
        return f"has SKU {sku!r} with leading/trailing whitespace or control characters"
    if len(sku) > 100:
        return f"has a SKU longer than 100 characters ({sku[:20]}...)"
    return None


def has_sku(sku: Any) -> bool:
    """A variant with no SKU at all cannot even be named in a report; one with a bad SKU can."""
    return isinstance(sku, str) and bool(sku.strip())


def tagged(tags: list[str], prefix: str) -> str:
    """The value of the first ``prefix:value`` tag (``gender:Women``), or "".

    Shopify has no gender or season field; brands that sell on The Iconic tag products this way.
    """
    wanted = prefix.lower() + ":"
    return next((tag.split(":", 1)[1].strip() for tag in tags if tag.lower().startswith(wanted)), "")


def product_from_remote(node: dict[str, Any], variants: list[Variant]) -> Product:
    """A canonical Product from a Shopify Product node and its already-mapped variants."""
    status = _required(node, "status", "Product")
    tags = [str(tag) for tag in _list(node.get("tags"), "Product.tags")]
    return Product(
        parent_sku=_required(node, "handle", "Product"),
        title=_required(node, "title", "Product"),
        description=node.get("descriptionHtml") or "",
        brand=node.get("vendor") or "",
        category=node.get("productType") or "",
        tags=tags,
        gender=tagged(tags, "gender"),
        season=tagged(tags, "season"),
        attributes={"shopify_status": status, "updated_at": node.get("updatedAt")},
        active=status == "ACTIVE",
        external_id=_required(node, "id", "Product"),
        variants=variants,
    )


def variant_from_remote(node: dict[str, Any], levels: list[dict[str, Any]], *,
                        active: bool, locations: set[str] | None = None) -> Variant:
    """A canonical Variant; ``levels`` are InventoryLevel nodes, kept only for ``locations`` (names)."""
    _object(node, "ProductVariant")
    options = {str(o.get("name")): str(o.get("value"))
               for o in _objects(node.get("selectedOptions"), "ProductVariant.selectedOptions")}
    price = _money(node.get("price"), "ProductVariant.price", required=True)
    compare_at = _money(node.get("compareAtPrice"), "ProductVariant.compareAtPrice")
    on_sale = compare_at is not None and price is not None and compare_at > price
    item = _object(node.get("inventoryItem") or {}, "ProductVariant.inventoryItem")
    stock, committed = stock_from_levels(levels, locations)
    return Variant(
        sku=_required(node, "sku", "ProductVariant"),
        barcode=node.get("barcode") or "",
        size=next((v for k, v in options.items() if k.lower() in _SIZE_OPTIONS), ""),
        colour=next((v for k, v in options.items() if k.lower() in _COLOUR_OPTIONS), ""),
        price_retail=compare_at if on_sale else price,
        price_sale=price if on_sale else None,
        active=active,
        external_id=_required(node, "id", "ProductVariant"),
        stock=stock,
        attributes={"options": options, "inventory_item_id": item.get("id"), "committed": committed,
                    "price": str(price), "compare_at_price": str(compare_at) if compare_at is not None else None},
    )


def stock_from_levels(levels: list[dict[str, Any]], locations: set[str] | None) -> tuple[list[StockLevel], dict[str, int]]:
    """StockLevels per location (available, on_hand) and the committed units per location."""
    stock, committed = [], {}
    for level in _objects(levels, "InventoryItem.inventoryLevels"):
        location = _object(level.get("location") or {}, "InventoryLevel.location").get("name")
        if not location or not isinstance(location, str):
            raise ContractError("InventoryLevel.location.name is missing", detail=level)
        if locations is not None and location not in locations:
            continue
        quantities = {str(q.get("name")): q.get("quantity")
                      for q in _objects(level.get("quantities"), "InventoryLevel.quantities")}
        for name in QUANTITY_NAMES:
            if not isinstance(quantities.get(name), int) or isinstance(quantities.get(name), bool):
                raise ContractError(f"InventoryLevel.quantities has no integer {name!r} at {_short(location)}", detail=level)
        stock.append(StockLevel(location=location, available=quantities["available"], on_hand=quantities["on_hand"]))
        committed[location] = quantities["committed"]
    return stock, committed


# -- orders ----------------------------------------------------------------------------------------


def order_create_input(order: Order, variant_ids: dict[str, str], marketplace: Marketplace) -> dict[str, Any]:
    """OrderCreateOrderInput: named after the marketplace order, billed to the marketplace, shipped to the shopper."""
    return _without_none({
        "name": order.order_number,
        "sourceName": HUB_MARKER,
        "sourceIdentifier": order.channel_order_id,
        "tags": [HUB_MARKER, marketplace.name],
        "note": order_note(order, marketplace),
        "email": marketplace.email,
        "phone": marketplace.phone,
        "currency": order.currency,
        "financialStatus": "PAID",
        "processedAt": order.placed_at.isoformat() if order.placed_at else None,
        "lineItems": [line_input(line, _variant_id(variant_ids, line.sku, index, order), order.currency)
                      for index, line in enumerate(order.lines)],
        "shippingAddress": address_input(order.shipping_address),
        "billingAddress": marketplace_address(marketplace),
        "customer": {"toUpsert": _without_none({"email": marketplace.email, "lastName": marketplace.name})}
        if marketplace.email else None,
    })


def _variant_id(variant_ids: Any, sku: str, index: int, order: Order) -> str:
    found = variant_ids.get(sku) if isinstance(variant_ids, dict) else None
    if not isinstance(found, str) or not found:
        raise RejectedItem(f"order {order.order_number}: SKU {sku!r} (line {index + 1}) has no Shopify variant",
                           key=order.order_number, field=f"lines.{index}.sku")
    return found


def order_note(order: Order, marketplace: Marketplace) -> str:
    note = f"{marketplace.name} order {order.order_number}, created by channelhub."
    return f"{note}\n{order.note}" if order.note else note


def line_input(line: OrderLine, variant_id: str, currency: str) -> dict[str, Any]:
    """A line by variant at the marketplace's price (Shopify's own price when the marketplace gave none)."""
    item: dict[str, Any] = {"variantId": variant_id, "quantity": line.quantity}
    if line.unit_price is not None:
        item["priceSet"] = {"shopMoney": {"amount": str(line.unit_price), "currencyCode": currency}}
    return item


def address_input(address: Address) -> dict[str, Any]:
    first, _, last = address.name.strip().rpartition(" ")
    return _without_none({
        "firstName": first or None, "lastName": last or address.name, "company": address.company or None,
        "address1": address.line1, "address2": address.line2 or None, "city": address.city,
        "provinceCode": address.region or None, "zip": address.postcode, "countryCode": address.country,
        "phone": address.phone or None,
    })


def marketplace_address(marketplace: Marketplace) -> dict[str, Any]:
    return _without_none({"company": marketplace.name, "lastName": marketplace.name,
                          "phone": marketplace.phone, **(marketplace.address or {})})


def is_hub_order(tags: Any, source_name: Any) -> bool:
    """True for orders the hub created (GraphQL tag list or REST comma-separated tags)."""
    if isinstance(tags, str):
        tags = [tag.strip() for tag in tags.split(",")]
    if not isinstance(tags, (list, tuple)):
        tags = []  # no tag list at all: only sourceName can tell
    return source_name == HUB_MARKER or HUB_MARKER in {str(tag).strip().lower() for tag in tags}


def matching_hub_order(nodes: list[dict[str, Any]], order: Order) -> dict[str, Any] | None:
    """The hub's earlier copy of ``order`` among search results (names are not unique in Shopify)."""
    for node in _list(nodes, "orders.nodes"):
        if not isinstance(node, dict):
            continue  # a malformed search result cannot be the hub's order; the others are still checked
        if node.get("name") == order.order_number and is_hub_order(node.get("tags"), node.get("sourceName")):
            if node.get("sourceIdentifier") in (None, order.channel_order_id):
                return node
    return None


def cancelled_order_from_remote(node: dict[str, Any], lines: list[dict[str, Any]]) -> Order:
    """A cancelled hub order, as the canonical Order the orders flow can act on."""
    _object(node, "Order")
    address = _object(node.get("shippingAddress") or {}, "Order.shippingAddress")
    return Order(
        channel_order_id=node.get("sourceIdentifier") or _required(node, "name", "Order"),
        order_number=_required(node, "name", "Order"),
        lines=[OrderLine(sku=str(li.get("sku") or ""), quantity=_count(li.get("quantity"), f"Order.lineItems.{i}.quantity"),
                         title=str(li.get("title") or "")) for i, li in enumerate(_objects(lines, "Order.lineItems"))],
        shipping_address=Address(
            name=address.get("name") or "", line1=address.get("address1") or "", line2=address.get("address2") or "",
            city=address.get("city") or "", region=address.get("provinceCode") or "", postcode=address.get("zip") or "",
            country=address.get("countryCodeV2") or "", phone=address.get("phone") or "",
            company=address.get("company") or ""),
        status="cancelled",
        currency=node.get("currencyCode") or "AUD",
        external_id=_required(node, "id", "Order"),
        raw={"cancelled_at": node.get("cancelledAt")},
    )


# -- fulfilments -----------------------------------------------------------------------------------


def carrier_code(company: str | None) -> str:
    """The canonical carrier code, or Shopify's company string as-is so the flow can report it."""
    if not isinstance(company, str) or not company.strip():
        return "Other"  # Shopify's own word for "no listed carrier"
    return canonical_carrier(company) or company.strip()


def fulfilment_from_remote(order: dict[str, Any], fulfillment: dict[str, Any],
                           lines: list[dict[str, Any]]) -> Fulfilment | None:
    """A canonical Fulfilment from a successful Shopify fulfilment with tracking; None otherwise."""
    _object(order, "Order")
    if _object(fulfillment, "Fulfillment").get("status") != "SUCCESS":
        return None
    tracking = next((t for t in _objects(fulfillment.get("trackingInfo"), "Fulfillment.trackingInfo")
                     if t.get("number")), None)
    if tracking is None:
        return None
    quantities: dict[str, int] = {}
    for index, line in enumerate(_objects(lines, "Fulfillment.fulfillmentLineItems")):
        sku = _object(line.get("lineItem") or {}, f"Fulfillment.fulfillmentLineItems.{index}.lineItem").get("sku")
        if sku:
            where = f"Fulfillment.fulfillmentLineItems.{index}.quantity"
            quantities[str(sku)] = quantities.get(str(sku), 0) + _count(line.get("quantity"), where)
    created = fulfillment.get("createdAt")
    return Fulfilment(
        order_number=_required(order, "name", "Order"),
        carrier=carrier_code(tracking.get("company")),
        tracking_number=str(tracking["number"]),
        tracking_url=str(tracking.get("url") or ""),
        lines=[FulfilmentLine(sku=sku, quantity=qty) for sku, qty in quantities.items() if qty > 0],
        shipped_at=_time(created, "Fulfillment.createdAt"),
        external_id=_required(fulfillment, "id", "Fulfillment"),
    )


# -- webhooks --------------------------------------------------------------------------------------


def webhook_action(topic: str, payload: dict[str, Any], *, delivery_id: str | None,
                   triggered_at: str | None = None) -> WebhookAction | None:
    """The targeted job a webhook asks for; None for topics (or orders) the hub does not act on."""
    base = {"topic": topic, "triggered_at": triggered_at}
    if topic in ("orders/fulfilled", "orders/cancelled"):
        if not is_hub_order(payload.get("tags"), payload.get("source_name")):
            return None  # an order placed in Shopify itself: not the hub's to report
        params = {**base, "order_id": payload.get("admin_graphql_api_id"), "order_number": payload.get("name"),
                  "cancelled": topic == "orders/cancelled"}
        return WebhookAction("fulfilment", params, delivery_id)
    if topic == "fulfillments/create":
        params = {**base, "order_id": _gid("Order", payload.get("order_id")),
                  "fulfillment_id": payload.get("admin_graphql_api_id")}
        return WebhookAction("fulfilment", params, delivery_id)
    if topic == "inventory_levels/update":
        params = {**base, "inventory_item_id": _gid("InventoryItem", payload.get("inventory_item_id")),
                  "location_id": _gid("Location", payload.get("location_id")), "available": payload.get("available")}
        return WebhookAction("stock", params, delivery_id)
    if topic == "products/update":
        variants = payload.get("variants") if isinstance(payload.get("variants"), list) else []
        skus = [v.get("sku") for v in variants if isinstance(v, dict) and v.get("sku")]
        params = {**base, "product_id": payload.get("admin_graphql_api_id") or _gid("Product", payload.get("id")),
                  "skus": skus}
        return WebhookAction("catalog", params, delivery_id)
    return None


# -- helpers ---------------------------------------------------------------------------------------


def _required(node: dict[str, Any], key: str, type_name: str) -> Any:
    value = node.get(key) if isinstance(node, dict) else None
    if value is None or value == "":
        raise ContractError(f"Shopify {type_name}.{key} is missing", detail=node)
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(f"Shopify {where} is not an object: {_short(value)}", detail={"field": where})
    return value


def _list(value: Any, where: str) -> list[Any]:
    """A list the API promises (None meaning empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ContractError(f"Shopify {where} is not a list: {_short(value)}", detail={"field": where})
    return value


def _objects(value: Any, where: str) -> list[dict[str, Any]]:
    items = _list(value, where)
    for index, item in enumerate(items):
        _object(item, f"{where}.{index}")
    return items


def _count(value: Any, where: str) -> int:
    """A quantity: a whole number (None meaning 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"Shopify {where} is not a whole number: {_short(value)}", detail={"field": where})
    return value


def _time(value: Any, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    raise ContractError(f"Shopify {where} is not an ISO 8601 time: {_short(value)}", detail={"field": where})


def _short(value: Any, limit: int = 80) -> str:
    """A value for an error message: a 100 kB field must not become a 100 kB message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _money(value: Any, where: str, required: bool = False) -> Decimal | None:
    if value is None:
        if required:
            raise ContractError(f"Shopify {where} is missing")
        return None
    try:
        amount = Decimal(str(value))
        if not amount.is_finite() or amount < 0:
            raise InvalidOperation
        return amount.quantize(Decimal("0.01"))
    except InvalidOperation:
        raise ContractError(f"Shopify {where} is not a valid decimal amount: {_short(value)}") from None


def _gid(kind: str, number: Any) -> str | None:
    return f"gid://shopify/{kind}/{number}" if number not in (None, "") else None


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}
