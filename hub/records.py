"""Canonical records: the shapes every channel maps its remote records to and from.

Each record is a dataclass; each has a marshmallow schema that validates and (de)serialises it.
``load(RecordClass, data)`` turns plain data into a record or raises ``hub.errors.ValidationError``
naming the bad field (``lines.0.quantity: Must be greater than or equal to 1.``);
``dump(record)`` turns a record back into JSON-safe data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import marshmallow
from marshmallow import RAISE, Schema, fields, post_load, validate

from hub.errors import ValidationError

SKU_MAX_LENGTH = 100
# A SKU is matched character for character across channels, so stray whitespace is refused outright
# rather than trimmed: "ABC-1 " and "ABC-1" are different SKUs on the marketplace.
_SKU_PATTERN = re.compile(r"^[^\s\x00-\x1f](?:[^\x00-\x1f]*[^\s\x00-\x1f])?$")


# -- records ---------------------------------------------------------------


@dataclass
class StockLevel:
    location: str
    available: int = 0
    available_from_stock: int | None = None
    on_hand: int | None = None


@dataclass
class Variant:
    sku: str
    barcode: str = ""
    size: str = ""
    colour: str = ""
    price_msrp: Decimal | None = None
    price_wholesale: Decimal | None = None
    price_retail: Decimal | None = None
    price_sale: Decimal | None = None
    active: bool = True
    external_id: str | None = None
    stock: list[StockLevel] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Product:
    parent_sku: str
    title: str
    description: str = ""
    brand: str = ""
    category: str = ""
    gender: str = ""
    season: str = ""
    tags: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    active: bool = True
    external_id: str | None = None
    variants: list[Variant] = field(default_factory=list)


@dataclass
class Listing:
    """One SKU as the hub wants a marketplace to show it."""

    sku: str
    parent_sku: str
    title: str
    price: Decimal
    quantity: int
    description: str = ""
    brand: str = ""
    category: str = ""
    gender: str = ""
    barcode: str = ""
    size: str = ""
    colour: str = ""
    sale_price: Decimal | None = None
    images: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    active: bool = True
    external_id: str | None = None


@dataclass
class Address:
    name: str
    line1: str
    city: str
    postcode: str
    country: str
    company: str = ""
    line2: str = ""
    region: str = ""
    phone: str = ""
    email: str = ""


@dataclass
class OrderLine:
    sku: str
    quantity: int
    unit_price: Decimal | None = None
    title: str = ""
    # The Iconic has one order item per unit; a line of 3 carries three ids.
    channel_line_ids: list[str] = field(default_factory=list)
    status: str = "open"


@dataclass
class Order:
    channel_order_id: str
    order_number: str
    lines: list[OrderLine]
    shipping_address: Address
    placed_at: datetime | None = None
    changed_at: datetime | None = None  # when the channel last changed it: the orders cursor follows this
    status: str = "new"  # new | cancelled | returned | shipped, as the channel reports it
    currency: str = "AUD"
    customer_name: str = ""
    customer_email: str = ""
    billing_address: Address | None = None
    shipping_method: str = ""
    total: Decimal | None = None
    note: str = ""
    external_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class FulfilmentLine:
    sku: str
    quantity: int
    channel_line_ids: list[str] = field(default_factory=list)


@dataclass
class Fulfilment:
    order_number: str
    carrier: str
    tracking_number: str
    lines: list[FulfilmentLine] = field(default_factory=list)
    service: str = ""
    tracking_url: str = ""
    shipped_at: datetime | None = None
    external_id: str | None = None


@dataclass
class Return:
    order_number: str
    external_id: str
    lines: list[FulfilmentLine] = field(default_factory=list)
    reason: str = ""
    status: str = "requested"


@dataclass
class ItemResult:
    """What happened to one SKU or order in a batch call."""

    key: str
    ok: bool
    message: str = ""
    field: str | None = None
    external_id: str | None = None
    retryable: bool = False

    @classmethod
    def success(cls, key: str, *, external_id: str | None = None, message: str = "") -> ItemResult:
        return cls(key=key, ok=True, external_id=external_id, message=message)

    @classmethod
    def rejected(cls, key: str, message: str, *, field: str | None = None, retryable: bool = False) -> ItemResult:
        return cls(key=key, ok=False, message=message, field=field, retryable=retryable)


# -- schemas ---------------------------------------------------------------


def _sku_field(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=[
            validate.Length(min=1, max=SKU_MAX_LENGTH),
            validate.Regexp(_SKU_PATTERN, error="must not be blank or start or end with whitespace"),
        ],
        **kwargs,
    )


def _money(**kwargs: Any) -> fields.Decimal:
    return fields.Decimal(places=2, as_string=True, allow_nan=False, validate=validate.Range(min=0), **kwargs)


class RecordSchema(Schema):
    """Base: unknown fields are refused by name, and loading builds the record's dataclass."""

    record_class: type

    class Meta:
        unknown = RAISE

    @post_load
    def make_record(self, data: dict[str, Any], **_: Any) -> Any:
        return self.record_class(**data)


