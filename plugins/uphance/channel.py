"""The Uphance channel: a brand's catalogue and stock master, and the destination of marketplace orders.

It does what Uphance's own Iconic app does, with the same settings: the Uphance *channel* whose price
list and rules the orders follow, the *warehouse* that fulfils, which inventory number to send
(available to sell, or available from stock), the *payment term* (PIA confirms orders at once), the
*brands* and *seasons* to push, and whether marketplace returns are checked back into stock
automatically. Shipments come back from pick tickets, by polling or by the pick-ticket webhook.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar

from marshmallow import EXCLUDE, Schema, fields, validate

from hub.channel import Channel, Limits, Role, WebhookAction, WebhookRequest
from hub.errors import AuthError, ContractError, RejectedItem, ValidationError
from hub.records import Fulfilment, ItemResult, Order, Product, Return

from plugins.uphance import mapping
from plugins.uphance.client import DEFAULT_BASE_URL, UphanceClient

STOCK_SOURCE = "channelhub"  # names the hub as the source of a stock operation in Uphance
# Pick tickets are listed by creation date; one shipped later than this after it was raised is missed
# by polling (the webhook still brings it).
SHIPMENT_WINDOW = timedelta(days=30)
DEFAULT_LOCATION = "Uphance"


class UphanceCredentials(Schema):
    email = fields.Email(required=True, metadata={"description": "The Uphance login (an integration user is best)."})
    password = fields.String(required=True, validate=validate.Length(min=1), metadata={"secret": True})
    webhook_secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=16),
                                   metadata={"secret": True, "description": "Carried in the webhook callback URL; "
                                                                            "at least 16 random characters, stored encrypted."})


class UphanceSettings(Schema):
    """The Iconic app's settings. Ids not set are asked for where a flow needs them."""

    class Meta:
        # Accounts saved before webhook_secret moved to the (encrypted) credentials still carry it
        # here; it is accepted on load and dropped, and verify_webhook falls back to the stored value.
        unknown = EXCLUDE

    organisation_id = fields.Integer(load_default=None, allow_none=True,
                                     metadata={"description": "Uphance organisation; needed when the login sees several."})
    channel_id = fields.Integer(load_default=None, allow_none=True,
                                metadata={"description": "Uphance channel whose prices, currency and rules orders follow."})
    warehouse = fields.String(load_default=None, allow_none=True, metadata={"description": "Warehouse that fulfils."})
    customer_id = fields.Integer(load_default=None, allow_none=True,
                                 metadata={"description": "The marketplace as an Uphance customer (billing party)."})
    inventory = fields.String(load_default="available", validate=validate.OneOf(sorted(mapping.INVENTORY_FIELDS)),
                              metadata={"description": "available = available_to_sell; available_from_stock = "
                                                       "available_to_sell_from_stock"})
    payment_term = fields.String(load_default="", metadata={"description": "e.g. PIA: Uphance confirms the order at once"})
    order_price = fields.String(load_default="msrp", validate=validate.OneOf(["msrp", "wholesale", "marketplace"]),
                                metadata={"description": "Unit price on sales orders: the channel's MSRP or wholesale "
                                                         "price, or the marketplace's selling price."})
    brands = fields.List(fields.String(), load_default=list, metadata={"description": "Only these brands (empty: all)."})
    seasons = fields.List(fields.String(), load_default=list, metadata={"description": "Only these seasons, e.g. AW22."})
    auto_check_in_returns = fields.Boolean(load_default=False)


