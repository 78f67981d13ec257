"""An emulator of The Iconic's Seller Center API v2, for tests, the demo and accounts in Testing.

It follows shared/reference/iconic-api.md: OAuth2 client-credentials tokens that expire, ``/v2``
JSON resources with ``limit``/``offset`` paging and ``pagination.totalCount``, the
``{type, title, status, detail}`` error body, brands that must be paged, per-category attribute
requirements, an approval queue for new products, stock with reservations
(``available = quantity - reservedStock``), and orders with one item per unit and the item status
machine. Where the reference marks a shape as unknown, the choice made here is listed in
docs/channels/iconic.md and can be changed through ``SandboxSettings``.

``create_app(...)`` returns the WSGI app wrapped in the hub's FaultMiddleware; ``app.state`` is the
:class:`IconicState` so tests can look inside, and ``/_control/...`` places, cancels and returns
orders, approves products and moves the clock-free parts of the world along.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response, request

from hub.sandbox import FaultMiddleware, Faults

DEFAULT_APPLICATION_ID = "sandbox-app"
DEFAULT_APPLICATION_SECRET = "sandbox-secret-0000"
MAX_STOCK_ROWS = 100  # PUT /v2/stock/product, stated in the endpoint description
MAX_SELLER_SKUS = 100  # GET /v2/product/seller-skus
MAX_PAGE = 100
DELIVERY_TYPES = ("dropship", "pickup", "send_to_warehouse")
RESERVING = frozenset({"pending", "ready_to_ship"})  # item statuses that hold stock back

# Item status transitions: endpoint suffix -> (allowed from, to). Return states follow the
# reference's table; "approved" is not an enum value, so approval moves a return on to
# return_shipped_by_customer (an assumption, see the channel doc).
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "set-to-shipped": (frozenset({"ready_to_ship"}), "shipped"),
    "set-to-delivered": (frozenset({"shipped"}), "delivered"),
    "set-to-cancelled": (frozenset({"pending", "ready_to_ship"}), "canceled"),
    "set-to-delivery-failed": (frozenset({"shipped"}), "failed"),
    "set-to-returned": (frozenset({"delivered"}), "returned"),
    "set-to-return-approved": (frozenset({"return_waiting_for_approval"}), "return_shipped_by_customer"),
    "set-to-return-received": (frozenset({"return_shipped_by_customer"}), "returned"),
    "set-to-return-rejected": (frozenset({"return_waiting_for_approval"}), "return_rejected"),
}
NEEDS_REASON = frozenset({"set-to-cancelled", "set-to-delivery-failed", "set-to-return-rejected"})


class ApiError(Exception):
    """An error answered in The Iconic's GeneralError shape."""

    def __init__(self, status: int, title: str, detail: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers or {}


def general_error(status: int, title: str, detail: str = "") -> dict[str, Any]:
    return {"type": f"https://sellercenter-api.theiconic.com.au/errors/{status}", "title": title,
            "status": status, "detail": detail}


def error_body(status: int, message: str) -> tuple[bytes, str]:
    """FaultMiddleware's injected errors in The Iconic's own envelope."""
    title = {429: "Too Many Requests", 503: "Service Unavailable"}.get(status, "Internal Server Error")
    return json.dumps(general_error(status, title, message)).encode(), "application/problem+json"


@dataclass
class SandboxSettings:
    """Knobs for the behaviours the reference leaves open or that tests need short."""

    token_ttl: float = 3600.0  # expires_in of an access token
    approval_delay: float | None = None  # seconds until a new product is approved; None: control call only
    quota: int | None = None  # requests per quota_window before 429 (The Iconic publishes no number)
    quota_window: float = 60.0
    embed_order_items: bool = False  # whether GET /v2/orders carries items[] (undocumented either way)
    brand_count: int = 1200  # sellers can have thousands of brands
    price_country: str = "AU"
    first_id: int = 1000  # first id handed out (products, orders, items); the demo moves it per run


# -- seed catalogue metadata ------------------------------------------------------------------

GENDER_OPTIONS = ["Women", "Men", "Unisex", "Girls", "Boys"]
ATTRIBUTES: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "gender", "label": "Gender", "feedName": "Gender", "inputType": "dropdown",
        "options": [{"id": 100 + i, "name": name} for i, name in enumerate(GENDER_OPTIONS)]},
    2: {"id": 2, "name": "color_family", "label": "Colour", "feedName": "ColorFamily", "inputType": "text", "options": []},
    3: {"id": 3, "name": "fabric", "label": "Fabric", "feedName": "Fabric", "inputType": "text", "options": []},
    4: {"id": 4, "name": "occasion", "label": "Occasion", "feedName": "Occasion", "inputType": "text", "options": []},
}
# category id -> (name, parent id, {attribute id: mandatory})
CATEGORIES: dict[int, tuple[str, int | None, dict[int, bool]]] = {
    1: ("Women", None, {}),
    11: ("Dresses", 1, {1: True, 2: True, 4: False}),
    12: ("Tops", 1, {1: True, 2: False}),
    2: ("Men", None, {}),
    21: ("Shirts", 2, {1: True, 3: False}),
    22: ("T-Shirts", 2, {1: True}),
    4: ("Accessories", None, {}),
    41: ("Bags", 4, {2: False}),
}
SHIPMENT_PROVIDERS = [
    {"uuid": "6f1c0a1e-0001", "name": "Australia Post", "default": True, "apiIntegrationAvailable": False,
     "trackingUrl": "https://auspost.com.au/mypost/track/#/details/{{trackingNumber}}"},
    {"uuid": "6f1c0a1e-0002", "name": "StarTrack", "default": False, "apiIntegrationAvailable": False,
     "trackingUrl": "https://startrack.com.au/track/details/{{trackingNumber}}"},
    {"uuid": "6f1c0a1e-0003", "name": "Aramex", "default": False, "apiIntegrationAvailable": False,
     "trackingUrl": "https://www.aramex.com.au/tools/track?l={{trackingNumber}}"},
    {"uuid": "6f1c0a1e-0004", "name": "CouriersPlease", "default": False, "apiIntegrationAvailable": False,
     "trackingUrl": "https://www.couriersplease.com.au/tools-track/no/{{trackingNumber}}"},
]
FAILURE_REASONS = [
    {"type": "canceled", "name": "Out of stock", "description": "The seller cannot supply the item"},
    {"type": "canceled", "name": "Sourcing delay", "description": "The item cannot be shipped in time"},
    {"type": "canceled", "name": "Customer request", "description": "The customer asked to cancel"},
    {"type": "failed", "name": "Customer not at home", "description": "Delivery failed"},
    {"type": "returned", "name": "Wrong size", "description": "Returned by the customer"},
    {"type": "return_rejected", "name": "Item used", "description": "The return was not accepted"},
]
BRAND_NAMES = ["Acme", "Bassike", "Camilla", "Dissh", "Elka Collective", "Faithfull", "Gorman", "Henne"]


