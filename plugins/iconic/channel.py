"""The Iconic marketplace channel: listings, stock, orders, fulfilment write-back, webhooks.

The flows talk to The Iconic only through IconicClient and turn its records into canonical ones
only through mapping. Rules that are The Iconic's own and easy to get wrong:

- one order item per unit: lines are grouped by SKU and every item id is kept for write-back;
- ``set-to-ready-to-ship`` takes ``orderItems: [{"id": ...}]`` (any other key is silently "no items")
  and every call carries the items of one order only;
- a price write sends every price field (an omitted one is written as NULL and ends a sale);
- ``PUT /v2/stock/product`` takes at most 100 rows and answers with the rows it REJECTED;
- ``available = quantity - reservedStock``: the hub's free quantity plus the reserved units is written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, cast

from marshmallow import EXCLUDE, Schema, fields, validate

from hub.channel import Channel, ChannelServices, Limits, Role, WebhookAction, WebhookRequest
from hub.errors import AuthError, ChannelError, ConfigurationError, ContractError, RateLimited, RejectedItem, TransientError
from hub.parallel import map_limited
from hub.records import Fulfilment, ItemResult, Listing, Order

from plugins.iconic import mapping
from plugins.iconic.client import LIVE_URL, STAGING_URL, IconicClient, items_of
from plugins.iconic.remembered import REMEMBERED

DELIVERY_TYPES = ("dropship", "pickup", "send_to_warehouse")
# Reads of one orders pull in flight at once: the pages after the first, and the order-items look-ups
# of 100 orders each. A backlog of 1,000 orders was 10 + 10 round trips one after another.
READS_IN_FLIGHT = 4
ORDER_IDS_PER_CALL = 100  # order ids per order-items lookup: a fulfilment batch's orders in one (≈2.5 kB of URL)
SELLER_SKUS_PER_CALL = 100  # GET /v2/product/seller-skus maximum
ORDER_EVENTS = {"ordercreated", "orderitemsstatuschanged", "orderitemstatuschanged", "itemstatuschanged"}
OPEN_ITEM_STATUSES = ("pending", "ready_to_ship")
RESERVATIONS_TTL = 60.0  # seconds a reservation read serves the stock writes of one run
# Four round trips in flight fill the default 25 requests/s at ~150 ms a request (one write per order
# at a time caps write-back at ~3 orders/s whatever the pace).
WRITE_BACK_CONCURRENCY = 4
DEFAULT_REQUESTS_PER_SECOND = 25.0  # py-iconic-api's client-side 25-30 req/s; The Iconic publishes no quota
LEGACY_WEBHOOK_SECRET = "webhook_secret is kept in the settings, unencrypted: enter it under Credentials (stored encrypted)"


class IconicCredentials(Schema):
    application_id = fields.String(required=True, validate=validate.Length(min=1, max=200),
                                   metadata={"description": "Application ID of the OAuth application in Seller Center"})
    application_secret = fields.String(required=True, validate=validate.Length(min=1, max=500),
                                       metadata={"description": "Application Secret of that OAuth application"})
    webhook_secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=16), metadata={
        "description": "Secret carried in the webhook callback URL (The Iconic does not sign callbacks); "
                       "at least 16 random characters, stored encrypted"})


class IconicSettings(Schema):
    class Meta:
        # Accounts saved before webhook_secret moved to the (encrypted) credentials still carry it
        # here; it is accepted on load and dropped, and verify_webhook falls back to the stored value.
        unknown = EXCLUDE

    connect_to_staging = fields.Boolean(load_default=False, metadata={
        "description": "Use THE ICONIC's preprod Seller Center instead of live"})
    delivery_type = fields.String(load_default="dropship", validate=validate.OneOf(DELIVERY_TYPES))
    price_country = fields.String(load_default="AU", validate=validate.Regexp(r"^[A-Z]{2}$"))
    # Extra minutes on top of the orders flow's own re-read window (hub.flows.orders.PULL_OVERLAP):
    # the hub already overlaps every pull, so by default the channel adds none.
    order_overlap_minutes = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1440))
    keep_marketplace_sales = fields.Boolean(load_default=True, metadata={
        "description": "Keep a sale price set in Seller Center when the hub sends none"})
    write_back_concurrency = fields.Integer(
        load_default=WRITE_BACK_CONCURRENCY, validate=validate.Range(min=1, max=16), metadata={
            "description": "Orders whose shipments are written back at the same time (each is a ready-to-ship "
                           "and a shipped write, which The Iconic takes one order per call). The requests per "
                           "second below still apply; 1 writes one order after another"})
    requests_per_second = fields.Float(
        load_default=DEFAULT_REQUESTS_PER_SECOND, validate=validate.Range(min=1, max=100), metadata={
            "description": "Requests per second the hub sends this account. THE ICONIC publishes no rate limit; "
                           "25 follows py-iconic-api's client-side 25-30 requests/s. Lower it if THE ICONIC "
                           "answers 429 Too Many Requests"})


def limits_for_rate(rate: float) -> Limits:
    """The hub limits at ``rate`` requests/s, with one second's worth of burst."""
    return Limits(max_batch=100, requests_per_second=rate, burst=max(1, math.ceil(rate)), page_size=100,
                  documented="PUT /v2/stock/product takes at most 100 rows and seller-skus lookups 100 SKUs "
                             f"(endpoint descriptions); The Iconic publishes no request rate, so {rate:g}/s is the "
                             "account's politeness setting (py-iconic-api paces at 25-30/s) and its 429 + "
                             "Retry-After is honoured.")