class StockLevelSchema(RecordSchema):
    record_class = StockLevel
    location = fields.String(required=True, validate=validate.Length(min=1, max=100))
    available = fields.Integer(strict=True, load_default=0)
    available_from_stock = fields.Integer(strict=True, allow_none=True, load_default=None)
    on_hand = fields.Integer(strict=True, allow_none=True, load_default=None)


class VariantSchema(RecordSchema):
    record_class = Variant
    sku = _sku_field(required=True)
    barcode = fields.String(load_default="", validate=validate.Length(max=64))
    size = fields.String(load_default="")
    colour = fields.String(load_default="")
    price_msrp = _money(allow_none=True, load_default=None)
    price_wholesale = _money(allow_none=True, load_default=None)
    price_retail = _money(allow_none=True, load_default=None)
    price_sale = _money(allow_none=True, load_default=None)
    active = fields.Boolean(load_default=True)
    external_id = fields.String(allow_none=True, load_default=None)
    stock = fields.List(fields.Nested(StockLevelSchema), load_default=list)
    attributes = fields.Dict(keys=fields.String(), load_default=dict)


class ProductSchema(RecordSchema):
    record_class = Product
    parent_sku = _sku_field(required=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    description = fields.String(load_default="")
    brand = fields.String(load_default="")
    category = fields.String(load_default="")
    gender = fields.String(load_default="")
    season = fields.String(load_default="")
    tags = fields.List(fields.String(), load_default=list)
    images = fields.List(fields.String(), load_default=list)
    attributes = fields.Dict(keys=fields.String(), load_default=dict)
    active = fields.Boolean(load_default=True)
    external_id = fields.String(allow_none=True, load_default=None)
    variants = fields.List(fields.Nested(VariantSchema), load_default=list)


class ListingSchema(RecordSchema):
    record_class = Listing
    sku = _sku_field(required=True)
    parent_sku = _sku_field(required=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    price = _money(required=True)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=0))
    description = fields.String(load_default="")
    brand = fields.String(load_default="")
    category = fields.String(load_default="")
    gender = fields.String(load_default="")
    barcode = fields.String(load_default="")
    size = fields.String(load_default="")
    colour = fields.String(load_default="")
    sale_price = _money(allow_none=True, load_default=None)
    images = fields.List(fields.String(), load_default=list)
    attributes = fields.Dict(keys=fields.String(), load_default=dict)
    active = fields.Boolean(load_default=True)
    external_id = fields.String(allow_none=True, load_default=None)


class AddressSchema(RecordSchema):
    record_class = Address
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    line1 = fields.String(required=True, validate=validate.Length(min=1, max=200))
    city = fields.String(required=True, validate=validate.Length(min=1, max=100))
    postcode = fields.String(required=True, validate=validate.Length(min=1, max=20))
    country = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{2}$", error="must be an ISO 3166 two-letter code"))
    company = fields.String(load_default="")
    line2 = fields.String(load_default="")
    region = fields.String(load_default="")
    phone = fields.String(load_default="")
    email = fields.String(load_default="")


class OrderLineSchema(RecordSchema):
    record_class = OrderLine
    sku = _sku_field(required=True)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1))
    unit_price = _money(allow_none=True, load_default=None)
    title = fields.String(load_default="")
    channel_line_ids = fields.List(fields.String(), load_default=list)
    status = fields.String(load_default="open")


