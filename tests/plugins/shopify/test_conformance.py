"""The hub's conformance kit, run against the Shopify channel and its sandbox."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from hub.conformance import ChannelConformance, DestinationConformance, SourceConformance
from hub.records import Address, Order, OrderLine
from plugins.shopify.channel import ShopifyChannel


def marketplace_order(number: str = "300012345", skus: tuple[str, ...] = ("STYLE-0001-BLA-S",)) -> Order:
    return Order(
        channel_order_id=f"iconic-{number}", order_number=number,
        lines=[OrderLine(sku=sku, quantity=1, unit_price=Decimal("79.95")) for sku in skus],
        shipping_address=Address(name="Jane Citizen", line1="1 George St", city="Sydney", postcode="2000",
                                 country="AU", region="NSW", phone="0400000000"),
        currency="AUD", customer_name="Jane Citizen",
    )


class TestShopifyConformance(ChannelConformance, SourceConformance, DestinationConformance):
    channel_class = ShopifyChannel

    @pytest.fixture
    def channel(self, sandbox: Any, make_channel: Any, admin: Any) -> ShopifyChannel:
        self.admin = admin
        return make_channel(sandbox)

    def conformance_order(self, channel: ShopifyChannel) -> Order:
        return marketplace_order()

    def conformance_ship(self, channel: ShopifyChannel, order: Order, external_id: str | None) -> None:
        # As a warehouse app would: read the fulfilment orders, fulfil them with tracking.
        found = self.admin("query($id: ID!) { order(id: $id) { fulfillmentOrders(first: 5) { nodes { id } } } }",
                           {"id": external_id})
        groups = [{"fulfillmentOrderId": fo["id"]} for fo in found["data"]["order"]["fulfillmentOrders"]["nodes"]]
        created = self.admin(
            "mutation($f: FulfillmentInput!) { fulfillmentCreate(fulfillment: $f) { fulfillment { id } userErrors { message } } }",
            {"f": {"lineItemsByFulfillmentOrder": groups, "notifyCustomer": False,
                   "trackingInfo": {"company": "Australia Post", "number": "AP0012345678",
                                    "url": "https://auspost.com.au/track/AP0012345678"}}})
        assert created["data"]["fulfillmentCreate"]["userErrors"] == []

