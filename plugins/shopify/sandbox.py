"""An emulator of the Shopify GraphQL Admin API (version 2026-07), small and honest.

It serves ``POST /admin/api/{version}/graphql.json`` by executing a real GraphQL schema subset with
graphql-core: only the types, fields and mutations channelhub's Shopify client uses, spelled as
Shopify spells them (see ``shared/reference/shopify-api.md``). Around the executor it reproduces what
a connector has to cope with:

- ``X-Shopify-Access-Token`` checked (401), access scopes checked per root field (403);
- the calculated query cost: requested cost reserved up front from a leaky bucket
  (``maximumAvailable`` / ``restoreRate``), refunded down to the actual cost, reported in
  ``extensions.cost``; over 1,000 points -> ``MAX_COST_EXCEEDED``; an empty bucket -> ``THROTTLED``
  with HTTP 200 or 429 (both are seen in the wild, so it is a setting);
- cursor connections (``first``/``after``, ``pageInfo``, max 250), search strings (``sku:X OR sku:Y``,
  ``updated_at:>'…'``, ``tag:``, ``name:``, ``status:``);
- ``userErrors`` in mutation payloads; ``@idempotent(key:)`` required on inventory mutations;
- bulk operations that run asynchronously and leave a JSONL file (children carry ``__parentId``);
- webhooks signed with base64 HMAC-SHA256 of the raw body, delivered through an injectable sender.

A control API under ``/_control`` changes stock, fulfils and cancels orders, and touches products;
the shared :class:`hub.sandbox.FaultMiddleware` adds latency, 429s, 5xx, timeouts and bad bodies.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import operator
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from flask import Flask, Response, request
from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    build_schema,
    execute,
    get_named_type,
    parse,
    validate,
)
from graphql.language import DocumentNode

from hub.sandbox import Faults, FaultMiddleware

API_VERSION = "2026-07"
MAX_PAGE_SIZE = 250
MAX_QUERY_COST = 1000
MUTATION_COST = 10
DOCUMENT_CACHE_SIZE = 256  # distinct query texts kept parsed and validated
QUANTITY_NAMES = ("available", "on_hand", "committed", "reserved", "incoming", "damaged",
                  "quality_control", "safety_stock")
ALL_SCOPES = ("read_products", "read_inventory", "write_inventory", "read_locations", "read_orders",
              "write_orders", "read_merchant_managed_fulfillment_orders",
              "write_merchant_managed_fulfillment_orders")
# The scope each root field needs; write_X implies read_X, as on Shopify.
ROOT_SCOPES = {
    "locations": "read_locations", "location": "read_locations",
    "products": "read_products", "product": "read_products", "productVariants": "read_products",
    "inventoryItem": "read_inventory", "inventorySetQuantities": "write_inventory",
    "inventoryAdjustQuantities": "write_inventory", "orders": "read_orders", "order": "read_orders",
    "fulfillment": "read_orders", "orderCreate": "write_orders",
    "fulfillmentCreate": "write_merchant_managed_fulfillment_orders",
}
WEBHOOK_TOPICS = {
    "ORDERS_FULFILLED": "orders/fulfilled", "ORDERS_CANCELLED": "orders/cancelled",
    "FULFILLMENTS_CREATE": "fulfillments/create", "INVENTORY_LEVELS_UPDATE": "inventory_levels/update",
    "PRODUCTS_UPDATE": "products/update", "BULK_OPERATIONS_FINISH": "bulk_operations/finish",
}

SDL = '''
directive @idempotent(key: String!) on FIELD

scalar DateTime
scalar Money
scalar Decimal
scalar URL
scalar HTML

enum CurrencyCode { AUD NZD USD GBP EUR CAD }
enum CountryCode { AU NZ US GB CA IE FR DE IT ES NL SE DK NO JP CN HK SG MY ID PH TH IN AE ZA }
enum ProductStatus { ACTIVE ARCHIVED DRAFT }
enum ProductSortKeys { ID TITLE UPDATED_AT }
enum OrderSortKeys { ID CREATED_AT UPDATED_AT }
enum ProductVariantInventoryPolicy { DENY CONTINUE }
enum OrderCreateFinancialStatus { AUTHORIZED EXPIRED PAID PARTIALLY_PAID PARTIALLY_REFUNDED PENDING REFUNDED VOIDED }
enum OrderCreateInputsInventoryBehavior { BYPASS DECREMENT_IGNORING_POLICY DECREMENT_OBEYING_POLICY }
enum OrderCreateUserErrorCode { FULFILLMENT_SERVICE_INVALID INVALID INVENTORY_CLAIM_FAILED PROCESSED_AT_INVALID REDUNDANT_CUSTOMER_FIELDS SHOP_DORMANT TAX_LINE_RATE_MISSING }
enum OrderDisplayFulfillmentStatus { FULFILLED IN_PROGRESS ON_HOLD OPEN PARTIALLY_FULFILLED PENDING_FULFILLMENT REQUEST_DECLINED RESTOCKED SCHEDULED UNFULFILLED }
enum FulfillmentStatus { SUCCESS CANCELLED ERROR FAILURE }
enum FulfillmentOrderStatus { OPEN IN_PROGRESS CLOSED CANCELLED INCOMPLETE ON_HOLD SCHEDULED }
enum InventoryAdjustQuantitiesUserErrorCode { ADJUST_QUANTITIES_FAILED CHANGE_FROM_QUANTITY_STALE IDEMPOTENCY_CONCURRENT_REQUEST IDEMPOTENCY_KEY_PARAMETER_MISMATCH INVALID_INVENTORY_ITEM INVALID_LOCATION INVALID_QUANTITY_NAME INVALID_REASON INVALID_REFERENCE_DOCUMENT ITEM_NOT_STOCKED_AT_LOCATION MAX_ONE_LEDGER_DOCUMENT NON_MUTABLE_INVENTORY_ITEM }
enum InventorySetQuantitiesUserErrorCode { CHANGE_FROM_QUANTITY_STALE COMPARE_QUANTITY_REQUIRED IDEMPOTENCY_CONCURRENT_REQUEST IDEMPOTENCY_KEY_PARAMETER_MISMATCH INVALID_INVENTORY_ITEM INVALID_LOCATION INVALID_NAME INVALID_QUANTITY_NEGATIVE INVALID_REASON ITEM_NOT_STOCKED_AT_LOCATION NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR NON_MUTABLE_INVENTORY_ITEM }
enum BulkOperationStatus { CREATED RUNNING COMPLETED FAILED CANCELING CANCELED EXPIRED }
enum BulkOperationType { QUERY MUTATION }
enum BulkOperationErrorCode { ACCESS_DENIED INTERNAL_SERVER_ERROR TIMEOUT }
enum BulkOperationUserErrorCode { INVALID }
enum WebhookSubscriptionTopic { ORDERS_FULFILLED ORDERS_CANCELLED FULFILLMENTS_CREATE INVENTORY_LEVELS_UPDATE PRODUCTS_UPDATE BULK_OPERATIONS_FINISH }
enum WebhookSubscriptionFormat { JSON }

type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String }
type UserError { field: [String!] message: String! }

type Shop { id: ID! name: String! currencyCode: CurrencyCode! myshopifyDomain: String! }

type Location {
  id: ID! name: String! isActive: Boolean! fulfillsOnlineOrders: Boolean!
  inventoryLevels(first: Int, after: String): InventoryLevelConnection!
}
type LocationEdge { cursor: String! node: Location! }
type LocationConnection { edges: [LocationEdge!]! nodes: [Location!]! pageInfo: PageInfo! }

type Product {
  id: ID! title: String! handle: String! status: ProductStatus! vendor: String! productType: String!
  tags: [String!]! descriptionHtml: HTML! createdAt: DateTime! updatedAt: DateTime!
  variants(first: Int, after: String): ProductVariantConnection!
}
type ProductEdge { cursor: String! node: Product! }
type ProductConnection { edges: [ProductEdge!]! nodes: [Product!]! pageInfo: PageInfo! }

type SelectedOption { name: String! value: String! }
type ProductVariant {
  id: ID! title: String! sku: String barcode: String price: Money! compareAtPrice: Money
  inventoryPolicy: ProductVariantInventoryPolicy! inventoryQuantity: Int
  selectedOptions: [SelectedOption!]! product: Product! inventoryItem: InventoryItem! updatedAt: DateTime!
}
type ProductVariantEdge { cursor: String! node: ProductVariant! }
type ProductVariantConnection { edges: [ProductVariantEdge!]! nodes: [ProductVariant!]! pageInfo: PageInfo! }

type InventoryItem {
  id: ID! sku: String tracked: Boolean! variant: ProductVariant!
  inventoryLevels(first: Int, after: String): InventoryLevelConnection!
}
type InventoryQuantity { name: String! quantity: Int! updatedAt: DateTime }
type InventoryLevel {
  id: ID! location: Location! item: InventoryItem! updatedAt: DateTime!
  quantities(names: [String!]!): [InventoryQuantity!]!
}
type InventoryLevelEdge { cursor: String! node: InventoryLevel! }
type InventoryLevelConnection { edges: [InventoryLevelEdge!]! nodes: [InventoryLevel!]! pageInfo: PageInfo! }

type MoneyV2 { amount: Decimal! currencyCode: CurrencyCode! }
type MoneyBag { shopMoney: MoneyV2! }
type MailingAddress {
  firstName: String lastName: String name: String company: String address1: String address2: String
  city: String provinceCode: String zip: String countryCodeV2: CountryCode phone: String
}
type LineItem { id: ID! sku: String title: String! quantity: Int! variant: ProductVariant originalUnitPriceSet: MoneyBag! }
type LineItemEdge { cursor: String! node: LineItem! }
type LineItemConnection { edges: [LineItemEdge!]! nodes: [LineItem!]! pageInfo: PageInfo! }

type FulfillmentTrackingInfo { company: String number: String url: URL }
type FulfillmentLineItem { id: ID! quantity: Int lineItem: LineItem! }
type FulfillmentLineItemEdge { cursor: String! node: FulfillmentLineItem! }
type FulfillmentLineItemConnection { edges: [FulfillmentLineItemEdge!]! nodes: [FulfillmentLineItem!]! pageInfo: PageInfo! }
type Fulfillment {
  id: ID! name: String! status: FulfillmentStatus! createdAt: DateTime! updatedAt: DateTime!
  trackingInfo(first: Int): [FulfillmentTrackingInfo!]!
  fulfillmentLineItems(first: Int, after: String): FulfillmentLineItemConnection!
}
type FulfillmentOrderLineItem { id: ID! totalQuantity: Int! remainingQuantity: Int! lineItem: LineItem! }
type FulfillmentOrderLineItemEdge { cursor: String! node: FulfillmentOrderLineItem! }
type FulfillmentOrderLineItemConnection { edges: [FulfillmentOrderLineItemEdge!]! nodes: [FulfillmentOrderLineItem!]! pageInfo: PageInfo! }
type FulfillmentOrder {
  id: ID! status: FulfillmentOrderStatus! updatedAt: DateTime!
  lineItems(first: Int, after: String): FulfillmentOrderLineItemConnection!
}
type FulfillmentOrderEdge { cursor: String! node: FulfillmentOrder! }
type FulfillmentOrderConnection { edges: [FulfillmentOrderEdge!]! nodes: [FulfillmentOrder!]! pageInfo: PageInfo! }

type Order {
  id: ID! name: String! createdAt: DateTime! updatedAt: DateTime! cancelledAt: DateTime
  note: String tags: [String!]! sourceName: String sourceIdentifier: String email: String
  currencyCode: CurrencyCode! displayFulfillmentStatus: OrderDisplayFulfillmentStatus!
  shippingAddress: MailingAddress billingAddress: MailingAddress
  lineItems(first: Int, after: String): LineItemConnection!
  fulfillments(first: Int): [Fulfillment!]!
  fulfillmentOrders(first: Int, after: String): FulfillmentOrderConnection!
}
type OrderEdge { cursor: String! node: Order! }
type OrderConnection { edges: [OrderEdge!]! nodes: [Order!]! pageInfo: PageInfo! }

type BulkOperation {
  id: ID! status: BulkOperationStatus! errorCode: BulkOperationErrorCode objectCount: String!
  rootObjectCount: String! fileSize: String url: URL partialDataUrl: URL createdAt: DateTime!
  completedAt: DateTime query: String! type: BulkOperationType!
}
type WebhookSubscription { id: ID! topic: WebhookSubscriptionTopic! uri: String! format: WebhookSubscriptionFormat! }
type WebhookSubscriptionEdge { cursor: String! node: WebhookSubscription! }
type WebhookSubscriptionConnection { edges: [WebhookSubscriptionEdge!]! nodes: [WebhookSubscription!]! pageInfo: PageInfo! }

type Query {
  shop: Shop!
  locations(first: Int, after: String, includeInactive: Boolean): LocationConnection!
  products(first: Int, after: String, query: String, sortKey: ProductSortKeys, reverse: Boolean): ProductConnection!
  product(id: ID!): Product
  productVariants(first: Int, after: String, query: String): ProductVariantConnection!
  inventoryItem(id: ID!): InventoryItem
  orders(first: Int, after: String, query: String, sortKey: OrderSortKeys, reverse: Boolean): OrderConnection!
  order(id: ID!): Order
  fulfillment(id: ID!): Fulfillment
  bulkOperation(id: ID!): BulkOperation
  currentBulkOperation(type: BulkOperationType): BulkOperation
  webhookSubscriptions(first: Int, after: String): WebhookSubscriptionConnection!
}

input InventoryChangeInput { inventoryItemId: ID! locationId: ID! delta: Int! ledgerDocumentUri: String changeFromQuantity: Int }
input InventoryAdjustQuantitiesInput { name: String! reason: String! referenceDocumentUri: String changes: [InventoryChangeInput!]! }
input InventoryQuantityInput { inventoryItemId: ID! locationId: ID! quantity: Int! changeFromQuantity: Int }
input InventorySetQuantitiesInput { name: String! reason: String! referenceDocumentUri: String quantities: [InventoryQuantityInput!]! }
type InventoryChange { name: String! delta: Int! quantityAfterChange: Int item: InventoryItem location: Location }
type InventoryAdjustmentGroup { id: ID! reason: String! referenceDocumentUri: String createdAt: DateTime! changes: [InventoryChange!]! }
type InventoryAdjustQuantitiesUserError { field: [String!] message: String! code: InventoryAdjustQuantitiesUserErrorCode }
type InventorySetQuantitiesUserError { field: [String!] message: String! code: InventorySetQuantitiesUserErrorCode }
type InventoryAdjustQuantitiesPayload { inventoryAdjustmentGroup: InventoryAdjustmentGroup userErrors: [InventoryAdjustQuantitiesUserError!]! }
type InventorySetQuantitiesPayload { inventoryAdjustmentGroup: InventoryAdjustmentGroup userErrors: [InventorySetQuantitiesUserError!]! }

input MoneyInput { amount: Decimal! currencyCode: CurrencyCode! }
input MoneyBagInput { shopMoney: MoneyInput! }
input MailingAddressInput {
  firstName: String lastName: String company: String address1: String address2: String city: String
  provinceCode: String zip: String countryCode: CountryCode phone: String
}
input OrderCreateLineItemInput {
  variantId: ID sku: String quantity: Int! priceSet: MoneyBagInput title: String requiresShipping: Boolean taxable: Boolean
}
input CustomerInput { email: String firstName: String lastName: String phone: String }
input OrderCreateCustomerInput { toUpsert: CustomerInput }
input OrderCreateOrderInput {
  name: String email: String phone: String note: String tags: [String!] sourceName: String sourceIdentifier: String
  currency: CurrencyCode financialStatus: OrderCreateFinancialStatus lineItems: [OrderCreateLineItemInput!]
  billingAddress: MailingAddressInput shippingAddress: MailingAddressInput customer: OrderCreateCustomerInput
  processedAt: DateTime test: Boolean
}
input OrderCreateOptionsInput { inventoryBehaviour: OrderCreateInputsInventoryBehavior sendReceipt: Boolean sendFulfillmentReceipt: Boolean }
type OrderCreateUserError { field: [String!] message: String! code: OrderCreateUserErrorCode }
type OrderCreatePayload { order: Order userErrors: [OrderCreateUserError!]! }

input FulfillmentOrderLineItemInput { id: ID! quantity: Int! }
input FulfillmentOrderLineItemsInput { fulfillmentOrderId: ID! fulfillmentOrderLineItems: [FulfillmentOrderLineItemInput!] }
input FulfillmentTrackingInput { company: String number: String url: URL numbers: [String!] urls: [URL!] }
input FulfillmentInput { lineItemsByFulfillmentOrder: [FulfillmentOrderLineItemsInput!]! notifyCustomer: Boolean trackingInfo: FulfillmentTrackingInput }
type FulfillmentCreatePayload { fulfillment: Fulfillment userErrors: [UserError!]! }

type BulkOperationUserError { field: [String!] message: String! code: BulkOperationUserErrorCode }
type BulkOperationRunQueryPayload { bulkOperation: BulkOperation userErrors: [BulkOperationUserError!]! }
input WebhookSubscriptionInput { uri: String! format: WebhookSubscriptionFormat }
type WebhookSubscriptionCreatePayload { webhookSubscription: WebhookSubscription userErrors: [UserError!]! }

type Mutation {
  inventoryAdjustQuantities(input: InventoryAdjustQuantitiesInput!): InventoryAdjustQuantitiesPayload
  inventorySetQuantities(input: InventorySetQuantitiesInput!): InventorySetQuantitiesPayload
  orderCreate(order: OrderCreateOrderInput!, options: OrderCreateOptionsInput): OrderCreatePayload
  fulfillmentCreate(fulfillment: FulfillmentInput!, message: String): FulfillmentCreatePayload
  bulkOperationRunQuery(query: String!): BulkOperationRunQueryPayload
  webhookSubscriptionCreate(topic: WebhookSubscriptionTopic!, webhookSubscription: WebhookSubscriptionInput!): WebhookSubscriptionCreatePayload
}
'''


# -- helpers -------------------------------------------------------------------


def gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def gid_number(value: str) -> int:
    try:
        return int(str(value).rsplit("/", 1)[-1])
    except ValueError:
        return -1


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=1024)  # a search compares every order of the shop with the same few values
def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- state ---------------------------------------------------------------------


@dataclass
class Location:
    id: str
    name: str
    isActive: bool = True
    fulfillsOnlineOrders: bool = True


@dataclass
class Level:
    """One inventory item at one location; ``on_hand`` is derived, as on Shopify."""

    id: str
    item_id: str
    location_id: str
    available: int = 0
    committed: int = 0
    other: dict[str, int] = field(default_factory=dict)  # reserved, damaged, ...
    updated: float = 0.0

    def quantity(self, name: str) -> int:
        if name == "available":
            return self.available
        if name == "committed":
            return self.committed
        if name == "on_hand":
            unavailable = sum(self.other.get(n, 0) for n in ("reserved", "damaged", "quality_control", "safety_stock"))
            return self.available + self.committed + unavailable
        return self.other.get(name, 0)


@dataclass
class Variant:
    id: str
    product_id: str
    item_id: str
    title: str
    sku: str | None
    barcode: str | None
    price: Decimal
    compareAtPrice: Decimal | None
    options: list[tuple[str, str]]
    inventoryPolicy: str = "DENY"
    updated: float = 0.0


@dataclass
class Product:
    id: str
    title: str
    handle: str
    vendor: str
    productType: str
    tags: list[str]
    descriptionHtml: str
    status: str = "ACTIVE"
    created: float = 0.0
    updated: float = 0.0
    variant_ids: list[str] = field(default_factory=list)


@dataclass
class LineItem:
    id: str
    sku: str | None
    title: str
    quantity: int
    variant_id: str | None
    price: Decimal
    location_id: str | None = None  # where inventory was claimed


@dataclass
class FulfillmentOrder:
    id: str
    order_id: str
    location_id: str
    remaining: dict[str, int]  # fulfilment-order line item id -> remaining quantity
    totals: dict[str, int]
    line_of: dict[str, str]  # fulfilment-order line item id -> line item id
    status: str = "OPEN"
    updated: float = 0.0


@dataclass
class Fulfillment:
    id: str
    order_id: str
    name: str
    tracking: list[dict[str, str | None]]
    lines: list[tuple[str, str, int]]  # (fulfillment line item id, line item id, quantity)
    status: str = "SUCCESS"
    created: float = 0.0


@dataclass
class Order:
    id: str
    name: str
    currency: str
    lines: list[LineItem]
    tags: list[str]
    note: str | None
    email: str | None
    sourceName: str | None
    sourceIdentifier: str | None
    shipping: dict[str, Any] | None
    billing: dict[str, Any] | None
    created: float
    updated: float
    cancelled: float | None = None
    fulfillment_order_ids: list[str] = field(default_factory=list)
    fulfillment_ids: list[str] = field(default_factory=list)
    financial_status: str = "PAID"


@dataclass
class BulkOperation:
    id: str
    query: str
    created: float
    status: str = "CREATED"
    polls: int = 0
    completed: float | None = None
    lines: list[str] = field(default_factory=list)
    root_count: int = 0
    error_code: str | None = None


@dataclass
class Delivery:
    """One webhook delivery as Shopify sends it (retries resend the same payload and id)."""

    subscription_id: str
    uri: str
    topic: str
    body: bytes
    headers: dict[str, str]
    attempts: int = 0
    delivered: bool = False


Sender = Callable[[str, dict[str, str], bytes], int]


def http_sender(uri: str, headers: dict[str, str], body: bytes) -> int:
    """Deliver over the network (the demo); tests inject a sender that captures instead."""
    import httpx

    return httpx.post(uri, content=body, headers=headers, timeout=5.0).status_code


@dataclass
class Settings:
    """Sandbox behaviour; facts the reference marks inferred [I] are knobs here."""

    shop_name: str = "Channelhub Demo"
    shop_domain: str = "channelhub-demo.myshopify.com"
    currency: str = "AUD"
    access_token: str = "shpat_sandbox_token"
    client_secret: str = "sandbox-client-secret"
    scopes: tuple[str, ...] = ALL_SCOPES
    bucket_size: float = 2000.0  # Standard plan as observed in 2026 responses [C3]
    restore_rate: float = 100.0
    throttle_status: int = 200  # HTTP status of a THROTTLED answer: 200 or 429, both seen [C3]
    bulk_polls_to_complete: int = 2  # polls of a bulk operation before it reports COMPLETED
    products: int = 20
    sizes: tuple[str, ...] = ("S", "M", "L")
    locations: tuple[str, ...] = ("Sydney Warehouse", "Melbourne Store")
    timeout_after_order_create: int = 0  # next N orderCreate calls are applied, then time out
    idempotency_required: bool = True  # 2026-04+: @idempotent mandatory on inventory mutations
    id_base: int = 1000  # ids of each kind start after this; the demo moves it per run so ids never repeat


class ShopState:
    """The shop's data and the app's cost bucket; every mutation goes through here under a lock."""

    def __init__(self, settings: Settings, seed: int, clock: Callable[[], float], sender: Sender) -> None:
        self.settings = settings
        self.clock = clock
        self.sender = sender
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self._ids: dict[str, int] = {}
        self.locations: dict[str, Location] = {}
        self.products: dict[str, Product] = {}
        self.variants: dict[str, Variant] = {}
        self.levels: dict[tuple[str, str], Level] = {}
        self.variant_of_item: dict[str, Variant] = {}  # indexes: a 5,000-variant bulk export stays linear
        self.item_levels: dict[str, list[Level]] = {}
        self.orders: dict[str, Order] = {}
        self.fulfillment_orders: dict[str, FulfillmentOrder] = {}
        self.fulfillments: dict[str, Fulfillment] = {}
        self.bulk_operations: dict[str, BulkOperation] = {}
        self.subscriptions: dict[str, dict[str, str]] = {}
        self.deliveries: list[Delivery] = []
        self.idempotency: dict[str, tuple[str, Any]] = {}  # key -> (variables fingerprint, payload)
        self.throttled = 0  # THROTTLED answers given (tests assert there was no storm)
        self.available = settings.bucket_size
        self.bucket_at = clock()
        self.timeouts_pending = settings.timeout_after_order_create
        self.seed_catalogue()

    def next_id(self, kind: str) -> str:
        self._ids[kind] = self._ids.get(kind, self.settings.id_base) + 1
        return gid(kind, self._ids[kind])

    # -- seed ------------------------------------------------------------------

    def seed_catalogue(self) -> None:
        base = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
        for name in self.settings.locations:
            location = Location(self.next_id("Location"), name)
            self.locations[location.id] = location
        colours = ("Black", "White", "Navy", "Olive", "Sand")
        for index in range(self.settings.products):
            colour = colours[index % len(colours)]
            style = f"STYLE-{index + 1:04d}"
            self.add_product(
                title=f"Linen Shirt {index + 1} {colour}", handle=f"linen-shirt-{index + 1}-{colour.lower()}",
                vendor="Acme Apparel", product_type="Shirts", tags=["SS26", "linen"],
                variants=[(f"{style}-{colour[:3].upper()}-{size}", size, colour) for size in self.settings.sizes],
                updated=base + index * 60,
            )

    def add_product(self, *, title: str, handle: str, vendor: str, product_type: str, tags: list[str],
                    variants: list[tuple[str | None, str, str]], updated: float | None = None,
                    status: str = "ACTIVE") -> Product:
        when = self.clock() if updated is None else updated
        product = Product(self.next_id("Product"), title, handle, vendor, product_type, tags,
                          f"<p>{title}</p>", status=status, created=when, updated=when)
        self.products[product.id] = product
        for sku, size, colour in variants:
            price = Decimal(self.rng.randrange(4000, 16000, 500)) / 100
            on_sale = self.rng.random() < 0.25
            variant = Variant(
                self.next_id("ProductVariant"), product.id, self.next_id("InventoryItem"), f"{size} / {colour}",
                sku, f"93{self.rng.randrange(10**10, 10**11)}", price,
                (price + Decimal("20.00")) if on_sale else None, [("Size", size), ("Color", colour)], updated=when,
            )
            self.variants[variant.id] = variant
            self.variant_of_item[variant.item_id] = variant
            product.variant_ids.append(variant.id)
            for location in self.locations.values():
                level = Level(self.next_id("InventoryLevel"), variant.item_id, location.id,
                              available=self.rng.randrange(0, 25), updated=when)
                self.levels[(variant.item_id, location.id)] = level
                self.item_levels.setdefault(variant.item_id, []).append(level)
        return product

    def load_products(self, records: list[dict[str, Any]]) -> list[Product]:
        """Add products described in full (the demo's seed catalogue), with exact SKUs, barcodes,
        prices and stock per location, instead of the generated ones of ``add_product``.

        Each record: ``title``, ``handle``, ``vendor``, ``product_type``, ``tags``, ``description_html``,
        ``status`` (ACTIVE), ``variants``: ``sku``, ``barcode`` (None or "" for none), ``price``,
        ``compare_at_price``, ``size``, ``colour``, ``stock`` ({location name: available}).
        SKUs are taken verbatim (a duplicate or a stray space is kept, as Shopify keeps it).
        """
        added = []
        with self.lock:
            for record in records:
                when = self.clock()
                title = str(record["title"])
                product = Product(self.next_id("Product"), title, str(record["handle"]), str(record.get("vendor", "")),
                                  str(record.get("product_type", "")), [str(t) for t in record.get("tags") or []],
                                  str(record.get("description_html") or f"<p>{title}</p>"),
                                  status=str(record.get("status", "ACTIVE")), created=when, updated=when)
                self.products[product.id] = product
                for data in record.get("variants") or []:
                    size, colour = str(data.get("size", "")), str(data.get("colour", ""))
                    options = [(name, value) for name, value in (("Size", size), ("Color", colour)) if value]
                    compare_at = data.get("compare_at_price")
                    variant = Variant(
                        self.next_id("ProductVariant"), product.id, self.next_id("InventoryItem"),
                        " / ".join(value for _, value in options) or "Default Title", data.get("sku"),
                        data.get("barcode") or None, Decimal(str(data["price"])),
                        Decimal(str(compare_at)) if compare_at not in (None, "") else None, options, updated=when,
                    )
                    self.variants[variant.id] = variant
                    self.variant_of_item[variant.item_id] = variant
                    product.variant_ids.append(variant.id)
                    stock = data.get("stock") or {}
                    for location in self.locations.values():
                        level = Level(self.next_id("InventoryLevel"), variant.item_id, location.id,
                                      available=int(stock.get(location.name, 0)), updated=when)
                        self.levels[(variant.item_id, location.id)] = level
                        self.item_levels.setdefault(variant.item_id, []).append(level)
                added.append(product)
        return added

    # -- lookups ---------------------------------------------------------------

    def variant_by_item(self, item_id: str) -> Variant | None:
        return self.variant_of_item.get(item_id)

    def location_named(self, name_or_id: str) -> Location | None:
        return self.locations.get(name_or_id) or next(
            (loc for loc in self.locations.values() if loc.name == name_or_id), None)

    def levels_of(self, item_id: str) -> list[Level]:
        return self.item_levels.get(item_id, [])

    def order_named(self, name_or_id: str) -> Order | None:
        return self.orders.get(name_or_id) or next(
            (o for o in self.orders.values() if o.name == name_or_id), None)

    # -- cost bucket -----------------------------------------------------------

    def bucket_status(self) -> dict[str, float]:
        now = self.clock()
        self.available = min(self.settings.bucket_size,
                             self.available + max(0.0, now - self.bucket_at) * self.settings.restore_rate)
        self.bucket_at = now
        return {"maximumAvailable": self.settings.bucket_size, "currentlyAvailable": round(self.available, 1),
                "restoreRate": self.settings.restore_rate}

    # -- webhooks --------------------------------------------------------------

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        """Sign and deliver ``payload`` to every subscription of ``topic`` (at least once)."""
        body = json.dumps(payload).encode()
        signature = base64.b64encode(hmac.new(self.settings.client_secret.encode(), body, hashlib.sha256).digest())
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128)))
        for subscription in list(self.subscriptions.values()):
            if WEBHOOK_TOPICS[subscription["topic"]] != topic:
                continue
            headers = {
                "Content-Type": "application/json", "X-Shopify-Topic": topic,
                "X-Shopify-Hmac-Sha256": signature.decode(), "X-Shopify-Shop-Domain": self.settings.shop_domain,
                "X-Shopify-API-Version": API_VERSION, "X-Shopify-Event-Id": event_id,
                "X-Shopify-Webhook-Id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                "X-Shopify-Triggered-At": iso(self.clock()) or "",
            }
            delivery = Delivery(subscription["id"], subscription["uri"], topic, body, headers)
            self.deliveries.append(delivery)
            self.deliver(delivery)

    def deliver(self, delivery: Delivery) -> None:
        delivery.attempts += 1
        try:
            status = self.sender(delivery.uri, dict(delivery.headers), delivery.body)
        except Exception:  # noqa: BLE001 - any failure to deliver counts as a failed attempt
            status = 0
        delivery.delivered = 200 <= status < 300
        # After 8 consecutive failures Shopify deletes an API-created subscription [C3].
        if not delivery.delivered and delivery.attempts >= 8:
            self.subscriptions.pop(delivery.subscription_id, None)

    def retry_deliveries(self) -> int:
        pending = [d for d in self.deliveries if not d.delivered and d.subscription_id in self.subscriptions]
        for delivery in pending:
            self.deliver(delivery)
        return len(pending)

    # -- inventory -------------------------------------------------------------

    def set_available(self, item_id: str, location_id: str, quantity: int) -> Level:
        level = self.levels[(item_id, location_id)]
        level.available = quantity
        self.touch_level(level)
        return level

    def touch_level(self, level: Level) -> None:
        level.updated = self.clock()
        self.emit("inventory_levels/update", {
            "inventory_item_id": gid_number(level.item_id), "location_id": gid_number(level.location_id),
            "available": level.available, "updated_at": iso(level.updated),
            "admin_graphql_api_id": level.id,
        })

    # -- orders ----------------------------------------------------------------

    def order_payload(self, order: Order) -> dict[str, Any]:
        """The REST representation a webhook carries (the fields a connector reads)."""
        return {
            "id": gid_number(order.id), "admin_graphql_api_id": order.id, "name": order.name,
            "tags": ", ".join(order.tags), "source_name": order.sourceName,
            "source_identifier": order.sourceIdentifier, "updated_at": iso(order.updated),
            "cancelled_at": iso(order.cancelled), "fulfillment_status": _fulfillment_status(self, order).lower(),
            "line_items": [{"id": gid_number(li.id), "sku": li.sku, "quantity": li.quantity} for li in order.lines],
        }

    def fulfil(self, order: Order, company: str | None, number: str | None, url: str | None,
               quantities: dict[str, int] | None = None) -> Fulfillment:
        """Fulfil ``quantities`` (line item id -> units; all remaining when None) with tracking."""
        lines: list[tuple[str, str, int]] = []
        location_id = None
        for fo_id in order.fulfillment_order_ids:
            fo = self.fulfillment_orders[fo_id]
            for fo_line, remaining in fo.remaining.items():
                line_id = fo.line_of[fo_line]
                wanted = remaining if quantities is None else min(remaining, quantities.get(line_id, 0))
                if wanted <= 0:
                    continue
                fo.remaining[fo_line] -= wanted
                lines.append((self.next_id("FulfillmentLineItem"), line_id, wanted))
                location_id = fo.location_id
            fo.status = "CLOSED" if not any(fo.remaining.values()) else "IN_PROGRESS"
            fo.updated = self.clock()
        if not lines:
            raise ValueError(f"order {order.name} has nothing left to fulfil")
        self._release_committed(order, {line_id: qty for _, line_id, qty in lines}, location_id, shipped=True)
        fulfillment = Fulfillment(self.next_id("Fulfillment"), order.id,
                                  f"#{order.name.lstrip('#')}-F{len(order.fulfillment_ids) + 1}",
                                  [{"company": company, "number": number, "url": url}], lines,
                                  created=self.clock())
        self.fulfillments[fulfillment.id] = fulfillment
        order.fulfillment_ids.append(fulfillment.id)
        order.updated = self.clock()
        self._emit_fulfilment(order, fulfillment)
        return fulfillment

    def _emit_fulfilment(self, order: Order, fulfillment: Fulfillment) -> None:
        tracking = fulfillment.tracking[0]
        skus = {li.id: li.sku for li in order.lines}
        self.emit("fulfillments/create", {
            "id": gid_number(fulfillment.id), "admin_graphql_api_id": fulfillment.id,
            "order_id": gid_number(order.id), "name": fulfillment.name, "status": "success",
            "tracking_company": tracking["company"], "tracking_number": tracking["number"],
            "tracking_numbers": [tracking["number"]] if tracking["number"] else [],
            "tracking_url": tracking["url"], "created_at": iso(fulfillment.created),
            "updated_at": iso(fulfillment.created),
            "line_items": [{"id": gid_number(li), "sku": skus.get(li), "quantity": q} for _, li, q in fulfillment.lines],
        })
        if _fulfillment_status(self, order) == "FULFILLED":
            self.emit("orders/fulfilled", self.order_payload(order))

    def cancel(self, order: Order) -> None:
        if order.cancelled is not None:
            return
        order.cancelled = order.updated = self.clock()
        for fo_id in order.fulfillment_order_ids:
            fo = self.fulfillment_orders[fo_id]
            unshipped = {fo.line_of[k]: v for k, v in fo.remaining.items() if v}
            self._release_committed(order, unshipped, fo.location_id, shipped=False)
            fo.status, fo.remaining = "CANCELLED", {k: 0 for k in fo.remaining}
        self.emit("orders/cancelled", self.order_payload(order))

    def _release_committed(self, order: Order, quantities: dict[str, int], location_id: str | None,
                           shipped: bool) -> None:
        """Shipping takes committed units off hand; cancelling puts them back into available."""
        for line in order.lines:
            units = quantities.get(line.id, 0)
            variant = self.variants.get(line.variant_id or "")
            if not units or variant is None or line.location_id is None:
                continue
            level = self.levels[(variant.item_id, line.location_id)]
            claimed = min(units, level.committed)
            level.committed -= claimed
            if not shipped:
                level.available += claimed
            level.updated = self.clock()


# The orders search's fulfillment_status values each display status answers to (the reference's
# shipped / partial / unshipped / unfulfilled / any; which of them IN_PROGRESS, ON_HOLD... answer to is
# not documented, and the sandbox has no such orders).
FULFILLMENT_SEARCH = {"FULFILLED": ("shipped", "any"), "PARTIALLY_FULFILLED": ("partial", "unfulfilled", "any"),
                      "UNFULFILLED": ("unshipped", "unfulfilled", "any")}


def _fulfillment_status(state: ShopState, order: Order) -> str:
    remaining = sum(sum(state.fulfillment_orders[f].remaining.values()) for f in order.fulfillment_order_ids)
    if not order.fulfillment_ids:
        return "UNFULFILLED"
    return "FULFILLED" if remaining == 0 else "PARTIALLY_FULFILLED"


# -- search syntax -------------------------------------------------------------

_TERM = re.compile(
    r"""(?P<field>[a-z_]+):(?P<op>>=|<=|>|<)?(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s()]+)"""
    r"""|(?P<or>\bOR\b)|(?P<and>\bAND\b)""")
_ESCAPE = re.compile(r"\\(.)")


def parse_search(query: str | None) -> list[list[tuple[str, str, str]]]:
    """``a:1 b:>2 OR c:3`` -> [[(a,'',1),(b,'>',2)],[(c,'',3)]]: OR of AND-groups, as Shopify reads it."""
    groups: list[list[tuple[str, str, str]]] = [[]]
    for match in _TERM.finditer(query or ""):
        if match.group("or"):
            groups.append([])
        elif match.group("field"):
            value = match.group("value")
            if value[:1] in "'\"" and value[-1:] == value[:1]:
                value = _ESCAPE.sub(r"\1", value[1:-1])
            groups[-1].append((match.group("field"), match.group("op") or "", value))
    return [group for group in groups if group] or [[]]


def matches(groups: list[list[tuple[str, str, str]]], fields: dict[str, Any]) -> bool:
    """Unknown filter names are ignored, as Shopify ignores them. A field given as a function of no
    arguments is worked out only when a term names it."""
    normalised: dict[str, Any] = {}  # a field's comparable form, made once however many terms name it
    return any(all(_term_matches(fields, normalised, *term) for term in group) for group in groups)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "": operator.eq, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _term_matches(fields: dict[str, Any], normalised: dict[str, Any], name: str, op: str, value: str) -> bool:
    if name not in fields:
        return True
    actual = normalised.get(name)
    if actual is None:
        actual = normalised[name] = _comparable(fields[name])
    if isinstance(actual, float):  # timestamps
        return _COMPARE[op](actual, parse_time(value))
    if isinstance(actual, frozenset):
        return value.lower() in actual
    return actual == value.lower()


def _comparable(actual: Any) -> Any:
    """A timestamp as it is, a list as the set of its lower-cased items, anything else lower-cased."""
    if callable(actual):
        actual = actual()
    if isinstance(actual, float):
        return actual
    if isinstance(actual, (list, tuple, set)):
        return frozenset(str(item).lower() for item in actual)
    return str(actual).lower()


# -- connections and cost ------------------------------------------------------


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def connection(items: list[Any], args: dict[str, Any], info: Any, key: Callable[[Any], Any]) -> dict[str, Any]:
    """A Relay connection over ``items`` sorted by ``key``; cursors encode the sort key (stable paging)."""
    ordered = sorted(items, key=key, reverse=bool(args.get("reverse")))
    if args.get("after"):
        try:
            after = json.loads(base64.urlsafe_b64decode(args["after"].encode()))
        except ValueError:
            raise GraphQLError("Invalid cursor for current pagination sort.") from None
        after = tuple(after) if isinstance(after, list) else after
        if args.get("reverse"):
            ordered = [item for item in ordered if _tuple(key(item)) < _tuple(after)]
        else:
            ordered = [item for item in ordered if _tuple(key(item)) > _tuple(after)]
    limit = len(ordered) if info.context.get("bulk") else args.get("first")
    page = ordered[:limit]
    edges = [{"cursor": encode_cursor(key(item)), "node": item} for item in page]
    return {
        "edges": edges, "nodes": page,
        "pageInfo": {"hasNextPage": len(ordered) > len(page), "hasPreviousPage": bool(args.get("after")),
                     "startCursor": edges[0]["cursor"] if edges else None,
                     "endCursor": edges[-1]["cursor"] if edges else None},
    }


def _tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _unwrap(type_: Any) -> Any:
    return type_.of_type if isinstance(type_, GraphQLNonNull) else type_


def _argument_value(node: FieldNode, name: str, variables: dict[str, Any]) -> Any:
    from graphql import value_from_ast_untyped

    for argument in node.arguments or ():
        if argument.name.value == name:
            return value_from_ast_untyped(argument.value, variables)
    return None


def selection_cost(parent: GraphQLObjectType, selections: Any, variables: dict[str, Any],
                   data: Any = None, actual: bool = False, problems: list[str] | None = None) -> int:
    """Shopify's cost rules: scalars 0, objects 1, connections 2 + size x node, lists size x item.

    With ``actual`` the sizes are what ``data`` returned, otherwise what the query asked for.
    """
    total = 0
    for selection in selections or ():
        if isinstance(selection, InlineFragmentNode):
            total += selection_cost(parent, selection.selection_set.selections, variables, data, actual, problems)
            continue
        if not isinstance(selection, FieldNode) or selection.name.value.startswith("__"):
            continue
        definition = parent.fields.get(selection.name.value)
        if definition is None:
            continue
        named = get_named_type(definition.type)
        if not isinstance(named, GraphQLObjectType):
            continue
        child = data.get((selection.alias or selection.name).value) if isinstance(data, dict) else None
        total += _field_cost(selection, definition, named, variables, child, actual, problems)
    return total


def _field_cost(node: FieldNode, definition: Any, named: GraphQLObjectType, variables: dict[str, Any],
                data: Any, actual: bool, problems: list[str] | None) -> int:
    subs = node.selection_set.selections if node.selection_set else ()
    if named.name.endswith("Connection"):
        size = _argument_value(node, "first", variables)
        if size is None:
            size = _argument_value(node, "last", variables)
        if problems is not None and not actual:
            if size is None:
                problems.append(f"you must provide one of first or last on {node.name.value}")
            elif size > MAX_PAGE_SIZE:
                problems.append(f"The page size requested ({size}) on {node.name.value} exceeds the maximum of {MAX_PAGE_SIZE}.")
        node_type = get_named_type(named.fields["nodes"].type)
        cost = 2
        for part in subs:
            if not isinstance(part, FieldNode) or part.name.value not in ("nodes", "edges"):
                continue
            node_selections = part.selection_set.selections
            if part.name.value == "edges":
                node_selections = next((s.selection_set.selections for s in node_selections
                                        if isinstance(s, FieldNode) and s.name.value == "node"), ())
            if actual:
                items = (data or {}).get((part.alias or part.name).value) or []
                if part.name.value == "edges":
                    items = [edge.get("node") for edge in items]
                cost += sum(1 + selection_cost(node_type, node_selections, variables, item, True) for item in items)
            else:
                cost += (size or 1) * (1 + selection_cost(node_type, node_selections, variables, None, False, problems))
            break
        return cost
    if isinstance(_unwrap(definition.type), GraphQLList):
        if actual:
            return sum(1 + selection_cost(named, subs, variables, item, True) for item in data or [])
        size = _argument_value(node, "first", variables) or 1
        return size * (1 + selection_cost(named, subs, variables, None, False, problems))
    if actual and data is None:
        return 0
    return 1 + selection_cost(named, subs, variables, data, actual, problems)


# -- resolvers -----------------------------------------------------------------


def _number_key(item: Any) -> int:
    return gid_number(item["id"] if isinstance(item, dict) else item.id)


class Resolvers:
    """Binds the schema's fields to the shop state; one instance per sandbox."""

    def __init__(self, state: ShopState) -> None:
        self.state = state

    # Query -------------------------------------------------------------------

    def shop(self, _root: Any, _info: Any) -> dict[str, str]:
        s = self.state.settings
        return {"id": gid("Shop", 1), "name": s.shop_name, "currencyCode": s.currency, "myshopifyDomain": s.shop_domain}

    def locations(self, _root: Any, info: Any, **args: Any) -> dict[str, Any]:
        items = [loc for loc in self.state.locations.values() if loc.isActive or args.get("includeInactive")]
        return connection(items, args, info, _number_key)

    def products(self, _root: Any, info: Any, **args: Any) -> dict[str, Any]:
        groups = parse_search(args.get("query"))
        items = [p for p in self.state.products.values() if matches(groups, {
            "updated_at": p.updated, "created_at": p.created, "status": p.status, "tag": p.tags,
            "title": p.title, "handle": p.handle, "vendor": p.vendor, "product_type": p.productType,
            "id": str(gid_number(p.id))})]
        key = (lambda p: (p.updated, gid_number(p.id))) if args.get("sortKey") == "UPDATED_AT" else _number_key
        return connection(items, args, info, key)

    def product(self, _root: Any, _info: Any, id: str) -> Product | None:
        return self.state.products.get(id)

    def product_variants(self, _root: Any, info: Any, **args: Any) -> dict[str, Any]:
        groups = parse_search(args.get("query"))
        state = self.state
        items = [v for v in state.variants.values() if matches(groups, {
            "sku": v.sku or "", "barcode": v.barcode or "", "updated_at": v.updated,
            "product_id": str(gid_number(v.product_id)), "product_status": state.products[v.product_id].status})]
        return connection(items, args, info, _number_key)

    def inventory_item(self, _root: Any, _info: Any, id: str) -> Variant | None:
        return self.state.variant_by_item(id)

    def orders(self, _root: Any, info: Any, **args: Any) -> dict[str, Any]:
        groups = parse_search(args.get("query"))
        items = [o for o in self.state.orders.values() if matches(groups, {
            "name": [o.name, o.name.lstrip("#")], "tag": o.tags, "updated_at": o.updated, "created_at": o.created,
            "status": ["any", "cancelled" if o.cancelled else "open"], "source_identifier": o.sourceIdentifier or "",
            "fulfillment_status": lambda: FULFILLMENT_SEARCH[_fulfillment_status(self.state, o)],  # noqa: B023 - called at once
            "id": str(gid_number(o.id))})]
        key = {"UPDATED_AT": lambda o: (o.updated, gid_number(o.id)),
               "CREATED_AT": lambda o: (o.created, gid_number(o.id))}.get(args.get("sortKey") or "", _number_key)
        return connection(items, args, info, key)

    def order(self, _root: Any, _info: Any, id: str) -> Order | None:
        return self.state.orders.get(id)

    def fulfillment(self, _root: Any, _info: Any, id: str) -> Fulfillment | None:
        return self.state.fulfillments.get(id)

    def bulk_operation(self, _root: Any, info: Any, id: str) -> dict[str, Any] | None:
        operation = self.state.bulk_operations.get(id)
        return self._poll(operation, info) if operation else None

    def current_bulk_operation(self, _root: Any, info: Any, type: str = "QUERY") -> dict[str, Any] | None:
        operation = next(reversed(self.state.bulk_operations.values()), None)
        return self._poll(operation, info) if operation else None

    def webhook_subscriptions(self, _root: Any, info: Any, **args: Any) -> dict[str, Any]:
        return connection(list(self.state.subscriptions.values()), args, info, _number_key)

    # Types ---------------------------------------------------------------------

    def product_variants_of(self, product: Product, info: Any, **args: Any) -> dict[str, Any]:
        items = [self.state.variants[v] for v in product.variant_ids]
        return connection(items, args, info, _number_key)

    def item_levels(self, variant: Variant, info: Any, **args: Any) -> dict[str, Any]:
        return connection(self.state.levels_of(variant.item_id), args, info, _number_key)

    def location_levels(self, location: Location, info: Any, **args: Any) -> dict[str, Any]:
        items = [lvl for lvl in self.state.levels.values() if lvl.location_id == location.id]
        return connection(items, args, info, _number_key)

    @staticmethod
    def quantities(level: Level, _info: Any, names: list[str]) -> list[dict[str, Any]]:
        unknown = [name for name in names if name not in QUANTITY_NAMES]
        if unknown:
            raise GraphQLError(f"Invalid quantity names: {', '.join(unknown)}",
                               extensions={"code": "BAD_REQUEST"})
        return [{"name": name, "quantity": level.quantity(name), "updatedAt": level.updated} for name in names]

    def order_lines(self, order: Order, info: Any, **args: Any) -> dict[str, Any]:
        return connection(order.lines, args, info, _number_key)

    def order_fulfillments(self, order: Order, _info: Any, first: int | None = None) -> list[Fulfillment]:
        found = [self.state.fulfillments[f] for f in order.fulfillment_ids]
        return found[:first] if first is not None else found

    def order_fulfillment_orders(self, order: Order, info: Any, **args: Any) -> dict[str, Any]:
        items = [self.state.fulfillment_orders[f] for f in order.fulfillment_order_ids]
        return connection(items, args, info, _number_key)

    def fulfillment_lines(self, fulfillment: Fulfillment, info: Any, **args: Any) -> dict[str, Any]:
        order = self.state.orders[fulfillment.order_id]
        lines = {li.id: li for li in order.lines}
        items = [{"id": fid, "quantity": qty, "lineItem": lines[lid]} for fid, lid, qty in fulfillment.lines]
        return connection(items, args, info, _number_key)

    def fulfillment_order_lines(self, fo: FulfillmentOrder, info: Any, **args: Any) -> dict[str, Any]:
        order = self.state.orders[fo.order_id]
        lines = {li.id: li for li in order.lines}
        items = [{"id": fol, "totalQuantity": fo.totals[fol], "remainingQuantity": remaining,
                  "lineItem": lines[fo.line_of[fol]]} for fol, remaining in fo.remaining.items()]
        return connection(items, args, info, _number_key)

    def _poll(self, operation: BulkOperation, info: Any) -> dict[str, Any]:
        """Each poll moves a bulk operation on: CREATED -> RUNNING -> ... -> COMPLETED."""
        if operation.status in ("CREATED", "RUNNING"):
            operation.polls += 1
            operation.status = "RUNNING"
            if operation.polls >= self.state.settings.bulk_polls_to_complete:
                run_bulk(self.state, info.schema, operation)
        return bulk_payload(operation, info.context["base_url"], self.state.settings.client_secret)


