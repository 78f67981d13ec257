"""An emulator of the Starshipit API (https://api.starshipit.com) for tests, the demo and Testing.

What it checks and answers follows shared/reference (section B): both keys on every call (a bad
subscription key is refused by the API gateway in its own shape, a bad API key in Starshipit's
envelope), the ``success``/``errors`` envelope, orders create / import (<= 50) / get / update /
delete, the unshipped and shipped lists paged by ``limit`` (<= 250) and ``page`` with
``total_pages``, label printing, ``/api/track``, signed tracking webhooks, and the per-tier rate
limit answered with 429 and ``Retry-After``.

Facts the reference marks as inferred or unknown are settings (``SandboxSettings``): whether a
duplicate ``order_number`` is refused (409) or silently creates a second order, whether the
shipped list carries packages (tracking) or only a summary, the 24-hour window of unfiltered lists,
the shape of the import response. Control API under ``/_control``: dispatch an order (print the
label with a carrier and tracking number), move its tracking status, make creates time out after
they were applied, list everything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
from flask import Flask, Response, jsonify, request

from hub.sandbox import FaultMiddleware, Faults
from plugins.starshipit.rules import STARSHIPIT_CARRIER_CODES

API_KEY = "sandbox-api-key"
DEVELOPER_KEY = "sandbox-developer-subscription"
PRODUCTION_KEY = "sandbox-production-subscription"

# What Starshipit's webhooks and tracking call the carriers (display names, not codes).
DISPLAY_NAMES: dict[str, str] = {
    "AusPost": "Australia Post", "StarTrack": "StarTrack", "Fastways": "Aramex", "CouriersPlease": "Couriers Please",
    "Sendle": "Sendle", "DHL": "DHL Express", "TNT": "TNT", "TollPriority": "Team Global Express",
    "TollIPEC": "Toll IPEC", "NZPost": "NZ Post", "CourierPost": "CourierPost", "UPS": "UPS", "FedEx": "FedEx",
    "DHLGlobalMail": "DHL eCommerce", "HunterExpress": "Hunter Express", "AlliedExpress": "Allied Express",
    "DirectFreight": "Direct Freight Express",
}
TRACKING_URLS: dict[str, str] = {
    "AusPost": "https://auspost.com.au/mypost/track/#/details/{}",
    "StarTrack": "https://startrack.com.au/track/details/{}",
    "Fastways": "https://www.aramex.com.au/tools/track?l={}",
    "CouriersPlease": "https://www.couriersplease.com.au/tools-track/no/{}",
    "Sendle": "https://track.sendle.com/tracking?ref={}",
    "DHL": "https://www.dhl.com/au-en/home/tracking.html?tracking-id={}",
}
TRACKING_STATUSES = ("Printed", "Dispatched", "InTransit", "OutForDelivery", "Delivered", "PickupInStore",
                     "AttemptedDelivery", "Exception", "AwaitingCollection", "Cancelled")
SHIPPED = ("Printed", "Delivered")
UNSHIPPED = ("Unshipped", "Saved")

WebhookSender = Callable[[str, dict[str, str], bytes], None]


@dataclass
class SandboxSettings:
    """The account the sandbox plays, and the answers to what the reference leaves open."""

    api_keys: tuple[str, ...] = (API_KEY,)
    subscription_keys: dict[str, str] = field(
        default_factory=lambda: {DEVELOPER_KEY: "developer", PRODUCTION_KEY: "production"})
    tier_rates: dict[str, float] = field(default_factory=lambda: {"developer": 2.0, "production": 20.0})
    duplicate_policy: str = "allow"  # [I] "allow": a second order is made; "reject": 409
    shipped_list_detail: str = "full"  # [I] "full": packages with tracking; "summary": none (use /api/track)
    unfiltered_window_hours: float = 24.0  # [I] lists without a since filter cover about a day
    import_max: int = 50
    page_max: int = 250
    webhook_url: str | None = None
    webhook_secret: str | None = None  # with one, webhooks carry X-Starshipit-Signature
    seed_orders: int = 4  # half of them shipped
    first_order_id: int = 100_001  # the demo moves it per run, so order ids never repeat across runs


@dataclass
class StoredOrder:
    order: dict[str, Any]
    updated: float  # wall clock
    tracking_status: str = ""
    events: list[dict[str, str]] = field(default_factory=list)


class SandboxState:
    """The in-memory Starshipit account. Tests reach it as ``app.state``."""

    def __init__(self, settings: SandboxSettings, *, seed: int, clock: Callable[[], float],
                 now: Callable[[], float], webhook_sender: WebhookSender | None) -> None:
        self.settings = settings
        self.clock = clock  # monotonic, for the rate limit
        self.now = now  # wall clock, for order timestamps and since filters
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.orders: dict[int, StoredOrder] = {}
        self.next_id = settings.first_order_id
        self.timeouts_after_apply = 0
        self.requests: dict[str, deque[float]] = {}
        self.webhook_sender = webhook_sender or _post_webhook
        self.webhooks_sent: list[dict[str, Any]] = []

    # -- orders ---------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            order_id, self.next_id = self.next_id, self.next_id + 1
            order = _full_order(order_id, body, self.stamp())
            self.orders[order_id] = StoredOrder(order=order, updated=self.now())
            return order

    def by_number(self, number: str) -> StoredOrder | None:
        # The most recent wins when duplicates exist, as a search by number would show it first.
        with self.lock:
            found = [s for s in self.orders.values() if s.order["order_number"] == number]
        return found[-1] if found else None

    def find(self, order_id: Any = None, number: Any = None) -> StoredOrder | None:
        if order_id not in (None, ""):
            try:
                return self.orders.get(int(order_id))
            except (TypeError, ValueError):
                return None
        return self.by_number(str(number)) if number not in (None, "") else None

    def count(self, number: str) -> int:
        return sum(1 for s in self.orders.values() if s.order["order_number"] == number)

    def stamp(self) -> str:
        return datetime.fromtimestamp(self.now(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def touch(self, stored: StoredOrder) -> None:
        stored.updated = self.now()

    def take_timeout(self) -> bool:
        with self.lock:
            if self.timeouts_after_apply > 0:
                self.timeouts_after_apply -= 1
                return True
            return False

    # -- shipping -------------------------------------------------------------------------

    def print_label(self, stored: StoredOrder, carrier: str | None, service: str | None,
                    tracking_number: str | None) -> dict[str, Any]:
        order = stored.order
        code = carrier or order.get("carrier") or "AusPost"
        number = tracking_number or self._tracking_number(code)
        url = TRACKING_URLS.get(code, "https://track.starshipit.com/?t={}").format(number)
        order.update(carrier=code, carrier_name=DISPLAY_NAMES.get(code, code), status="Printed",
                     carrier_service_code=service or order.get("carrier_service_code") or "")
        order["packages"] = [{
            "package_id": order["order_id"] * 10 + 1, "name": "Parcel", "weight": _weight(order),
            "carrier_service_code": order["carrier_service_code"], "tracking_number": number,
            "tracking_url": url, "delivery_status": "Printed", "label_created_date": self.stamp(),
        }]
        self.set_tracking(stored, "Printed", notify=False)
        return order

    def set_tracking(self, stored: StoredOrder, status: str, *, notify: bool = True) -> None:
        stored.tracking_status = status
        stored.events.append({"event_datetime": self.stamp(), "status": _event_text(status), "details": ""})
        for package in stored.order.get("packages", []):
            package["delivery_status"] = status
        if status == "Delivered":
            stored.order["status"] = "Delivered"
        self.touch(stored)
        if notify:
            self.send_webhook(stored)

    def tracking(self, stored: StoredOrder) -> dict[str, Any]:
        order = stored.order
        package = (order.get("packages") or [{}])[0]
        return {
            "order_number": order["order_number"],
            "order_status": _order_status(stored),
            "carrier_name": order.get("carrier_name", ""),
            "carrier_service": order.get("carrier_service_code", ""),
            "tracking_number": package.get("tracking_number", ""),
            "tracking_url": package.get("tracking_url", ""),
            "shipment_date": package.get("label_created_date", ""),
            "tracking_status": stored.tracking_status,
            "last_updated_date": datetime.fromtimestamp(stored.updated, timezone.utc).isoformat(),
            "tracking_events": list(stored.events),
        }

    def send_webhook(self, stored: StoredOrder) -> None:
        url = self.settings.webhook_url
        if not url:
            return
        snapshot = self.tracking(stored)
        payload = {key: snapshot[key] for key in ("order_number", "carrier_name", "carrier_service", "shipment_date",
                                                  "tracking_number", "tracking_status", "last_updated_date")}
        payload["order_reference"] = stored.order.get("reference", "")
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.settings.webhook_secret:
            headers["X-Starshipit-Signature"] = sign(self.settings.webhook_secret, body)
        self.webhooks_sent.append({"url": url, "headers": headers, "body": body})
        self.webhook_sender(url, headers, body)

    def _tracking_number(self, carrier: str) -> str:
        prefix = {"AusPost": "33", "StarTrack": "ST", "Fastways": "AX", "Sendle": "SNDL", "DHL": "JD"}.get(carrier, "TN")
        return f"{prefix}{self.rng.randrange(10**11, 10**12)}"

    # -- rate limit -----------------------------------------------------------------------

    def admit(self, subscription_key: str) -> float:
        """0 when the request may pass; otherwise the seconds until it could (for Retry-After)."""
        rate = self.settings.tier_rates[self.settings.subscription_keys[subscription_key]]
        with self.lock:
            now = self.clock()
            window = self.requests.setdefault(subscription_key, deque())
            while window and window[0] <= now - 1.0 + 1e-6:
                window.popleft()
            if len(window) >= rate:
                return max(0.0, window[0] + 1.0 - now)
            window.append(now)
            return 0.0


def sign(secret: str, body: bytes) -> str:
    """Starshipit's webhook signature: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post_webhook(url: str, headers: dict[str, str], body: bytes) -> None:
    # Starshipit's retry schedule is undocumented; the sandbox sends once and forgets.
    try:
        httpx.post(url, headers=headers, content=body, timeout=5.0)
    except httpx.HTTPError:
        pass