class OrderSchema(RecordSchema):
    record_class = Order
    channel_order_id = fields.String(required=True, validate=validate.Length(min=1, max=100))
    order_number = fields.String(required=True, validate=validate.Length(min=1, max=100))
    lines = fields.List(fields.Nested(OrderLineSchema), required=True, validate=validate.Length(min=1))
    shipping_address = fields.Nested(AddressSchema, required=True)
    placed_at = fields.AwareDateTime(allow_none=True, load_default=None)
    changed_at = fields.AwareDateTime(allow_none=True, load_default=None)
    status = fields.String(load_default="new", validate=validate.OneOf(["new", "cancelled", "returned", "shipped"]))
    currency = fields.String(load_default="AUD", validate=validate.Regexp(r"^[A-Z]{3}$", error="must be an ISO 4217 code"))
    customer_name = fields.String(load_default="")
    customer_email = fields.String(load_default="")
    billing_address = fields.Nested(AddressSchema, allow_none=True, load_default=None)
    shipping_method = fields.String(load_default="")
    total = _money(allow_none=True, load_default=None)
    note = fields.String(load_default="")
    external_id = fields.String(allow_none=True, load_default=None)
    raw = fields.Dict(keys=fields.String(), load_default=dict)


class FulfilmentLineSchema(RecordSchema):
    record_class = FulfilmentLine
    sku = _sku_field(required=True)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1))
    channel_line_ids = fields.List(fields.String(), load_default=list)


class FulfilmentSchema(RecordSchema):
    record_class = Fulfilment
    order_number = fields.String(required=True, validate=validate.Length(min=1, max=100))
    carrier = fields.String(required=True, validate=validate.Length(min=1, max=100))
    tracking_number = fields.String(required=True, validate=validate.Length(min=1, max=100))
    lines = fields.List(fields.Nested(FulfilmentLineSchema), load_default=list)
    service = fields.String(load_default="")
    tracking_url = fields.String(load_default="")
    shipped_at = fields.AwareDateTime(allow_none=True, load_default=None)
    external_id = fields.String(allow_none=True, load_default=None)


class ReturnSchema(RecordSchema):
    record_class = Return
    order_number = fields.String(required=True, validate=validate.Length(min=1, max=100))
    external_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    lines = fields.List(fields.Nested(FulfilmentLineSchema), load_default=list)
    reason = fields.String(load_default="")
    status = fields.String(load_default="requested")


class ItemResultSchema(RecordSchema):
    record_class = ItemResult
    key = fields.String(required=True, validate=validate.Length(min=1))
    ok = fields.Boolean(required=True)
    message = fields.String(load_default="")
    field = fields.String(allow_none=True, load_default=None)
    external_id = fields.String(allow_none=True, load_default=None)
    retryable = fields.Boolean(load_default=False)


SCHEMAS: dict[type, type[RecordSchema]] = {
    schema.record_class: schema
    for schema in (
        StockLevelSchema, VariantSchema, ProductSchema, ListingSchema, AddressSchema, OrderLineSchema,
        OrderSchema, FulfilmentLineSchema, FulfilmentSchema, ReturnSchema, ItemResultSchema,
    )
}

R = TypeVar("R")

# One instance per schema class, built on first use: a marshmallow schema holds no per-call state for
# load/dump, and building one (fields copied, hooks resolved) cost more than validating a record.
_INSTANCES: dict[type, RecordSchema] = {}


def _schema(record_class: type) -> RecordSchema:
    schema = _INSTANCES.get(record_class)
    if schema is None:
        schema = _INSTANCES[record_class] = SCHEMAS[record_class]()
    return schema


def load(record_class: type[R], data: Any) -> R:
    """Validate plain data and build the record; a ValidationError names every bad field."""
    try:
        return _schema(record_class).load(data)
    except marshmallow.ValidationError as error:
        messages = _flatten(error.messages)
        raise ValidationError(messages, field=next(iter(messages), None)) from None


def dump(record: Any) -> dict[str, Any]:
    """The record as JSON-safe data (decimals as strings, datetimes in ISO 8601)."""
    return _schema(type(record)).dump(record)


def validate_record(record: Any) -> None:
    """Check a record built in code (e.g. by a mapping) by round-tripping it through its schema.

    A record whose every value already has its field's exact type and passes the field's validators
    is what the round trip accepts, so it is checked in place (the round trip was ~15 % of a
    catalogue import's CPU); anything else takes the round trip, which gives the error message.
    """
    check = _fast_checks.get(type(record), _UNBUILT)
    if check is _UNBUILT:
        check = _fast_checks[type(record)] = _record_check(SCHEMAS[type(record)])
    if check is not None and check(record):
        return
    load(type(record), dump(record))


