"""Every public mapping of the Shopify plugin under malformed remote payloads (see ``mutations``)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hub.records import Address, Order, OrderLine, Variant
from plugins.shopify import mapping

from .mutations import FUZZ, Mutated, check_mapping, mutated, wrong_values

PRODUCT = {"id": "gid://shopify/Product/1", "title": "Linen tee", "handle": "linen-tee", "status": "ACTIVE",
           "vendor": "Acme", "productType": "Tops", "tags": ["summer", "linen"], "descriptionHtml": "<p>Soft</p>",
           "updatedAt": "2026-03-01T10:00:00Z"}
LEVEL = {"location": {"id": "gid://shopify/Location/1", "name": "Sydney Warehouse"},
         "quantities": [{"name": "available", "quantity": 3}, {"name": "on_hand", "quantity": 4},
                        {"name": "committed", "quantity": 1}]}
VARIANT = {"node": {"id": "gid://shopify/ProductVariant/11", "sku": "TEE-S", "barcode": "9300000000011", "price": "49.95",
                    "compareAtPrice": "59.95", "selectedOptions": [{"name": "Size", "value": "S"},
                                                                   {"name": "Color", "value": "Navy"}],
                    "inventoryItem": {"id": "gid://shopify/InventoryItem/21"}},
           "levels": [LEVEL, {**LEVEL, "location": {"id": "gid://shopify/Location/2", "name": "Melbourne Store"}}]}
FULFILMENT = {"order": {"id": "gid://shopify/Order/5", "name": "300000001"},
              "fulfillment": {"id": "gid://shopify/Fulfillment/7", "status": "SUCCESS", "createdAt": "2026-03-02T01:02:03Z",
                              "trackingInfo": [{"company": "StarTrack", "number": "ST123", "url": "https://track.example/ST123"}]},
              "lines": [{"quantity": 1, "lineItem": {"sku": "TEE-S"}}, {"quantity": 2, "lineItem": {"sku": "TEE-M"}}]}
CANCELLED = {"node": {"id": "gid://shopify/Order/5", "name": "300000001", "sourceIdentifier": "ICO-1", "currencyCode": "AUD",
                      "cancelledAt": "2026-03-03T00:00:00Z",
                      "shippingAddress": {"name": "Ada Lovelace", "address1": "1 George St", "city": "Sydney",
                                          "provinceCode": "NSW", "zip": "2000", "countryCodeV2": "AU", "phone": "0400"}},
             "lines": [{"sku": "TEE-S", "quantity": 1, "title": "Linen tee"}]}
SEARCH = [{"id": "gid://shopify/Order/9", "name": "300000001", "tags": ["channelhub"], "sourceName": "channelhub",
           "sourceIdentifier": "ICO-1"},
          {"id": "gid://shopify/Order/8", "name": "300000001", "tags": "wholesale", "sourceName": "web"}]
WEBHOOKS = {"orders/fulfilled": {"admin_graphql_api_id": "gid://shopify/Order/5", "name": "300000001",
                                 "tags": "channelhub, marketplace", "source_name": "channelhub"},
            "fulfillments/create": {"order_id": 5, "admin_graphql_api_id": "gid://shopify/Fulfillment/7"},
            "inventory_levels/update": {"inventory_item_id": 21, "location_id": 1, "available": 3},
            "products/update": {"id": 1, "admin_graphql_api_id": "gid://shopify/Product/1",
                                "variants": [{"sku": "TEE-S"}, {"sku": "TEE-M"}]}}
ORDER_INPUT = {"variant_ids": {"TEE-S": "gid://shopify/ProductVariant/11", "TEE-M": "gid://shopify/ProductVariant/12"},
               "marketplace": {"name": "The Iconic", "email": "orders@theiconic.example", "phone": "0200000000",
                               "address": {"address1": "363 George St", "city": "Sydney", "zip": "2000", "countryCode": "AU"}}}


def order() -> Order:
    return Order(channel_order_id="ICO-1", order_number="300000001", currency="AUD",
                 placed_at=datetime(2026, 3, 1, tzinfo=timezone.utc), note="gift",
                 lines=[OrderLine(sku="TEE-S", quantity=1, unit_price=Decimal("49.95")), OrderLine(sku="TEE-M", quantity=2)],
                 shipping_address=Address(name="Ada Lovelace", line1="1 George St", city="Sydney", postcode="2000", country="AU"))


@FUZZ
@given(st.one_of(wrong_values, st.sampled_from(["TEE S", " TEE", "TEE\n", "T" * 101, "TEE-S"])))
def test_sku_problem_says_why_or_none(sku: Any) -> None:
    problem = mapping.sku_problem(sku)
    assert problem is None or (isinstance(problem, str) and problem)
    if problem is None:
        assert isinstance(sku, str) and sku == sku.strip() and 0 < len(sku) <= 100


@FUZZ
@given(mutated(PRODUCT))
def test_product_from_remote(case: Mutated) -> None:
    variant = Variant(sku="TEE-S", price_retail=Decimal("49.95"))
    check_mapping(lambda node: mapping.product_from_remote(node, [variant]), case)


@FUZZ
@given(mutated(VARIANT))
def test_variant_from_remote(case: Mutated) -> None:
    def call(payload: Any) -> Any:
        node, levels = _split(payload, "node", "levels")
        return mapping.variant_from_remote(node, levels, active=True, locations={"Sydney Warehouse"})

    check_mapping(call, case, arguments=1)


@FUZZ
@given(mutated(VARIANT["levels"]), st.sampled_from([None, {"Sydney Warehouse"}, set()]))
def test_stock_from_levels(case: Mutated, locations: set[str] | None) -> None:
    check_mapping(lambda levels: mapping.stock_from_levels(levels, locations), case)


@FUZZ
@given(mutated(ORDER_INPUT))
def test_order_create_input(case: Mutated) -> None:
    def call(payload: Any) -> Any:
        variant_ids, market = _split(payload, "variant_ids", "marketplace")
        if not isinstance(market, dict) or not isinstance(market.get("name"), str):
            return None  # the marketplace comes from validated account settings, never from the remote
        marketplace = mapping.Marketplace(name=market["name"], email=market.get("email"), phone=market.get("phone"),
                                          address=market.get("address") if isinstance(market.get("address"), dict) else None)
        return mapping.order_create_input(order(), variant_ids, marketplace)

    check_mapping(call, case, arguments=1)


@FUZZ
@given(st.one_of(wrong_values, st.lists(wrong_values, max_size=3)), wrong_values)
def test_is_hub_order_never_raises(tags: Any, source_name: Any) -> None:
    assert mapping.is_hub_order(tags, source_name) in (True, False)


@FUZZ
@given(mutated(SEARCH))
def test_matching_hub_order(case: Mutated) -> None:
    check_mapping(lambda nodes: mapping.matching_hub_order(nodes, order()), case)


@FUZZ
@given(mutated(CANCELLED))
def test_cancelled_order_from_remote(case: Mutated) -> None:
    check_mapping(lambda payload: mapping.cancelled_order_from_remote(*_split(payload, "node", "lines")), case, arguments=1)


@FUZZ
@given(wrong_values)
def test_carrier_code_never_raises(company: Any) -> None:
    assert isinstance(mapping.carrier_code(company), str)


@FUZZ
@given(mutated(FULFILMENT))
def test_fulfilment_from_remote(case: Mutated) -> None:
    check_mapping(lambda payload: mapping.fulfilment_from_remote(*_split(payload, "order", "fulfillment", "lines")), case,
                  arguments=1)


@FUZZ
@given(st.sampled_from(sorted(WEBHOOKS)).flatmap(lambda topic: st.tuples(st.just(topic), mutated(WEBHOOKS[topic]))))
def test_webhook_action(topic_and_case: tuple[str, Mutated]) -> None:
    topic, case = topic_and_case

    def call(payload: Any) -> Any:
        # verify_webhook passes a dict: a JSON body that is not an object becomes {}
        return mapping.webhook_action(topic, payload if isinstance(payload, dict) else {}, delivery_id="d-1")

    check_mapping(call, case)


def _split(payload: Any, *keys: str) -> tuple[Any, ...]:
    """The named parts of a composite sample; a part the mutation removed is passed as None."""
    if not isinstance(payload, dict):
        return tuple(payload for _ in keys)
    return tuple(payload.get(key) for key in keys)


def test_a_valid_sample_maps_cleanly() -> None:
    """The samples above are valid: the properties test mutations, not broken samples."""
    variant = mapping.variant_from_remote(VARIANT["node"], VARIANT["levels"], active=True)
    assert variant.sku == "TEE-S" and variant.price_sale == Decimal("49.95") and len(variant.stock) == 2
    assert mapping.product_from_remote(PRODUCT, [variant]).parent_sku == "linen-tee"
    assert mapping.fulfilment_from_remote(*FULFILMENT.values()).carrier == "startrack"
    assert mapping.cancelled_order_from_remote(*CANCELLED.values()).order_number == "300000001"
    assert mapping.matching_hub_order(SEARCH, order())["id"] == "gid://shopify/Order/9"
    assert all(mapping.webhook_action(topic, payload, delivery_id="d") for topic, payload in WEBHOOKS.items())


@FUZZ
@given(st.lists(wrong_values, min_size=1, max_size=4), st.integers(min_value=0, max_value=4))
def test_malformed_search_results_do_not_hide_the_hubs_order(junk: list[Any], position: int) -> None:
    """A batch of search results: malformed nodes are passed over, the hub's own order is still found."""
    nodes = [*junk[:position], SEARCH[0], *junk[position:], SEARCH[1]]
    assert mapping.matching_hub_order(nodes, order()) == SEARCH[0]


@FUZZ
@given(st.lists(st.sampled_from(["TEE-S", "TEE M", " TEE-L", "TEE-XL ", "", None, 7, "TEE\x00"]), min_size=1, max_size=6))
def test_variants_with_unusable_skus_are_named_and_the_others_map(skus: list[Any]) -> None:
    """What the channel does per product: a variant whose SKU cannot be a hub SKU is reported by its
    problem and left out; every other variant maps."""
    mapped, reported = [], []
    for index, sku in enumerate(skus):
        problem = mapping.sku_problem(sku)
        if problem:
            reported.append(problem)
            continue
        node = {**VARIANT["node"], "sku": sku, "id": f"gid://shopify/ProductVariant/{index}"}
        mapped.append(mapping.variant_from_remote(node, VARIANT["levels"], active=True).sku)
    assert mapped == [s for s in skus if isinstance(s, str) and s and s == s.strip() and "\x00" not in s]
    assert len(reported) == len(skus) - len(mapped)
