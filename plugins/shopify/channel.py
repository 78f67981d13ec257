"""The Shopify channel: catalogue and stock master (SOURCE) and destination of marketplace orders.

Flows, built on :mod:`plugins.shopify.client` (transport, cost pacing, paging, bulk) and
:mod:`plugins.shopify.mapping` (records):

- ``list_products``: a full import runs one bulk operation over ``productVariants`` (JSONL, no paging);
  an incremental one pages ``products(query: "updated_at:>'…'")`` with nested variants and stock.
- ``create_orders`` (``create_order`` is a batch of one): one ``name:A OR name:B`` search for the batch
  (names are not unique on Shopify, so the hub's own marker must match too), one SKU search, then an
  ``orderCreate`` per new order; after a timeout it looks again before failing.
- ``pull_fulfilments`` / ``pull_cancellations``: only orders carrying the hub's marker.
- ``restock``: ``inventoryAdjustQuantities`` with an ``@idempotent`` key, for returns.
- ``verify_webhook``: HMAC of the raw body, then a targeted job per topic.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from marshmallow import Schema, fields, validate

from hub.channel import Channel, ChannelServices, Limits, Role, WebhookAction, WebhookRequest
from hub.errors import AuthError, ChannelError, ContractError, RejectedItem, TransientError
from hub.parallel import map_limited
from hub.records import Fulfilment, ItemResult, Order, Product, Return, Variant

from . import mapping
from .client import API_VERSION, MAX_INPUT_ITEMS, ShopifyClient, UserErrors, nodes_of

WEBHOOK_TOPICS = ("ORDERS_FULFILLED", "ORDERS_CANCELLED", "FULFILLMENTS_CREATE", "INVENTORY_LEVELS_UPDATE",
                  "PRODUCTS_UPDATE")
#: Requested-cost budget per catalogue page; Shopify refuses single queries over 1,000 points.
PAGE_COST_BUDGET = 900
VARIANTS_PER_PRODUCT = 10  # typical fashion products fit; bigger ones page their variants separately
SKUS_PER_LOOKUP = 50  # keeps the search string short; 50 SKUs x up to 5 duplicates fits one page
NAMES_PER_LOOKUP = 50  # order names per search string, for the same reason
# orderCreates in flight: one at a time, a 150 ms round trip caps a shop at ~7 orders/s while even
# the Standard bucket restores 10/s; four keep the bucket, not the round trip, the limit.
CREATE_CONCURRENCY = 4
NAMES_PAGE_SLACK = 5  # names are not unique on Shopify: room for other orders of the same name
ORDERS_PAGE = 7
FULFILMENTS_PER_ORDER = 5
LINES_PER_FULFILMENT = 10
CANCELLATIONS_PAGE = 15
# The orders search's fulfillment_status values for orders with shipments; "partial" first, so an
# order shipped in full between the two searches is seen twice (and stored once), never missed.
SHIPPED_SEARCH_VALUES = ("partial", "shipped")
_QUANTITIES = 'quantities(names: ["available", "on_hand", "committed"]) { name quantity }'
_PRODUCT_FIELDS = "id title handle status vendor productType tags descriptionHtml updatedAt"


class CredentialsSchema(Schema):
    shop_domain = fields.String(required=True, validate=validate.Regexp(
        r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$", error="must be the shop's permanent *.myshopify.com domain"))
    access_token = fields.String(required=True, validate=validate.Length(min=8))
    client_secret = fields.String(required=True, validate=validate.Length(min=8))
    previous_client_secret = fields.String(load_default=None, allow_none=True)


class MarketplaceAddressSchema(Schema):
    address1 = fields.String()
    address2 = fields.String()
    city = fields.String()
    provinceCode = fields.String()
    zip = fields.String()
    countryCode = fields.String(validate=validate.Regexp(r"^[A-Z]{2}$", error="must be an ISO 3166 two-letter code"))


class SettingsSchema(Schema):
    marketplace_name = fields.String(load_default="The Iconic", validate=validate.Length(min=1, max=100))
    marketplace_email = fields.Email(load_default=None, allow_none=True)
    marketplace_phone = fields.String(load_default=None, allow_none=True)
    marketplace_address = fields.Nested(MarketplaceAddressSchema, load_default=lambda: {"countryCode": "AU"})
    inventory_behaviour = fields.String(load_default="DECREMENT_OBEYING_POLICY", validate=validate.OneOf(
        ["BYPASS", "DECREMENT_IGNORING_POLICY", "DECREMENT_OBEYING_POLICY"]))
    catalogue_mode = fields.String(load_default="auto", validate=validate.OneOf(["auto", "paged", "bulk"]))
    stock_locations = fields.List(fields.String(), load_default=list)
    restock_location = fields.String(load_default=None, allow_none=True)
    bulk_poll_seconds = fields.Float(load_default=2.0, validate=validate.Range(min=0))
    bulk_timeout_seconds = fields.Float(load_default=3600.0, validate=validate.Range(min=1))
    # Products held open while the bulk file streams, for variants of one product that are not
    # consecutive in it (see ShopifyChannel._bulk_products).
    bulk_group_window = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=100_000))
    create_concurrency = fields.Integer(load_default=CREATE_CONCURRENCY, validate=validate.Range(min=1, max=16), metadata={
        "description": "orderCreate mutations in flight at the same time (Shopify has no bulk order create); "
                       "the cost bucket still paces them. 1 creates one order after another"})


class ShopifyChannel(Channel):
    name = "shopify"
    title = "Shopify"
    roles = frozenset({Role.SOURCE, Role.ORDER_DESTINATION})
    credentials_schema = CredentialsSchema
    settings_schema = SettingsSchema
    # Shopify limits GraphQL by cost, not requests: the client paces by the bucket each answer reports.
    # The hub's per-request token bucket is only a backstop, set so it never binds before the cost
    # bucket does: 100/s is Plus's restore rate (1,000 points/s) / 10 per mutation, and a burst of 200
    # is the 2,000-point Standard bucket in orderCreates.
    limits = Limits(max_batch=MAX_INPUT_ITEMS, requests_per_second=100.0, burst=200, page_size=250,
                    documented="GraphQL Admin API: cost-based leaky bucket reported in extensions.cost "
                               "(paced by the client; Standard 2,000 points, 100/s; mutations 10); "
                               "input arrays and pages at most 250 items")
    secret_fields = ("access_token", "client_secret", "previous_client_secret")

    def __init__(self, services: ChannelServices) -> None:
        super().__init__(services)
        self.config = SettingsSchema().load(services.settings or {})
        self._client: ShopifyClient | None = None
        self._locations: list[dict[str, Any]] | None = None

    @property
    def client(self) -> ShopifyClient:
        if self._client is None:
            base_url = self.account.base_url or f"https://{self.credentials['shop_domain']}"
            self._client = ShopifyClient(self.services, base_url=base_url,
                                         access_token=self.credentials["access_token"], limits=self.limits)
        return self._client

    # -- every channel -----------------------------------------------------------------------------

    def test_connection(self) -> dict[str, Any]:
        data = self.client.query(TEST_CONNECTION)
        shop = data.get("shop") or {}
        return {"shop": shop.get("name"), "domain": shop.get("myshopifyDomain"), "currency": shop.get("currencyCode"),
                "api_version": API_VERSION,
                "locations": [{"id": loc["id"], "name": loc["name"]}
                              for loc in nodes_of(data.get("locations"), "locations")]}

    def verify_webhook(self, request: WebhookRequest) -> WebhookAction | None:
        signature = (request.header("X-Shopify-Hmac-Sha256") or "").encode()
        if not signature:
            raise AuthError("Shopify webhook without X-Shopify-Hmac-Sha256: refused")
        secrets = [s for s in (self.credentials.get("client_secret"), self.credentials.get("previous_client_secret")) if s]
        # Both secrets are checked after a rotation: Shopify signs with the old one for up to an hour.
        valid = [hmac.compare_digest(_signature(secret, request.body), signature) for secret in secrets]
        if not any(valid):
            raise AuthError("Shopify webhook signature does not match the app's client secret: refused")
        domain = request.header("X-Shopify-Shop-Domain")
        if domain and domain != self.credentials.get("shop_domain"):
            self.log.warning("ignoring a webhook for shop %s (this account is %s)", domain, self.credentials.get("shop_domain"))
            return None
        try:
            payload = json.loads(request.body)
        except ValueError:
            raise ContractError("Shopify webhook body is not JSON") from None
        return mapping.webhook_action(request.header("X-Shopify-Topic") or "", payload if isinstance(payload, dict) else {},
                                      delivery_id=request.header("X-Shopify-Webhook-Id"),
                                      triggered_at=request.header("X-Shopify-Triggered-At"))

    def register_webhooks(self, callback_url: str) -> list[str]:
        """Subscribe ``callback_url`` to the topics the hub acts on; returns the topics newly added."""
        existing = {(s["topic"], s["uri"]) for s in self.client.paginate(WEBHOOKS, {"first": 100},
                                                                        ("webhookSubscriptions",))}
        added = []
        for topic in WEBHOOK_TOPICS:
            if (topic, callback_url) not in existing:
                self.client.mutate(WEBHOOK_CREATE, {"topic": topic, "uri": callback_url}, "webhookSubscriptionCreate")
                added.append(topic)
        return added

    # -- SOURCE ------------------------------------------------------------------------------------

    def list_products(self, since: datetime | None = None) -> Iterable[Product]:
        mode = self.config["catalogue_mode"]
        use_bulk = mode == "bulk" or (mode == "auto" and since is None)
        products = self._bulk_products(since) if use_bulk else self._paged_products(since)
        seen: dict[str, str] = {}
        for product in products:
            for variant in product.variants:
                if variant.sku in seen:
                    self.log.warning("duplicate SKU %s on Shopify variants %s and %s", variant.sku,
                                     seen[variant.sku], variant.external_id)
                seen.setdefault(variant.sku, variant.external_id or "")
            yield product

    def _paged_products(self, since: datetime | None) -> Iterator[Product]:
        levels = self._level_page_size()
        variant_cost = 5 + 3 * levels
        per_product = max(1, min(VARIANTS_PER_PRODUCT, (PAGE_COST_BUDGET - 5) // variant_cost))
        page = max(1, min(50, (PAGE_COST_BUDGET - 2) // (3 + per_product * variant_cost)))
        variables = {"first": page, "variants": per_product, "levels": levels, "query": _since_query(since)}
        for node in self.client.paginate(PRODUCTS_PAGE, variables, ("products",)):
            variant_nodes = nodes_of(node.get("variants"), "Product.variants")
            if (node["variants"].get("pageInfo") or {}).get("hasNextPage"):
                # A product with more variants than fit the page: its own cursor, to the end.
                more = {"id": node["id"], "first": max(1, min(250, (PAGE_COST_BUDGET - 2) // variant_cost)),
                        "levels": levels}
                variant_nodes = list(self.client.paginate(PRODUCT_VARIANTS, more, ("product", "variants")))
            rows = [(v, self._levels_of(v)) for v in variant_nodes]
            product = self._product(node, rows)
            if product is not None:
                yield product

    def _bulk_products(self, since: datetime | None) -> Iterator[Product]:
        """Products of the bulk JSONL, each yielded once its rows are in, while the file streams.

        Each line is a variant with its product inline, or an inventory level of a variant
        (``__parentId``); Shopify writes children after their parent. Variants of one product are
        consecutive in practice but nothing promises it, so products stay *open* in a bounded buffer
        (``bulk_group_window`` products, least recently touched released first) and are yielded when
        they fall out of it or at the end of the file. A row for a product already yielded cannot be
        merged into it (the record went out complete), so it fails the import loudly rather than
        deactivate the variants that record lacked: raise the window, or use ``catalogue_mode: paged``.
        """
        window = max(1, int(self.config["bulk_group_window"]))
        open_products: dict[str, tuple[dict[str, Any], list[tuple[dict[str, Any], list[dict[str, Any]]]]]] = {}
        open_variants: dict[str, list[dict[str, Any]]] = {}  # variant id -> its level rows (open products only)
        released: set[str] = set()

        def release(product_id: str) -> Product | None:
            node, rows = open_products.pop(product_id)
            released.add(product_id)
            for variant, _ in rows:
                open_variants.pop(variant.get("id", ""), None)
            if since is not None and _parse_time(node.get("updatedAt")) <= since:
                return None  # a bulk export is the whole catalogue; incremental filtering happens here
            return self._product(node, rows)

        for row in self.client.bulk_export(BULK_CATALOGUE, poll_seconds=self.config["bulk_poll_seconds"],
                                           timeout_seconds=self.config["bulk_timeout_seconds"]):
            parent = row.get("__parentId")
            if parent:
                levels = open_variants.get(parent)
                if levels is None:
                    raise ContractError(f"bulk result: inventory level {row.get('id')} of variant {parent} came after "
                                        f"its product was complete (more than {window} products later)")
                levels.append(row)
                continue
            product_node = row.get("product") or {}
            product_id = product_node.get("id", "")
            entry = open_products.pop(product_id, None)  # re-inserted below: most recently touched last
            if entry is None:
                if product_id in released:
                    raise ContractError(
                        f"bulk result: variant {row.get('id')} of product {product_id} came more than {window} products "
                        "after the product's other variants; raise bulk_group_window or use catalogue_mode paged")
                entry = (product_node, [])
            open_products[product_id] = entry
            levels = []
            entry[1].append((row, levels))
            open_variants[row.get("id", "")] = levels
            while len(open_products) > window:
                product = release(next(iter(open_products)))
                if product is not None:
                    yield product
        while open_products:
            product = release(next(iter(open_products)))
            if product is not None:
                yield product

    def _product(self, node: dict[str, Any], rows: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> Product | None:
        active = node.get("status") == "ACTIVE"
        locations = set(self.config["stock_locations"]) or None
        variants: list[Variant] = []
        for variant_node, level_nodes in rows:
            problem = mapping.sku_problem(variant_node.get("sku"))
            if problem and not mapping.has_sku(variant_node.get("sku")):
                self.log.warning("skipping Shopify variant %s of %r: it %s", variant_node.get("id"),
                                 node.get("title"), problem)
                continue
            if problem:
                # Yielded as it is: the catalogue flow rejects it by name, where the admin looks.
                self.log.warning("Shopify variant %s of %r %s", variant_node.get("id"), node.get("title"), problem)
            variants.append(mapping.variant_from_remote(variant_node, level_nodes, active=active, locations=locations))
        if not variants:
            return None
        # Not validated here: the catalogue flow rejects a bad variant or product by name and keeps
        # the rest, so the admin sees the problem in the sync report rather than only in a log.
        return mapping.product_from_remote(node, variants)

    def _levels_of(self, variant: dict[str, Any]) -> list[dict[str, Any]]:
        connection = (variant.get("inventoryItem") or {}).get("inventoryLevels")
        if (connection or {}).get("pageInfo", {}).get("hasNextPage"):
            raise TransientError("a location was added while the catalogue was read; the import will be retried")
        return nodes_of(connection, "InventoryItem.inventoryLevels") if connection else []

    def _level_page_size(self) -> int:
        return max(1, min(50, len(self.locations(include_inactive=True))))

    def locations(self, *, include_inactive: bool = False) -> list[dict[str, Any]]:
        if self._locations is None:
            self._locations = list(self.client.paginate(LOCATIONS, {"first": 250}, ("locations",)))
        return [loc for loc in self._locations if include_inactive or loc.get("isActive")]

    # -- ORDER_DESTINATION -------------------------------------------------------------------------

    def create_order(self, order: Order) -> ItemResult:
        return self.create_orders([order])[0]

    def create_orders(self, orders: list[Order]) -> list[ItemResult]:
        """One name search and one SKU search per batch (per 50 names / SKUs), sent together, then one
        orderCreate per order not yet in Shopify (there is no bulk order create), ``create_concurrency``
        at a time within the cost bucket. Results in input order."""
        unique: dict[str, Order] = {}
        for order in orders:
            unique.setdefault(order.order_number, order)  # the same order twice in one call is sent once
        found, matches = self._look_up(list(unique.values()))
        results = {number: ItemResult.success(number, external_id=node["id"], message="already in Shopify")
                   for number, node in found.items()}
        todo = [order for number, order in unique.items() if number not in results]
        variant_ids = {sku: nodes[0]["id"] for sku, nodes in matches.items() if len(nodes) == 1}
        stop = threading.Event()  # after a channel failure no further orderCreate is sent

        def create(order: Order) -> ItemResult | ChannelError | None:
            if stop.is_set():
                return None
            try:
                return _unmatched_lines(order, matches) or self._order_create(order, variant_ids, on_timeout=stop.set)
            except RejectedItem as error:
                return ItemResult.rejected(order.order_number, str(error), field=error.field)
            except ChannelError as error:
                stop.set()
                return error

        outcomes = map_limited(create, todo, int(self.config["create_concurrency"]), name="shopify-order-create")
        failure = next((outcome for outcome in outcomes if isinstance(outcome, ChannelError)), None)
        if failure is not None and not any(isinstance(outcome, ItemResult) and outcome.ok for outcome in outcomes):
            raise failure  # nothing of this call is in Shopify yet: the flow handles it for the batch
        reason = failure or "an orderCreate of the same batch timed out (it had reached Shopify)"
        for order, outcome in zip(todo, outcomes):
            # Those created must get their bindings now: a retry soon after could miss them in
            # Shopify's search index. The rest were not sent and go again on the next run.
            results[order.order_number] = outcome if isinstance(outcome, ItemResult) else ItemResult.rejected(
                order.order_number, f"not sent to Shopify: {reason}", retryable=True)
        return [results[order.order_number] for order in orders]

    def _order_create(self, order: Order, variant_ids: dict[str, str],
                      on_timeout: Callable[[], None] = lambda: None) -> ItemResult:
        order_input = mapping.order_create_input(order, variant_ids, self._marketplace())
        options = {"inventoryBehaviour": self.config["inventory_behaviour"], "sendReceipt": False,
                   "sendFulfillmentReceipt": False}
        try:
            payload = self.client.mutate(ORDER_CREATE, {"order": order_input, "options": options}, "orderCreate")
        except TransientError:
            on_timeout()  # a batch sends no new orderCreate from here on, while we look
            # orderCreate has no idempotency key: it may have been applied. Look before failing.
            existing = self._find_hub_orders([order]).get(order.order_number)
            if existing is None:
                raise
            return ItemResult.success(order.order_number, external_id=existing["id"], message="created (after a timeout)")
        created = payload.get("order") or {}
        if not created.get("id"):
            raise ContractError("orderCreate answered without an order id", detail=payload)
        return ItemResult.success(order.order_number, external_id=created["id"])

    def _look_up(self, orders: list[Order]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """The orders already in Shopify and the variants of the orders' SKUs, searched at the same time.

        Neither search needs the other's answer, and one after the other they were two round trips
        before every batch's first orderCreate. The SKUs searched are those of every order, so a batch
        found whole in Shopify (a retry) pays for a SKU search it did not need."""
        skus = [line.sku for order in orders for line in order.lines]
        searches: list[Callable[[], Any]] = [lambda: self._find_hub_orders(orders), lambda: self._variant_matches(skus)]
        found, matches = map_limited(lambda search: search(), searches, len(searches), name="shopify-look-up")
        return found, matches

    def _find_hub_orders(self, orders: list[Order]) -> dict[str, dict[str, Any]]:
        """Order number -> the hub's copy already in Shopify, by one ``name:A OR name:B`` search per 50."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(orders), NAMES_PER_LOOKUP):
            batch = orders[start:start + NAMES_PER_LOOKUP]
            # Names only, no AND with the marker: the marker is checked client-side, so the search
            # never depends on how Shopify ranks AND against OR.
            query = " OR ".join(f"name:{_quote(order.order_number)}" for order in batch)
            variables = {"query": query, "first": min(MAX_INPUT_ITEMS, NAMES_PAGE_SLACK * len(batch))}
            nodes = list(self.client.paginate(FIND_ORDERS, variables, ("orders",)))
            for order in batch:
                match = mapping.matching_hub_order(nodes, order)
                if match is not None:
                    found[order.order_number] = match
        return found

    def _variant_matches(self, skus: list[str]) -> dict[str, list[dict[str, Any]]]:
        """SKU -> every Shopify variant carrying exactly that SKU (0, 1 or more); one search per 50 SKUs."""
        found: dict[str, list[dict[str, Any]]] = {}
        wanted = list(dict.fromkeys(skus))
        for start in range(0, len(wanted), SKUS_PER_LOOKUP):
            batch = wanted[start:start + SKUS_PER_LOOKUP]
            query = " OR ".join(f"sku:{_quote(sku)}" for sku in batch)
            for node in self.client.paginate(VARIANTS_BY_SKU, {"query": query, "first": 250}, ("productVariants",)):
                if node.get("sku") in batch:  # search is token-based: verify the exact SKU
                    found.setdefault(node["sku"], []).append(node)
        return found

    def _variants_by_sku(self, skus: list[str]) -> dict[str, dict[str, Any]]:
        """SKU -> variant node for SKUs with exactly one Shopify variant; duplicates are refused."""
        found = self._variant_matches(skus)
        duplicated = sorted(sku for sku, nodes in found.items() if len(nodes) > 1)
        if duplicated:
            raise RejectedItem(_duplicated_message(duplicated), field="lines.sku")
        return {sku: nodes[0] for sku, nodes in found.items()}

    def _marketplace(self) -> mapping.Marketplace:
        return mapping.Marketplace(name=self.config["marketplace_name"], email=self.config["marketplace_email"],
                                   phone=self.config["marketplace_phone"], address=self.config["marketplace_address"])

    def pull_fulfilments(self, since: datetime | None = None) -> Iterable[Fulfilment]:
        """Shipments of the hub's orders changed since ``since``. Only orders Shopify lists as partly
        or fully shipped are read: a page holds 7 orders with their fulfilments, and the orders a
        warehouse ships outside Shopify (Starshipit) would otherwise be re-read every run. The
        searches go out at the same time."""
        def search(status: str) -> list[dict[str, Any]]:
            variables = {"first": ORDERS_PAGE, "query": _hub_orders_query(since, f"fulfillment_status:{status}")}
            return list(self.client.paginate(HUB_ORDERS, variables, ("orders",)))

        for orders in map_limited(search, SHIPPED_SEARCH_VALUES, len(SHIPPED_SEARCH_VALUES), name="shopify-shipped"):
            for order in orders:
                yield from self._shipments_of(order)

    def _shipments_of(self, order: dict[str, Any]) -> Iterator[Fulfilment]:
        for fulfillment in self._fulfillments_of(order):
            lines = self._fulfillment_lines(fulfillment)
            shipment = mapping.fulfilment_from_remote(order, fulfillment, lines)
            if shipment is None:
                if fulfillment.get("status") == "SUCCESS":
                    self.log.warning("Shopify fulfilment %s of order %s has no tracking number; not reported",
                                     fulfillment.get("name"), order.get("name"))
                continue
            yield shipment

    def pull_cancellations(self, since: datetime | None = None) -> Iterable[Order]:
        """Hub orders cancelled in Shopify since ``since``, so the hub can tell the marketplace."""
        variables = {"first": CANCELLATIONS_PAGE, "query": _hub_orders_query(since, "status:cancelled")}
        for node in self.client.paginate(CANCELLED_ORDERS, variables, ("orders",)):
            yield mapping.cancelled_order_from_remote(node, nodes_of(node.get("lineItems"), "Order.lineItems"))

    def _fulfillments_of(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        found = order.get("fulfillments") or []
        if len(found) < FULFILMENTS_PER_ORDER:
            return found
        # Order.fulfillments is a plain list without pageInfo: a full list may hide more.
        data = self.client.query(ORDER_FULFILMENTS, {"id": order["id"]})
        return (data.get("order") or {}).get("fulfillments") or found

    def _fulfillment_lines(self, fulfillment: dict[str, Any]) -> list[dict[str, Any]]:
        connection = fulfillment.get("fulfillmentLineItems") or {}
        if not (connection.get("pageInfo") or {}).get("hasNextPage"):
            return nodes_of(connection, "Fulfillment.fulfillmentLineItems")
        return list(self.client.paginate(FULFILMENT_LINES, {"id": fulfillment["id"], "first": 250},
                                         ("fulfillment", "fulfillmentLineItems")))

    # -- returns: stock back into Shopify ----------------------------------------------------------

    def receive_return(self, ret: Return) -> ItemResult:
        """The hub's returns hook: the returned units go back to ``available`` once per return."""
        quantities: dict[str, int] = {}
        for line in ret.lines:
            quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
        results = self.restock_lines(quantities, None, f"channelhub-return-{ret.external_id}")
        problems = [result.message for result in results if not result.ok]
        if problems:
            return ItemResult.rejected(ret.external_id, "; ".join(problems), field="sku")
        return ItemResult.success(ret.external_id, message="restocked")

    def restock(self, sku: str, quantity: int, location: str | None, idempotency_key: str) -> ItemResult:
        """Put ``quantity`` returned units of ``sku`` back into ``available`` at ``location``."""
        return self.restock_lines({sku: quantity}, location, idempotency_key)[0]

    def restock_lines(self, quantities: dict[str, int], location: str | None, idempotency_key: str) -> list[ItemResult]:
        """One inventoryAdjustQuantities per 250 SKUs, each with its own ``@idempotent`` key."""
        where = self._location_id(location or self.config["restock_location"])
        try:
            variants = self._variant_items(list(quantities))
        except RejectedItem as error:
            return [ItemResult.rejected(sku, str(error), field="sku") for sku in quantities]
        results = [ItemResult.rejected(sku, f"SKU {sku} is not in Shopify", field="sku")
                   for sku in quantities if sku not in variants]
        ready = [sku for sku in quantities if sku in variants]
        for number, start in enumerate(range(0, len(ready), MAX_INPUT_ITEMS)):
            batch = ready[start:start + MAX_INPUT_ITEMS]
            results += self._adjust(batch, quantities, variants, where, f"{idempotency_key}-{number}")
        return results

    def _adjust(self, skus: list[str], quantities: dict[str, int], items: dict[str, str], location_id: str,
                key: str) -> list[ItemResult]:
        changes = [{"inventoryItemId": items[sku], "locationId": location_id, "delta": quantities[sku],
                    "changeFromQuantity": None} for sku in skus]
        variables = {"key": key, "input": {"name": "available", "reason": "restock",
                                           "referenceDocumentUri": f"gid://channelhub/Return/{key}", "changes": changes}}
        try:
            self.client.mutate(INVENTORY_ADJUST, variables, "inventoryAdjustQuantities", replayable=True)
        except UserErrors as error:
            return [ItemResult.rejected(sku, str(error), field=error.field) for sku in skus]
        return [ItemResult.success(sku, external_id=items[sku]) for sku in skus]

    def _variant_items(self, skus: list[str]) -> dict[str, str]:
        return {sku: node["inventoryItem"]["id"] for sku, node in self._variants_by_sku(skus).items()}

    def _location_id(self, location: str | None) -> str:
        active = self.locations()
        if not active:
            raise ContractError("the shop has no active location")
        if not location:
            return active[0]["id"]
        match = next((loc["id"] for loc in active if location in (loc["id"], loc["name"])), None)
        if match is None:
            names = ", ".join(loc["name"] for loc in active)
            raise RejectedItem(f"no active Shopify location {location!r} (locations: {names})", field="location")
        return match


# -- helpers ---------------------------------------------------------------------------------------


def _signature(secret: str, body: bytes) -> bytes:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())