# -- the in-place check, derived from the schema's own fields and validators ---------------------------

Check = Callable[[Any], bool]
_UNBUILT: Any = object()
_fast_checks: dict[type, Check | None] = {}


def _record_check(schema_class: type[RecordSchema]) -> Check | None:
    """A check that is True only for records the schema round trip accepts; None if it cannot be sure."""
    schema = _schema(schema_class.record_class)
    hooks = {tag: names for tag, names in schema._hooks.items() if names}
    if any(tag != "post_load" for tag in hooks) or [name for name, *_ in hooks.get("post_load", [])] != ["make_record"]:
        return None  # a hook could refuse what the fields accept
    checks: list[tuple[str, Check]] = []
    for name, schema_field in schema.fields.items():
        if schema_field.attribute or schema_field.data_key or schema_field.load_only or schema_field.dump_only:
            return None
        check = _field_check(schema_field)
        if check is None:
            return None
        checks.append((name, check))

    def record_ok(record: Any) -> bool:
        try:
            return all(check(getattr(record, name)) for name, check in checks)
        except Exception:  # noqa: BLE001  (whatever the check trips on, the round trip decides and words the error)
            return False

    return record_ok


def _field_check(schema_field: fields.Field) -> Check | None:
    kind = type(schema_field)
    value_ok: Check
    if kind is fields.String:
        value_ok = lambda value: type(value) is str
    elif kind is fields.Integer:
        value_ok = lambda value: type(value) is int
    elif kind is fields.Boolean:
        value_ok = lambda value: type(value) is bool
    elif kind is fields.Raw:
        value_ok = lambda value: True
    elif kind is fields.Decimal and not schema_field.allow_nan:
        value_ok = _decimal_check(schema_field)
    elif kind is fields.AwareDateTime:
        value_ok = lambda value: type(value) is datetime and value.utcoffset() is not None
    elif kind is fields.List:
        inner = _field_check(schema_field.inner)
        if inner is None:
            return None
        value_ok = lambda value: type(value) is list and all(inner(item) for item in value)
    elif kind is fields.Dict:
        keys = _field_check(schema_field.key_field) if schema_field.key_field is not None else lambda key: True
        if keys is None or not (schema_field.value_field is None or type(schema_field.value_field) is fields.Raw):
            return None
        value_ok = lambda value: type(value) is dict and all(keys(key) for key in value)
    elif kind is fields.Nested and not schema_field.many and isinstance(schema_field.nested, type):
        record_class = getattr(schema_field.nested, "record_class", None)
        nested = _record_check(schema_field.nested) if SCHEMAS.get(record_class) is schema_field.nested else None
        if nested is None:
            return None
        value_ok = lambda value: type(value) is record_class and nested(value)
    else:
        return None
    validators = list(schema_field.validators)
    allow_none = schema_field.allow_none
    if kind is fields.Decimal:
        return lambda value: (value is None and allow_none) or (value is not None and value_ok(value))

    def ok(value: Any) -> bool:
        if value is None:
            return allow_none
        if not value_ok(value):
            return False
        for validator in validators:
            validator(value)  # raises marshmallow.ValidationError: caught by the record check
        return True

    return ok


def _decimal_check(schema_field: fields.Decimal) -> Check:
    places, rounding, validators = schema_field.places, schema_field.rounding, list(schema_field.validators)

    def ok(value: Any) -> bool:
        if type(value) is not Decimal or not value.is_finite():
            return False
        # The validators see the number as loaded: quantized to the field's places.
        number = value.quantize(places, rounding=rounding) if places is not None else value
        for validator in validators:
            validator(number)
        return True

    return ok


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested message tree into ``{"lines.0.quantity": [...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, (dict,)):
                flat.update(_flatten(value, path))
            else:
                flat[path] = [str(item) for item in (value if isinstance(value, list) else [value])]
    else:
        flat[prefix or "_schema"] = [str(item) for item in (messages if isinstance(messages, list) else [messages])]
    return flat


__all__ = [
    "Address", "Fulfilment", "FulfilmentLine", "ItemResult", "Listing", "Order", "OrderLine",
    "Product", "Return", "StockLevel", "Variant", "dump", "load", "validate_record",
]