class IconicChannel(Channel):
    name = "iconic"
    title = "THE ICONIC"
    roles = frozenset({Role.MARKETPLACE})
    credentials_schema = IconicCredentials
    settings_schema = IconicSettings
    limits = limits_for_rate(DEFAULT_REQUESTS_PER_SECOND)  # the default; the client paces at the account's setting
    fulfilment_mandatory = True  # marketplace orders must get carrier and tracking back
    secret_fields = ("application_secret", "webhook_secret")

    def __init__(self, services: ChannelServices) -> None:
        super().__init__(services)
        self._client: IconicClient | None = None
        self._cache: dict[str, Any] = {}
        self._stock_runs = 0  # open stock_session() blocks

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def client(self) -> IconicClient:
        if self._client is None:
            limits = limits_for_rate(float(self._setting("requests_per_second")))
            self._client = IconicClient(self.services, self.base_url(), limits,
                                        str(self.credentials.get("application_id", "")),
                                        str(self.credentials.get("application_secret", "")))
        return self._client

    def base_url(self) -> str:
        """Live, preprod ("connect to staging"), or the account's own base URL (the sandbox)."""
        if self.account.base_url:
            return self.account.base_url.rstrip("/")
        if self.settings.get("connect_to_staging") or self.account.environment == "staging":
            return STAGING_URL
        if self.account.environment == "sandbox":
            raise ConfigurationError("an Iconic sandbox account needs the sandbox's base URL")
        return LIVE_URL

    def _login(self) -> tuple[str, str]:
        """Who the account is at The Iconic (what ``plugins.iconic.remembered`` keys its memory by)."""
        return self.base_url(), str(self.credentials.get("application_id", ""))

    def _webhook_secret(self) -> str | None:
        """The secret webhook URLs must carry: from the encrypted credentials; from the settings only
        for an account saved before it moved there (plain JSON: enter it under Credentials)."""
        return self.credentials.get("webhook_secret") or self.settings.get("webhook_secret") or None

    def _legacy_webhook_secret(self) -> bool:
        return not self.credentials.get("webhook_secret") and bool(self.settings.get("webhook_secret"))

    def _setting(self, name: str) -> Any:
        value = self.settings.get(name)
        return IconicSettings().fields[name].load_default if value is None else value

    def _cached(self, key: str, fetch: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = fetch()
        return self._cache[key]

    def providers(self) -> list[dict[str, Any]]:
        path = "/v2/orders-shipment-providers"
        return self._cached("providers", lambda: items_of(self.client.get(path), path))

    def failure_reasons(self) -> list[dict[str, Any]]:
        path = "/v2/orders-failure-reasons"
        return self._cached("reasons", lambda: items_of(self.client.get(path), path))

    # -- every channel ----------------------------------------------------------------------

    def test_connection(self) -> dict[str, Any]:
        """Authenticates, then reports brands, shipment providers and cancel/failure reasons."""
        first = self.client.get("/v2/brands", {"limit": self.limits.page_size, "offset": 0})
        brands = items_of(first, "/v2/brands")
        return {
            "host": self.base_url(),
            "brands": (first.get("pagination") or {}).get("totalCount", len(brands)),
            "brand_sample": [b.get("name") for b in brands[:20]],
            "shipment_providers": [p.get("name") for p in self.providers()],
            "failure_reasons": [{"type": r.get("type"), "name": r.get("name")} for r in self.failure_reasons()],
            **({"problems": [LEGACY_WEBHOOK_SECRET]} if self._legacy_webhook_secret() else {}),
        }

    def verify_webhook(self, request: WebhookRequest) -> WebhookAction | None:
        """Order Created / Order Item Status Changed -> a targeted order pull.

        The Iconic does not sign callbacks, so the callback URL carries the account's secret.
        """
        expected = self._webhook_secret()
        if not expected:
            raise AuthError("set webhook_secret in the Iconic account's credentials before registering webhooks")
        if not hmac.compare_digest(str(request.url_secret or "").encode(), str(expected).encode()):
            raise AuthError("the webhook URL secret does not match this account")
        event, payload = _webhook_event(request.body)
        if mapping.normalise(event).removeprefix("on") not in ORDER_EVENTS:
            return None
        order_id = payload.get("OrderId", payload.get("orderId"))
        if order_id in (None, ""):
            raise ContractError(f"webhook {event}: payload has no OrderId", detail=payload)
        delivery = hashlib.sha256(request.body).hexdigest()[:32]
        return WebhookAction(flow="orders", params={"order_ids": [str(order_id)]}, delivery_id=delivery)

    # -- listings ---------------------------------------------------------------------------

    def push_listings(self, listings: list[Listing]) -> list[ItemResult]:
        """Create new product sets / products, then prices, stock and status for all. One result per SKU."""
        results: dict[str, ItemResult] = {}
        unique = _first_per_sku(listings)
        current = self._products_by_sku([listing.sku for listing in unique])
        sets = {l.parent_sku: int(current[l.sku]["productSetId"]) for l in unique if l.sku in current}
        new = [listing for listing in unique if listing.sku not in current]
        current.update(self._create(new, sets, results))
        placed = [listing for listing in unique if listing.sku in current and listing.sku not in results]
        self._write_prices(placed, current, results)
        new_skus = {listing.sku for listing in new}
        self._write_status([l for l in placed if l.sku not in new_skus], current, results)
        self._write_stock(placed, current, results)
        for listing in placed:
            results.setdefault(listing.sku, _listed(listing.sku, current[listing.sku]))
        return [results[listing.sku] for listing in listings]

    def push_stock(self, listings: list[Listing]) -> list[ItemResult]:
        """Quantities only: ceil(n / 100) stock writes (plus the reservation read)."""
        results: dict[str, ItemResult] = {}
        unique = _first_per_sku(listings)
        known = {l.sku: {"id": int(l.external_id), "sellerSku": l.sku} for l in unique
                 if l.external_id and l.external_id.isdigit()}
        missing = [l.sku for l in unique if l.sku not in known]
        products = {**known, **self._products_by_sku(missing)} if missing else known
        for listing in unique:
            if listing.sku not in products:
                results[listing.sku] = ItemResult.rejected(listing.sku, "not listed on The Iconic yet", field="sku")
        placed = [l for l in unique if l.sku in products]
        self._write_stock(placed, products, results)
        for listing in placed:
            results.setdefault(listing.sku, ItemResult.success(listing.sku, external_id=str(products[listing.sku]["id"])))
        return [results[listing.sku] for listing in listings]

    def list_listings(self) -> Iterator[Listing]:
        """Every product of every product set, with status and available stock; raises if a page fails."""
        for product_set in self.client.paged("/v2/product-sets", {"status": "all"}):
            products = product_set.get("products")
            if products is None:
                path = f"/v2/product-set/{product_set['id']}/products"
                products = items_of(self.client.get(path), path)
            path = f"/v2/stock/product-set/{product_set['id']}"
            stock = {row.get("sellerSku"): row for row in items_of(self.client.get(path), path)}
            for product in products:
                if product.get("status") != "deleted":
                    yield mapping.listing_from_remote(product_set, product, stock.get(product.get("sellerSku")))

    def _products_by_sku(self, skus: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        path = "/v2/product/seller-skus"
        for chunk in _chunks(skus, SELLER_SKUS_PER_CALL):
            for product in items_of(self.client.get(path, [("sellerSkus[]", sku) for sku in chunk]), path):
                found[product["sellerSku"]] = product
        return found

    def _create(self, new: list[Listing], sets: dict[str, int],
                results: dict[str, ItemResult]) -> dict[str, dict[str, Any]]:
        """New SKUs: checked first (brand, category, required attributes), then created per parent.

        ``sets`` maps parent SKUs to the product sets their listed siblings are in.
        """
        ready = self._checked(new, results)
        created: dict[str, dict[str, Any]] = {}
        by_parent: dict[str, list[tuple[Listing, dict[str, Any]]]] = defaultdict(list)
        for listing, body in ready:
            by_parent[listing.parent_sku].append((listing, body))
        for parent, group in by_parent.items():
            set_id = sets[parent] if parent in sets else self._existing_set(parent)
            created.update(self._create_group(set_id, group, results))
        return created

    def _checked(self, listings: list[Listing], results: dict[str, ItemResult]) -> list[tuple[Listing, dict[str, Any]]]:
        ready = []
        for listing in listings:
            try:
                ready.append((listing, self._set_body(listing)))
            except RejectedItem as error:
                results[listing.sku] = ItemResult.rejected(listing.sku, str(error), field=error.field)
        return ready

    def _set_body(self, listing: Listing) -> dict[str, Any]:
        mapping.check_prices(listing)
        brand_id = self._brand_id(listing)
        category_id = mapping.find_category(self._category_tree(), listing.category) if listing.category else None
        if category_id is None:
            raise RejectedItem(f"category '{listing.category}' is not a leaf category on The Iconic",
                               key=listing.sku, field="category")
        values = mapping.attribute_values(listing, self._category_attributes(category_id), listing.category)
        return mapping.product_set_body(listing, brand_id, category_id, values)

    def _brand_id(self, listing: Listing) -> int:
        if not listing.brand:
            raise RejectedItem("brand is missing; The Iconic requires it", key=listing.sku, field="brand")
        brands = self._cached(f"brand:{mapping.normalise(listing.brand)}",
                              lambda: list(self.client.paged("/v2/brands", {"name": listing.brand})))
        match = next((b for b in brands if mapping.normalise(str(b.get("name"))) == mapping.normalise(listing.brand)), None)
        if match is None:
            raise RejectedItem(f"brand '{listing.brand}' is not one of this seller's brands on The Iconic",
                               key=listing.sku, field="brand")
        return int(match["id"])

    def _category_tree(self) -> list[dict[str, Any]]:
        path = "/v2/category/tree"
        return self._cached("tree", lambda: items_of(self.client.get(path), path))

    def _category_attributes(self, category_id: int) -> list[dict[str, Any]]:
        path = f"/v2/category/{category_id}/attributes"
        return self._cached(f"attributes:{category_id}", lambda: items_of(self.client.get(path), path))

    def _existing_set(self, parent: str) -> int | None:
        """The product set of a parent none of whose SKUs in this push is listed yet (e.g. a retry)."""
        page = self.client.get("/v2/product-sets", {"parentSku": parent, "limit": 1, "offset": 0})
        sets = items_of(page, "/v2/product-sets")
        return int(sets[0]["id"]) if sets else None

    def _create_group(self, set_id: int | None, group: list[tuple[Listing, dict[str, Any]]],
                      results: dict[str, ItemResult]) -> dict[str, dict[str, Any]]:
        created: dict[str, dict[str, Any]] = {}
        rest = group
        if set_id is None:
            (_, body), rest = group[0], group[1:]
            try:
                product_set = self.client.post("/v2/product-set", body)
            except RejectedItem as error:
                for listing, _ in group:
                    results[listing.sku] = ItemResult.rejected(listing.sku, str(error), field=error.field)
                return created
            set_id = int(product_set["id"])
            created.update({p["sellerSku"]: p for p in product_set.get("products") or []})
        for listing, _ in rest:
            try:
                product = self.client.post(f"/v2/product-set/{set_id}/products", mapping.product_fields(listing))
                created[listing.sku] = product
            except RejectedItem as error:
                results[listing.sku] = ItemResult.rejected(listing.sku, str(error), field=error.field)
        return {sku: {**product, "_new": True} for sku, product in created.items()}

    def _write_prices(self, listings: list[Listing], current: dict[str, dict[str, Any]],
                      results: dict[str, ItemResult]) -> None:
        """One bulk price write per product set, every price field in every row."""
        by_set: dict[int, list[Listing]] = defaultdict(list)
        for listing in listings:
            by_set[int(current[listing.sku]["productSetId"])].append(listing)
        country, keep = self._setting("price_country"), bool(self._setting("keep_marketplace_sales"))
        for set_id, group in by_set.items():
            rows = [mapping.price_row(l, int(current[l.sku]["id"]), current[l.sku], country, keep) for l in group]
            try:
                self.client.put(f"/v2/product-set/{set_id}/prices", rows)
            except RejectedItem as error:
                for listing in group:
                    results[listing.sku] = ItemResult.rejected(listing.sku, str(error), field=error.field or "price")

    def _write_status(self, listings: list[Listing], current: dict[str, dict[str, Any]],
                      results: dict[str, ItemResult]) -> None:
        """Active/inactive, only where it differs (delisting = inactive)."""
        for listing in listings:
            product, wanted = current[listing.sku], "active" if listing.active else "inactive"
            if listing.sku in results or product.get("status") == wanted:
                continue
            path = f"/v2/product-set/{product['productSetId']}/products/{product['id']}/status"
            try:
                current[listing.sku] = {**product, **self.client.put(path, None, {"status": wanted})}
            except RejectedItem as error:
                results[listing.sku] = ItemResult.rejected(listing.sku, str(error), field="active")

    def _write_stock(self, listings: list[Listing], products: dict[str, dict[str, Any]],
                     results: dict[str, ItemResult]) -> None:
        listings = [l for l in listings if l.sku not in results]
        if not listings:
            return
        reserved = self._reservations() if any(not products[l.sku].get("_new") for l in listings) else Counter()
        by_id = {int(products[l.sku]["id"]): l.sku for l in listings}
        for batch in self.limits.batches(listings):
            rows = [{"productId": int(products[l.sku]["id"]),
                     "quantity": mapping.quantity_to_write(l.quantity, reserved[l.sku])} for l in batch]
            rejected = self.client.put("/v2/stock/product", rows) or []
            for row in items_of(rejected, "/v2/stock/product"):
                sku = by_id.get(row.get("productId")) if isinstance(row, dict) else None
                if sku is None:
                    raise ContractError("The Iconic rejected a stock row it was not sent", detail=row)
                message = row.get("message") or "The Iconic did not accept this quantity"
                results[sku] = ItemResult.rejected(sku, f"stock not updated: {message}", field="quantity")

    def _reservations(self) -> Counter[str]:
        """Units per seller SKU held by pending and ready-to-ship order items (The Iconic's reservedStock).

        Inside :meth:`stock_session` (one flow run) they are read once per ``RESERVATIONS_TTL``
        seconds rather than once per batch of 100: a 1,000-batch run would otherwise spend two reads
        per write. A reservation added after the read makes the written quantity too low, never too
        high (the safe side), and the next run corrects it. Outside a session every call reads.
        """
        cached = self._cache.get("reservations")
        if self._stock_runs and cached is not None and self.services.clock() - cached[0] < RESERVATIONS_TTL:
            return cached[1]
        held: Counter[str] = Counter()
        for status in OPEN_ITEM_STATUSES:
            for item in self.client.paged("/v2/order-items", {"status": status}):
                held[(item.get("product") or {}).get("sellerSku")] += 1
        self._cache["reservations"] = (self.services.clock(), held)
        return held

    @contextmanager
    def stock_session(self) -> Iterator[None]:
        """Entered by the stock and listings flows around the batches of one run: inside it the
        reservations are read once (renewed after ``RESERVATIONS_TTL``), not once per batch."""
        self._stock_runs += 1
        try:
            yield
        finally:
            self._stock_runs -= 1
            if not self._stock_runs:
                self._cache.pop("reservations", None)

    # -- orders -----------------------------------------------------------------------------

    def pull_orders(self, since: datetime | None = None) -> Iterator[Order]:
        """Orders changed since the cursor, less an overlap window; each order once.

        Filtered by update time but paged in order of creation: an order updated while the pages are
        read keeps its place, where sorted by update time it would jump to the end and shift every
        later order back by one, so that the next page skipped one (found only by the next pull).
        """
        params: list[tuple[str, Any]] = [("sort", "createdAt"), ("sortDir", "asc")]
        if since is not None:
            overlap = timedelta(minutes=int(self._setting("order_overlap_minutes")))
            params.append(("updateDateStart", (since - overlap).isoformat()))
        login = self._login()
        count = 0
        # The window moves on a little each poll: as many pages as last time are read at once.
        for count, order in enumerate(self._orders(params, expect=REMEMBERED.window(self.services.transport, login)), 1):
            yield order
        REMEMBERED.set_window(self.services.transport, login, count)

    def pull_orders_by_id(self, order_ids: Iterable[str]) -> Iterator[Order]:
        """The orders a webhook named (WebhookAction params ``order_ids``)."""
        for chunk in _chunks(list(dict.fromkeys(str(i) for i in order_ids)), ORDER_IDS_PER_CALL):
            yield from self._orders([("orderIds[]", order_id) for order_id in chunk])

    def _orders(self, params: list[tuple[str, Any]], expect: int | None = None) -> Iterator[Order]:
        # Offset pages drift while orders change; keyed by id, a repeated order counts once.
        orders = {order["id"]: order for order in self.client.paged("/v2/orders", params, in_flight=READS_IN_FLIGHT,
                                                                    expect=expect)}
        # A re-read order exactly as last seen is the record mapped then: no items fetch, no mapping.
        login = self._login()
        known = {order_id: REMEMBERED.get(self.services.transport, login, order) for order_id, order in orders.items()}
        items = self._items_of({order_id: order for order_id, order in orders.items() if known[order_id] is None})
        for order_id, order in orders.items():
            record = known[order_id]
            if record is None:
                record = mapping.order_from_remote(order, items.get(order_id, []))
                REMEMBERED.put(self.services.transport, login, order, record)
            yield record

    def _items_of(self, orders: dict[Any, dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
        """Order items per order id: embedded when The Iconic sends them, else fetched in batches."""
        by_order: dict[Any, dict[Any, dict[str, Any]]] = defaultdict(dict)
        wanted = []
        for order_id, order in orders.items():
            if order.get("items"):
                by_order[order_id].update({item["id"]: item for item in order["items"]})
            else:
                wanted.append(order_id)
        def items(chunk: list[Any]) -> list[dict[str, Any]]:
            return list(self.client.paged("/v2/order-items", [("orderIds[]", i) for i in chunk]))

        for found in map_limited(items, _chunks(wanted, ORDER_IDS_PER_CALL), READS_IN_FLIGHT, name="iconic-items"):
            for item in found:
                by_order[item.get("orderId")][item["id"]] = item  # de-duplicated by order item id
        return {order_id: list(items.values()) for order_id, items in by_order.items()}

    # -- fulfilment -------------------------------------------------------------------------

    def send_fulfilment(self, order: Order, fulfilment: Fulfilment) -> ItemResult:
        """Ready-to-ship with provider and tracking, then shipped (dropship). Idempotent per item."""
        return self.send_fulfilments([(order, fulfilment)])[0]

    def send_fulfilments(self, pairs: list[tuple[Order, Fulfilment]]) -> list[ItemResult]:
        """One order-items read for the whole batch, then per shipment ready-to-ship and shipped.

        The status endpoints refuse items of two orders in one call (422), so the two writes per
        shipment are the minimum: 2 requests per shipment + 1 per batch (plus the providers, once).
        Up to ``write_back_concurrency`` orders are written at the same time, within the account's pace.
        """
        providers = [mapping.provider_name(fulfilment.carrier, self.providers()) for _, fulfilment in pairs]
        wanted = [order.channel_order_id for (order, _), provider in zip(pairs, providers) if provider is not None]
        items = self._items_by_order(wanted)
        results: list[ItemResult | None] = [None] * len(pairs)
        by_order: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)  # order id -> (index, provider)
        for index, ((order, fulfilment), provider) in enumerate(zip(pairs, providers)):
            if provider is None:
                known = ", ".join(str(p.get("name")) for p in self.providers())
                results[index] = ItemResult.rejected(
                    order.order_number, f"The Iconic has no shipping provider '{fulfilment.carrier}'; map this carrier "
                                        f"in the account's carrier map to one of: {known}", field="carrier")
            else:
                by_order[str(order.channel_order_id)].append((index, provider))

        def write_order(shipments: list[tuple[int, str]]) -> None:  # one order's in turn: they share its items
            for index, provider in shipments:
                order, fulfilment = pairs[index]
                results[index] = self._write_back(order, fulfilment, provider, items[str(order.channel_order_id)])

        map_limited(write_order, by_order.values(), int(self._setting("write_back_concurrency")), name="iconic-write-back")
        return cast(list[ItemResult], results)  # every index is set, or map_limited raised

    def _write_back(self, order: Order, fulfilment: Fulfilment, provider: str, items: dict[int, dict[str, Any]]) -> ItemResult:
        """``items`` is updated in place, so a second shipment of the same order in the batch sees the first."""
        key = order.order_number
        try:
            ids = _fulfilment_item_ids(order, fulfilment, items)
            packed = self._ready_to_ship(ids, items, provider, fulfilment.tracking_number)
            shipped = self._shipped(ids, items)
        except (AuthError, RateLimited):
            raise
        except ChannelError as error:  # this shipment only: the batch's others still go out
            return ItemResult.rejected(key, str(error), field=getattr(error, "field", None),
                                       retryable=isinstance(error, TransientError))
        note = f"{packed} item(s) set ready to ship, {shipped} shipped" if packed or shipped else "already written back"
        return ItemResult.success(key, external_id=fulfilment.tracking_number, message=note)

    def cancel_order(self, order: Order, reason: str, detail: str = "") -> ItemResult:
        """Cancel the order's open items with a reason from The Iconic's cancellation reasons."""
        key = order.order_number
        name = mapping.reason_name(reason, self.failure_reasons(), "canceled")
        if name is None:
            allowed = ", ".join(str(r.get("name")) for r in self.failure_reasons() if r.get("type") == "canceled")
            return ItemResult.rejected(key, f"'{reason}' is not a cancellation reason on The Iconic; use one of: {allowed}",
                                       field="reason")
        items = self._order_items(order)
        open_ids = [i for i, item in items.items() if item.get("status") in OPEN_ITEM_STATUSES]
        if not open_ids:
            done = all(item.get("status") == "canceled" for item in items.values())
            return ItemResult.success(key, message="already cancelled") if done else \
                ItemResult.rejected(key, "no item of this order can still be cancelled (shipped already)")
        try:
            self.client.post("/v2/orders/statuses/set-to-cancelled",
                             {"orderItemIds": open_ids, "reason": name, "reasonDetail": detail})
        except RejectedItem as error:
            return ItemResult.rejected(key, str(error), field=error.field)
        return ItemResult.success(key, message=f"{len(open_ids)} item(s) cancelled")

    def _order_items(self, order: Order) -> dict[int, dict[str, Any]]:
        return self._items_by_order([order.channel_order_id])[str(order.channel_order_id)]

    def _items_by_order(self, order_ids: list[str]) -> defaultdict[str, dict[int, dict[str, Any]]]:
        """Order items by order id (as a string) and item id: one paged read per 100 orders."""
        found: defaultdict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for chunk in _chunks(list(dict.fromkeys(str(i) for i in order_ids)), ORDER_IDS_PER_CALL):
            for item in self.client.paged("/v2/order-items", [("orderIds[]", i) for i in chunk]):
                found[str(item.get("orderId"))][int(item["id"])] = item
        return found

    def _ready_to_ship(self, ids: list[int], items: dict[int, dict[str, Any]], provider: str, tracking: str) -> int:
        pending = [i for i in ids if items[i].get("status") == "pending"]
        if not pending:
            return 0
        body = {"orderItems": [{"id": i} for i in pending], "deliveryType": self._setting("delivery_type"),
                "shippingProvider": provider, "trackingNumber": tracking}
        answer = self.client.post("/v2/orders/statuses/set-to-ready-to-ship", body) or {}
        accepted = {int(i) for i in answer.get("orderItemIds") or []}
        if not set(pending) <= accepted:
            raise ContractError("The Iconic did not set every item ready to ship", detail=answer)
        for i in pending:
            items[i] = {**items[i], "status": "ready_to_ship"}
        return len(pending)

    def _shipped(self, ids: list[int], items: dict[int, dict[str, Any]]) -> int:
        if self._setting("delivery_type") != "dropship":
            return 0  # cross-docked items are shipped on by the warehouse, not the seller
        ready = [i for i in ids if items[i].get("status") == "ready_to_ship"]
        if ready:
            self.client.post("/v2/orders/statuses/set-to-shipped", {"orderItemIds": ready})
        return len(ready)


def _fulfilment_item_ids(order: Order, fulfilment: Fulfilment, items: dict[int, dict[str, Any]]) -> list[int]:
    """The order item ids a fulfilment covers; all must belong to this one order."""
    if not fulfilment.lines:
        return [i for i, item in items.items() if item.get("status") not in ("canceled", "failed")]
    chosen: list[int] = []
    for line in fulfilment.lines:
        ids = [int(i) for i in line.channel_line_ids] or _units_of(line.sku, line.quantity, items, chosen)
        foreign = [i for i in ids if i not in items]
        if foreign:
            raise RejectedItem(f"order items {foreign} are not part of order {order.order_number}",
                               key=order.order_number, field="lines")
        chosen.extend(ids)
    cancelled = [i for i in chosen if items[i].get("status") == "canceled"]
    if cancelled:
        raise RejectedItem(f"order items {cancelled} were cancelled and cannot be shipped",
                           key=order.order_number, field="lines")
    return chosen


def _units_of(sku: str, quantity: int, items: dict[int, dict[str, Any]], taken: list[int]) -> list[int]:
    """``quantity`` item ids of ``sku``, preferring units not written back yet."""
    rank = {"pending": 0, "ready_to_ship": 1, "shipped": 2, "delivered": 2}
    candidates = sorted((i for i, item in items.items() if (item.get("product") or {}).get("sellerSku") == sku
                         and i not in taken and item.get("status") in rank), key=lambda i: (rank[items[i]["status"]], i))
    if len(candidates) < quantity:
        raise RejectedItem(f"the order has fewer than {quantity} unit(s) of {sku} to ship", key=sku, field="lines")
    return candidates[:quantity]


def _first_per_sku(listings: list[Listing]) -> list[Listing]:
    seen: dict[str, Listing] = {}
    for listing in listings:
        seen.setdefault(listing.sku, listing)
    return list(seen.values())


def _listed(sku: str, product: dict[str, Any]) -> ItemResult:
    if product.get("approvalStatus") == "rejected":
        return ItemResult.rejected(sku, "The Iconic's review rejected this product; see Seller Center for the reason")
    return ItemResult.success(sku, external_id=str(product["id"]), message=mapping.approval_message(product))


def _chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _webhook_event(body: bytes) -> tuple[str, dict[str, Any]]:
    try:
        envelope = json.loads(body or b"{}")
    except ValueError:
        raise ContractError("webhook body is not JSON") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("event"), str):
        raise ContractError("webhook body needs an event name", detail=envelope)
    payload = envelope.get("payload") or {}
    if not isinstance(payload, dict):
        raise ContractError("webhook payload must be an object", detail=envelope)
    return envelope["event"], payload