def bulk_payload(operation: BulkOperation, base_url: str, secret: str) -> dict[str, Any]:
    done = operation.status == "COMPLETED"
    url = None
    if done and operation.lines:
        number = gid_number(operation.id)
        url = f"{base_url}_bulk/{number}.jsonl?sig={_bulk_signature(secret, number)}"
    return {
        "id": operation.id, "status": operation.status, "errorCode": operation.error_code,
        "objectCount": str(len(operation.lines)), "rootObjectCount": str(operation.root_count),
        "fileSize": str(sum(len(line) + 1 for line in operation.lines)) if done else None,
        "url": url, "partialDataUrl": None, "createdAt": operation.created,
        "completedAt": operation.completed, "query": operation.query, "type": "QUERY",
    }


def _bulk_signature(secret: str, number: int) -> str:
    return hmac.new(secret.encode(), f"bulk:{number}".encode(), hashlib.sha256).hexdigest()[:32]


# -- bulk operations -----------------------------------------------------------


def bulk_query_problems(schema: GraphQLSchema, query: str) -> list[str]:
    """Shopify's bulk rules: a valid query with 1-5 connections nested at most two deep."""
    try:
        document = parse(query)
    except GraphQLError as error:
        return [error.message]
    problems = [error.message for error in validate(schema, document)]
    if problems:
        return problems
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    if operation.operation != OperationType.QUERY:
        return ["Bulk queries must be queries, not mutations."]
    depths: list[int] = []
    _connection_depths(schema.query_type, operation.selection_set.selections, 0, depths)
    if not depths:
        return ["Bulk queries must contain at least one connection."]
    if len(depths) > 5:
        return ["Bulk queries cannot contain more than 5 connections."]
    if max(depths) > 2:
        return ["Bulk queries cannot contain connections with a nesting depth greater than 2."]
    return []