def _full_order(order_id: int, body: dict[str, Any], stamp: str) -> dict[str, Any]:
    items = [
        {"item_id": order_id * 100 + index, "quantity_to_ship": item.get("quantity", 1), **item}
        for index, item in enumerate(body.get("items") or [], start=1)
    ]
    return {
        "order_id": order_id, "order_date": body.get("order_date") or stamp, "order_number": body["order_number"],
        "reference": body.get("reference", ""), "carrier": body.get("carrier", ""),
        "carrier_name": DISPLAY_NAMES.get(body.get("carrier", ""), body.get("carrier", "")),
        "carrier_service_code": body.get("carrier_service_code", ""),
        "shipping_method": body.get("shipping_method", ""), "shipping_description": body.get("shipping_description", ""),
        "signature_required": bool(body.get("signature_required", False)), "currency": body.get("currency", "AUD"),
        "destination": dict(body["destination"]), "items": items, "packages": [], "status": "Unshipped",
        "archived": False, "type": "Outgoing", "platform": "API", "address_validation": "NotChecked",
    }


def _weight(order: dict[str, Any]) -> float:
    return round(sum(float(i.get("weight") or 0) * int(i.get("quantity") or 1) for i in order["items"]), 3)


def _order_status(stored: StoredOrder) -> str:
    if stored.order["status"] in UNSHIPPED:
        return "Unshipped"
    if stored.tracking_status in ("", "Printed"):
        return "Awaiting Dispatch"
    return "Delivered" if stored.tracking_status == "Delivered" else "Dispatched"