class UphanceChannel(Channel):
    name: ClassVar[str] = "uphance"
    title: ClassVar[str] = "Uphance"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.SOURCE, Role.ORDER_DESTINATION})
    credentials_schema = UphanceCredentials
    settings_schema = UphanceSettings
    limits: ClassVar[Limits] = Limits(
        max_batch=100, requests_per_second=2.0, burst=10, page_size=100,
        documented="100 records per page (help.uphance.com Orders/Product/Pick tickets API); no rate limit is "
                   "published, 2 requests/s is the hub's assumption",
    )
    secret_fields = ("password", "webhook_secret")

    def __init__(self, services: Any) -> None:
        super().__init__(services)
        self.options = self.validate_settings(services.settings)
        self._catalogue: list[dict[str, Any]] | None = None
        self._refs: dict[str, mapping.SkuRef] | None = None
        self._reread = False

    @cached_property
    def client(self) -> UphanceClient:
        secrets = [secret] if (secret := self._webhook_secret()) else []
        base_url = self.account.base_url or DEFAULT_BASE_URL
        http = self.services.http_client(base_url, limits=self.limits, secrets=secrets)
        creds = self.validate_credentials(self.credentials)
        return UphanceClient(http, email=creds["email"], password=creds["password"],
                             organisation_id=self.options["organisation_id"], clock=self.services.clock,
                             base_url=base_url, transport=self.services.transport)

    # -- every channel -------------------------------------------------------

    def test_connection(self) -> dict[str, Any]:
        organisation = self.client.organisation
        channels = self._channels
        warehouses = self.client.warehouses()
        seen = {
            "organisation": organisation,
            "organisations": self.client.organisations,
            "channels": [{"id": c.get("channel_ID"), "name": c.get("channel_name"), "currency": c.get("currency")}
                         for c in channels],
            "warehouses": [w.get("name") for w in warehouses] if warehouses is not None else "not listed by the API",
            "seasons": list(self._season_names.values()),
        }
        seen["problems"] = self._setting_problems(channels, warehouses)
        return seen

    def _setting_problems(self, channels: list[dict[str, Any]], warehouses: list[dict[str, Any]] | None) -> list[str]:
        """Settings that do not name something this organisation has, said before a flow trips on them."""
        problems = []
        wanted_channel, wanted_warehouse = self.options["channel_id"], self.options["warehouse"]
        if wanted_channel is None:
            problems.append("channel_id is not set: choose the Uphance channel whose prices orders follow")
        elif wanted_channel not in {c.get("channel_ID") for c in channels}:
            problems.append(f"channel_id {wanted_channel} is not an Uphance channel of this organisation")
        if wanted_warehouse is None:
            problems.append("warehouse is not set: choose the Uphance warehouse that fulfils")
        elif warehouses is not None and wanted_warehouse not in {w.get("name") for w in warehouses}:
            problems.append(f"warehouse {wanted_warehouse!r} is not an Uphance warehouse")
        if self.options["customer_id"] is None:
            problems.append("customer_id is not set: choose the Uphance customer that stands for the marketplace")
        if not self.credentials.get("webhook_secret") and self.settings.get("webhook_secret"):
            problems.append("webhook_secret is kept in the settings, unencrypted: enter it under Credentials (stored encrypted)")
        return problems

    def verify_webhook(self, request: WebhookRequest) -> WebhookAction | None:
        self._check_url_secret(request)
        try:
            payload = json.loads(request.body)
        except ValueError:
            raise ContractError("Uphance webhook body is not JSON") from None
        event = payload.get("event") if isinstance(payload, dict) else None
        if not isinstance(event, str):
            raise ContractError("Uphance webhook has no 'event'")
        resource, _, action = event.rpartition("_")
        record = payload.get(resource)
        if not isinstance(record, dict) or "id" not in record:
            raise ContractError(f"Uphance webhook {event!r} carries no {resource!r} object with an id")
        return self._webhook_action(resource, action, record)

    def _webhook_secret(self) -> str | None:
        """The secret webhook URLs must carry: from the encrypted credentials; from the settings only
        for an account saved before it moved there (plain JSON: enter it under Credentials)."""
        return self.credentials.get("webhook_secret") or self.settings.get("webhook_secret") or None

    def _check_url_secret(self, request: WebhookRequest) -> None:
        expected = self._webhook_secret()
        if not expected:
            raise AuthError("no webhook_secret is set for this Uphance account (enter it with the credentials), "
                            "so its webhooks cannot be trusted")
        given = request.url_secret or request.query.get("secret") or ""
        # Uphance does not sign webhooks; the secret in the callback URL is the only proof of origin.
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise AuthError("Uphance webhook URL secret does not match this account")

    def _webhook_action(self, resource: str, action: str, record: dict[str, Any]) -> WebhookAction | None:
        delivery = mapping.webhook_delivery_id(resource, record)
        if resource == "pick_ticket" and action in ("create", "update"):
            if record.get("status") != mapping.SHIPPED:
                return None  # packing, tracking set ahead of shipping: nothing to write back yet
            return WebhookAction("fulfilment", {"order_number": str(record.get("order_number", "")),
                                                "pick_ticket_id": record["id"]}, delivery)
        if resource == "product" and action in ("create", "update"):
            return WebhookAction("catalog", {"product_id": record["id"]}, delivery)
        return None

    # -- SOURCE --------------------------------------------------------------

    def list_products(self, since: datetime | None = None) -> Iterator[Product]:
        seasons = self._season_names
        channel = self._channel() if self.options["channel_id"] is not None else {}
        location = self.options["warehouse"] or DEFAULT_LOCATION
        catalogue: list[dict[str, Any]] = []
        for raw in self.client.products():
            catalogue.append(raw)
            if not mapping.changed_since(raw, since):
                continue
            mapped = mapping.product_from_uphance(raw, seasons=seasons, channel=channel, location=location,
                                                  inventory=self.options["inventory"])
            self._report(mapped.problems)
            if mapped.record is not None and mapping.passes_filters(
                    mapped.record, raw, brands=self.options["brands"], seasons=self.options["seasons"],
                    season_names=seasons):
                yield mapped.record
        self._catalogue, self._refs = catalogue, None  # a complete pass doubles as the SKU index

    # -- ORDER_DESTINATION ---------------------------------------------------

    def create_order(self, order: Order) -> ItemResult:
        key = order.order_number
        try:
            existing = [o for o in self.client.sales_orders_by_number(order.order_number)
                        if str(o.get("order_number")) == order.order_number]
            if existing:
                return ItemResult.success(key, external_id=mapping.sales_order_id(existing[0]),
                                          message="already in Uphance")
            body = mapping.sales_order_from_order(order, self._sku_refs([line.sku for line in order.lines]),
                                                  self._order_options())
            created = self.client.create_sales_order(body)
        except (RejectedItem, ValidationError) as error:
            return ItemResult.rejected(key, str(error), field=error.field)
        return ItemResult.success(key, external_id=mapping.sales_order_id(created))

    def pull_fulfilments(self, since: datetime | None = None) -> Iterator[Fulfilment]:
        since_created = mapping.uphance_time(since - SHIPMENT_WINDOW) if since else None
        channel_name = self._channel().get("channel_name") if self.options["channel_id"] is not None else None
        sku_numbers = _LazySkuNumbers(self)
        for ticket in self.client.pick_tickets(since_created):
            if channel_name and ticket.get("channel") not in (None, channel_name):
                continue  # another channel's shipment (wholesale, Shopify...)
            updated = mapping.parse_time(ticket.get("updated_at"))
            if since is not None and updated is not None and updated < since:
                continue
            mapped = mapping.fulfilment_from_pick_ticket(ticket, sku_numbers)
            self._report(mapped.problems)
            if mapped.record is not None:
                yield mapped.record

    # -- returns -------------------------------------------------------------

    def check_in_return(self, ret: Return) -> ItemResult:
        """Put a marketplace return back into stock, once, when the account says so; else report it."""
        if not self.options["auto_check_in_returns"]:
            items = ", ".join(f"{line.quantity} x {line.sku}" for line in ret.lines) or "its items"
            message = (f"return {ret.external_id} of order {ret.order_number}: automatic check-in is off; "
                       f"check {items} back into stock in Uphance by hand")
            self.log.info(message)
            return ItemResult.rejected(ret.external_id, message, field="auto_check_in_returns")
        try:
            operation, key = mapping.stock_operation_for_return(ret, self._sku_refs([l.sku for l in ret.lines]),
                                                                STOCK_SOURCE)
            done = self.client.stock_operation(operation, key)
        except RejectedItem as error:
            return ItemResult.rejected(ret.external_id, str(error), field=error.field)
        return ItemResult.success(ret.external_id, external_id=str(done["id"]), message="checked back into stock")

    def receive_return(self, ret: Return) -> ItemResult:
        """The hub's returns hook: Uphance checks returns in per the account's setting."""
        return self.check_in_return(ret)

    # -- helpers -------------------------------------------------------------

    def _report(self, problems: Iterable[str]) -> None:
        for problem in problems:
            self.log.warning("uphance: %s", problem)

    @cached_property
    def _channels(self) -> list[dict[str, Any]]:
        return self.client.channels()

    def _channel(self) -> dict[str, Any]:
        wanted = self._require("channel_id")
        found = next((c for c in self._channels if c.get("channel_ID") == wanted), None)
        if found is None:
            names = ", ".join(f"{c.get('channel_ID')} ({c.get('channel_name')})" for c in self._channels)
            raise ValidationError({"channel_id": [f"{wanted} is not an Uphance channel; choose one of: {names}"]},
                                  field="channel_id")
        return found

    @cached_property
    def _season_names(self) -> dict[int, str]:
        return {s["id"]: str(s.get("name", s["id"])) for s in self.client.seasons() if isinstance(s, dict) and "id" in s}

    def _require(self, name: str) -> Any:
        value = self.options.get(name)
        if value in (None, ""):
            raise ValidationError({name: ["must be set in the Uphance account settings for this flow"]}, field=name)
        return value

    def _order_options(self) -> mapping.OrderOptions:
        return mapping.OrderOptions(customer_id=self._require("customer_id"), channel=self._channel(),
                                    warehouse=self._require("warehouse"), payment_term=self.options["payment_term"],
                                    price_basis=self.options["order_price"])

    def _sku_refs(self, wanted: Iterable[str]) -> dict[str, mapping.SkuRef]:
        """The SKU index, read once per channel instance and re-read once when a SKU is new to it.

        Uphance has no documented lookup by SKU number, so the index comes from the product list.
        """
        if self._refs is not None and set(wanted) <= self._refs.keys():
            return self._refs
        if self._catalogue is None or (self._refs is not None and not self._reread):
            self._reread = self._refs is not None  # a new SKU: re-read once per instance, not per order
            self._catalogue = list(self.client.products())
        channel = self._channel() if self.options["channel_id"] is not None else {}
        self._refs = mapping.sku_refs(self._catalogue, channel)
        return self._refs


class _LazySkuNumbers(Mapping[int, str]):
    """sku_id -> SKU number, read from the catalogue only if a pick ticket line lacks its number."""

    def __init__(self, channel: UphanceChannel) -> None:
        self._channel = channel
        self._numbers: dict[int, str] | None = None

    def _load(self) -> dict[int, str]:
        if self._numbers is None:
            self._numbers = {ref.sku_id: number for number, ref in self._channel._sku_refs([]).items()}
        return self._numbers

    def __getitem__(self, key: int) -> str:
        return self._load()[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())