def _connection_depths(parent: GraphQLObjectType, selections: Any, depth: int, out: list[int]) -> None:
    for selection in selections or ():
        if not isinstance(selection, FieldNode) or selection.name.value not in parent.fields:
            continue
        named = get_named_type(parent.fields[selection.name.value].type)
        if not isinstance(named, GraphQLObjectType) or not selection.selection_set:
            continue
        here = depth
        if named.name.endswith("Connection"):
            here = depth + 1
            out.append(here)
        _connection_depths(named, selection.selection_set.selections, here, out)


def run_bulk(state: ShopState, schema: GraphQLSchema, operation: BulkOperation) -> None:
    """Execute the bulk query over the whole shop and write its JSONL (children after parents)."""
    result = execute(schema, parse(operation.query), context_value={"bulk": True, "base_url": ""})
    operation.completed = state.clock()
    if result.errors:
        operation.status, operation.error_code = "FAILED", "INTERNAL_SERVER_ERROR"
        return
    lines: list[str] = []
    for value in (result.data or {}).values():
        if _is_connection(value):
            operation.root_count += len(_nodes(value))
            _emit_connection(value, None, lines)
    operation.lines, operation.status = lines, "COMPLETED"
    state.emit("bulk_operations/finish", {"admin_graphql_api_id": operation.id, "status": "completed",
                                          "type": "query", "completed_at": iso(operation.completed)})