def _event_text(status: str) -> str:
    # Event texts are free text with spaces; only tracking_status is an enum.
    return "".join(f" {c}" if c.isupper() and i else c for i, c in enumerate(status))


# -- validation ---------------------------------------------------------------------------------


def order_problems(body: Any) -> list[str]:
    """What Starshipit would refuse in an order body, each naming its field."""
    if not isinstance(body, dict):
        return ["order: must be an object"]
    problems = _length_problems(body, {"order_number": (1, 50), "reference": (0, 50), "shipping_method": (0, 100),
                                       "shipping_description": (0, 100)})
    carrier = body.get("carrier")
    if carrier and carrier not in STARSHIPIT_CARRIER_CODES:
        problems.append(f"carrier: {carrier!r} is not a valid carrier")
    destination = body.get("destination")
    if not isinstance(destination, dict):
        return [*problems, "destination: is required"]
    for name in ("name", "street", "country"):
        if not destination.get(name):
            problems.append(f"destination.{name}: is required")
    problems += _length_problems(destination, {"post_code": (0, 10), "country": (2, 100)}, prefix="destination.")
    return problems + _item_problems(body.get("items"))


def _length_problems(record: dict[str, Any], limits: dict[str, tuple[int, int]], prefix: str = "") -> list[str]:
    problems = []
    for name, (low, high) in limits.items():
        value = record.get(name)
        if value is None and low == 0:
            continue
        if not isinstance(value, str) or not low <= len(value) <= high:
            problems.append(f"{prefix}{name}: must be text of {low} to {high} characters")
    return problems