def _brands(count: int) -> list[dict[str, Any]]:
    # Real names last, so finding them without the name filter means paging to the end.
    fillers = [f"Brand {n:04d}" for n in range(1, max(0, count - len(BRAND_NAMES)) + 1)]
    return [{"id": i, "name": name} for i, name in enumerate([*fillers, *BRAND_NAMES], start=1)]


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).isoformat(timespec="seconds")


def parse_time(value: str, name: str) -> float:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "Validation Error", f"{name}: '{value}' is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# -- state ---------------------------------------------------------------------------------------


@dataclass
class IconicState:
    """The whole emulated seller account, and the rules that change it."""

    settings: SandboxSettings = field(default_factory=SandboxSettings)
    clock: Callable[[], float] = time.time
    applications: dict[str, str] = field(default_factory=lambda: {DEFAULT_APPLICATION_ID: DEFAULT_APPLICATION_SECRET})
    tokens: dict[str, float] = field(default_factory=dict)  # access token -> expiry
    brands: list[dict[str, Any]] = field(default_factory=list)
    product_sets: dict[int, dict[str, Any]] = field(default_factory=dict)
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    used_tracking: dict[str, tuple[int, str]] = field(default_factory=dict)  # number -> (order id, provider)
    requests_in_window: list[float] = field(default_factory=list)
    token_requests: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1000))

    def __post_init__(self) -> None:
        if not self.brands:
            self.brands = _brands(self.settings.brand_count)
        if self.settings.first_id != 1000:
            self._ids = itertools.count(self.settings.first_id)

    # -- read-only views for the control API (what a person would see in Seller Center) ---------

    def products_view(self) -> list[dict[str, Any]]:
        """Every product with its set, status, prices and stock, oldest first."""
        rows = []
        for product in sorted(self.products.values(), key=lambda p: p["id"]):
            product_set = self.product_sets.get(product["productSetId"], {})
            brand = self.brand(product_set.get("brandId")) or {}
            stock = self.stock_read(product)
            rows.append({
                "id": product["id"], "sellerSku": product["sellerSku"], "shopSku": product["shopSku"],
                "productSetId": product["productSetId"], "parentSku": product_set.get("parentSku"),
                "name": product["name"], "brand": brand.get("name"), "variation": product["variation"],
                "status": product["status"], "approvalStatus": product["approvalStatus"],
                "price": product["price"], "salePrice": product["salePrice"],
                "quantity": stock["quantity"], "reservedStock": stock["reservedStock"], "available": stock["available"],
                "createdAt": product["createdAt"], "updatedAt": product["updatedAt"],
            })
        return rows

    def orders_view(self) -> list[dict[str, Any]]:
        """Every order with its items' status and the shipment written back, oldest first."""
        rows = []
        for order in sorted(self.orders.values(), key=lambda o: o["id"]):
            items = []
            for item in self.order_items(order["id"]):
                shipment = item.get("shipment") or {}
                items.append({"id": item["id"], "sellerSku": item["_sellerSku"], "status": item["status"],
                              "paidPrice": item["paidPrice"], "trackingCode": shipment.get("trackingCode"),
                              "shippingProvider": (shipment.get("provider") or {}).get("name")})
            rows.append({"id": order["id"], "number": order["number"], "createdAt": order["createdAt"],
                         "updatedAt": order["updatedAt"], "items": items})
        return rows

    def next_id(self) -> int:
        return next(self._ids)

    # -- auth and quota --------------------------------------------------------------------

    def issue_token(self, authorization: str | None, grant_type: str | None) -> dict[str, Any]:
        if grant_type != "client_credentials":
            raise ApiError(400, "Bad Request", "grant_type must be client_credentials")
        app_id, secret = _basic_credentials(authorization)
        if app_id is None or not secrets.compare_digest(self.applications.get(app_id, ""), secret or "\0"):
            raise ApiError(401, "Unauthorized", "Invalid client credentials")
        token = secrets.token_urlsafe(24)
        self.tokens[token] = self.clock() + self.settings.token_ttl
        self.token_requests += 1
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.settings.token_ttl)}

    def check_bearer(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        expiry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None:
            raise ApiError(401, "Unauthorized", "Access token is missing or invalid")
        if self.clock() >= expiry:
            raise ApiError(401, "Unauthorized", "Access token has expired")

    def check_quota(self) -> None:
        quota = self.settings.quota
        if quota is None:
            return
        now, window = self.clock(), self.settings.quota_window
        self.requests_in_window = [t for t in self.requests_in_window if t > now - window]
        if len(self.requests_in_window) >= quota:
            wait = max(1, math.ceil(self.requests_in_window[0] + window - now))
            raise ApiError(429, "Too Many Requests", "Request quota exceeded", {"Retry-After": str(wait)})
        self.requests_in_window.append(now)

    # -- catalogue metadata ----------------------------------------------------------------

    def category_tree(self) -> list[dict[str, Any]]:
        def node(cid: int) -> dict[str, Any]:
            children = [node(child) for child, (_, parent, _) in CATEGORIES.items() if parent == cid]
            return {"id": cid, "name": CATEGORIES[cid][0], "children": children}

        return [node(cid) for cid, (_, parent, _) in CATEGORIES.items() if parent is None]

    def category_attributes(self, category_id: int) -> list[dict[str, Any]]:
        if category_id not in CATEGORIES:
            raise ApiError(404, "Not Found", f"Category {category_id} does not exist")
        return [{**ATTRIBUTES[aid], "isMandatory": mandatory} for aid, mandatory in CATEGORIES[category_id][2].items()]

    def brand(self, brand_id: Any) -> dict[str, Any] | None:
        return next((b for b in self.brands if b["id"] == brand_id), None)

    # -- products --------------------------------------------------------------------------

    def tick(self) -> None:
        """Approve products whose review delay has passed."""
        delay = self.settings.approval_delay
        if delay is None:
            return
        for product in self.products.values():
            if product["approvalStatus"] == "pending" and self.clock() >= product["_createdAt"] + delay:
                self.approve(product)

    def approve(self, product: dict[str, Any], verdict: str = "approved") -> None:
        product["approvalStatus"] = verdict
        if verdict == "approved":
            product["shopSku"] = f"{product['sellerSku'][:8].upper()}ICN-{product['id']}"
            product["srcId"] = str(product["id"] + 500000)
        product["updatedAt"] = iso(self.clock())

    def create_product_set(self, body: dict[str, Any]) -> dict[str, Any]:
        _require(body, ("name", "sellerSku", "brandId", "primaryCategoryId", "price"))
        if not 2 <= len(str(body["name"])) <= 255:
            raise ApiError(400, "Validation Error", "name: must be 2-255 characters")
        if self.brand(body["brandId"]) is None:
            raise ApiError(400, "Validation Error", f"brandId: brand {body['brandId']} does not exist")
        category = body["primaryCategoryId"]
        if category not in CATEGORIES or CATEGORIES[category][1] is None:
            raise ApiError(400, "Validation Error", f"primaryCategoryId: {category} is not a leaf category")
        attributes = self._check_attributes(category, body.get("attributes") or {})
        self._check_new_sku(body["sellerSku"])
        set_id = self.next_id()
        self.product_sets[set_id] = {
            "id": set_id, "name": body["name"], "sellerSku": body["sellerSku"],
            "parentSku": body.get("parentSku") or body["sellerSku"], "brandId": body["brandId"],
            "primaryCategoryId": category, "description": body.get("description", ""),
            "attributes": attributes, "createdAt": iso(self.clock()), "updatedAt": iso(self.clock()),
        }
        product = self.add_product(set_id, body)
        self._write_price(product, {"price": body["price"], "salePrice": body.get("salePrice"),
                                    "saleStartDate": body.get("saleStartDate"), "saleEndDate": body.get("saleEndDate")})
        return self.product_set_read(set_id)

    def add_product(self, set_id: int, body: dict[str, Any]) -> dict[str, Any]:
        if set_id not in self.product_sets:
            raise ApiError(404, "Not Found", f"Product set {set_id} does not exist")
        _require(body, ("sellerSku",))
        self._check_new_sku(body["sellerSku"])
        status = body.get("status", "active")
        if status not in ("active", "inactive"):
            raise ApiError(400, "Validation Error", "status: must be active or inactive")
        product_id = self.next_id()
        product = {
            "id": product_id, "uuid": f"prod-{product_id}", "sellerSku": body["sellerSku"], "shopSku": None,
            "srcId": None, "productSetId": set_id, "approvalStatus": "pending", "status": status,
            "variation": body.get("variation", ""), "productIdentifier": body.get("productIdentifier", ""),
            "name": body.get("name") or self.product_sets[set_id]["name"],
            "price": None, "salePrice": None, "saleStartDate": None, "saleEndDate": None,
            "quantity": 0, "fulfilledByVenture": False,
            "createdAt": iso(self.clock()), "updatedAt": iso(self.clock()), "_createdAt": self.clock(),
        }
        self.products[product_id] = product
        return product

    def _check_new_sku(self, sku: str) -> None:
        if any(p["sellerSku"] == sku for p in self.products.values()):
            raise ApiError(409, "Conflict", f"sellerSku: '{sku}' already exists")

    def _check_attributes(self, category: int, given: dict[str, Any]) -> dict[str, Any]:
        required = CATEGORIES[category][2]
        values = {int(key): value for key, value in given.items() if str(key).isdigit()}
        for aid, mandatory in required.items():
            if mandatory and values.get(aid) in (None, "", []):
                label = ATTRIBUTES[aid]["label"]
                raise ApiError(400, "Validation Error", f"attributes.{aid}: {label} is mandatory for {CATEGORIES[category][0]}")
        for aid, value in values.items():
            options = ATTRIBUTES.get(aid, {}).get("options") or []
            if options and value not in {o["id"] for o in options}:
                raise ApiError(400, "Validation Error", f"attributes.{aid}: {value!r} is not an option id")
        return values

    def set_product_status(self, set_id: int, product_id: int, status: str | None) -> dict[str, Any]:
        product = self._product_in_set(set_id, product_id)
        if status not in ("active", "inactive", "deleted"):
            raise ApiError(400, "Validation Error", "status: must be active, inactive or deleted")
        product["status"] = status
        product["updatedAt"] = iso(self.clock())
        return self.product_read(product)

    def _product_in_set(self, set_id: int, product_id: int) -> dict[str, Any]:
        product = self.products.get(product_id)
        if product is None or product["productSetId"] != set_id:
            raise ApiError(404, "Not Found", f"Product {product_id} is not in product set {set_id}")
        return product

    def write_prices(self, set_id: int, rows: Any) -> list[dict[str, Any]]:
        if set_id not in self.product_sets:
            raise ApiError(404, "Not Found", f"Product set {set_id} does not exist")
        if not isinstance(rows, list):
            raise ApiError(400, "Validation Error", "body must be a list of prices")
        for row in rows:
            product = self._product_in_set(set_id, row.get("productId") if isinstance(row, dict) else None)
            self._write_price(product, row)
        return [self.product_read(p) for p in self.products.values() if p["productSetId"] == set_id]

    def write_price(self, product_id: int, country: str, body: dict[str, Any]) -> dict[str, Any]:
        if country.upper() != self.settings.price_country:
            raise ApiError(404, "Not Found", f"country: {country} is not sold in")
        product = self.products.get(product_id)
        if product is None:
            raise ApiError(404, "Not Found", f"Product {product_id} does not exist")
        self._write_price(product, body)
        return self.product_read(product)

    def _write_price(self, product: dict[str, Any], body: dict[str, Any]) -> None:
        # An omitted price field is written as NULL: a partial update wipes an active sale.
        price, sale = _number(body.get("price"), "price"), _number(body.get("salePrice"), "salePrice")
        if price is None or price <= 0:
            raise ApiError(400, "Validation Error", "price: must be a positive number")
        if sale is not None and sale >= price:
            raise ApiError(400, "Validation Error", "salePrice: must be below price")
        product.update(price=price, salePrice=sale, saleStartDate=body.get("saleStartDate"),
                       saleEndDate=body.get("saleEndDate"), updatedAt=iso(self.clock()))

    def product_read(self, product: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in product.items() if not key.startswith("_")}

    def product_set_read(self, set_id: int) -> dict[str, Any]:
        product_set = self.product_sets[set_id]
        brand = self.brand(product_set["brandId"]) or {}
        return {
            **product_set,
            "brand": {"id": brand.get("id"), "name": brand.get("name")},
            "primaryCategory": {"id": product_set["primaryCategoryId"], "name": CATEGORIES[product_set["primaryCategoryId"]][0]},
            "products": [self.product_read(p) for p in self.products.values() if p["productSetId"] == set_id],
        }

    def products_by_sku(self, skus: list[str]) -> list[dict[str, Any]]:
        if len(skus) > MAX_SELLER_SKUS:
            raise ApiError(400, "Validation Error", f"sellerSkus: at most {MAX_SELLER_SKUS} per request")
        wanted = set(skus)
        return [self.product_read(p) for p in self.products.values() if p["sellerSku"] in wanted]

    # -- stock -----------------------------------------------------------------------------

    def reserved(self, sku: str) -> int:
        return sum(1 for item in self.items.values() if item["_sellerSku"] == sku and item["status"] in RESERVING)

    def stock_read(self, product: dict[str, Any]) -> dict[str, Any]:
        reserved = self.reserved(product["sellerSku"])
        return {"productId": product["id"], "sellerSku": product["sellerSku"], "shopSku": product["shopSku"],
                "quantity": product["quantity"], "reservedStock": reserved, "preVerificationStock": 0,
                "available": product["quantity"] - reserved}

    def stock_of_set(self, set_id: int) -> list[dict[str, Any]]:
        if set_id not in self.product_sets:
            raise ApiError(404, "Not Found", f"Product set {set_id} does not exist")
        rows = [self.stock_read(p) for p in self.products.values() if p["productSetId"] == set_id]
        return [{k: v for k, v in row.items() if k != "productId"} for row in rows]  # no productId here

    def update_stock(self, rows: Any) -> list[dict[str, Any]]:
        """Absolute writes; the answer lists the rows that were NOT applied."""
        if not isinstance(rows, list):
            raise ApiError(400, "Validation Error", "body must be a JSON array of {productId, quantity}")
        if len(rows) > MAX_STOCK_ROWS:
            raise ApiError(400, "Validation Error", f"at most {MAX_STOCK_ROWS} items per request")
        rejected = []
        for row in rows:
            problem = self._stock_problem(row)
            if problem:
                rejected.append({**(row if isinstance(row, dict) else {"row": row}), "message": problem})
                continue
            product = self.products[row["productId"]]
            product.update(quantity=row["quantity"], updatedAt=iso(self.clock()))
        return rejected

    def _stock_problem(self, row: Any) -> str | None:
        if not isinstance(row, dict) or not isinstance(row.get("quantity"), int) or isinstance(row.get("quantity"), bool):
            return "quantity must be an integer"
        product = self.products.get(row.get("productId"))
        if product is None:
            return f"product {row.get('productId')} does not exist"
        if row["quantity"] < 0:
            return "Negative value is not allowed"
        if product["fulfilledByVenture"]:
            return "stock of products fulfilled by the venture cannot be updated"
        return None

    # -- orders ----------------------------------------------------------------------------

    def place_order(self, body: dict[str, Any]) -> dict[str, Any]:
        lines = body.get("items") or []
        if not lines:
            raise ApiError(400, "Validation Error", "items: at least one {sku, quantity}")
        products = [self._sellable(line, bool(body.get("force"))) for line in lines]
        order_id = self.next_id()
        now = self.clock()
        order = {
            "id": order_id, "uuid": f"order-{order_id}", "number": body.get("number") or str(300000000 + order_id),
            "customer": body.get("customer") or {"firstName": "Alex", "lastName": "Shopper"},
            "address": {"shipping": body.get("shipping") or _sample_address(), "billing": body.get("billing") or _sample_address()},
            "currency": "AUD", "paymentMethod": "CreditCard", "remarks": "", "source": "web",
            "createdAt": iso(now), "updatedAt": iso(now), "_updatedAt": now, "_createdAt": now,
        }
        self.orders[order_id] = order
        for line, product in zip(lines, products, strict=True):
            for _ in range(int(line.get("quantity", 1))):
                self._add_item(order, product, line.get("price"))
        return self.order_read(order)

    def _sellable(self, line: dict[str, Any], force: bool) -> dict[str, Any]:
        product = next((p for p in self.products.values() if p["sellerSku"] == line.get("sku")), None)
        if product is None:
            raise ApiError(404, "Not Found", f"sku: '{line.get('sku')}' is not in the catalogue")
        wanted = int(line.get("quantity", 1))
        if not force and self.stock_read(product)["available"] < wanted:
            raise ApiError(409, "Conflict", f"sku: '{line['sku']}' has fewer than {wanted} available")
        return product

    def _add_item(self, order: dict[str, Any], product: dict[str, Any], price: Any) -> None:
        item_id = self.next_id()
        paid = float(price if price is not None else (product["salePrice"] or product["price"] or 0))
        self.items[item_id] = {
            "id": item_id, "orderId": order["id"], "uuid": f"item-{item_id}", "status": "pending",
            "isProcessable": True, "failureReason": None, "shipment": None,
            "product": {"name": product["name"], "sku": product["shopSku"], "variation": product["variation"],
                        "sellerSku": product["sellerSku"]},
            "unitPrice": paid, "paidPrice": paid, "taxAmount": round(paid / 11, 2), "shippingFee": 0.0,
            "createdAt": order["createdAt"], "updatedAt": order["createdAt"], "lastStatusChangedAt": order["createdAt"],
            "_sellerSku": product["sellerSku"], "_package": None,
        }

    def order_items(self, order_id: int) -> list[dict[str, Any]]:
        return [item for item in self.items.values() if item["orderId"] == order_id]

    def item_read(self, item: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in item.items() if not key.startswith("_")}

    def order_read(self, order: dict[str, Any]) -> dict[str, Any]:
        items = self.order_items(order["id"])
        status_list: dict[str, int] = {}
        for item in items:
            status_list[item["status"]] = status_list.get(item["status"], 0) + 1
        read = {key: value for key, value in order.items() if not key.startswith("_")}
        read.update(statusList=status_list, itemCount=len(items), orderItemIds=[i["id"] for i in items],
                    grandTotal=round(sum(i["paidPrice"] for i in items), 2))
        if self.settings.embed_order_items:
            read["items"] = [self.item_read(i) for i in items]
        return read

    def touch(self, items: Iterable[dict[str, Any]], status: str) -> None:
        now = self.clock()
        for item in items:
            item.update(status=status, updatedAt=iso(now), lastStatusChangedAt=iso(now))
            order = self.orders[item["orderId"]]
            order.update(updatedAt=iso(now), _updatedAt=now)

    def items_of_one_order(self, ids: list[Any]) -> list[dict[str, Any]]:
        unknown = [i for i in ids if i not in self.items]
        if unknown:
            raise ApiError(404, "Not Found", f"orderItemIds: unknown order items {unknown}")
        items = [self.items[i] for i in ids]
        if len({item["orderId"] for item in items}) > 1:
            raise ApiError(422, "Unprocessable Entity", "All order items must be from the same order")
        return items

    def ready_to_ship(self, body: dict[str, Any]) -> dict[str, Any]:
        entries = body.get("orderItems")
        if not isinstance(entries, list):
            raise ApiError(400, "Validation Error", "orderItems: must be a list of {id}")
        # The real API silently ignores entries without "id" (e.g. {"orderItemId": ...}).
        ids = [entry["id"] for entry in entries if isinstance(entry, dict) and "id" in entry]
        delivery = body.get("deliveryType")
        if delivery not in DELIVERY_TYPES:
            raise ApiError(400, "Validation Error", f"deliveryType: must be one of {', '.join(DELIVERY_TYPES)}")
        provider = body.get("shippingProvider")
        if delivery == "dropship" and provider not in {p["name"] for p in SHIPMENT_PROVIDERS}:
            raise ApiError(400, "Validation Error", f"shippingProvider: '{provider}' is not a shipment provider")
        tracking = body.get("trackingNumber")
        if delivery != "pickup" and not tracking:
            raise ApiError(400, "Validation Error", "trackingNumber: required unless deliveryType is pickup")
        if not ids:
            return {"orderItemIds": []}
        items = self.items_of_one_order(ids)
        self._check_tracking(tracking, items[0]["orderId"], provider)
        self._check_from(items, frozenset({"pending"}), "ready_to_ship")
        package = f"PKG-{self.next_id()}"
        for item in items:
            item["shipment"] = {"type": "dropshipping", "deliveryType": delivery,
                                "provider": next((p for p in SHIPMENT_PROVIDERS if p["name"] == provider), None),
                                "trackingCode": tracking}
            item["_package"] = package
        self.touch(items, "ready_to_ship")
        return {"orderItemIds": ids}

    def _check_tracking(self, tracking: str | None, order_id: int, provider: str | None) -> None:
        if not tracking:
            return
        used = self.used_tracking.get(tracking)
        if used is not None and used != (order_id, provider):
            raise ApiError(400, "Validation Error", f"trackingNumber: tracking code '{tracking}' already used")
        self.used_tracking[tracking] = (order_id, provider)

    def _check_from(self, items: list[dict[str, Any]], allowed: frozenset[str], target: str) -> None:
        wrong = [item["id"] for item in items if item["status"] not in allowed]
        if wrong:
            raise ApiError(400, "Status Transition is not allowed",
                           f"order items {wrong} cannot move to {target} from their current status")

    def transition(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        allowed, target = TRANSITIONS[action]
        ids = body.get("orderItemIds")
        if not isinstance(ids, list) or not ids:
            raise ApiError(400, "Validation Error", "orderItemIds: must be a non-empty list")
        items = self.items_of_one_order(ids)
        self._check_from(items, allowed, target)
        if action == "set-to-shipped" and any(i["shipment"]["deliveryType"] != "dropship" for i in items):
            raise ApiError(400, "Status Transition is not allowed", "cross-docked items are shipped by the warehouse")
        if action in NEEDS_REASON:
            self._set_reason(items, body, {"set-to-cancelled": "canceled", "set-to-delivery-failed": "failed",
                                           "set-to-return-rejected": "return_rejected"}[action])
        if target == "shipped":
            for item in items:  # the units leave the seller's warehouse
                product = next(p for p in self.products.values() if p["sellerSku"] == item["_sellerSku"])
                product["quantity"] = max(0, product["quantity"] - 1)
        self.touch(items, target)
        return {"orderItemIds": ids}

    def _set_reason(self, items: list[dict[str, Any]], body: dict[str, Any], kind: str) -> None:
        reason = next((r for r in FAILURE_REASONS if r["name"] == body.get("reason") and r["type"] == kind), None)
        if reason is None:
            raise ApiError(400, "Validation Error", f"reason: '{body.get('reason')}' is not a {kind} reason")
        for item in items:
            item["failureReason"] = {**reason, "details": body.get("reasonDetail") or ""}

    # -- control ---------------------------------------------------------------------------

    def customer_action(self, order_id: int, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """What the shop and its customers do: cancel, return, request a return, deliver, fail."""
        if order_id not in self.orders:
            raise ApiError(404, "Not Found", f"order {order_id} does not exist")
        moves = {"cancel": ({"pending", "ready_to_ship"}, "canceled"), "deliver": ({"shipped"}, "delivered"),
                 "fail": ({"shipped"}, "failed"), "return": ({"shipped", "delivered"}, "returned"),
                 "request-return": ({"delivered"}, "return_waiting_for_approval")}
        if action not in moves:
            raise ApiError(404, "Not Found", f"unknown action {action}")
        allowed, target = moves[action]
        items = [i for i in self.order_items(order_id) if i["status"] in allowed
                 and (not body.get("orderItemIds") or i["id"] in body["orderItemIds"])]
        if not items:
            raise ApiError(400, "Status Transition is not allowed", f"no items of order {order_id} can {action}")
        if action in ("cancel", "fail", "return"):
            kind = {"cancel": "canceled", "fail": "failed", "return": "returned"}[action]
            reason = next(r for r in FAILURE_REASONS if r["type"] == kind)
            for item in items:
                item["failureReason"] = {**reason, "details": "customer"}
        self.touch(items, target)
        return self.order_read(self.orders[order_id])


def _require(body: dict[str, Any], names: Iterable[str]) -> None:
    missing = [name for name in names if body.get(name) in (None, "")]
    if missing:
        raise ApiError(400, "Validation Error", f"{', '.join(missing)}: required")


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ApiError(400, "Validation Error", f"{name}: '{value}' is not a number") from None


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        app_id, _, secret = base64.b64decode(encoded.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return app_id, secret


def _sample_address() -> dict[str, Any]:
    return {"firstName": "Alex", "lastName": "Shopper", "phone": ["0400000000"],
            "address": ["1 George Street", "Level 2", "", "", ""], "email": "alex@example.com",
            "city": "Sydney", "ward": "", "region": "NSW", "postCode": "2000", "country": "Australia"}


# -- HTTP ----------------------------------------------------------------------------------------


def _page(items: list[Any], *, required: bool) -> dict[str, Any]:
    limit, offset = _paging_args(required)
    return {"items": items[offset : offset + limit], "pagination": {"limit": limit, "offset": offset, "totalCount": len(items)}}


def _paging_args(required: bool) -> tuple[int, int]:
    raw_limit, raw_offset = request.args.get("limit"), request.args.get("offset")
    if required and (raw_limit is None or raw_offset is None):
        raise ApiError(400, "Validation Error", "limit and offset are required")
    try:
        limit, offset = int(raw_limit or 20), int(raw_offset or 0)
    except ValueError:
        raise ApiError(400, "Validation Error", "limit and offset must be integers") from None
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ApiError(400, "Validation Error", f"limit must be 1-{MAX_PAGE} and offset at least 0")
    return limit, offset


def _json_body() -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError:
        raise ApiError(400, "Bad Request", "the body is not JSON") from None


def _object_body() -> dict[str, Any]:
    body = _json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", "the body must be a JSON object")
    return body


def _ints(name: str) -> list[int]:
    try:
        return [int(v) for v in request.args.getlist(f"{name}[]") or request.args.getlist(name)]
    except ValueError:
        raise ApiError(400, "Validation Error", f"{name}: must be integers") from None


def _sorted_by(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    sort = request.args.get("sort", "createdAt")
    if sort not in ("createdAt", "updatedAt"):
        raise ApiError(400, "Validation Error", "sort: must be createdAt or updatedAt")
    direction = request.args.get("sortDir", "asc").lower()
    if direction not in ("asc", "desc"):
        raise ApiError(400, "Validation Error", "sortDir: must be asc or desc")
    field_name = f"_{sort}" if key == "order" else sort
    return sorted(rows, key=lambda row: (row[field_name], row["id"]), reverse=direction == "desc")


def build_flask_app(state: IconicState) -> Flask:
    app = Flask("iconic_sandbox")

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        body = json.dumps(general_error(error.status, error.title, error.detail))
        return Response(body, status=error.status, mimetype="application/problem+json", headers=error.headers)

    @app.before_request
    def gate() -> None:
        if request.path.startswith("/_control"):
            return
        state.check_quota()
        if request.path.startswith("/v2/"):
            state.check_bearer(request.headers.get("Authorization"))
            state.tick()

    _auth_and_metadata_routes(app, state)
    _product_routes(app, state)
    _order_routes(app, state)
    _control_routes(app, state)
    return app


def _auth_and_metadata_routes(app: Flask, state: IconicState) -> None:
    @app.post("/oauth/client-credentials")
    def token() -> Any:
        return state.issue_token(request.headers.get("Authorization"), request.form.get("grant_type"))

    @app.get("/v2/brands")
    def brands() -> Any:
        name = (request.args.get("name") or "").lower()
        return _page([b for b in state.brands if name in b["name"].lower()], required=True)

    @app.get("/v2/category/tree")
    def category_tree() -> Any:
        return state.category_tree()

    @app.get("/v2/category/<int:category_id>/attributes")
    def category_attributes(category_id: int) -> Any:
        return state.category_attributes(category_id)

    @app.get("/v2/orders-shipment-providers")
    def providers() -> Any:
        return SHIPMENT_PROVIDERS

    @app.get("/v2/orders-failure-reasons")
    def reasons() -> Any:
        return FAILURE_REASONS


def _product_routes(app: Flask, state: IconicState) -> None:
    @app.post("/v2/product-set")
    def create_set() -> Any:
        return state.create_product_set(_object_body()), 201

    @app.get("/v2/product-sets")
    def list_sets() -> Any:
        status, parent = request.args.get("status", "all"), request.args.get("parentSku")
        ids = [sid for sid in sorted(state.product_sets)
               if parent is None or state.product_sets[sid]["parentSku"] == parent]
        ids = [sid for sid in ids
               if status == "all" or any(p["status"] == status or p["approvalStatus"] == status
                                         for p in state.products.values() if p["productSetId"] == sid)]
        page = _page(ids, required=True)
        page["items"] = [state.product_set_read(sid) for sid in page["items"]]
        return page

    @app.get("/v2/product-set/<int:set_id>")
    def read_set(set_id: int) -> Any:
        if set_id not in state.product_sets:
            raise ApiError(404, "Not Found", f"Product set {set_id} does not exist")
        return state.product_set_read(set_id)

    @app.post("/v2/product-set/<int:set_id>/products")
    def add_product(set_id: int) -> Any:
        return state.product_read(state.add_product(set_id, _object_body())), 201

    @app.get("/v2/product-set/<int:set_id>/products")
    def set_products(set_id: int) -> Any:
        return read_set(set_id)["products"]

    @app.put("/v2/product-set/<int:set_id>/products/<int:product_id>/status")
    def product_status(set_id: int, product_id: int) -> Any:
        return state.set_product_status(set_id, product_id, request.args.get("status"))

    @app.put("/v2/product-set/<int:set_id>/prices")
    def set_prices(set_id: int) -> Any:
        return state.write_prices(set_id, _json_body())

    @app.put("/v2/product/<int:product_id>/prices/<country>")
    def product_price(product_id: int, country: str) -> Any:
        return state.write_price(product_id, country, _object_body())

    @app.get("/v2/product/seller-skus")
    def by_seller_skus() -> Any:
        return state.products_by_sku(request.args.getlist("sellerSkus[]"))

    @app.get("/v2/stock/product/<int:product_id>")
    def product_stock(product_id: int) -> Any:
        if product_id not in state.products:
            raise ApiError(404, "Not Found", f"Product {product_id} does not exist")
        return state.stock_read(state.products[product_id])

    @app.get("/v2/stock/product-set/<int:set_id>")
    def set_stock(set_id: int) -> Any:
        return state.stock_of_set(set_id)

    @app.put("/v2/stock/product")
    def update_stock() -> Any:
        return state.update_stock(_json_body())


def _order_routes(app: Flask, state: IconicState) -> None:
    @app.get("/v2/orders")
    def orders() -> Any:
        rows = list(state.orders.values())
        ids, numbers = set(_ints("orderIds")), set(request.args.getlist("orderNumbers[]"))
        if ids:
            rows = [o for o in rows if o["id"] in ids]
        if numbers:
            rows = [o for o in rows if o["number"] in numbers]
        for name, key, keep in (("updateDateStart", "_updatedAt", lambda v, t: v >= t),
                                ("updateDateEnd", "_updatedAt", lambda v, t: v <= t),
                                ("dateStart", "_createdAt", lambda v, t: v >= t),
                                ("dateEnd", "_createdAt", lambda v, t: v <= t)):
            if request.args.get(name):
                moment = parse_time(request.args[name], name)
                rows = [o for o in rows if keep(o[key], moment)]
        page = _page(_sorted_by(rows, "order"), required=False)
        page["items"] = [state.order_read(o) for o in page["items"]]
        return page

    @app.get("/v2/orders/<number>")
    def order(number: str) -> Any:
        found = next((o for o in state.orders.values() if o["number"] == number), None)
        if found is None:
            raise ApiError(404, "Not Found", f"order {number} does not exist")
        return state.order_read(found)

    @app.get("/v2/order-items")
    def order_items() -> Any:
        rows = list(state.items.values())
        item_ids, order_ids = set(_ints("orderItemIds")), set(_ints("orderIds"))
        numbers = set(request.args.getlist("orderNumbers[]") or request.args.getlist("orderNumbers"))
        if item_ids:
            rows = [i for i in rows if i["id"] in item_ids]
        if order_ids:
            rows = [i for i in rows if i["orderId"] in order_ids]
        if numbers:  # filters combine (AND), as on GET /v2/orders
            rows = [i for i in rows if state.orders[i["orderId"]]["number"] in numbers]
        if request.args.get("status"):
            rows = [i for i in rows if i["status"] == request.args["status"]]
        page = _page(_sorted_by(rows, "item"), required=True)
        page["items"] = [state.item_read(i) for i in page["items"]]
        return page

    @app.post("/v2/orders/statuses/set-to-ready-to-ship")
    def ready_to_ship() -> Any:
        return state.ready_to_ship(_object_body())

    @app.post("/v2/orders/statuses/<action>")
    def status(action: str) -> Any:
        if action not in TRANSITIONS:
            raise ApiError(404, "Not Found", f"no such status action {action}")
        return state.transition(action, _object_body())


def _control_routes(app: Flask, state: IconicState) -> None:
    @app.post("/_control/orders")
    def place() -> Any:
        return state.place_order(_object_body()), 201

    @app.post("/_control/orders/<int:order_id>/<action>")
    def customer(order_id: int, action: str) -> Any:
        return state.customer_action(order_id, action, _json_body() or {})

    @app.get("/_control/products")
    def products_view() -> Any:
        return {"products": state.products_view()}

    @app.get("/_control/orders")
    def orders_view() -> Any:
        return {"orders": state.orders_view()}

    @app.post("/_control/approve")
    def approve() -> Any:
        body = _json_body() or {}
        skus, verdict = body.get("sellerSkus"), body.get("verdict", "approved")
        if verdict not in ("approved", "rejected"):
            raise ApiError(400, "Validation Error", "verdict: approved or rejected")
        chosen = [p for p in state.products.values()
                  if p["approvalStatus"] == "pending" and (skus is None or p["sellerSku"] in skus)]
        for product in chosen:
            state.approve(product, verdict)
        return {"approved" if verdict == "approved" else "rejected": [p["sellerSku"] for p in chosen]}

    @app.route("/_control/settings", methods=["GET", "PUT"])
    def settings() -> Any:
        if request.method == "PUT":
            for name, value in _object_body().items():
                if not hasattr(state.settings, name):
                    raise ApiError(400, "Validation Error", f"unknown setting {name}")
                setattr(state.settings, name, value)
        return vars(state.settings)


def create_app(seed: int = 0, *, clock: Callable[[], float] = time.time, faults: Faults | None = None,
               **settings: Any) -> FaultMiddleware:
    """The sandbox as a WSGI app: ``app.state`` is the IconicState, ``app.faults`` the fault knobs.

    ``settings`` are :class:`SandboxSettings` fields (``token_ttl=5``, ``approval_delay=60``...).
    """
    state = IconicState(settings=SandboxSettings(**settings), clock=clock)
    middleware = FaultMiddleware(_one_at_a_time(build_flask_app(state)), faults or Faults(seed=seed), error_body=error_body)
    middleware.state = state  # type: ignore[attr-defined]
    return middleware


def _one_at_a_time(app: Any) -> Any:
    """Requests change the world one after another, as one database would order them; the fault
    middleware's latency stays outside, so clients sending several at once still overlap their waits."""
    lock = threading.Lock()

    def serialised(environ: dict, start_response: Callable) -> Any:
        with lock:
            body = app(environ, start_response)
            try:
                return list(body)
            finally:
                if hasattr(body, "close"):
                    body.close()

    return serialised
