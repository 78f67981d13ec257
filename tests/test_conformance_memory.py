"""The conformance kit, run against the in-memory test channel, so the kit itself is proven."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from hub.channel import AccountInfo, ChannelServices
from hub.conformance import ChannelConformance, DestinationConformance, MarketplaceConformance, SourceConformance
from hub.records import Address, Fulfilment, FulfilmentLine, Listing, Order, OrderLine, Product, Variant
from tests.memory_channel import MemoryChannel, remote

ADDRESS = Address(name="Ada", line1="1 George St", city="Sydney", postcode="2000", country="AU")


class TestMemoryChannelConformance(ChannelConformance, SourceConformance, MarketplaceConformance, DestinationConformance):
    channel_class = MemoryChannel

    @pytest.fixture
    def channel(self) -> MemoryChannel:
        name = f"conformance-{uuid.uuid4().hex}"
        remote(name).products.append(Product(parent_sku="TEE", title="Tee", variants=[Variant(sku="TEE-M")]))
        services = ChannelServices(account=AccountInfo(id=1, organisation_id=1, name="m"),
                                   credentials={"token": "t"}, settings={"remote": name})
        return MemoryChannel(services)

    def conformance_listings(self, channel):
        return [Listing(sku=f"TEE-{size}", parent_sku="TEE", title="Tee", price=Decimal("10"), quantity=1)
                for size in ("S", "M", "L")]

    def conformance_place_order(self, channel):
        order = Order(channel_order_id="1", order_number="M-1", shipping_address=ADDRESS,
                      lines=[OrderLine(sku="TEE-M", quantity=1)])
        channel.remote.orders[order.channel_order_id] = order
        return order.order_number

    def conformance_order(self, channel):
        return Order(channel_order_id="9", order_number="M-9", shipping_address=ADDRESS,
                     lines=[OrderLine(sku="TEE-M", quantity=2)])

    def conformance_ship(self, channel, order, external_id):
        channel.remote.shipments.append(Fulfilment(order_number=order.order_number, carrier="auspost",
                                                   tracking_number="AP1", lines=[FulfilmentLine("TEE-M", 2)]))

    def test_list_products_since_the_future_is_empty(self, channel):
        # The memory channel has no change dates; it ignores ``since`` on purpose.
        assert list(channel.list_products(None))


def test_a_missing_role_suite_is_caught():
    class Incomplete(ChannelConformance):
        channel_class = MemoryChannel

    with pytest.raises(AssertionError, match="DestinationConformance, MarketplaceConformance, SourceConformance"):
        Incomplete().test_every_role_is_covered()
