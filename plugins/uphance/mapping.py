"""Uphance records <-> canonical records. Pure functions: no I/O, no logging.

Uphance nests a *product* (style) -> *variations* (colour, prices per channel) -> *SKUs* (size, EAN,
stock). The hub's Product carries one Variant per SKU. Data problems a brand must fix in Uphance (an
empty EAN, a SKU without a number) are returned as human-readable ``problems`` for the channel to
log, never raised; shapes that break the API's contract raise ContractError naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.carriers import canonical_carrier
from hub.errors import ContractError, RejectedItem
from hub.records import Address, Fulfilment, FulfilmentLine, Order, Product, Return, StockLevel, Variant

# The hub's inventory basis names -> the SKU field that holds that number in Uphance.
INVENTORY_FIELDS = {"available": "available_to_sell", "available_from_stock": "available_to_sell_from_stock"}
GENDER_FIELD = "gender"  # the custom field's name, compared case-insensitively
SHIPPED = "shipped"
IDEMPOTENCY_KEY_MAX = 128


@dataclass(frozen=True)
class SkuRef:
    """Where a SKU number lives in Uphance, and its prices on the chosen channel."""

    sku_id: int
    variation_id: int
    product_id: int
    msrp: Decimal | None = None
    wholesale: Decimal | None = None


@dataclass(frozen=True)
class OrderOptions:
    """The account settings a sales order follows, as Uphance's Iconic app has them."""

    customer_id: int
    channel: dict[str, Any]
    warehouse: str
    payment_term: str = ""
    price_basis: str = "msrp"  # msrp | wholesale | marketplace


@dataclass
class Mapped:
    """A mapped record plus the data problems found on the way."""

    record: Any
    problems: list[str] = field(default_factory=list)


# -- small readers ------------------------------------------------------------------