def _is_connection(value: Any) -> bool:
    return isinstance(value, dict) and (isinstance(value.get("edges"), list) or isinstance(value.get("nodes"), list))


def _nodes(conn: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(conn.get("nodes"), list):
        return conn["nodes"]
    return [edge["node"] for edge in conn.get("edges", [])]


def _emit_connection(conn: dict[str, Any], parent_id: str | None, lines: list[str]) -> None:
    for node in _nodes(conn):
        children: list[dict[str, Any]] = []
        line = _strip_connections(node, children)
        if parent_id is not None:
            line["__parentId"] = parent_id
        lines.append(json.dumps(line, separators=(",", ":")))
        for child in children:
            _emit_connection(child, node.get("id"), lines)


def _strip_connections(value: dict[str, Any], children: list[dict[str, Any]]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, item in value.items():
        if _is_connection(item):
            children.append(item)
        elif isinstance(item, dict):
            clean[key] = _strip_connections(item, children)
        else:
            clean[key] = item
    return clean


# -- mutations -----------------------------------------------------------------

ADJUST_NAMES = ("available", "damaged", "quality_control", "reserved", "safety_stock")
SET_NAMES = ("available", "on_hand")
REASONS = ("correction", "cycle_count_available", "damaged", "movement_created", "movement_updated",
           "movement_received", "movement_canceled", "other", "promotion", "quality_control", "received",
           "reservation_created", "reservation_deleted", "reservation_updated", "restock", "safety_stock",
           "shrinkage")


def user_error(path: list[Any], message: str, code: str | None = None) -> dict[str, Any]:
    return {"field": [str(part) for part in path], "message": message, "code": code}


class Mutations:
    """The mutations the client uses; each validates everything before changing anything."""

    def __init__(self, state: ShopState) -> None:
        self.state = state

    # inventory -----------------------------------------------------------------

    def inventory_adjust(self, _root: Any, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self._idempotent(info, input, lambda: self._adjust(input))

    def inventory_set(self, _root: Any, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self._idempotent(info, input, lambda: self._set(input))

    def _idempotent(self, info: Any, arguments: dict[str, Any], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Same key + same input: the first result again; same key + other input: a userError."""
        key = _idempotency_key(info)
        if key is None:
            if self.state.settings.idempotency_required:
                raise GraphQLError("The @idempotent directive is required for this mutation.",
                                   extensions={"code": "BAD_REQUEST"})
            return run()
        fingerprint = json.dumps(arguments, sort_keys=True, default=str)
        seen = self.state.idempotency.get(key)
        if seen is not None:
            if seen[0] != fingerprint:
                return {"inventoryAdjustmentGroup": None, "userErrors": [user_error(
                    ["input"], "The same idempotency key was used with different parameters.",
                    "IDEMPOTENCY_KEY_PARAMETER_MISMATCH")]}
            return seen[1]
        payload = run()
        self.state.idempotency[key] = (fingerprint, payload)
        return payload

    def _adjust(self, data: dict[str, Any]) -> dict[str, Any]:
        errors = _name_and_reason_errors(data, ADJUST_NAMES, "INVALID_QUANTITY_NAME")
        levels = []
        for index, change in enumerate(data["changes"]):
            path = ["input", "changes", index]
            level, problem = self._level(change, path)
            if problem:
                errors.append(problem)
                continue
            if "changeFromQuantity" not in change:
                raise GraphQLError("changeFromQuantity is required on every change: pass the expected quantity or null.",
                                   extensions={"code": "BAD_REQUEST"})
            if data["name"] != "available" and not change.get("ledgerDocumentUri"):
                errors.append(user_error([*path, "ledgerDocumentUri"], "A ledger document URI is required.",
                                         "INVALID_REFERENCE_DOCUMENT"))
            elif change["changeFromQuantity"] is not None and change["changeFromQuantity"] != level.quantity(data["name"]):
                errors.append(user_error([*path, "changeFromQuantity"],
                                         "The changeFromQuantity value does not match persisted value.",
                                         "CHANGE_FROM_QUANTITY_STALE"))
            levels.append((level, change["delta"]))
        if errors:
            return {"inventoryAdjustmentGroup": None, "userErrors": errors}
        changes = [self._apply(level, data["name"], delta) for level, delta in levels]
        return self._group(data, changes)

    def _set(self, data: dict[str, Any]) -> dict[str, Any]:
        errors = _name_and_reason_errors(data, SET_NAMES, "INVALID_NAME")
        seen: set[tuple[str, str]] = set()
        levels = []
        for index, row in enumerate(data["quantities"]):
            path = ["input", "quantities", index]
            level, problem = self._level(row, path)
            if problem:
                errors.append(problem)
                continue
            if "changeFromQuantity" not in row:
                raise GraphQLError("changeFromQuantity is required on every quantity: pass the expected quantity or null.",
                                   extensions={"code": "BAD_REQUEST"})
            pair = (row["inventoryItemId"], row["locationId"])
            if pair in seen:
                errors.append(user_error(path, "The same inventory item and location appear twice.",
                                         "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR"))
            elif row["quantity"] < 0:
                errors.append(user_error([*path, "quantity"], "The quantity can't be negative.", "INVALID_QUANTITY_NEGATIVE"))
            elif row["changeFromQuantity"] is not None and row["changeFromQuantity"] != level.quantity(data["name"]):
                errors.append(user_error([*path, "changeFromQuantity"],
                                         "The changeFromQuantity value does not match persisted value.",
                                         "CHANGE_FROM_QUANTITY_STALE"))
            seen.add(pair)
            levels.append((level, row["quantity"] - level.quantity(data["name"])))
        if errors:
            return {"inventoryAdjustmentGroup": None, "userErrors": errors}
        # on_hand moves with available: the units added or removed are available ones
        changes = [self._apply(level, "available", delta) for level, delta in levels]
        return self._group(data, changes)

    def _level(self, row: dict[str, Any], path: list[Any]) -> tuple[Level | None, dict[str, Any] | None]:
        if self.state.variant_by_item(row["inventoryItemId"]) is None:
            return None, user_error([*path, "inventoryItemId"], "The specified inventory item could not be found.",
                                    "INVALID_INVENTORY_ITEM")
        if row["locationId"] not in self.state.locations:
            return None, user_error([*path, "locationId"], "The specified location could not be found.", "INVALID_LOCATION")
        level = self.state.levels.get((row["inventoryItemId"], row["locationId"]))
        if level is None:
            return None, user_error([*path, "locationId"], "The specified inventory item is not stocked at the location.",
                                    "ITEM_NOT_STOCKED_AT_LOCATION")
        return level, None

    def _apply(self, level: Level, name: str, delta: int) -> dict[str, Any]:
        if name == "available":
            level.available += delta
        else:
            level.other[name] = level.other.get(name, 0) + delta
        self.state.touch_level(level)
        return {"name": name, "delta": delta, "quantityAfterChange": level.quantity(name),
                "item": self.state.variant_by_item(level.item_id), "location": self.state.locations[level.location_id]}

    def _group(self, data: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
        group = {"id": self.state.next_id("InventoryAdjustmentGroup"), "reason": data["reason"],
                 "referenceDocumentUri": data.get("referenceDocumentUri"), "createdAt": self.state.clock(),
                 "changes": changes}
        return {"inventoryAdjustmentGroup": group, "userErrors": []}

    # orders --------------------------------------------------------------------

    def order_create(self, _root: Any, info: Any, order: dict[str, Any],
                     options: dict[str, Any] | None = None) -> dict[str, Any]:
        behaviour = (options or {}).get("inventoryBehaviour") or "BYPASS"
        lines, errors = self._order_lines(order.get("lineItems") or [], behaviour)
        if errors:
            return {"order": None, "userErrors": errors}
        state = self.state
        now = state.clock()
        created = Order(
            state.next_id("Order"), order.get("name") or f"#{1000 + len(state.orders) + 1}",
            order.get("currency") or state.settings.currency, lines, list(order.get("tags") or []),
            order.get("note"), order.get("email"), order.get("sourceName"), order.get("sourceIdentifier"),
            _address(order.get("shippingAddress")), _address(order.get("billingAddress")), now, now,
            financial_status=order.get("financialStatus") or "PENDING",
        )
        state.orders[created.id] = created
        self._claim_and_route(created, behaviour)
        if state.timeouts_pending > 0:
            # Applied, but the answer never reaches the client: the case idempotent creates exist for.
            state.timeouts_pending -= 1
            info.context["time_out"] = True
        return {"order": created, "userErrors": []}

    def _order_lines(self, inputs: list[dict[str, Any]], behaviour: str) -> tuple[list[LineItem], list[dict[str, Any]]]:
        if not inputs:
            return [], [user_error(["order", "lineItems"], "Line items must have at least one item.", "INVALID")]
        lines, errors = [], []
        for index, item in enumerate(inputs):
            path = ["order", "lineItems", index]
            variant = self.state.variants.get(item.get("variantId") or "")
            if item.get("variantId") and variant is None:
                errors.append(user_error([*path, "variantId"], "Variant does not exist.", "INVALID"))
                continue
            if item["quantity"] < 1:
                errors.append(user_error([*path, "quantity"], "Quantity must be greater than 0.", "INVALID"))
                continue
            price_set = item.get("priceSet") or {}
            price = Decimal(str(price_set["shopMoney"]["amount"])) if price_set else (variant.price if variant else Decimal(0))
            title = item.get("title") or (self.state.products[variant.product_id].title if variant else "")
            if not title:
                errors.append(user_error([*path, "title"], "Title can't be blank for a custom line item.", "INVALID"))
                continue
            lines.append(LineItem(self.state.next_id("LineItem"), variant.sku if variant else item.get("sku"),
                                  title, item["quantity"], variant.id if variant else None, price))
            if variant and behaviour == "DECREMENT_OBEYING_POLICY" and variant.inventoryPolicy == "DENY":
                stock = sum(lvl.available for lvl in self.state.levels_of(variant.item_id))
                if stock < item["quantity"]:
                    errors.append(user_error([*path, "quantity"],
                                             f"Unable to reserve inventory for {variant.sku}: {stock} available.",
                                             "INVENTORY_CLAIM_FAILED"))
        return lines, errors

    def _claim_and_route(self, order: Order, behaviour: str) -> None:
        """Assign each line to a location (the first that can ship it) and open fulfilment orders."""
        state = self.state
        active = [loc for loc in state.locations.values() if loc.isActive]
        by_location: dict[str, list[LineItem]] = {}
        for line in order.lines:
            variant = state.variants.get(line.variant_id or "")
            location = active[0]
            if variant is not None:
                location = next((loc for loc in active
                                 if state.levels[(variant.item_id, loc.id)].available >= line.quantity), location)
                if behaviour != "BYPASS":
                    level = state.levels[(variant.item_id, location.id)]
                    level.available -= line.quantity
                    level.committed += line.quantity
                    line.location_id = location.id
                    state.touch_level(level)
            by_location.setdefault(location.id, []).append(line)
        for location_id, lines in by_location.items():
            fo_lines = {state.next_id("FulfillmentOrderLineItem"): line for line in lines}
            fo = FulfillmentOrder(state.next_id("FulfillmentOrder"), order.id, location_id,
                                  remaining={k: li.quantity for k, li in fo_lines.items()},
                                  totals={k: li.quantity for k, li in fo_lines.items()},
                                  line_of={k: li.id for k, li in fo_lines.items()}, updated=order.created)
            state.fulfillment_orders[fo.id] = fo
            order.fulfillment_order_ids.append(fo.id)

    def fulfillment_create(self, _root: Any, _info: Any, fulfillment: dict[str, Any],
                           message: str | None = None) -> dict[str, Any]:
        state = self.state
        quantities: dict[str, int] = {}
        orders = set()
        errors = []
        for index, group in enumerate(fulfillment["lineItemsByFulfillmentOrder"]):
            path = ["fulfillment", "lineItemsByFulfillmentOrder", index]
            fo = state.fulfillment_orders.get(group["fulfillmentOrderId"])
            if fo is None or fo.status not in ("OPEN", "IN_PROGRESS"):
                errors.append(user_error([*path, "fulfillmentOrderId"], "Fulfillment order does not exist or is not open."))
                continue
            orders.add(fo.order_id)
            wanted = group.get("fulfillmentOrderLineItems") or [{"id": k, "quantity": v} for k, v in fo.remaining.items()]
            for line in wanted:
                if fo.remaining.get(line["id"], 0) < line["quantity"]:
                    errors.append(user_error([*path, "fulfillmentOrderLineItems"],
                                             "Quantity exceeds the remaining quantity of the line item."))
                    continue
                line_id = fo.line_of[line["id"]]
                quantities[line_id] = quantities.get(line_id, 0) + line["quantity"]
        if len(orders) > 1:
            errors.append(user_error(["fulfillment"], "All fulfillment orders must belong to the same order."))
        if errors or not orders:
            return {"fulfillment": None, "userErrors": errors or [user_error(["fulfillment"], "Nothing to fulfil.")]}
        tracking = fulfillment.get("trackingInfo") or {}
        created = state.fulfil(state.orders[orders.pop()], tracking.get("company"), tracking.get("number"),
                               tracking.get("url"), quantities)
        return {"fulfillment": created, "userErrors": []}

    # bulk and webhooks -----------------------------------------------------------

    def bulk_run(self, _root: Any, info: Any, query: str) -> dict[str, Any]:
        running = [op for op in self.state.bulk_operations.values() if op.status in ("CREATED", "RUNNING")]
        if running:
            return {"bulkOperation": None, "userErrors": [user_error(
                ["query"], f"A bulk query operation for this app and shop is already in progress: {running[0].id}.",
                "INVALID")]}
        problems = bulk_query_problems(info.schema, query)
        if problems:
            return {"bulkOperation": None, "userErrors": [user_error(["query"], p, "INVALID") for p in problems]}
        operation = BulkOperation(self.state.next_id("BulkOperation"), query, self.state.clock())
        self.state.bulk_operations[operation.id] = operation
        return {"bulkOperation": bulk_payload(operation, info.context["base_url"], ""), "userErrors": []}

    def webhook_create(self, _root: Any, _info: Any, topic: str, webhookSubscription: dict[str, Any]) -> dict[str, Any]:
        uri = webhookSubscription["uri"]
        if not re.match(r"^https?://", uri):
            return {"webhookSubscription": None, "userErrors": [user_error(["webhookSubscription", "uri"], "Address is invalid")]}
        if any(s["topic"] == topic and s["uri"] == uri for s in self.state.subscriptions.values()):
            return {"webhookSubscription": None, "userErrors": [user_error(
                ["webhookSubscription", "uri"], "Address for this topic has already been taken")]}
        subscription = {"id": self.state.next_id("WebhookSubscription"), "topic": topic, "uri": uri, "format": "JSON"}
        self.state.subscriptions[subscription["id"]] = subscription
        return {"webhookSubscription": subscription, "userErrors": []}


def _idempotency_key(info: Any) -> str | None:
    for directive in info.field_nodes[0].directives or ():
        if directive.name.value == "idempotent":
            from graphql import value_from_ast_untyped

            return str(value_from_ast_untyped(directive.arguments[0].value, info.context.get("variables") or {}))
    return None


def _name_and_reason_errors(data: dict[str, Any], names: tuple[str, ...], name_code: str) -> list[dict[str, Any]]:
    errors = []
    if data["name"] not in names:
        errors.append(user_error(["input", "name"], f"The quantity name must be one of: {', '.join(names)}.", name_code))
    if data["reason"] not in REASONS:
        errors.append(user_error(["input", "reason"], "The specified reason is invalid.", "INVALID_REASON"))
    return errors


def _address(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if not data:
        return None
    name = " ".join(part for part in (data.get("firstName"), data.get("lastName")) if part)
    return {**data, "name": name or None, "countryCodeV2": data.get("countryCode")}


# -- schema --------------------------------------------------------------------


def _serialize_time(value: Any) -> str | None:
    return iso(value) if isinstance(value, (int, float)) else value


def _serialize_money(value: Any) -> str:
    return str(Decimal(str(value)).quantize(Decimal("0.01")))


def build(state: ShopState) -> GraphQLSchema:
    """The schema subset with every field that needs more than attribute access bound to the state."""
    schema = build_schema(SDL)
    q, m = Resolvers(state), Mutations(state)
    bindings: dict[tuple[str, str], Callable[..., Any]] = {
        ("Query", "shop"): q.shop, ("Query", "locations"): q.locations, ("Query", "products"): q.products,
        ("Query", "product"): q.product, ("Query", "productVariants"): q.product_variants,
        ("Query", "inventoryItem"): q.inventory_item, ("Query", "orders"): q.orders, ("Query", "order"): q.order,
        ("Query", "fulfillment"): q.fulfillment, ("Query", "bulkOperation"): q.bulk_operation,
        ("Query", "currentBulkOperation"): q.current_bulk_operation,
        ("Query", "webhookSubscriptions"): q.webhook_subscriptions,
        ("Mutation", "inventoryAdjustQuantities"): m.inventory_adjust,
        ("Mutation", "inventorySetQuantities"): m.inventory_set, ("Mutation", "orderCreate"): m.order_create,
        ("Mutation", "fulfillmentCreate"): m.fulfillment_create, ("Mutation", "bulkOperationRunQuery"): m.bulk_run,
        ("Mutation", "webhookSubscriptionCreate"): m.webhook_create,
        ("Location", "inventoryLevels"): q.location_levels,
        ("Product", "variants"): q.product_variants_of,
        ("Product", "createdAt"): lambda p, _i: p.created, ("Product", "updatedAt"): lambda p, _i: p.updated,
        ("ProductVariant", "selectedOptions"): lambda v, _i: [{"name": n, "value": x} for n, x in v.options],
        ("ProductVariant", "product"): lambda v, _i: state.products[v.product_id],
        ("ProductVariant", "inventoryItem"): lambda v, _i: v,
        ("ProductVariant", "updatedAt"): lambda v, _i: v.updated,
        ("ProductVariant", "inventoryQuantity"): lambda v, _i: sum(l.available for l in state.levels_of(v.item_id)),
        ("InventoryItem", "id"): lambda v, _i: v.item_id, ("InventoryItem", "tracked"): lambda v, _i: True,
        ("InventoryItem", "variant"): lambda v, _i: v, ("InventoryItem", "inventoryLevels"): q.item_levels,
        ("InventoryLevel", "location"): lambda lvl, _i: state.locations[lvl.location_id],
        ("InventoryLevel", "item"): lambda lvl, _i: state.variant_by_item(lvl.item_id),
        ("InventoryLevel", "updatedAt"): lambda lvl, _i: lvl.updated,
        ("InventoryLevel", "quantities"): Resolvers.quantities,
        ("Order", "createdAt"): lambda o, _i: o.created, ("Order", "updatedAt"): lambda o, _i: o.updated,
        ("Order", "cancelledAt"): lambda o, _i: o.cancelled, ("Order", "currencyCode"): lambda o, _i: o.currency,
        ("Order", "displayFulfillmentStatus"): lambda o, _i: _fulfillment_status(state, o),
        ("Order", "shippingAddress"): lambda o, _i: o.shipping, ("Order", "billingAddress"): lambda o, _i: o.billing,
        ("Order", "lineItems"): q.order_lines, ("Order", "fulfillments"): q.order_fulfillments,
        ("Order", "fulfillmentOrders"): q.order_fulfillment_orders,
        ("LineItem", "variant"): lambda li, _i: state.variants.get(li.variant_id or ""),
        ("LineItem", "originalUnitPriceSet"): lambda li, _i: {
            "shopMoney": {"amount": li.price, "currencyCode": state.settings.currency}},
        ("Fulfillment", "createdAt"): lambda f, _i: f.created, ("Fulfillment", "updatedAt"): lambda f, _i: f.created,
        ("Fulfillment", "trackingInfo"): lambda f, _i, first=None: f.tracking[:first] if first else f.tracking,
        ("Fulfillment", "fulfillmentLineItems"): q.fulfillment_lines,
        ("FulfillmentOrder", "updatedAt"): lambda fo, _i: fo.updated,
        ("FulfillmentOrder", "lineItems"): q.fulfillment_order_lines,
    }
    for (type_name, field_name), resolver in bindings.items():
        schema.type_map[type_name].fields[field_name].resolve = resolver  # type: ignore[union-attr]
    _scalar(schema, "DateTime", _serialize_time, parse_time)
    for name in ("Money", "Decimal"):
        _scalar(schema, name, _serialize_money, lambda value: Decimal(str(value)))
    return schema


def _scalar(schema: GraphQLSchema, name: str, out: Callable[[Any], Any], into: Callable[[Any], Any]) -> None:
    """Give a custom scalar its coercions (graphql-core 3.2 names and their 3.3 aliases)."""
    scalar = schema.type_map[name]
    for attribute, function in (("serialize", out), ("coerce_output_value", out),
                                ("parse_value", into), ("coerce_input_value", into)):
        setattr(scalar, attribute, function)


# -- HTTP ----------------------------------------------------------------------


def shopify_error_body(status: int, message: str) -> tuple[bytes, str]:
    """Shopify's envelope for transport-level errors: ``{"errors": "<message>"}``."""
    return json.dumps({"errors": message}).encode(), "application/json"


class GraphQLEndpoint:
    """Authentication, scopes, cost and throttling around one GraphQL execution."""

    def __init__(self, state: ShopState, schema: GraphQLSchema) -> None:
        self.state = state
        self.schema = schema
        self._documents: dict[str, tuple[DocumentNode | None, list[dict[str, Any]]]] = {}

    def handle(self, version: str) -> Response:
        settings = self.state.settings
        if request.headers.get("X-Shopify-Access-Token") != settings.access_token:
            return _reply(401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})
        if request.mimetype != "application/json":
            return _reply(400, {"errors": "Content-Type must be application/json"})
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _reply(400, {"errors": "Parameter Missing or Invalid: query"})
        variables = body.get("variables") or {}
        document, problems = self._checked(body["query"])
        if document is None:
            return _reply(200, {"errors": problems})
        operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        missing = self._missing_scope(operation)
        if missing:
            return _reply(403, {"errors": f"[API] This action requires merchant approval for {missing} scope."})
        with self.state.lock:
            return self._execute(document, operation, variables)

    def _checked(self, query: str) -> tuple[DocumentNode | None, list[dict[str, Any]]]:
        """The parsed and validated document, or None and the errors. Clients send the same few query
        texts with different variables, so each text is checked once (as GraphQL servers cache
        documents); parsing and validating was most of the sandbox's CPU per orderCreate."""
        known = self._documents.get(query)
        if known is None:
            try:
                document = parse(query)
            except GraphQLError as error:
                return None, [error.formatted]
            invalid = validate(self.schema, document)
            known = (None, [error.formatted for error in invalid]) if invalid else (document, [])
            if len(self._documents) >= DOCUMENT_CACHE_SIZE:
                self._documents.clear()
            self._documents[query] = known
        return known

    def _missing_scope(self, operation: OperationDefinitionNode) -> str | None:
        granted = set(self.state.settings.scopes)
        for selection in operation.selection_set.selections:
            needed = ROOT_SCOPES.get(getattr(selection, "name", None) and selection.name.value)
            if needed and needed not in granted and needed.replace("read_", "write_") not in granted:
                return needed
        return None

    def _root_cost(self, operation: OperationDefinitionNode, variables: dict[str, Any],
                   data: Any = None, actual: bool = False, problems: list[str] | None = None) -> int:
        if operation.operation == OperationType.MUTATION:
            return MUTATION_COST * len(operation.selection_set.selections)
        return selection_cost(self.schema.query_type, operation.selection_set.selections, variables, data,
                              actual, problems)

    def _execute(self, document: DocumentNode, operation: OperationDefinitionNode, variables: dict[str, Any]) -> Response:
        state = self.state
        problems: list[str] = []
        requested = self._root_cost(operation, variables, problems=problems)
        if problems:
            return _reply(200, {"errors": [{"message": p, "extensions": {"code": "BAD_REQUEST"}} for p in problems]})
        status = state.bucket_status()
        if requested > MAX_QUERY_COST:
            return _reply(200, {"errors": [{"message": f"Query cost is {requested}, which exceeds the single query max cost limit ({MAX_QUERY_COST}).",
                                            "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested,
                                                           "maxCost": MAX_QUERY_COST}}],
                                "extensions": _cost(requested, None, status)})
        if requested > state.available:
            state.throttled += 1
            return _reply(state.settings.throttle_status, {
                "errors": [{"message": "Throttled", "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": _cost(requested, None, status)})
        state.available -= requested
        context: dict[str, Any] = {"bulk": False, "base_url": request.host_url, "variables": variables}
        result = execute(self.schema, document, variable_values=variables, context_value=context)
        if result.errors and result.data is None:
            _describe_variable_problems(result.errors)
        actual = self._root_cost(operation, variables, result.data, actual=True) if result.data else 0
        state.available = min(state.settings.bucket_size, state.available + max(0, requested - actual))
        payload: dict[str, Any] = {}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        if result.data is not None:
            payload["data"] = result.data
        payload["extensions"] = _cost(requested, actual, state.bucket_status())
        response = _reply(200, payload)
        if context.get("time_out"):
            response.headers["X-Sandbox-Time-Out"] = "1"  # the WSGI wrapper turns this into a timeout
        return response


def _describe_variable_problems(errors: list[GraphQLError]) -> None:
    """Shopify reports bad variables with code INVALID_VARIABLE and a list of problems."""
    for error in errors:
        if error.message.startswith("Variable '$"):
            error.extensions = {"code": "INVALID_VARIABLE", "problems": [{"explanation": error.message}]}


def _cost(requested: int, actual: int | None, status: dict[str, float]) -> dict[str, Any]:
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": status}}


def _reply(status: int, payload: Any) -> Response:
    response = Response(json.dumps(payload, default=str), status=status, mimetype="application/json")
    response.headers["X-Shopify-API-Version"] = API_VERSION
    response.headers["X-Request-Id"] = str(uuid.uuid4())
    return response


def _control_routes(app: Flask, state: ShopState) -> None:
    """The sandbox's control API: what a merchant or warehouse would do in the Shopify admin."""

    def body() -> dict[str, Any]:
        return request.get_json(silent=True) or {}

    def variant_for(sku: str) -> Variant:
        found = [v for v in state.variants.values() if v.sku == sku]
        if not found:
            raise LookupError(f"no variant with SKU {sku!r}")
        return found[0]

    @app.errorhandler(LookupError)
    @app.errorhandler(ValueError)
    @app.errorhandler(KeyError)
    def bad_request(error: Exception) -> Response:
        return _reply(400, {"errors": str(error)})

    @app.get("/_control/state")
    def summary() -> Response:
        return _reply(200, {"products": len(state.products), "variants": len(state.variants),
                            "orders": [state.order_payload(o) for o in state.orders.values()],
                            "throttled": state.throttled, "deliveries": len(state.deliveries)})

    @app.post("/_control/products")
    def load_products() -> Response:
        """Add a whole catalogue in one call (``{"products": [...]}``, see ``ShopState.load_products``)."""
        records = body().get("products")
        if not isinstance(records, list):
            raise ValueError("products: a list of product records is required")
        added = state.load_products(records)
        return _reply(200, {"products": len(added), "variants": sum(len(p.variant_ids) for p in added)})

    @app.post("/_control/stock")
    def change_stock() -> Response:
        data = body()
        variant = variant_for(data["sku"])
        location = state.location_named(data.get("location") or next(iter(state.locations)))
        if location is None:
            raise LookupError(f"no location {data.get('location')!r}")
        with state.lock:
            level = state.set_available(variant.item_id, location.id, int(data["available"]))
        return _reply(200, {"sku": variant.sku, "location": location.name, "available": level.available})

    @app.post("/_control/fulfil")
    def fulfil() -> Response:
        data = body()
        with state.lock:
            order = state.order_named(data["order"])
            if order is None:
                raise LookupError(f"no order {data['order']!r}")
            quantities = None
            if data.get("lines"):
                by_sku = {li.sku: li.id for li in order.lines}
                quantities = {by_sku[sku]: int(qty) for sku, qty in data["lines"].items()}
            fulfillment = state.fulfil(order, data.get("company"), data.get("number"), data.get("url"), quantities)
        return _reply(200, {"fulfillment": fulfillment.id, "name": fulfillment.name})

    @app.post("/_control/cancel")
    def cancel() -> Response:
        with state.lock:
            order = state.order_named(body()["order"])
            if order is None:
                raise LookupError("no such order")
            state.cancel(order)
        return _reply(200, {"order": order.id, "cancelled_at": iso(order.cancelled)})

    @app.post("/_control/products/touch")
    def touch_product() -> Response:
        data = body()
        with state.lock:
            variant = variant_for(data["sku"])
            product = state.products[variant.product_id]
            if "title" in data:
                product.title = data["title"]
            if "price" in data:
                variant.price = Decimal(str(data["price"]))
                variant.updated = state.clock()
            if "sku_to" in data:
                variant.sku = data["sku_to"]
            product.updated = state.clock()
            state.emit("products/update", {
                "id": gid_number(product.id), "admin_graphql_api_id": product.id, "title": product.title,
                "updated_at": iso(product.updated),
                "variants": [{"id": gid_number(v), "sku": state.variants[v].sku} for v in product.variant_ids]})
        return _reply(200, {"product": product.id})

    @app.post("/_control/webhooks/retry")
    def retry_webhooks() -> Response:
        with state.lock:
            return _reply(200, {"retried": state.retry_deliveries()})

    @app.post("/_control/settings")
    def change_settings() -> Response:
        for name, value in body().items():
            if not hasattr(state.settings, name):
                raise KeyError(f"unknown setting {name!r}")
            setattr(state.settings, name, type(getattr(state.settings, name))(value))
        return _reply(200, {"ok": True})


class ShopifySandbox:
    """The WSGI app: Flask routes plus the after-apply timeout the fault kit cannot produce."""

    def __init__(self, state: ShopState, schema: GraphQLSchema) -> None:
        self.state = state
        self.schema = schema
        self.flask = Flask("shopify_sandbox")
        endpoint = GraphQLEndpoint(state, schema)
        self.flask.add_url_rule("/admin/api/<version>/graphql.json", "graphql", endpoint.handle, methods=["POST"])
        self.flask.add_url_rule("/_bulk/<int:number>.jsonl", "bulk_file", self._bulk_file)
        _control_routes(self.flask, state)

    def _bulk_file(self, number: int) -> Response:
        operation = self.state.bulk_operations.get(gid("BulkOperation", number))
        if operation is None or request.args.get("sig") != _bulk_signature(self.state.settings.client_secret, number):
            return Response("<Error><Code>AccessDenied</Code></Error>", status=403, mimetype="application/xml")
        return Response("".join(line + "\n" for line in operation.lines), mimetype="application/jsonl")

    def __call__(self, environ: dict, start_response: Callable) -> Iterator[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = list(self.flask(environ, capture))
        if any(name == "X-Sandbox-Time-Out" for name, _ in captured["headers"]):
            import httpx

            raise httpx.ReadTimeout("sandbox: the mutation was applied but the answer timed out")
        start_response(captured["status"], captured["headers"])
        return iter(chunks)


def create_app(seed: int = 7, *, faults: Faults | None = None, clock: Callable[[], float] = time.time,
               sender: Sender = http_sender, **settings: Any) -> FaultMiddleware:
    """A fresh Shopify sandbox; ``app.state`` is the shop, ``app.app`` the unwrapped sandbox."""
    state = ShopState(Settings(**settings), seed, clock, sender)
    sandbox = ShopifySandbox(state, build(state))
    middleware = FaultMiddleware(sandbox, faults or Faults(seed=seed), error_body=shopify_error_body)
    middleware.state = state  # type: ignore[attr-defined]
    return middleware
