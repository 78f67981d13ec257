"""Webhooks: signed deliveries from the sandbox become targeted jobs; bad signatures are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from hub.channel import WebhookRequest
from hub.errors import AuthError

from .conftest import SECRET
from .test_conformance import marketplace_order

CALLBACK = "https://hub.example/webhooks/shopify/1"


def as_request(delivery: tuple[str, dict[str, str], bytes]) -> WebhookRequest:
    _, headers, body = delivery
    return WebhookRequest(headers={k.lower(): v for k, v in headers.items()}, body=body)  # HTTP/2 lower-cases


def signed(body: bytes, secret: str = SECRET, **headers: str) -> WebhookRequest:
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return WebhookRequest(headers={"X-Shopify-Hmac-Sha256": signature, **headers}, body=body)


def test_registration_subscribes_each_topic_once(channel: Any, sandbox: Any) -> None:
    assert len(channel.register_webhooks(CALLBACK)) == 5
    assert channel.register_webhooks(CALLBACK) == []
    assert {s["uri"] for s in sandbox.state.subscriptions.values()} == {CALLBACK}


def test_a_fulfilment_in_shopify_asks_for_the_fulfilment_flow(channel: Any, admin: Any, deliveries: Any) -> None:
    channel.register_webhooks(CALLBACK)
    channel.create_order(marketplace_order("300000010"))
    deliveries.clear()
    admin("/_control/fulfil", {"order": "300000010", "company": "StarTrack", "number": "ST99"})
    actions = {d[1]["X-Shopify-Topic"]: channel.verify_webhook(as_request(d)) for d in deliveries}
    assert set(actions) >= {"fulfillments/create", "orders/fulfilled"}
    fulfilled = actions["orders/fulfilled"]
    assert fulfilled.flow == "fulfilment" and fulfilled.params["order_number"] == "300000010"
    assert fulfilled.delivery_id == next(d[1]["X-Shopify-Webhook-Id"] for d in deliveries
                                         if d[1]["X-Shopify-Topic"] == "orders/fulfilled")
    assert actions["fulfillments/create"].params["order_id"] == fulfilled.params["order_id"]


def test_stock_and_product_changes_ask_for_targeted_jobs(channel: Any, admin: Any, deliveries: Any) -> None:
    channel.register_webhooks(CALLBACK)
    admin("/_control/stock", {"sku": "STYLE-0001-BLA-S", "location": "Sydney Warehouse", "available": 4})
    admin("/_control/products/touch", {"sku": "STYLE-0001-BLA-S", "price": "99.00"})
    stock, catalog = (channel.verify_webhook(as_request(d)) for d in deliveries)
    assert stock.flow == "stock" and stock.params["available"] == 4
    assert stock.params["inventory_item_id"].startswith("gid://shopify/InventoryItem/")
    assert catalog.flow == "catalog" and "STYLE-0001-BLA-S" in catalog.params["skus"]


def test_a_wrong_hmac_is_refused(channel: Any) -> None:
    body = json.dumps({"id": 1, "name": "300000011", "tags": "channelhub"}).encode()
    with pytest.raises(AuthError, match="signature"):
        channel.verify_webhook(signed(body, secret="not-the-secret", **{"X-Shopify-Topic": "orders/fulfilled"}))
    tampered = signed(body, **{"X-Shopify-Topic": "orders/fulfilled"})
    tampered.body = body.replace(b"300000011", b"300000012")
    with pytest.raises(AuthError):
        channel.verify_webhook(tampered)
    with pytest.raises(AuthError, match="X-Shopify-Hmac-Sha256"):
        channel.verify_webhook(WebhookRequest(headers={"X-Shopify-Topic": "orders/fulfilled"}, body=body))


def test_the_previous_secret_is_accepted_during_a_rotation(make_channel: Any, sandbox: Any) -> None:
    channel = make_channel(sandbox, client_secret="the-new-secret-0000", previous_client_secret=SECRET)
    body = json.dumps({"inventory_item_id": 1, "location_id": 2, "available": 3}).encode()
    action = channel.verify_webhook(signed(body, **{"X-Shopify-Topic": "inventory_levels/update"}))
    assert action is not None and action.flow == "stock"


def test_orders_placed_in_shopify_itself_are_ignored(channel: Any) -> None:
    body = json.dumps({"id": 5, "name": "#1005", "tags": "", "source_name": "web"}).encode()
    assert channel.verify_webhook(signed(body, **{"X-Shopify-Topic": "orders/fulfilled"})) is None


def test_failed_deliveries_are_retried_with_the_same_id(make_sandbox: Any, make_channel: Any) -> None:
    sent: list[tuple[str, dict[str, str], bytes]] = []
    answers = iter([500, 200])
    app = make_sandbox(sender=lambda uri, headers, body: sent.append((uri, headers, body)) or next(answers))
    make_channel(app).register_webhooks(CALLBACK)
    app.state.set_available(next(iter(app.state.variant_of_item)), next(iter(app.state.locations)), 3)
    app.state.retry_deliveries()
    assert len(sent) == 2 and sent[0] == sent[1]
