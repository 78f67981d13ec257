"""The Starshipit channel: marketplace orders go in for fulfilment, carrier and tracking come out.

Flows:
- ``create_order`` / ``create_orders``: the courier is chosen by the account's courier rules, the
  order is looked up by number first (Starshipit does not reliably refuse a duplicate), then
  created singly or imported 50 at a time.
- ``pull_fulfilments``: the shipped list (and ``/api/track`` where the list lacks tracking) becomes
  canonical Fulfilments with canonical carriers.
- ``verify_webhook``: a tracking webhook is a hint that runs the fulfilment flow for one order;
  polling remains the backstop, because Starshipit's webhook retries are undocumented.
- ``cancel_order``: deletes an unshipped order, or tells the admin it has already shipped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from marshmallow import Schema, fields, validate

from hub.channel import Channel, Role, WebhookAction, WebhookRequest
from hub.errors import AuthError, ContractError, RejectedItem
from hub.parallel import map_limited
from hub.records import Fulfilment, ItemResult, Order

from plugins.starshipit import mapping
from plugins.starshipit.client import TIER_RATES, DuplicateOrder, StarshipitClient, limits_for_tier
from plugins.starshipit.rules import (
    CourierChoice,
    CourierChoiceSchema,
    CourierRule,
    CourierRuleSchema,
    choose_courier,
    courier_choice,
    courier_rule,
)

SIGNATURE_HEADER = "X-Starshipit-Signature"
UNSHIPPED_STATUSES = ("Unshipped", "Saved")
# Below this many orders, one lookup per order is cheaper than scanning the order lists.
LIST_LOOKUP_THRESHOLD = 3
# order_date is what we sent (the marketplace's placed_at); the margin absorbs clock skew.
LOOKUP_MARGIN = timedelta(hours=1)
# The lists that hold an order already imported, with the filter each takes for "since".
LIST_SCANS = (("unshipped", "since_order_date"), ("shipped", "since_last_updated"))


class StarshipitCredentialsSchema(Schema):
    api_key = fields.String(required=True, validate=validate.Length(min=1),
                            metadata={"description": "StarShipIT-Api-Key (Settings > API): chooses the account"})
    subscription_key = fields.String(required=True, validate=validate.Length(min=1),
                                     metadata={"description": "Ocp-Apim-Subscription-Key: chooses the API tier"})
    webhook_secret = fields.String(load_default="",
                                   metadata={"description": "webhook secret (Settings > Tracking & notifications); "
                                                            "blank = webhooks are unsigned"})


class StarshipitSettingsSchema(Schema):
    tier = fields.String(load_default="developer", validate=validate.OneOf(sorted(TIER_RATES)),
                         metadata={"description": "API subscription: developer (2 requests/s) or production (20)"})
    courier_rules = fields.List(fields.Nested(CourierRuleSchema), load_default=list,
                                metadata={"description": "first matching rule chooses carrier and service"})
    default_courier = fields.Nested(CourierChoiceSchema, load_default=None, allow_none=True,
                                    metadata={"description": "when no rule matches; blank = Starshipit's own rules"})
    default_item_weight_kg = fields.Float(load_default=0.5, allow_nan=False, validate=validate.Range(min=0.001, max=1000))
    sku_weights_kg = fields.Dict(keys=fields.String(), values=fields.Float(allow_nan=False, validate=validate.Range(min=0.001)),
                                 load_default=dict, metadata={"description": "unit weight per SKU, kg"})
    fulfil_when = fields.String(load_default="printed", validate=validate.OneOf(["printed", "dispatched"]),
                                metadata={"description": "report a shipment once its label is printed (as Starshipit's "
                                                         "own write-back does) or only once the carrier has it"})


class StarshipitChannel(Channel):
    name = "starshipit"
    title = "Starshipit"
    roles = frozenset({Role.FULFILMENT})
    credentials_schema = StarshipitCredentialsSchema
    settings_schema = StarshipitSettingsSchema
    limits = limits_for_tier("developer")  # the conservative tier; the client uses the account's own
    secret_fields = ("api_key", "subscription_key", "webhook_secret")

    @cached_property
    def config(self) -> dict[str, Any]:
        """The account's settings, validated (a ValidationError names the bad rule field)."""
        return self.validate_settings(self.settings)

    @cached_property
    def client(self) -> StarshipitClient:
        credentials = self.validate_credentials(self.credentials)
        return StarshipitClient(self.services, api_key=credentials["api_key"],
                                subscription_key=credentials["subscription_key"], tier=self.config["tier"],
                                base_url=self.account.base_url)

    @cached_property
    def courier_rules(self) -> tuple[list[CourierRule], CourierChoice | None]:
        default = self.config["default_courier"]
        rules = [courier_rule(rule) for rule in self.config["courier_rules"]]
        return rules, courier_choice(default) if default is not None else None

    @cached_property
    def weights(self) -> mapping.WeightPolicy:
        return mapping.WeightPolicy(self.config["default_item_weight_kg"], dict(self.config["sku_weights_kg"]))

    # -- every channel ----------------------------------------------------------------------

    def test_connection(self) -> dict[str, Any]:
        pages = self.client.probe()
        rules, default = self.courier_rules
        return {
            "account": "Starshipit",
            "tier": self.config["tier"],
            "requests_per_second": TIER_RATES[self.config["tier"]],
            "paced_at_per_second": self.client.limits.requests_per_second,
            "unshipped_orders_last_day": pages,
            "courier_rules": len(rules),
            "default_courier": default.carrier if default else None,
        }

    def verify_webhook(self, request: WebhookRequest) -> WebhookAction | None:
        self._check_signature(request)
        try:
            payload = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ContractError("Starshipit webhook body is not JSON") from None
        update = mapping.tracking_update(payload)
        params = {"order_number": update.order_number, "tracking_number": update.tracking_number,
                  "tracking_status": update.tracking_status, "carrier": update.carrier or update.carrier_name}
        return WebhookAction(flow="fulfilment", params=params, delivery_id=f"starshipit:{update.delivery_id}")

    def _check_signature(self, request: WebhookRequest) -> None:
        secret = self.credentials.get("webhook_secret")
        if not secret:
            return  # unsigned by the admin's choice; the action only prompts a poll of Starshipit
        given = (request.header(SIGNATURE_HEADER) or "").strip().lower()
        if not given:
            raise AuthError(f"Starshipit webhook without {SIGNATURE_HEADER}, but this account has a webhook secret")
        expected = hmac.new(str(secret).encode(), request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            raise AuthError(f"Starshipit webhook {SIGNATURE_HEADER} does not match the account's webhook secret")

    # -- orders in ----------------------------------------------------------------------------

    def create_order(self, order: Order) -> ItemResult:
        key = order.order_number
        try:
            body, why = self._order_body(order)
            existing = self.client.get_order(order_number=key)
            if existing is not None:
                return ItemResult.success(key, external_id=mapping.order_id_of(existing),
                                          message="already in Starshipit (found by order number)")
            created = self.client.create_order(body)
        except DuplicateOrder:
            return self._found_after_refusal(key)
        except RejectedItem as error:
            return ItemResult.rejected(key, str(error), field=error.field)
        return ItemResult.success(key, external_id=mapping.order_id_of(created), message=self._courier_note(body, why))

    def create_orders(self, orders: list[Order]) -> list[ItemResult]:
        """Many orders at once: one scan for those already there, then imports of up to 50."""
        results: dict[str, ItemResult] = {}
        bodies: dict[str, dict[str, Any]] = {}
        for order in orders:
            if order.order_number in results or order.order_number in bodies:
                continue  # the same order twice in one call is sent once
            try:
                bodies[order.order_number] = self._order_body(order)[0]
            except RejectedItem as error:
                results[order.order_number] = ItemResult.rejected(order.order_number, str(error), field=error.field)
        wanted = [order for order in orders if order.order_number in bodies]
        for number, order_id in self._existing_ids(wanted).items():
            results[number] = ItemResult.success(number, external_id=order_id, message="already in Starshipit")
            bodies.pop(number, None)
        for batch in self.client.limits.batches(list(bodies.values())):
            results.update(self._import(batch))
        return [results[order.order_number] for order in orders]

    def cancel_order(self, order: Order, reason: str = "") -> ItemResult:
        """Delete an order cancelled at the marketplace, unless Starshipit has already shipped it."""
        key = order.order_number
        existing = self.client.get_order(order_number=key)
        if existing is None:
            return ItemResult.success(key, message="not in Starshipit: nothing to delete")
        order_id = mapping.order_id_of(existing)
        status = str(existing.get("status") or "")
        if status not in UNSHIPPED_STATUSES:
            return ItemResult.rejected(key, _shipped_message(key, existing), field="status")
        try:
            self.client.delete_order(order_id)
        except RejectedItem as error:  # printed between our look and the delete
            return ItemResult.rejected(key, f"Starshipit would not delete order {key}: {error}", field="status")
        return ItemResult.success(key, external_id=order_id, message="deleted from Starshipit")

    def _order_body(self, order: Order) -> tuple[dict[str, Any], str]:
        rules, default = self.courier_rules
        choice, why = choose_courier(rules, default, mapping.shipment_facts(order, self.weights))
        return mapping.order_body(order, choice, self.weights), why

    @staticmethod
    def _courier_note(body: dict[str, Any], why: str) -> str:
        carrier = body.get("carrier")
        if not carrier:
            return why
        service = f" {body['carrier_service_code']}" if body.get("carrier_service_code") else ""
        return f"sent with {carrier}{service} ({why})"

    def _found_after_refusal(self, key: str) -> ItemResult:
        existing = self.client.get_order(order_number=key)
        if existing is None:
            return ItemResult.rejected(key, f"Starshipit says order {key} exists but cannot find it; it may be "
                                            "archived (archived orders cannot be re-imported)", field="order_number")
        return ItemResult.success(key, external_id=mapping.order_id_of(existing), message="already in Starshipit")

    def _existing_ids(self, orders: list[Order]) -> dict[str, str]:
        """Order number -> Starshipit id for the orders Starshipit already holds."""
        dated = {order.order_number: order.placed_at for order in orders if order.placed_at is not None}
        scan = len(dated) >= LIST_LOOKUP_THRESHOLD
        found = self._scan_lists(set(dated), min(dated.values())) if scan else {}
        for order in orders:
            if scan and order.order_number in dated:
                continue
            existing = self.client.get_order(order_number=order.order_number)
            if existing is not None:
                found[order.order_number] = mapping.order_id_of(existing)
        return found

    def _scan_lists(self, numbers: set[str], earliest: datetime) -> dict[str, str]:
        """The unshipped and the shipped list, read at the same time: the second waits only for the
        account's pace (one request a burst), not for the first's answer. An order on both keeps its
        unshipped entry."""
        since = mapping.rfc3339(earliest - LOOKUP_MARGIN)

        def scan(kind_and_parameter: tuple[str, str]) -> dict[str, str]:
            kind, parameter = kind_and_parameter
            found: dict[str, str] = {}
            for row in self.client.list_orders(kind, **{parameter: since}):
                number = str(row.get("order_number") or "")
                if number in numbers:
                    found.setdefault(number, mapping.order_id_of(row))
            return found

        unshipped, shipped = map_limited(scan, LIST_SCANS, len(LIST_SCANS), name="starshipit-scan")
        return {**shipped, **unshipped}

    def _import(self, batch: list[dict[str, Any]]) -> dict[str, ItemResult]:
        envelope = self.client.import_orders(batch)
        created = {str(row.get("order_number")): mapping.order_id_of(row)
                   for row in envelope.get("orders") or [] if isinstance(row, dict) and row.get("order_number")}
        refused = _import_errors(envelope)
        results: dict[str, ItemResult] = {}
        for body in batch:
            number = body["order_number"]
            if number in created:
                results[number] = ItemResult.success(number, external_id=created[number])
            elif number in refused:
                results[number] = ItemResult.rejected(number, f"Starshipit did not import it: {refused[number]}")
            else:  # the import answer is undocumented: ask rather than guess
                results[number] = self._confirm(number, refused.get("", "no reason given"))
        return results

    def _confirm(self, number: str, reason: str) -> ItemResult:
        existing = self.client.get_order(order_number=number)
        if existing is None:
            return ItemResult.rejected(number, f"Starshipit did not import it: {reason}", retryable=True)
        return ItemResult.success(number, external_id=mapping.order_id_of(existing))

    # -- tracking out -------------------------------------------------------------------------

    def pull_fulfilments(self, since: datetime | None = None) -> Iterator[Fulfilment]:
        since_param = {"since_last_updated": mapping.rfc3339(since)} if since else {}
        for order in self.client.list_orders("shipped", **since_param):
            fulfilment = self._fulfilment(order)
            if fulfilment is not None:
                yield fulfilment

    def pull_fulfilment(self, order_number: str) -> Fulfilment | None:
        """One order's shipment, for the job a tracking webhook asks for."""
        order = self.client.get_order(order_number=order_number)
        if order is None or str(order.get("status") or "") in UNSHIPPED_STATUSES:
            return None
        return self._fulfilment(order)

    def _fulfilment(self, order: dict[str, Any]) -> Fulfilment | None:
        shipment = mapping.shipment_from_order(order)
        if not shipment.tracking_number or (self.config["fulfil_when"] == "dispatched" and not shipment.status):
            results = self.client.track(order_number=shipment.order_number)
            if results is not None:
                shipment = mapping.merge_tracking(shipment, results)
        if not self._reportable(shipment):
            return None
        fulfilment = mapping.to_fulfilment(shipment)
        if mapping.to_canonical_carrier(shipment.carrier) is None:
            self.log.warning("Starshipit carrier %r of order %s has no canonical code; the fulfilment flow will "
                             "ask for a carrier mapping", shipment.carrier, shipment.order_number)
        return fulfilment

    def _reportable(self, shipment: mapping.Shipment) -> bool:
        if not shipment.tracking_number:
            self.log.info("Starshipit order %s is shipped but has no tracking number yet", shipment.order_number)
            return False
        if shipment.status == "Cancelled":
            return False  # the label was cancelled; a new one brings a new tracking number
        return self.config["fulfil_when"] == "printed" or shipment.status in mapping.DISPATCHED_STATUSES


def _import_errors(envelope: dict[str, Any]) -> dict[str, str]:
    """Order number -> why it was not imported; "" collects errors that name no order."""
    refused: dict[str, list[str]] = {}
    for error in envelope.get("errors") or []:
        if isinstance(error, dict):
            text = " - ".join(str(error[k]) for k in ("message", "details") if error.get(k))
            refused.setdefault(str(error.get("order_number") or ""), []).append(text or "refused")
    return {number: "; ".join(texts) for number, texts in refused.items()}


def _shipped_message(number: str, order: dict[str, Any]) -> str:
    packages = [p for p in order.get("packages") or [] if isinstance(p, dict)]
    tracking = ", ".join(str(p["tracking_number"]) for p in packages if p.get("tracking_number")) or "none yet"
    carrier = order.get("carrier_name") or order.get("carrier") or "unknown carrier"
    return (f"order {number} was cancelled at the marketplace but Starshipit has already printed its label "
            f"(status {order.get('status')}, {carrier}, tracking {tracking}); it cannot be deleted. Stop the parcel "
            "with the carrier if it has not left, otherwise handle it as a return.")