def _item_problems(items: Any) -> list[str]:
    if items is None:
        return []
    if not isinstance(items, list):
        return ["items: must be a list"]
    problems = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"items.{index}: must be an object")
            continue
        problems += _length_problems(item, {"sku": (0, 50)}, prefix=f"items.{index}.")
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            problems.append(f"items.{index}.quantity: must be a whole number of at least 1")
    return problems


# -- the app ------------------------------------------------------------------------------------


def envelope_error(status: int, message: str, details: str = "") -> Response:
    response = jsonify({"success": False, "errors": [{"message": message, "details": details}]})
    response.status_code = status
    return response


def error_body(status: int, message: str) -> tuple[bytes, str]:
    """Starshipit's envelope, for faults injected by the sandbox kit."""
    return json.dumps({"success": False, "errors": [{"message": message, "details": ""}]}).encode(), "application/json"


def _gateway_error(status: int, message: str, retry_after: float | None = None) -> Response:
    # Key and rate problems are answered by Azure API Management, which has its own shape.
    response = jsonify({"statusCode": status, "message": message})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _ok(**payload: Any) -> Response:
    return jsonify({**payload, "success": True})


def _since(name: str) -> float | None:
    value = request.args.get(name)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _BadRequest(f"{name}: must be an RFC 3339 date-time, got {value!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


class _BadRequest(Exception):
    pass


def _register_guards(app: Flask, state: SandboxState) -> None:
    @app.before_request
    def authenticate() -> Response | None:
        if not request.path.startswith("/api/"):
            return None
        subscription = request.headers.get("Ocp-Apim-Subscription-Key")
        if not subscription:
            return _gateway_error(401, "Access denied due to missing subscription key. Make sure to include "
                                       "subscription key when making requests to an API.")
        if subscription not in state.settings.subscription_keys:
            return _gateway_error(401, "Access denied due to invalid subscription key. Make sure to provide a "
                                       "valid key for an active subscription.")
        wait = state.admit(subscription)
        if wait:
            return _gateway_error(429, f"Rate limit is exceeded. Try again in {max(1, math.ceil(wait))} seconds.",
                                  retry_after=wait)
        if request.headers.get("StarShipIT-Api-Key") not in state.settings.api_keys:
            return envelope_error(401, "Unauthorized", "The StarShipIT-Api-Key header is missing or not valid")
        return None

    @app.errorhandler(_BadRequest)
    def bad_request(error: _BadRequest) -> Response:
        return envelope_error(400, "Bad request", str(error))


def _register_orders(app: Flask, state: SandboxState) -> None:
    @app.get("/api/orders")
    def get_order() -> Response:
        stored = state.find(request.args.get("order_id"), request.args.get("order_number"))
        if stored is None or stored.order["archived"]:
            return envelope_error(404, "Not Found", "Order not found")
        return _ok(order=stored.order)

    @app.post("/api/orders")
    def create_order() -> Response:
        body = (request.get_json(silent=True) or {}).get("order")
        refusal = _refuse(body)
        if refusal:
            return refusal
        order = state.create(body)
        _maybe_time_out()
        return _ok(order=order)

    @app.post("/api/orders/import")
    def import_orders() -> Response:
        orders = (request.get_json(silent=True) or {}).get("orders")
        if not isinstance(orders, list) or not 1 <= len(orders) <= state.settings.import_max:
            return envelope_error(400, "Validation failed", f"orders: send 1 to {state.settings.import_max} orders")
        created, errors = [], []
        for body in orders:
            refusal = _problem_text(body)
            if refusal:
                number = body.get("order_number") if isinstance(body, dict) else None
                errors.append({"order_number": number, "message": "Order not imported", "details": refusal})
            else:
                order = state.create(body)
                created.append({"order_id": order["order_id"], "order_number": order["order_number"]})
        _maybe_time_out()
        return jsonify({"success": not errors or bool(created), "orders": created, "errors": errors})

    @app.put("/api/orders")
    def update_order() -> Response:
        body = (request.get_json(silent=True) or {}).get("order") or {}
        stored = state.find(body.get("order_id"))
        if stored is None:
            return envelope_error(404, "Not Found", "Order not found")
        if stored.order["status"] not in UNSHIPPED:
            return envelope_error(400, "Order cannot be updated", "Printed or shipped orders only take status changes")
        merged = {**stored.order, **{k: v for k, v in body.items() if k not in ("order_id", "status")}}
        problems = order_problems(merged)
        if problems:
            return envelope_error(400, "Validation failed", "; ".join(problems))
        stored.order.update(merged)
        state.touch(stored)
        return _ok(order=stored.order)

    @app.delete("/api/orders/delete")
    def delete_order() -> Response:
        stored = state.find(request.args.get("order_id"))
        if stored is None:
            return envelope_error(404, "Not Found", "Order not found")
        if stored.order["status"] not in UNSHIPPED:
            return envelope_error(400, "Order cannot be deleted", "Only unshipped orders can be deleted; archive it")
        with state.lock:
            state.orders.pop(stored.order["order_id"], None)
        return _ok()

    def _refuse(body: Any) -> Response | None:
        problem = _problem_text(body)
        if problem:
            status = 409 if problem.startswith("order_number: already") else 400
            return envelope_error(status, "Validation failed" if status == 400 else "Duplicate order", problem)
        return None

    def _problem_text(body: Any) -> str:
        problems = order_problems(body)
        if not problems and state.settings.duplicate_policy == "reject" and state.by_number(body["order_number"]):
            problems = [f"order_number: already exists ({body['order_number']})"]
        return "; ".join(problems)

    def _maybe_time_out() -> None:
        if state.take_timeout():
            request.environ["starshipit.sandbox.timeout"] = True


def _register_lists(app: Flask, state: SandboxState) -> None:
    def listing(statuses: tuple[str, ...], *, allow_order_date: bool) -> Response:
        limit, page = _int_arg("limit", 50), _int_arg("page", 1)
        if not 1 <= limit <= state.settings.page_max or page < 1:
            raise _BadRequest(f"limit: must be 1 to {state.settings.page_max}; page: at least 1")
        since_updated = _since("since_last_updated")
        since_date = _since("since_order_date") if allow_order_date else None
        if since_updated is None and since_date is None:
            since_updated = state.now() - state.settings.unfiltered_window_hours * 3600
        with state.lock:  # served threaded: never iterate while another request inserts
            snapshot = list(state.orders.values())
        chosen = sorted(
            (s for s in snapshot
             if s.order["status"] in statuses and not s.order["archived"]
             and (since_updated is None or s.updated >= since_updated)
             and (since_date is None or _order_date(s) >= since_date)),
            key=lambda s: (s.updated, s.order["order_id"]),
        )
        pages = math.ceil(len(chosen) / limit)
        window = chosen[(page - 1) * limit: page * limit]
        if request.args.get("ids_only", "").lower() == "true":
            return _ok(order_ids=[s.order["order_id"] for s in window], total_pages=pages)
        return _ok(orders=[_list_view(s, statuses) for s in window], total_pages=pages)

    def _list_view(stored: StoredOrder, statuses: tuple[str, ...]) -> dict[str, Any]:
        if statuses == SHIPPED and state.settings.shipped_list_detail == "summary":
            return {k: v for k, v in stored.order.items() if k != "packages"}
        return stored.order

    @app.get("/api/orders/unshipped")
    def unshipped() -> Response:
        return listing(UNSHIPPED, allow_order_date=True)

    @app.get("/api/orders/shipped")
    def shipped() -> Response:
        return listing(SHIPPED, allow_order_date=False)

    @app.get("/api/orders/search")
    def search() -> Response:
        phrase = request.args.get("phrase", "").lower()
        found = [s for s in state.orders.values()
                 if phrase and (phrase in s.order["order_number"].lower()
                                or phrase in s.order["destination"].get("name", "").lower())]
        rows = [{"order_id": s.order["order_id"], "order_date": s.order["order_date"],
                 "order_number": s.order["order_number"], "name": s.order["destination"].get("name", ""),
                 "carrier_name": s.order.get("carrier_name", ""), "country": s.order["destination"].get("country", ""),
                 "tracking_number": (s.order.get("packages") or [{}])[0].get("tracking_number", "")} for s in found]
        return _ok(orders=rows[:state.settings.page_max], total_pages=1 if rows else 0)


def _register_shipping(app: Flask, state: SandboxState) -> None:
    @app.post("/api/orders/shipment")
    def print_label() -> Response:
        body = request.get_json(silent=True) or {}
        stored = state.find(body.get("order_id"), body.get("order_number"))
        if stored is None:
            return envelope_error(404, "Not Found", "Order not found")
        if stored.order["status"] not in UNSHIPPED and not body.get("reprint"):
            return envelope_error(400, "Label already printed", "Send reprint=true to get the existing label")
        if stored.order["status"] in UNSHIPPED:
            state.print_label(stored, body.get("carrier"), body.get("carrier_service_code"), None)
        order = stored.order
        return _ok(order_id=order["order_id"], order_number=order["order_number"], carrier_name=order["carrier_name"],
                   tracking_numbers=[p["tracking_number"] for p in order["packages"]],
                   labels=[base64.b64encode(b"%PDF-1.4 sandbox label").decode()], label_types=["Label"])

    @app.get("/api/track")
    def track() -> Response:
        number, tracking = request.args.get("order_number"), request.args.get("tracking_number")
        stored = state.by_number(number) if number else next(
            (s for s in state.orders.values()
             if any(p.get("tracking_number") == tracking for p in s.order.get("packages", []))), None)
        if stored is None:
            return envelope_error(404, "Not Found", "No tracking found")
        return _ok(results=state.tracking(stored))


def _register_control(app: Flask, state: SandboxState) -> None:
    @app.post("/_control/dispatch")
    def dispatch() -> Response:
        """Print the label and hand the parcel to the carrier: status Dispatched, webhook sent."""
        body = request.get_json(silent=True) or {}
        stored = state.find(body.get("order_id"), body.get("order_number"))
        if stored is None:
            return jsonify({"error": "no such order"}), 404
        carrier = body.get("carrier")
        if carrier and carrier not in STARSHIPIT_CARRIER_CODES:
            return jsonify({"error": f"unknown carrier code {carrier!r}"}), 400
        with state.lock:
            state.print_label(stored, carrier, body.get("carrier_service_code"), body.get("tracking_number"))
            state.set_tracking(stored, "Dispatched")
        return jsonify(stored.order)

    @app.post("/_control/tracking")
    def tracking() -> Response:
        body = request.get_json(silent=True) or {}
        stored = state.find(body.get("order_id"), body.get("order_number"))
        status = body.get("tracking_status")
        if stored is None or status not in TRACKING_STATUSES:
            return jsonify({"error": f"need a known order and one of {', '.join(TRACKING_STATUSES)}"}), 400
        state.set_tracking(stored, status)
        return jsonify(state.tracking(stored))

    @app.post("/_control/timeouts")
    def timeouts() -> Response:
        """The next N creates (single or import) are applied, then the response never arrives."""
        state.timeouts_after_apply = int((request.get_json(silent=True) or {}).get("count", 1))
        return jsonify({"timeouts_after_apply": state.timeouts_after_apply})

    @app.get("/_control/orders")
    def orders() -> Response:
        """Everything the sandbox holds, or (``?status=Unshipped,Saved``) only orders in those statuses:
        a warehouse simulator polling for work should not pull every order it already shipped."""
        wanted = {s for s in request.args.get("status", "").split(",") if s}
        with state.lock:
            held = [s for s in state.orders.values() if not wanted or s.order.get("status") in wanted]
            return jsonify([{**s.order, "tracking_status": s.tracking_status} for s in held])


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError:
        raise _BadRequest(f"{name}: must be a whole number") from None


def _order_date(stored: StoredOrder) -> float:
    try:
        return datetime.fromisoformat(stored.order["order_date"].replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return stored.updated


def _seed(state: SandboxState) -> None:
    for index in range(state.settings.seed_orders):
        stored = state.find(state.create({
            "order_number": f"SEED-{1001 + index}", "reference": "Seeded order", "carrier": "AusPost",
            "destination": {"name": f"Seed Customer {index + 1}", "street": f"{state.rng.randint(1, 200)} George Street",
                            "suburb": "Sydney", "state": "NSW", "post_code": "2000", "country": "Australia"},
            "items": [{"sku": f"SEED-SKU-{index + 1}", "description": "Seeded item", "quantity": 1, "weight": 0.4,
                       "value": 49.95}],
        })["order_id"])
        if stored is not None and index % 2:
            state.print_label(stored, None, "7B05", None)
            state.set_tracking(stored, "Dispatched", notify=False)


class _TimeoutAfterApply:
    """Raises the client-side timeout after the wrapped app has applied the request."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.outer: FaultMiddleware | None = None

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        body = b"".join(self.app(environ, start_response))
        if environ.get("starshipit.sandbox.timeout"):
            if self.outer is not None and self.outer.served:
                raise ConnectionAbortedError("sandbox: the create was applied, then the connection dropped")
            raise httpx.ReadTimeout("sandbox: the create was applied, but the response never arrived")
        return [body]


def create_app(seed: int = 0, *, faults: Faults | None = None, clock: Callable[[], float] = time.monotonic,
               now: Callable[[], float] = time.time, webhook_sender: WebhookSender | None = None,
               **settings: Any) -> FaultMiddleware:
    """The sandbox as a WSGI app. ``app.state`` is the account; ``settings`` are SandboxSettings fields.

    ``clock`` drives the rate limit and ``now`` the timestamps, so tests can share a fake time
    with the hub's rate limiter; ``webhook_sender(url, headers, body)`` replaces the network.
    """
    state = SandboxState(SandboxSettings(**settings), seed=seed, clock=clock, now=now, webhook_sender=webhook_sender)
    app = Flask("starshipit_sandbox")
    app.json.sort_keys = False
    for register in (_register_guards, _register_orders, _register_lists, _register_shipping, _register_control):
        register(app, state)
    _seed(state)
    inner = _TimeoutAfterApply(app)
    middleware = FaultMiddleware(inner, faults or Faults(seed=seed), error_body=error_body)
    inner.outer = middleware
    middleware.state = state  # type: ignore[attr-defined]
    middleware.flask_app = app  # type: ignore[attr-defined]
    return middleware


__all__ = ["API_KEY", "DEVELOPER_KEY", "PRODUCTION_KEY", "SandboxSettings", "SandboxState", "create_app", "sign"]