def _quote(value: str) -> str:
    """A search-syntax value: double-quoted, with quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unmatched_lines(order: Order, matches: dict[str, list[dict[str, Any]]]) -> ItemResult | None:
    """A rejection naming the first line whose SKU is on no Shopify variant or on several, else None."""
    duplicated = sorted({line.sku for line in order.lines if len(matches.get(line.sku, ())) > 1})
    if duplicated:
        index = next(i for i, line in enumerate(order.lines) if line.sku in duplicated)
        return ItemResult.rejected(order.order_number, _duplicated_message(duplicated), field=f"lines.{index}.sku")
    missing = [i for i, line in enumerate(order.lines) if line.sku not in matches]
    if missing:
        skus = ", ".join(order.lines[i].sku for i in missing)
        return ItemResult.rejected(order.order_number, f"SKU(s) not found in Shopify: {skus}", field=f"lines.{missing[0]}.sku")
    return None


def _duplicated_message(skus: list[str]) -> str:
    return f"SKU(s) on more than one Shopify variant: {', '.join(skus)}; make them unique in Shopify"


def _since_query(since: datetime | None) -> str | None:
    return f"updated_at:>{_quote(_iso(since))}" if since else None


def _hub_orders_query(since: datetime | None, extra: str = "") -> str:
    parts = [f"tag:{_quote(mapping.HUB_MARKER)}", extra, _since_query(since) or ""]
    return " ".join(part for part in parts if part)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ContractError("Shopify Product.updatedAt is missing")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- GraphQL documents (field names as in the 2026-07 Admin API) ------------------------------------

TEST_CONNECTION = """
query TestConnection {
  shop { name currencyCode myshopifyDomain }
  locations(first: 50) { nodes { id name isActive } }
}"""

LOCATIONS = """
query Locations($first: Int!, $after: String) {
  locations(first: $first, after: $after, includeInactive: true) {
    pageInfo { hasNextPage endCursor }
    nodes { id name isActive }
  }
}"""

_VARIANT = f"""id title sku barcode price compareAtPrice selectedOptions {{ name value }}
      inventoryItem {{ id inventoryLevels(first: $levels) {{ pageInfo {{ hasNextPage }}
        nodes {{ location {{ id name }} {_QUANTITIES} }} }} }}"""

PRODUCTS_PAGE = f"""
query Products($first: Int!, $after: String, $query: String, $variants: Int!, $levels: Int!) {{
  products(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    pageInfo {{ hasNextPage endCursor }}
    nodes {{ {_PRODUCT_FIELDS}
      variants(first: $variants) {{ pageInfo {{ hasNextPage endCursor }} nodes {{ {_VARIANT} }} }}
    }}
  }}
}}"""

PRODUCT_VARIANTS = f"""
query ProductVariants($id: ID!, $first: Int!, $after: String, $levels: Int!) {{
  product(id: $id) {{
    variants(first: $first, after: $after) {{ pageInfo {{ hasNextPage endCursor }} nodes {{ {_VARIANT} }} }}
  }}
}}"""

# Rooted at productVariants so the connections nest only two deep (variants > inventory levels), as
# bulk queries require; the product rides along on each variant line.
BULK_CATALOGUE = f"""
{{
  productVariants {{ edges {{ node {{
    id title sku barcode price compareAtPrice selectedOptions {{ name value }}
    product {{ {_PRODUCT_FIELDS} }}
    inventoryItem {{ id inventoryLevels {{ edges {{ node {{ id location {{ id name }} {_QUANTITIES} }} }} }} }}
  }} }} }}
}}"""

VARIANTS_BY_SKU = """
query VariantsBySku($query: String!, $first: Int!, $after: String) {
  productVariants(first: $first, after: $after, query: $query) {
    pageInfo { hasNextPage endCursor }
    nodes { id sku inventoryItem { id } }
  }
}"""

FIND_ORDERS = """
query FindOrders($query: String!, $first: Int!, $after: String) {
  orders(first: $first, after: $after, query: $query) {
    pageInfo { hasNextPage endCursor }
    nodes { id name tags sourceName sourceIdentifier }
  }
}"""

ORDER_CREATE = """
mutation CreateOrder($order: OrderCreateOrderInput!, $options: OrderCreateOptionsInput) {
  orderCreate(order: $order, options: $options) {
    order { id name }
    userErrors { field message code }
  }
}"""

_FULFILMENT = f"""id name status createdAt
        trackingInfo(first: 3) {{ company number url }}
        fulfillmentLineItems(first: {LINES_PER_FULFILMENT}) {{ pageInfo {{ hasNextPage }} nodes {{ quantity lineItem {{ sku }} }} }}"""

HUB_ORDERS = f"""
query HubOrders($first: Int!, $after: String, $query: String) {{
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    pageInfo {{ hasNextPage endCursor }}
    nodes {{ id name sourceIdentifier updatedAt
      fulfillments(first: {FULFILMENTS_PER_ORDER}) {{ {_FULFILMENT} }} }}
  }}
}}"""

ORDER_FULFILMENTS = f"""
query OrderFulfilments($id: ID!) {{
  order(id: $id) {{ id name fulfillments(first: 30) {{ {_FULFILMENT} }} }}
}}"""

FULFILMENT_LINES = """
query FulfilmentLines($id: ID!, $first: Int!, $after: String) {
  fulfillment(id: $id) {
    fulfillmentLineItems(first: $first, after: $after) {
      pageInfo { hasNextPage endCursor } nodes { quantity lineItem { sku } }
    }
  }
}"""

CANCELLED_ORDERS = """
query CancelledOrders($first: Int!, $after: String, $query: String) {
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes { id name sourceIdentifier cancelledAt currencyCode
      shippingAddress { name company address1 address2 city provinceCode zip countryCodeV2 phone }
      lineItems(first: 50) { nodes { sku quantity title } } }
  }
}"""

INVENTORY_ADJUST = """
mutation Restock($key: String!, $input: InventoryAdjustQuantitiesInput!) {
  inventoryAdjustQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { id changes { name delta quantityAfterChange } }
    userErrors { field message code }
  }
}"""

WEBHOOKS = """
query Webhooks($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    pageInfo { hasNextPage endCursor } nodes { id topic uri }
  }
}"""

WEBHOOK_CREATE = """
mutation Subscribe($topic: WebhookSubscriptionTopic!, $uri: String!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: {uri: $uri, format: JSON}) {
    webhookSubscription { id }
    userErrors { field message }
  }
}"""