def _get(raw: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ContractError(f"{where} is not an object")
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ContractError(f"{where}.{name} is missing or not {getattr(kind, '__name__', kind)}: {_short(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    """A list the API promises; None (or absent) is an empty one."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ContractError(f"{where} is not a list: {_short(value)}")
    return value


def _short(value: Any, limit: int = 80) -> str:
    """A value for an error message: a 100 kB field must not become a 100 kB message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _text(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    return "" if value is None else str(value).strip()


def _decimal(value: Any, where: str) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        number = Decimal(str(value))
        return number.quantize(Decimal("0.01")) if number.is_finite() and number >= 0 else None
    except InvalidOperation:  # not a number, or too large to have cents
        raise ContractError(f"{where} is not a decimal: {_short(value)}") from None


def _int(raw: dict[str, Any], name: str, where: str) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContractError(f"{where}.{name} is not a whole number: {_short(value)}")
    return value


def parse_time(text: Any, where: str = "timestamp") -> datetime | None:
    """Uphance timestamps: ISO 8601 with ``Z``, ``+00:00`` or a local offset (``where`` names the field)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ContractError(f"{where} {_short(text)} is not ISO 8601") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def uphance_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def season_ids(value: Any) -> list[int]:
    """``season_id`` is a scalar in the doc and an array in live lists; accept both."""
    values = value if isinstance(value, list) else [value]
    return [item for item in values if isinstance(item, int) and not isinstance(item, bool)]


def custom_field(raw: dict[str, Any], name: str) -> str:
    for entry in _list(raw.get("custom_fields"), "custom_fields"):
        if isinstance(entry, dict) and str(entry.get("name", "")).strip().lower() == name:
            return _text(entry, "value")
    return ""


def channel_price(variation: dict[str, Any], channel: dict[str, Any], where: str) -> tuple[Decimal | None, Decimal | None]:
    """(MSRP, wholesale) of the variation's price list for ``channel``: by name, else by currency."""
    prices = [p for p in _list(variation.get("prices"), f"{where}.prices") if isinstance(p, dict)]
    channel = channel if isinstance(channel, dict) else {}
    chosen = next((p for p in prices if p.get("name") == channel.get("channel_name")), None)
    chosen = chosen or next((p for p in prices if p.get("currency") == channel.get("currency")), None)
    if chosen is None:
        return None, None
    return _decimal(chosen.get("msrp_money"), f"{where}.prices.msrp_money"), _decimal(
        chosen.get("wsp_money"), f"{where}.prices.wsp_money")


# -- products -----------------------------------------------------------------------


def changed_since(raw: dict[str, Any], since: datetime | None) -> bool:
    """True when the product changed at or after ``since`` (or its change time is unknown)."""
    if since is None:
        return True
    updated = parse_time(raw.get("updated_at"), "updated_at")
    return updated is None or updated >= since


def product_from_uphance(raw: dict[str, Any], *, seasons: dict[int, str], channel: dict[str, Any],
                         location: str, inventory: str = "available") -> Mapped:
    """One Uphance product -> a canonical Product with one Variant per SKU that has a SKU number."""
    product_id = _get(raw, "id", int, "product")
    where = f"product {product_id}"
    style = _text(raw, "product_identifier")
    if not style:
        return Mapped(None, [f"{where} has no product_identifier (style code); it is left out"])
    variations = _get(raw, "variations", list, where)
    problems: list[str] = []
    variants: list[Variant] = []
    for index, variation in enumerate(variations):
        variants.extend(_variants(variation, f"{where}.variations[{index}]", raw, channel, location, inventory, problems))
    product = Product(
        parent_sku=style, title=_text(raw, "name") or style, description=_text(raw, "description"),
        brand=_text(raw, "brand") or _text(raw, "brand_name"), category=_text(raw, "category"),
        gender=custom_field(raw, GENDER_FIELD), season=", ".join(_season_names(raw, seasons)),
        images=[raw["image_url"]] if isinstance(raw.get("image_url"), str) and raw["image_url"] else [],
        attributes={k: raw[k] for k in ("sub_category", "sizing_system") if raw.get(k)},
        active=not raw.get("not_for_sale", False), external_id=str(product_id), variants=variants,
    )
    return Mapped(product, problems)


def _season_names(raw: dict[str, Any], seasons: dict[int, str]) -> list[str]:
    return [seasons.get(sid, str(sid)) for sid in season_ids(raw.get("season_id"))]


def _variants(variation: Any, where: str, product: dict[str, Any], channel: dict[str, Any], location: str,
              inventory: str, problems: list[str]) -> Iterable[Variant]:
    variation_id = _get(variation, "id", int, where)
    msrp, wholesale = channel_price(variation, channel, where)
    for index, sku in enumerate(_get(variation, "skus", list, where)):
        sku_where = f"{where}.skus[{index}]"
        sku_id = _get(sku, "id", int, sku_where)
        number = _text(sku, "sku_number")
        if not number:
            problems.append(f"SKU {sku_id} of {product.get('product_identifier')} has no sku_number; it is left out")
            continue
        ean = _text(sku, "ean")
        if not ean:
            problems.append(f"SKU {number} has no EAN in Uphance; its barcode is left empty")
        yield Variant(
            sku=number, barcode=ean, size=_text(sku, "size"), colour=_text(sku, "color") or _text(variation, "color"),
            price_msrp=msrp, price_wholesale=wholesale, active=not product.get("not_for_sale", False),
            external_id=str(sku_id), stock=[_stock(sku, sku_where, location, inventory)],
            attributes={"uphance_variation_id": variation_id, "uphance_product_id": product["id"]},
        )


def _stock(sku: dict[str, Any], where: str, location: str, inventory: str) -> StockLevel:
    """Stock as the account's inventory setting reads it; the other numbers ride along for the audit log."""
    basis = _int(sku, INVENTORY_FIELDS[inventory], where)
    from_stock = _int(sku, "available_to_sell_from_stock", where)
    return StockLevel(location=location, available=basis or 0, available_from_stock=from_stock,
                      on_hand=_int(sku, "in_stock", where))


def passes_filters(product: Product, raw: dict[str, Any], *, brands: Iterable[str], seasons: Iterable[str],
                   season_names: dict[int, str]) -> bool:
    """The Iconic app's brand and season filters; an empty filter lets everything through."""
    wanted_brands = {b.strip().lower() for b in brands}
    wanted_seasons = {s.strip().lower() for s in seasons}
    if wanted_brands and product.brand.lower() not in wanted_brands:
        return False
    names = {name.lower() for name in _season_names(raw, season_names)}
    return not wanted_seasons or bool(names & wanted_seasons)


def sku_refs(raw_products: Iterable[dict[str, Any]], channel: dict[str, Any]) -> dict[str, SkuRef]:
    """SKU number -> where it lives in Uphance (sales orders and stock operations need ids)."""
    refs: dict[str, SkuRef] = {}
    for raw in _list(raw_products, "products"):
        product_id = _get(raw, "id", int, "product")
        for v_index, variation in enumerate(_get(raw, "variations", list, f"product {product_id}")):
            where = f"product {product_id}.variations[{v_index}]"
            variation_id = _get(variation, "id", int, where)
            msrp, wholesale = channel_price(variation, channel, where)
            for s_index, sku in enumerate(_get(variation, "skus", list, where)):
                if not isinstance(sku, dict):
                    raise ContractError(f"{where}.skus[{s_index}] is not an object")
                number = _text(sku, "sku_number")
                if number:
                    refs[number] = SkuRef(_get(sku, "id", int, where), variation_id, product_id, msrp, wholesale)
    return refs


# -- orders -------------------------------------------------------------------------


def sales_order_from_order(order: Order, refs: dict[str, SkuRef], options: OrderOptions) -> dict[str, Any]:
    """A canonical marketplace order -> the body of ``POST /sales_orders`` (shape assumed, see docs).

    The customer (and so the billing party) is the marketplace; the shipping address and contact
    are the end customer's. Lines are grouped per colour with a quantity per size, as Uphance stores them.
    """
    if not isinstance(options.channel, dict) or not isinstance(options.channel.get("channel_ID"), int):
        raise ContractError(f"the Uphance channel has no channel_ID: {_short(options.channel)}")
    currency = options.channel.get("currency")
    if currency and order.currency != currency:
        raise RejectedItem(f"order {order.order_number} is in {order.currency} but Uphance channel "
                           f"{_short(options.channel.get('channel_name'))} sells in {_short(currency)}; choose a channel in "
                           f"{order.currency}", key=order.order_number, field="currency")
    body: dict[str, Any] = {
        "order_number": order.order_number, "purchase_order_ref": order.channel_order_id,
        "company_id": options.customer_id, "channel_id": options.channel["channel_ID"],
        "warehouse_name": options.warehouse, "payment_term_name": options.payment_term, "currency": order.currency,
        "notes": order.note or f"Marketplace order {order.order_number}",
        "shipping_address": address_to_uphance(order.shipping_address),
        "shipping_contact": {"name": order.shipping_address.name, "email": order.shipping_address.email or
                             order.customer_email, "phone": order.shipping_address.phone},
        "line_items": _line_items(order, refs, options.price_basis),
    }
    if order.billing_address is not None:
        body["billing_address"] = address_to_uphance(order.billing_address)
    return body


def address_to_uphance(address: Address) -> dict[str, str]:
    return {"line_1": address.line1, "line_2": address.line2, "line_3": address.company, "city": address.city,
            "state": address.region, "postcode": address.postcode, "country": address.country}


def _line_items(order: Order, refs: dict[str, SkuRef], price_basis: str) -> list[dict[str, Any]]:
    grouped: dict[tuple[int, int, Decimal], dict[int, int]] = {}
    for index, line in enumerate(order.lines):
        ref = refs.get(line.sku)
        if ref is None:
            raise RejectedItem(f"order {order.order_number}: SKU {line.sku!r} is not in Uphance (line {index + 1})",
                               key=order.order_number, field=f"lines.{index}.sku")
        price = _unit_price(line.unit_price, ref, price_basis)
        if price is None:
            raise RejectedItem(f"order {order.order_number}: SKU {line.sku!r} has no {price_basis} price on the "
                               f"chosen Uphance channel", key=order.order_number, field=f"lines.{index}.unit_price")
        sizes = grouped.setdefault((ref.product_id, ref.variation_id, price), {})
        sizes[ref.sku_id] = sizes.get(ref.sku_id, 0) + line.quantity
    return [{"product_id": product_id, "variation_id": variation_id, "unit_price": str(price),
             "line_quantities": [{"sku_id": sku_id, "quantity": quantity} for sku_id, quantity in sizes.items()]}
            for (product_id, variation_id, price), sizes in grouped.items()]


def _unit_price(marketplace: Decimal | None, ref: SkuRef, basis: str) -> Decimal | None:
    return {"msrp": ref.msrp, "wholesale": ref.wholesale, "marketplace": marketplace}[basis]


def sales_order_id(raw: dict[str, Any]) -> str:
    return str(_get(raw, "id", int, "sales_order"))


# -- pick tickets -------------------------------------------------------------------


def fulfilment_from_pick_ticket(ticket: dict[str, Any], sku_numbers: Mapping[int, str]) -> Mapped:
    """A shipped pick ticket with tracking -> a Fulfilment with a canonical carrier (None otherwise)."""
    ticket_id = _get(ticket, "id", int, "pick_ticket")
    where = f"pick ticket {ticket_id}"
    if ticket.get("status") != SHIPPED:
        return Mapped(None)
    tracking, carrier = _text(ticket, "tracking_number"), _text(ticket, "carrier")
    order_number = _text(ticket, "order_number")
    if not tracking or not carrier or not order_number:
        return Mapped(None, [f"{where} (order {order_number or '?'}) is shipped without a tracking number, "
                             f"carrier or order number; nothing to write back until Uphance has them"])
    problems: list[str] = []
    code = canonical_carrier(carrier)
    if code is None:
        # Unknown names pass through untouched: the fulfilment flow reports them to the admin.
        problems.append(f"{where}: Uphance carrier {carrier!r} has no canonical code; passed through as is")
    shipped = (parse_time(ticket.get("stock_adjusted_at"), f"{where}.stock_adjusted_at")
               or parse_time(ticket.get("updated_at"), f"{where}.updated_at"))
    fulfilment = Fulfilment(order_number=order_number, carrier=code or carrier, tracking_number=tracking,
                            lines=_ticket_lines(ticket, where, sku_numbers, problems), service=_text(ticket, "service"),
                            shipped_at=shipped, external_id=str(ticket_id))
    return Mapped(fulfilment, problems)


def _ticket_lines(ticket: dict[str, Any], where: str, sku_numbers: Mapping[int, str],
                  problems: list[str]) -> list[FulfilmentLine]:
    lines: list[FulfilmentLine] = []
    for item in _list(ticket.get("line_items"), f"{where}.line_items"):
        for quantity in _list(item.get("line_quantities"), f"{where}.line_quantities") if isinstance(item, dict) else []:
            if not isinstance(quantity, dict):
                raise ContractError(f"{where}: a line_quantities entry is not an object")
            sku_id = quantity.get("sku_id")
            number = _text(quantity, "sku_number") or (sku_numbers.get(sku_id, "") if isinstance(sku_id, int) else "")
            count = quantity.get("quantity")
            if not number or not isinstance(count, int) or count < 1:
                problems.append(f"{where}: line for sku_id {quantity.get('sku_id')} has no known SKU number or quantity")
                continue
            lines.append(FulfilmentLine(sku=number, quantity=count))
    return lines


def webhook_delivery_id(resource: str, record: dict[str, Any]) -> str:
    """One id per distinct state of a record: a repeat of the same delivery carries the same id."""
    return f"{resource}:{record.get('id')}:{record.get('updated_at') or ''}"


# -- returns ------------------------------------------------------------------------


def stock_operation_for_return(ret: Return, refs: dict[str, SkuRef], source: str) -> tuple[dict[str, Any], str]:
    """A returned item back into stock: the ``POST /stock_operations`` body and its idempotency key."""
    quantities: dict[int, int] = {}
    for index, line in enumerate(ret.lines):
        ref = refs.get(line.sku)
        if ref is None:
            raise RejectedItem(f"return {ret.external_id}: SKU {line.sku!r} is not in Uphance",
                               key=ret.external_id, field=f"lines.{index}.sku")
        quantities[ref.sku_id] = quantities.get(ref.sku_id, 0) + line.quantity
    if not quantities:
        raise RejectedItem(f"return {ret.external_id} has no lines to check in", key=ret.external_id, field="lines")
    operation = {
        "source": source, "external_ref": ret.order_number,
        "comments": f"Marketplace return {ret.external_id} of order {ret.order_number}" + (
            f": {ret.reason}" if ret.reason else ""),
        "line_quantities": [{"sku_id": sku_id, "quantity": count} for sku_id, count in quantities.items()],
    }
    return operation, return_idempotency_key(ret)


def return_idempotency_key(ret: Return) -> str:
    """Stable per return, within Uphance's 128 characters: a second delivery never checks in twice."""
    key = f"channelhub-return-{ret.order_number}-{ret.external_id}"
    if len(key) <= IDEMPOTENCY_KEY_MAX:
        return key
    return "channelhub-return-" + hashlib.sha256(key.encode()).hexdigest()
