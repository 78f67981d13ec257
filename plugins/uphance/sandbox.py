"""An emulator of the Uphance API (api.uphance.com), as shared/reference/uphance-starshipit-api.md describes it.

What it reproduces from the reference:
- the three-step login: ``POST /oauth/token`` (password and refresh grants, ``expires_in``,
  ``created_at``), ``GET /organisations``, ``POST /organisations/set_current_org`` answering 201
  ``{"Status":"Updated"}``; the current organisation is tied to the token, a refreshed token must
  select it again, and an expired token is answered 401;
- lists of at most 100 records under a plural key with the ``meta`` block (``next_page`` null on the
  last page), ``?page=N``, ``since_id``, ``since_created_at``, ``by_order_number`` and ``filter[...]``;
- products -> variations (colour, per-channel ``prices``) -> SKUs (size, ``ean`` possibly empty,
  ``in_stock`` / ``available_to_sell`` / ``available_to_sell_from_stock``); ``season_id`` both as a
  scalar and as a list; ``GET /channels`` spelling ``channel_ID``;
- sales orders read and created, pick tickets created inside Uphance only, tracking set with
  ``PUT /pick_tickets/{id}?tracking_number=&carrier=`` and ``PUT /pick_tickets/{id}/ship``;
- ``POST /stock_operations`` with a top-level ``idempotency_key`` (a repeat creates nothing);
- webhooks ``{"event": "pick_ticket_update", "pick_ticket": {...}}``, unsigned, optionally repeated.

What the reference marks unknown is a setting (``SandboxSettings``) or a labelled guess: the rate
limit (``rate_limit_per_second``, off by default), the error body (``{"error", "message",
"errors"}``), the sales-order POST body (mirrors the read model), ``GET /warehouses`` and product
``brand``. docs/channels/uphance.md lists them as "to verify against a live account".
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from flask import Flask, Response, g, request

from hub.sandbox import FaultMiddleware, Faults

PAGE_SIZE = 100
DEFAULT_EMAIL = "admin@harbourlane.example"
DEFAULT_PASSWORD = "correct horse battery"
MAIN_ORG = {"id": 9579, "name": "Harbour Lane Pty Ltd"}
OTHER_ORG = {"id": 9580, "name": "Harbour Lane NZ Ltd"}
SEASONS = [{"id": 1, "name": "AW22"}, {"id": 2, "name": "SS22"}, {"id": 3, "name": "SS23"}]
CHANNELS = [
    {"channel_ID": 11, "channel_name": "Wholesale AUD", "currency": "AUD"},
    {"channel_ID": 12, "channel_name": "The Iconic", "currency": "AUD"},
    {"channel_ID": 13, "channel_name": "Retail NZD", "currency": "NZD"},
]
PRICE_FACTORS = {11: Decimal("1"), 12: Decimal("1.1"), 13: Decimal("1.15")}
WAREHOUSES = [{"id": 1, "name": "Sydney DC"}, {"id": 2, "name": "Melbourne 3PL"}]
ICONIC_CUSTOMER = {
    "id": 501, "name": "THE ICONIC", "customer_type": "wholesale", "channel_id": 12, "channel_name": "The Iconic",
    "currency": "AUD", "country": "AU", "city": "Sydney",
    "addresses": [{"id": 7001, "customer_id": 501, "line_1": "Level 18, 363 George St", "line_2": "", "line_3": "",
                   "city": "Sydney", "state": "NSW", "country": "AU", "postcode": "2000",
                   "default_for_shipping": False, "default_for_billing": True}],
}
BRANDS = ["Harbour Lane", "Kestrel"]
CATEGORIES = [("Dresses", "Midi", "Midi Dress"), ("Tops", "Tees", "Boxy Tee"), ("Knitwear", "Cardigans", "Cardigan"),
              ("Pants", "Wide Leg", "Wide Leg Pant")]
COLOURS = ["Black", "Navy", "Ivory", "Sage"]
SIZES = ["XS", "S", "M", "L"]
SEED_EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc).timestamp()


def iso(moment: float) -> str:
    """Uphance's newer timestamp form: milliseconds and a Z suffix."""
    stamp = datetime.fromtimestamp(moment, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class SandboxSettings:
    """Knobs for what the public material leaves open, plus sizes of the seed."""

    token_lifetime: int = 604800  # the current doc's default: 7 days
    rate_limit_per_second: int | None = None  # not published; None answers no 429 of its own
    auto_pick_tickets: bool = True  # a confirmed order gets a pick ticket (per-channel option, U13)
    webhook_repeat: int = 1  # deliveries per event: Uphance may deliver an event more than once
    products: int = 12  # products in the seed catalogue


class ApiError(Exception):
    """An error answered in the sandbox's (assumed) envelope."""

    def __init__(self, status: int, error: str, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.errors = status, error, message, errors


@dataclass
class Token:
    access_token: str
    refresh_token: str
    user: str
    created_at: float
    expires_in: int
    organisation_id: int | None = None

    def expired(self, now: float) -> bool:
        return now >= self.created_at + self.expires_in


@dataclass
class OrgData:
    """One organisation's records; the current organisation of a token decides which one a call sees."""

    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    seasons: list[dict[str, Any]] = field(default_factory=list)
    channels: list[dict[str, Any]] = field(default_factory=list)
    warehouses: list[dict[str, Any]] = field(default_factory=list)
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    sales_orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    pick_tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    stock_operations: dict[str, dict[str, Any]] = field(default_factory=dict)  # idempotency_key -> operation

    def skus(self) -> Iterable[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        for product in self.products.values():
            for variation in product["variations"]:
                for sku in variation["skus"]:
                    yield product, variation, sku

    def sku_by_id(self, sku_id: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
        return next((found for found in self.skus() if found[2]["id"] == sku_id), None)

    def sku_by_number(self, number: str) -> dict[str, Any] | None:
        return next((sku for _, _, sku in self.skus() if sku["sku_number"] == number), None)


class UphanceState:
    """Everything the sandbox knows; tests reach it as ``app.state``."""

    def __init__(self, seed: int, settings: SandboxSettings, clock: Callable[[], float],
                 deliver: Callable[[dict[str, Any]], None] | None) -> None:
        self.settings = settings
        self.clock = clock
        self.deliver = deliver
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.ids = itertools.count(100_000)
        self.users = {DEFAULT_EMAIL: DEFAULT_PASSWORD}
        self.organisations = [dict(MAIN_ORG), dict(OTHER_ORG)]
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.orgs = {MAIN_ORG["id"]: OrgData(), OTHER_ORG["id"]: OrgData()}
        self.webhooks: list[dict[str, Any]] = []  # every delivery made, repeats included
        self.undelivered: list[dict[str, Any]] = []  # deliveries not acknowledged with a 2xx, to retry
        self.window: tuple[int, int] = (0, 0)  # (second, requests in it) for the rate limit
        self._seed(self.orgs[MAIN_ORG["id"]], settings.products)

    @property
    def main(self) -> OrgData:
        return self.orgs[MAIN_ORG["id"]]

    def next_id(self) -> int:
        return next(self.ids)

    def now(self) -> str:
        return iso(self.clock())

    # -- seed -------------------------------------------------------------

    def _seed(self, org: OrgData, count: int) -> None:
        org.seasons = [dict(s) for s in SEASONS]
        org.channels = [dict(c) for c in CHANNELS]
        org.warehouses = [dict(w) for w in WAREHOUSES]
        org.customers = {ICONIC_CUSTOMER["id"]: json.loads(json.dumps(ICONIC_CUSTOMER))}
        for index in range(count):
            product = self._seed_product(index)
            org.products[product["id"]] = product

    def _seed_product(self, index: int) -> dict[str, Any]:
        style = f"HL{1000 + index}"
        category, sub_category, noun = CATEGORIES[index % len(CATEGORIES)]
        season = SEASONS[index % len(SEASONS)]["id"]
        stamp = iso(SEED_EPOCH + index * 60)
        colours = [COLOURS[(index + k) % len(COLOURS)] for k in range(2)]
        return {
            "id": 1000 + index, "product_identifier": style, "name": f"{noun} {style}",
            "description": f"A {sub_category.lower()} piece from the {BRANDS[index % 2]} range.",
            "sizing_system": ", ".join(SIZES), "image_url": f"https://cdn.example.com/{style}.jpg",
            "not_for_sale": False, "brand": BRANDS[index % 2], "category": category, "sub_category": sub_category,
            # The doc shows a scalar, live lists an array: the seed carries both forms.
            "season_id": season if index % 2 == 0 else [season],
            "custom_fields": [{"name": "Gender", "field_type": "dropdown", "value": "Women" if index % 3 else "Men"}],
            "created_at": stamp, "updated_at": stamp,
            "variations": [self._seed_variation(index, style, k, colour) for k, colour in enumerate(colours)],
        }

    def _seed_variation(self, index: int, style: str, k: int, colour: str) -> dict[str, Any]:
        variation_id = 20_000 + index * 10 + k
        msrp = Decimal(79 + (index % 5) * 20) + Decimal("0.95")
        # Each channel is its own price list; the marketplace channel carries an uplift.
        prices = [{"name": c["channel_name"], "currency": c["currency"],
                   "msrp_money": _money(msrp * PRICE_FACTORS[c["channel_ID"]]),
                   "wsp_money": _money(msrp * PRICE_FACTORS[c["channel_ID"]] / Decimal("2.2"))} for c in CHANNELS]
        skus = []
        for s, size in enumerate(SIZES):
            on_hand = self.rng.randint(0, 20)
            allocated = min(on_hand, self.rng.randint(0, 2))
            incoming = self.rng.randint(0, 10)
            # One SKU in the catalogue has no EAN, as real catalogues do.
            ean = "" if (index, k, s) == (3, 0, 0) else f"93{index:05d}{k}{s}{self.rng.randint(100, 999)}"
            skus.append({
                "id": 300_000 + index * 100 + k * 10 + s, "sku_number": f"{style}-{colour[:3].upper()}-{size}",
                "color": colour, "size": size, "ean": ean, "in_stock": on_hand,
                "available_to_sell_from_stock": on_hand - allocated,
                "available_to_sell": on_hand - allocated + incoming,
            })
        return {"id": variation_id, "color": colour, "textile_content": "100% cotton", "prices": prices, "skus": skus}

    def load_catalogue(self, products: Iterable[dict[str, Any]], seasons: Iterable[dict[str, Any]] = ()) -> int:
        """Add seasons and products (in the shape ``GET /products`` returns) to the main organisation,
        for a seed catalogue of one's own (the demo's); a product with a known id replaces it."""
        with self.lock:
            org = self.main
            known = {season["id"] for season in org.seasons}
            for season in seasons:
                if season["id"] not in known:
                    org.seasons.append(dict(season))
                    known.add(season["id"])
            count = 0
            for product in products:
                org.products[int(product["id"])] = json.loads(json.dumps(product))
                count += 1
            return count

    # -- events -----------------------------------------------------------

    def emit(self, event: str, resource: str, record: dict[str, Any]) -> None:
        payload = {"event": event, resource: json.loads(json.dumps(record))}
        for _ in range(max(1, self.settings.webhook_repeat)):
            self.webhooks.append(payload)
            self.send(payload)

    def send(self, payload: dict[str, Any]) -> bool:
        """Deliver one webhook; a failure is kept for a retry, as Uphance retries for 48 hours."""
        if self.deliver is None:
            return True
        try:
            delivered = self.deliver(payload) is not False
        except Exception:  # noqa: BLE001 - any receiver failure means "not acknowledged"
            delivered = False
        if not delivered:
            self.undelivered.append(payload)
        return delivered

    def retry_undelivered(self) -> int:
        waiting, self.undelivered = self.undelivered, []
        return sum(self.send(payload) for payload in waiting)


# -- helpers ------------------------------------------------------------------


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def error_body(status: int, message: str) -> tuple[bytes, str]:
    """The sandbox's error envelope (assumed: clients read ``error`` or ``message``)."""
    code = {401: "invalid_token", 403: "forbidden", 404: "not_found", 422: "unprocessable_entity",
            429: "too_many_requests"}.get(status, "server_error" if status >= 500 else "bad_request")
    return json.dumps({"error": code, "message": message}).encode(), "application/json"


def paged(records: list[dict[str, Any]], key: str) -> Response:
    """One page of ``records`` under ``key`` with Uphance's ``meta`` block."""
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        raise ApiError(400, "bad_request", "page must be a whole number") from None
    if page < 1:
        raise ApiError(400, "bad_request", "page must be 1 or more")
    total_pages = max(1, -(-len(records) // PAGE_SIZE))
    chunk = records[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    meta = {"current_page": page, "next_page": page + 1 if page < total_pages else None,
            "prev_page": page - 1 if page > 1 else None, "total_pages": total_pages, "total_count": len(records)}
    return _json({key: chunk, "meta": meta})


def _since_filters(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply ``since_id`` and ``since_created_at`` as the list endpoints document them."""
    chosen = sorted(records, key=lambda record: record["id"])
    if "since_id" in request.args:
        since_id = _int_arg("since_id")
        chosen = [r for r in chosen if r["id"] > since_id]
    if "since_created_at" in request.args:
        try:
            since = parse_iso(request.args["since_created_at"])
        except ValueError:
            raise ApiError(400, "bad_request", "since_created_at must be ISO 8601") from None
        chosen = [r for r in chosen if parse_iso(r["created_at"]) >= since]
    return chosen


def _int_arg(name: str) -> int:
    try:
        return int(request.args[name])
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a whole number") from None


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def invalid(field_name: str, problem: str) -> ApiError:
    """A 422 naming the field, in the sandbox's (assumed) envelope."""
    return ApiError(422, "unprocessable_entity", f"{field_name} {problem}", {field_name: [problem]})


def _oauth_error(error: str, description: str) -> Response:
    """Token errors in the Doorkeeper shape the token response suggests."""
    return _json({"error": error, "error_description": description}, 400)


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


# -- the app --------------------------------------------------------------------


def post_webhooks_to(url: str, timeout: float = 5.0) -> Callable[[dict[str, Any]], bool]:
    """A ``deliver`` that POSTs each webhook to ``url`` (the demo's callback URL, secret included)."""

    def deliver(payload: dict[str, Any]) -> bool:
        return httpx.post(url, json=payload, timeout=timeout).is_success

    return deliver


def create_app(seed: int = 1, *, clock: Callable[[], float] = time.time, faults: Faults | None = None,
               deliver: Callable[[dict[str, Any]], Any] | None = None, **settings: Any) -> FaultMiddleware:
    """The sandbox as a WSGI app wrapped in the fault kit; its state is ``app.state``.

    ``settings`` are ``SandboxSettings`` fields. ``deliver`` receives each webhook payload as it is
    sent; returning False or raising marks it undelivered (``POST /_control/webhooks/retry`` resends).
    """
    state = UphanceState(seed, SandboxSettings(**settings), clock, deliver)
    app = Flask("uphance_sandbox")
    _auth_routes(app, state)
    _catalogue_routes(app, state)
    _order_routes(app, state)
    _pick_ticket_routes(app, state)
    _control_routes(app, state)
    _guards(app, state)
    wrapped = FaultMiddleware(app, faults or Faults(seed=seed), error_body=error_body)
    wrapped.state = state  # type: ignore[attr-defined]
    return wrapped


def _guards(app: Flask, state: UphanceState) -> None:
    open_paths = {"/oauth/token"}

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        payload: dict[str, Any] = {"error": error.error, "message": error.message}
        if error.errors:
            payload["errors"] = error.errors
        response = _json(payload, error.status)
        if error.status == 429:
            response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return _json({"error": "not_found", "message": f"no route {request.method} {request.path}"}, 404)

    @app.before_request
    def authenticate() -> Response | None:
        if request.path in open_paths or request.path.startswith("/_control"):
            return None
        _rate_limit(state)
        g.token = _token_of_request(state)
        if request.path.startswith("/organisations"):
            return None
        if g.token.organisation_id is None:
            raise ApiError(403, "forbidden", "no current organisation: POST /organisations/set_current_org first")
        g.org = state.orgs[g.token.organisation_id]
        return None


def _rate_limit(state: UphanceState) -> None:
    limit = state.settings.rate_limit_per_second
    if not limit:
        return
    second = int(state.clock())
    with state.lock:
        current, count = state.window
        state.window = (second, count + 1 if current == second else 1)
        if state.window[1] > limit:
            raise ApiError(429, "too_many_requests", f"more than {limit} requests in one second")


def _token_of_request(state: UphanceState) -> Token:
    header = request.headers.get("Authorization", "")
    # Real clients send "Bearer <token>"; some doc examples omit the scheme. Accept both.
    value = header.split(" ", 1)[1] if header.lower().startswith("bearer ") else header
    token = state.tokens.get(value.strip())
    if token is None:
        raise ApiError(401, "invalid_token", "The access token is invalid")
    if token.expired(state.clock()):
        raise ApiError(401, "invalid_token", "The access token expired")
    return token


def _auth_routes(app: Flask, state: UphanceState) -> None:
    @app.post("/oauth/token")
    def token() -> Response:
        body = request.get_json(silent=True) or {}
        grant = body.get("grant_type")
        if grant == "password":
            user = body.get("email")
            if not user or state.users.get(user) != body.get("password"):
                return _oauth_error("invalid_grant", "The provided authorization grant is invalid")
        elif grant == "refresh_token":
            old = state.refresh_tokens.pop(str(body.get("refresh_token")), None)
            if old is None:
                return _oauth_error("invalid_grant", "The refresh token is invalid")
            state.tokens.pop(old.access_token, None)
            user = old.user
        else:
            return _oauth_error("unsupported_grant_type", f"grant_type {grant!r}")
        lifetime = body.get("expires_in") or state.settings.token_lifetime
        if not isinstance(lifetime, int) or lifetime < 1:
            return _oauth_error("invalid_request", "expires_in must be whole seconds")
        issued = Token(secrets.token_hex(16), secrets.token_hex(16), user, state.clock(), int(lifetime))
        state.tokens[issued.access_token] = issued
        state.refresh_tokens[issued.refresh_token] = issued
        return _json({"access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in,
                      "refresh_token": issued.refresh_token, "created_at": int(issued.created_at)})

    @app.get("/organisations")
    def organisations() -> Response:
        return _json({"organisations": state.organisations})

    @app.post("/organisations/set_current_org")
    def set_current_org() -> Response:
        wanted = _body().get("organizationId")
        if wanted not in state.orgs:
            raise ApiError(404, "not_found", f"organisation {wanted!r} is not one of yours")
        g.token.organisation_id = wanted
        return _json({"Status": "Updated"}, 201)


def _catalogue_routes(app: Flask, state: UphanceState) -> None:
    @app.get("/products")
    def products() -> Response:
        records = list(g.org.products.values())
        identifier = request.args.get("filter[product_identifier]")
        if identifier is not None:
            records = [p for p in records if p["product_identifier"] == identifier]
        return paged(_since_filters(records), "products")

    @app.get("/products/<int:product_id>")
    def product(product_id: int) -> Response:
        found = g.org.products.get(product_id)
        if found is None:
            raise ApiError(404, "not_found", f"product {product_id} not found")
        return _json({"product": found})

    @app.get("/seasons")
    def seasons() -> Response:
        return _json({"seasons": g.org.seasons})

    @app.get("/channels")
    def channels() -> Response:
        return _json({"channels": g.org.channels})

    @app.get("/warehouses")
    def warehouses() -> Response:  # not seen in any client: an assumption, to verify
        return _json({"warehouses": g.org.warehouses})

    @app.post("/stock_operations")
    def stock_operations() -> Response:
        body = _body()
        key = body.get("idempotency_key")
        if not isinstance(key, str) or not 0 < len(key) <= 128:
            raise invalid("idempotency_key", "must be 1-128 characters")
        with state.lock:
            if key in g.org.stock_operations:
                return _json({"stock_operation": g.org.stock_operations[key]}, 200)
            operation = _apply_stock_operation(state, g.org, body.get("stock_operation"))
            g.org.stock_operations[key] = operation
        return _json({"stock_operation": operation}, 201)


def _apply_stock_operation(state: UphanceState, org: OrgData, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("line_quantities"), list) or not data["line_quantities"]:
        raise invalid("stock_operation.line_quantities", "can't be blank")
    found = []
    for index, line in enumerate(data["line_quantities"]):
        where = f"stock_operation.line_quantities[{index}]"
        match = org.sku_by_id(line.get("sku_id")) if isinstance(line, dict) else None
        if match is None:
            raise invalid(f"{where}.sku_id", "is not a SKU")
        if not isinstance(line.get("quantity"), int) or isinstance(line.get("quantity"), bool):
            raise invalid(f"{where}.quantity", "must be a whole number")
        found.append((match, line["quantity"]))
    for (product, _, sku), quantity in found:
        # Sign convention assumed: positive puts units into stock.
        for name in ("in_stock", "available_to_sell", "available_to_sell_from_stock"):
            sku[name] += quantity
        product["updated_at"] = state.now()
    return {"id": state.next_id(), "created_at": state.now(), **{k: data.get(k) for k in
            ("source", "external_ref", "external_url", "comments")}, "line_quantities": data["line_quantities"]}


def _order_routes(app: Flask, state: UphanceState) -> None:
    @app.get("/sales_orders")
    def sales_orders() -> Response:
        records = list(g.org.sales_orders.values())
        number = request.args.get("by_order_number")
        if number is not None:
            records = [o for o in records if str(o["order_number"]) == number]
        return paged(_since_filters(records), "sales_orders")

    @app.get("/sales_orders/<int:order_id>")
    def sales_order(order_id: int) -> Response:
        found = g.org.sales_orders.get(order_id)
        if found is None:
            raise ApiError(404, "not_found", f"sales order {order_id} not found")
        return _json({"sales_order": found})

    @app.post("/sales_orders")
    def create_sales_order() -> Response:
        data = _body().get("sales_order")
        if not isinstance(data, dict):
            raise invalid("sales_order", "can't be blank")
        with state.lock:
            order = _build_sales_order(state, g.org, data)
            g.org.sales_orders[order["id"]] = order
            if order["status"] == "confirmed":
                _confirm(state, g.org, order)
        return _json({"sales_order": order}, 201)


def _require(data: dict[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kinds) or isinstance(value, bool) or value in ("", []):
        raise invalid(f"sales_order.{name}", "can't be blank")
    return value


def _build_sales_order(state: UphanceState, org: OrgData, data: dict[str, Any]) -> dict[str, Any]:
    number = str(_require(data, "order_number", (str, int)))
    customer = org.customers.get(_require(data, "company_id", (int,)))
    if customer is None:
        raise invalid("sales_order.company_id", "is not a customer")
    channel = next((c for c in org.channels if c["channel_ID"] == _require(data, "channel_id", (int,))), None)
    if channel is None:
        raise invalid("sales_order.channel_id", "is not a channel")
    warehouse = _require(data, "warehouse_name", (str,))
    if warehouse not in {w["name"] for w in org.warehouses}:
        raise invalid("sales_order.warehouse_name", f"{warehouse!r} is not a warehouse")
    lines = [_build_line(state, org, line, i) for i, line in enumerate(_require(data, "line_items", (list,)))]
    quantity = {id(li): sum(q["quantity"] for q in li["line_quantities"]) for li in lines}
    items_total = sum((Decimal(li["unit_price"]) * quantity[id(li)] for li in lines), Decimal(0))
    term = data.get("payment_term_name") or ""
    now = state.now()
    return {
        "id": state.next_id(), "order_number": number, "purchase_order_ref": data.get("purchase_order_ref") or "",
        "created_at": now, "updated_at": now, "submitted_at": now, "confirmed_at": now if term == "PIA" else None,
        # Connector orders stay Draft unless the payment term is PIA (payment in advance), as for Shopify (U13).
        "status": "confirmed" if term == "PIA" else "draft", "fulfillment_status": "nothing_shipped",
        "financial_status": "nothing_paid", "payment_term_name": term, "company_id": customer["id"],
        "company_name": customer["name"], "channel_id": channel["channel_ID"], "channel_name": channel["channel_name"],
        "currency": channel["currency"], "warehouse_name": warehouse, "notes": data.get("notes") or "",
        "shipping_address": data.get("shipping_address") or {}, "billing_address": data.get("billing_address") or {},
        "shipping_contact": data.get("shipping_contact") or {}, "items_total": _money(items_total),
        "grand_total": _money(items_total), "total_quantity": sum(quantity.values()),
        "line_items": lines,
    }


def _build_line(state: UphanceState, org: OrgData, line: Any, index: int) -> dict[str, Any]:
    where = f"sales_order.line_items[{index}]"
    if not isinstance(line, dict):
        raise invalid(where, "must be an object")
    product = org.products.get(line.get("product_id"))
    variation = next((v for v in (product or {}).get("variations", []) if v["id"] == line.get("variation_id")), None)
    if product is None or variation is None:
        raise invalid(f"{where}.variation_id", "is not a variation of product_id")
    try:
        price = Decimal(str(line.get("unit_price")))
    except InvalidOperation:
        raise invalid(f"{where}.unit_price", "is not a number") from None
    if not price.is_finite() or price < 0:
        raise invalid(f"{where}.unit_price", "must be 0 or more")
    quantities = []
    for q_index, wanted in enumerate(line.get("line_quantities") or []):
        sku = next((s for s in variation["skus"] if isinstance(wanted, dict) and s["id"] == wanted.get("sku_id")), None)
        quantity = wanted.get("quantity") if isinstance(wanted, dict) else None
        if sku is None or not isinstance(quantity, int) or quantity < 1:
            problem = f"needs a SKU of variation {variation['id']} and a quantity of 1 or more"
            raise invalid(f"{where}.line_quantities[{q_index}]", problem)
        quantities.append({"id": state.next_id(), "size": sku["size"], "quantity": quantity, "sku_id": sku["id"]})
    if not quantities:
        raise invalid(f"{where}.line_quantities", "can't be blank")
    return {"id": state.next_id(), "product_id": product["id"], "product_name": product["name"],
            "product_identifier": product["product_identifier"], "variation_id": variation["id"],
            "color": variation["color"], "unit_price": _money(price), "original_price": _money(price),
            "unit_tax": "0.0", "line_quantities": quantities}


def _confirm(state: UphanceState, org: OrgData, order: dict[str, Any]) -> None:
    """Confirm an order: allocate its stock and, when the channel does so, raise its pick ticket."""
    order["status"], order["confirmed_at"], order["updated_at"] = "confirmed", state.now(), state.now()
    for line in order["line_items"]:
        for quantity in line["line_quantities"]:
            _, _, sku = org.sku_by_id(quantity["sku_id"])  # type: ignore[misc]
            sku["available_to_sell"] -= quantity["quantity"]
            sku["available_to_sell_from_stock"] -= quantity["quantity"]
    if state.settings.auto_pick_tickets:
        _raise_pick_ticket(state, org, order)


def _raise_pick_ticket(state: UphanceState, org: OrgData, order: dict[str, Any]) -> dict[str, Any]:
    ticket_id = state.next_id()
    address = order["shipping_address"]
    contact = order["shipping_contact"]
    lines = []
    for line in order["line_items"]:
        quantities = []
        for quantity in line["line_quantities"]:
            _, _, sku = org.sku_by_id(quantity["sku_id"])  # type: ignore[misc]
            quantities.append({**quantity, "sku_number": sku["sku_number"], "upc_number": sku["ean"]})
        lines.append({**line, "line_quantities": quantities})
    now = state.now()
    ticket = {
        "id": ticket_id, "created_at": now, "updated_at": now, "stock_adjusted_at": None, "status": "open",
        "tracking_number": "", "carrier": "", "service": "", "notes": order["notes"], "order_id": order["id"],
        "order_number": order["order_number"], "sale_id": order["id"], "warehouse": order["warehouse_name"],
        "channel": order["channel_name"], "shipment_number": str(ticket_id), "customer_id": order["company_id"],
        "customer_name": order["company_name"], "currency": order["currency"], "organisation_id": MAIN_ORG["id"],
        "address": {k: address.get(k, "") for k in ("line_1", "line_2", "line_3", "city", "state", "country", "postcode")},
        "contact_name": contact.get("name", ""), "contact_email": contact.get("email", ""),
        "contact_phone": contact.get("phone", ""), "total_quantity": order["total_quantity"], "line_items": lines,
    }
    org.pick_tickets[ticket_id] = ticket
    state.emit("pick_ticket_create", "pick_ticket", ticket)
    return ticket


def _pick_ticket_routes(app: Flask, state: UphanceState) -> None:
    @app.get("/pick_tickets")
    def pick_tickets() -> Response:
        records = list(g.org.pick_tickets.values())
        for arg, key in (("by_order_number", "order_number"), ("by_order_id", "order_id"),
                         ("by_shipment_number", "shipment_number"), ("filter[warehouse_name]", "warehouse")):
            if arg in request.args:
                records = [t for t in records if str(t[key]) == request.args[arg]]
        return paged(_since_filters(records), "pick_tickets")

    @app.get("/pick_tickets/<int:ticket_id>")
    def pick_ticket(ticket_id: int) -> Response:
        return _json({"pick_ticket": _ticket(g.org, ticket_id)})

    @app.put("/pick_tickets/<int:ticket_id>")
    def update_pick_ticket(ticket_id: int) -> Response:
        with state.lock:
            ticket = update_ticket(state, g.org, ticket_id, request.args)
        return _json({"pick_ticket": ticket})

    @app.put("/pick_tickets/<int:ticket_id>/ship")
    def ship_pick_ticket(ticket_id: int) -> Response:
        with state.lock:
            ticket = ship_ticket(state, g.org, ticket_id)
        return _json({"pick_ticket": ticket})


def _ticket(org: OrgData, ticket_id: int) -> dict[str, Any]:
    ticket = org.pick_tickets.get(ticket_id)
    if ticket is None:
        raise ApiError(404, "not_found", f"pick ticket {ticket_id} not found")
    return ticket


def update_ticket(state: UphanceState, org: OrgData, ticket_id: int, changes: Any) -> dict[str, Any]:
    """``PUT /pick_tickets/{id}?tracking_number=&carrier=&service=``: fields go in the query string."""
    ticket = _ticket(org, ticket_id)
    for name in ("tracking_number", "carrier", "service"):
        if name in changes:
            ticket[name] = str(changes[name])
    ticket["updated_at"] = state.now()
    state.emit("pick_ticket_update", "pick_ticket", ticket)
    return ticket


def ship_ticket(state: UphanceState, org: OrgData, ticket_id: int) -> dict[str, Any]:
    ticket = _ticket(org, ticket_id)
    if ticket["status"] == "shipped":
        raise ApiError(422, "unprocessable_entity", f"pick ticket {ticket_id} is already shipped")
    for line in ticket["line_items"]:
        for quantity in line["line_quantities"]:
            _, _, sku = org.sku_by_id(quantity["sku_id"])  # type: ignore[misc]
            sku["in_stock"] -= quantity["quantity"]
    ticket["status"], ticket["updated_at"], ticket["stock_adjusted_at"] = "shipped", state.now(), state.now()
    order = org.sales_orders.get(ticket["order_id"])
    if order is not None:
        order["fulfillment_status"], order["updated_at"] = "shipped", state.now()
    state.emit("pick_ticket_update", "pick_ticket", ticket)
    return ticket


def _control_routes(app: Flask, state: UphanceState) -> None:
    """Actions a person would take inside Uphance, for tests and the demo."""

    @app.post("/_control/sales_orders/<int:order_id>/confirm")
    def control_confirm(order_id: int) -> Response:
        with state.lock:
            order = state.main.sales_orders.get(order_id)
            if order is None:
                raise ApiError(404, "not_found", f"sales order {order_id} not found")
            if order["status"] != "confirmed":
                _confirm(state, state.main, order)
        return _json({"sales_order": order})

    @app.post("/_control/sales_orders/<int:order_id>/pick_ticket")
    def control_pick_ticket(order_id: int) -> Response:
        with state.lock:
            order = state.main.sales_orders.get(order_id)
            if order is None:
                raise ApiError(404, "not_found", f"sales order {order_id} not found")
            return _json({"pick_ticket": _raise_pick_ticket(state, state.main, order)}, 201)

    @app.post("/_control/pick_tickets/<int:ticket_id>/ship")
    def control_ship(ticket_id: int) -> Response:
        body = request.get_json(silent=True) or {}
        with state.lock:
            update_ticket(state, state.main, ticket_id, {k: body[k] for k in ("tracking_number", "carrier") if k in body})
            return _json({"pick_ticket": ship_ticket(state, state.main, ticket_id)})

    @app.post("/_control/stock")
    def control_stock() -> Response:
        body = request.get_json(silent=True) or {}
        with state.lock:
            sku = state.main.sku_by_number(str(body.get("sku_number")))
            if sku is None:
                raise ApiError(404, "not_found", f"SKU {body.get('sku_number')!r} not found")
            for name in ("in_stock", "available_to_sell", "available_to_sell_from_stock", "ean"):
                if name in body:
                    sku[name] = body[name]
            product = next(p for p, _, s in state.main.skus() if s is sku)
            product["updated_at"] = state.now()
        return _json({"sku": sku})

    @app.post("/_control/catalogue")
    def control_catalogue() -> Response:
        body = request.get_json(silent=True) or {}
        products, seasons = body.get("products") or [], body.get("seasons") or []
        if not isinstance(products, list) or not isinstance(seasons, list):
            raise ApiError(400, "bad_request", "products and seasons must be lists")
        return _json({"products": state.load_catalogue(products, seasons), "seasons": len(state.main.seasons)})

    @app.post("/_control/tokens/expire")
    def control_expire() -> Response:
        for token in state.tokens.values():
            token.expires_in = 0
        return _json({"expired": len(state.tokens)})

    @app.get("/_control/webhooks")
    def control_webhooks() -> Response:
        return _json({"webhooks": state.webhooks, "undelivered": len(state.undelivered)})

    @app.post("/_control/webhooks/retry")
    def control_webhooks_retry() -> Response:
        with state.lock:
            delivered = state.retry_undelivered()
        return _json({"delivered": delivered, "undelivered": len(state.undelivered)})

    @app.put("/_control/settings")
    def control_settings() -> Response:
        body = request.get_json(silent=True) or {}
        for name, value in body.items():
            if not hasattr(state.settings, name):
                raise ApiError(400, "bad_request", f"unknown setting {name!r}")
            setattr(state.settings, name, value)
        return _json(vars(state.settings))
