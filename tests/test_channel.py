"""The channel contract: roles demand hooks, schemas validate, batches follow the limits."""

from __future__ import annotations

import pytest
from marshmallow import Schema, fields

from hub.channel import AccountInfo, Channel, ChannelServices, Limits, Role, check_channel_class
from hub.errors import ConfigurationError, ValidationError
from hub.records import ItemResult


class Credentials(Schema):
    app_id = fields.String(required=True)
    app_secret = fields.String(required=True)


class Source(Channel):
    name = "source_test"
    title = "Source"
    roles = frozenset({Role.SOURCE})
    credentials_schema = Credentials

    def list_products(self, since=None):
        return []


def test_a_complete_channel_passes_the_check():
    check_channel_class(Source)


def test_a_role_without_its_hooks_is_refused():
    class HalfMarketplace(Channel):
        name = "half"
        roles = frozenset({Role.MARKETPLACE})

        def push_listings(self, listings):
            return []

    with pytest.raises(ConfigurationError, match="role marketplace but does not implement pull_orders, send_fulfilment, list_listings"):
        check_channel_class(HalfMarketplace)


@pytest.mark.parametrize("attributes,message", [
    ({"name": "", "roles": frozenset({Role.SOURCE})}, "needs a `name`"),
    ({"name": "has space", "roles": frozenset({Role.SOURCE})}, "needs a `name`"),
    ({"name": "noroles", "roles": frozenset()}, "declares no roles"),
])
def test_identity_is_checked(attributes, message):
    channel_class = type("Bad", (Source,), attributes)
    with pytest.raises(ConfigurationError, match=message):
        check_channel_class(channel_class)


def test_not_a_channel_is_refused():
    with pytest.raises(ConfigurationError, match="not a subclass"):
        check_channel_class(object)


def test_credentials_are_validated_by_the_schema_naming_the_field():
    assert Source.validate_credentials({"app_id": "a", "app_secret": "b"}) == {"app_id": "a", "app_secret": "b"}
    with pytest.raises(ValidationError) as caught:
        Source.validate_credentials({"app_id": "a"})
    assert caught.value.field == "app_secret"
    assert "app_secret: Missing data for required field." in str(caught.value)


def test_unimplemented_hooks_raise_and_default_push_stock_uses_push_listings():
    services = ChannelServices(account=AccountInfo(id=1, organisation_id=1, name="a"), credentials={}, settings={})
    source = Source(services)
    with pytest.raises(NotImplementedError):
        source.pull_orders()

    class Market(Channel):
        name = "m"
        roles = frozenset({Role.MARKETPLACE})

        def push_listings(self, listings):
            return [ItemResult.success(sku) for sku in listings]

    assert Market(services).push_stock(["A"]) == [ItemResult.success("A")]
    assert Market.implements("push_listings") and not Market.implements("pull_orders")


@pytest.mark.parametrize("count,batch,calls", [(0, 100, 0), (1, 100, 1), (100, 100, 1), (101, 100, 2), (250, 100, 3), (7, 3, 3)])
def test_batches_are_ceil_of_count_over_max(count, batch, calls):
    batches = list(Limits(max_batch=batch).batches(list(range(count))))
    assert len(batches) == calls
    assert sum(len(b) for b in batches) == count
    assert all(len(b) <= batch for b in batches)


def test_create_orders_defaults_to_one_create_per_order_and_keeps_going():
    from hub.errors import RejectedItem
    from hub.records import Address, Order, OrderLine

    class Destination(Channel):
        name = "dest"
        roles = frozenset({Role.ORDER_DESTINATION})

        def create_order(self, order):
            if order.order_number == "bad":
                raise RejectedItem("unknown SKU X", key="bad", field="sku")
            return ItemResult.success(order.order_number, external_id=f"D-{order.order_number}")

        def pull_fulfilments(self, since=None):
            return []

    address = Address(name="A", line1="1 St", city="Sydney", postcode="2000", country="AU")
    orders = [Order(channel_order_id=n, order_number=n, lines=[OrderLine("X", 1)], shipping_address=address)
              for n in ("1", "bad", "2")]
    services = ChannelServices(account=AccountInfo(id=1, organisation_id=1, name="d"), credentials={}, settings={})
    results = Destination(services).create_orders(orders)
    assert [(r.key, r.ok) for r in results] == [("1", True), ("bad", False), ("2", True)]
    assert results[1].field == "sku"
    assert not Destination.implements("cancel_order") and Destination.implements("create_orders") is False
