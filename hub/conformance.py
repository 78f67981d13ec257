"""The conformance kit: the tests every channel must pass, whoever wrote it.

A plugin's test module composes the classes for its channel's roles and provides a ``channel``
fixture (a fresh instance wired to a fresh sandbox) plus the few sandbox actions a role needs::

    from hub.conformance import ChannelConformance, MarketplaceConformance

    class TestIconicConformance(ChannelConformance, MarketplaceConformance):
        channel_class = IconicChannel

        @pytest.fixture
        def channel(self):
            return make_channel_against_a_fresh_sandbox()

        def conformance_listings(self, channel):
            return [Listing(...), ...]          # SKUs the sandbox can accept

        def conformance_place_order(self, channel):
            ...                                 # place an order in the sandbox; return its order number

``ChannelConformance.test_every_role_is_covered`` fails when a role's class is missing, so a channel
cannot pass by leaving a role untested.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from hub.channel import Channel, Role, check_channel_class
from hub.records import Fulfilment, ItemResult, Listing, Order, Product, validate_record

ROLE_SUITES: dict[Role, str] = {
    Role.SOURCE: "SourceConformance",
    Role.MARKETPLACE: "MarketplaceConformance",
    Role.ORDER_DESTINATION: "DestinationConformance",
    Role.FULFILMENT: "DestinationConformance",
}


class ChannelConformance:
    """What every channel, whatever its roles, must do."""

    channel_class: type[Channel]

    def test_class_meets_the_contract(self) -> None:
        check_channel_class(self.channel_class)
        assert self.channel_class.title, "a channel needs a human title for the UI"
        assert self.channel_class.limits.max_batch >= 1

    def test_every_role_is_covered(self) -> None:
        suites = {cls.__name__ for cls in type(self).__mro__}
        missing = {ROLE_SUITES[Role(role)] for role in self.channel_class.roles} - suites
        assert not missing, f"compose {', '.join(sorted(missing))} into this test class"

    def test_connection_reports_what_it_sees(self, channel: Channel) -> None:
        seen = channel.test_connection()
        assert isinstance(seen, dict) and seen, "test_connection must return what the account can see"

    def test_credentials_schema_requires_something(self) -> None:
        from hub.errors import ValidationError

        schema_fields = self.channel_class.credentials_schema().fields
        if any(field.required for field in schema_fields.values()):
            try:
                self.channel_class.validate_credentials({})
            except ValidationError as error:
                assert error.field in schema_fields
            else:
                raise AssertionError("empty credentials must be refused, naming the field")


class SourceConformance:
    def test_list_products_yields_valid_products(self, channel: Channel) -> None:
        products = list(channel.list_products(None))
        assert products, "the sandbox's seed catalogue should yield products"
        for product in products:
            assert isinstance(product, Product)
            validate_record(product)
        skus = [variant.sku for product in products for variant in product.variants]
        assert skus, "products must carry their variants"

    def test_list_products_since_the_future_is_empty(self, channel: Channel) -> None:
        assert list(channel.list_products(datetime(2999, 1, 1, tzinfo=timezone.utc))) == []


class MarketplaceConformance:
    def conformance_listings(self, channel: Channel) -> list[Listing]:
        raise NotImplementedError("return listings the sandbox accepts")

    def conformance_place_order(self, channel: Channel) -> str:
        raise NotImplementedError("place an order in the sandbox and return its order number")

    def test_push_listings_answers_once_per_sku(self, channel: Channel) -> None:
        listings = self.conformance_listings(channel)
        results = channel.push_listings(listings)
        assert all(isinstance(result, ItemResult) for result in results)
        assert sorted(result.key for result in results) == sorted(listing.sku for listing in listings)

    def test_listings_appear_in_the_enumeration(self, channel: Channel) -> None:
        listings = self.conformance_listings(channel)
        pushed = {r.key for r in channel.push_listings(listings) if r.ok}
        enumerated = {listing.sku for listing in channel.list_listings()}
        assert pushed <= enumerated

    def test_pulled_orders_are_valid(self, channel: Channel) -> None:
        number = self.conformance_place_order(channel)
        orders = list(channel.pull_orders(None))
        assert number in {order.order_number for order in orders}
        for order in orders:
            assert isinstance(order, Order)
            validate_record(order)

    def test_pulling_twice_yields_the_same_orders_once_each(self, channel: Channel) -> None:
        self.conformance_place_order(channel)
        first = [order.channel_order_id for order in channel.pull_orders(None)]
        second = [order.channel_order_id for order in channel.pull_orders(None)]
        assert len(first) == len(set(first)) and set(first) == set(second)


class DestinationConformance:
    def conformance_order(self, channel: Channel) -> Order:
        raise NotImplementedError("return a canonical order the sandbox can take (known SKUs)")

    def conformance_ship(self, channel: Channel, order: Order, external_id: str | None) -> None:
        raise NotImplementedError("ship the order in the sandbox with a carrier and tracking number")

    def test_create_order_is_idempotent(self, channel: Channel) -> None:
        order = self.conformance_order(channel)
        first = channel.create_order(order)
        second = channel.create_order(order)
        assert first.ok and second.ok, (first.message, second.message)
        assert first.external_id and first.external_id == second.external_id

    def test_shipments_come_back_with_tracking(self, channel: Channel) -> None:
        order = self.conformance_order(channel)
        created = channel.create_order(order)
        self.conformance_ship(channel, order, created.external_id)
        shipments: list[Any] = [f for f in channel.pull_fulfilments(None) if f.order_number == order.order_number]
        assert shipments, "the shipped order must come back from pull_fulfilments"
        for shipment in shipments:
            assert isinstance(shipment, Fulfilment)
            validate_record(shipment)
            assert shipment.carrier and shipment.tracking_number
