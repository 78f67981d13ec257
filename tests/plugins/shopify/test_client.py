"""The client: cost-based pacing, THROTTLED as 200 or 429, error envelopes, paging contract."""

from __future__ import annotations

from typing import Any

import pytest

from hub.errors import AuthError, ContractError, RateLimited, RejectedItem
from plugins.shopify.client import UserErrors

from .conftest import graphql_calls

SHOP = "query { shop { name } }"


def test_a_long_import_is_paced_by_the_bucket_without_a_throttle_storm(make_sandbox: Any, make_channel: Any,
                                                                       vtime: Any) -> None:
    # The old standard bucket: 1,000 points refilled at 50/s; each page asks ~800 points.
    app = make_sandbox(products=60, bucket_size=1000.0, restore_rate=50.0)
    channel = make_channel(app, {"catalogue_mode": "paged"})
    assert len(list(channel.list_products(None))) == 60
    assert app.state.throttled == 0 and channel.client.throttled == 0
    assert sum(vtime.slept) > 5  # the client waited for the bucket instead of bouncing off it
    assert graphql_calls(app) == 1 + 9  # locations + ceil(60 / 7) pages: no retries


@pytest.mark.parametrize("status", [200, 429])
def test_throttled_is_handled_alike_with_200_or_429(make_sandbox: Any, make_channel: Any, vtime: Any,
                                                    status: int) -> None:
    app = make_sandbox(throttle_status=status, bucket_size=1000.0, restore_rate=50.0)
    channel = make_channel(app)
    channel.client.query(SHOP)
    app.state.available = 0.0  # another app of the same shop emptied the bucket
    assert channel.client.query(SHOP)["shop"]["name"] == "Channelhub Demo"
    assert app.state.throttled == 1 and channel.client.throttled == 1
    assert vtime.slept and graphql_calls(app) == 3


def test_a_bucket_that_never_refills_defers_the_job(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(restore_rate=0.001)
    channel = make_channel(app)
    channel.client.query(SHOP)
    app.state.available = 0.0
    with pytest.raises(RateLimited):
        channel.client.query(SHOP)


def test_a_wrong_token_is_an_auth_error(sandbox: Any, make_channel: Any) -> None:
    with pytest.raises(AuthError, match="401"):
        make_channel(sandbox, access_token="shpat_wrong_token").test_connection()


def test_a_missing_scope_is_an_auth_error(make_sandbox: Any, make_channel: Any) -> None:
    app = make_sandbox(scopes=("read_products", "read_locations"))
    with pytest.raises(AuthError, match="403"):
        list(make_channel(app).pull_fulfilments(None))


def test_test_connection_reports_shop_currency_and_locations(channel: Any) -> None:
    seen = channel.test_connection()
    assert seen["shop"] == "Channelhub Demo" and seen["currency"] == "AUD" and seen["api_version"] == "2026-07"
    assert [loc["name"] for loc in seen["locations"]] == ["Sydney Warehouse", "Melbourne Store"]


def test_a_query_over_the_cost_limit_is_a_contract_error(channel: Any) -> None:
    with pytest.raises(ContractError, match="MAX_COST|exceeds"):
        channel.client.query("{ products(first: 250) { nodes { variants(first: 250) { nodes { id } } } } }")


def test_user_errors_are_surfaced_with_their_field_and_code(channel: Any) -> None:
    with pytest.raises(UserErrors) as raised:
        channel.client.mutate(
            "mutation($k: String!, $i: InventoryAdjustQuantitiesInput!) { inventoryAdjustQuantities(input: $i) "
            "@idempotent(key: $k) { userErrors { field message code } } }",
            {"k": "k1", "i": {"name": "available", "reason": "restock", "changes": [
                {"inventoryItemId": "gid://shopify/InventoryItem/999999", "locationId": "gid://shopify/Location/1001",
                 "delta": 1, "changeFromQuantity": None}]}},
            "inventoryAdjustQuantities")
    assert raised.value.codes == {"INVALID_INVENTORY_ITEM"}
    assert raised.value.field == "input.changes.0.inventoryItemId"


def test_inventory_mutations_need_the_idempotent_directive(channel: Any) -> None:
    with pytest.raises(ContractError, match="@idempotent"):
        channel.client.mutate(
            "mutation($i: InventoryAdjustQuantitiesInput!) { inventoryAdjustQuantities(input: $i) { userErrors { message } } }",
            {"i": {"name": "available", "reason": "restock", "changes": []}}, "inventoryAdjustQuantities")


def test_a_query_text_sent_again_is_checked_the_same_way(channel: Any) -> None:
    # The sandbox keeps each query text parsed and validated: a repeat must answer as the first did.
    for _ in range(2):
        assert channel.client.query(SHOP)["shop"]["name"] == "Channelhub Demo"
        with pytest.raises(ContractError, match="Cannot query field 'nonsense'"):
            channel.client.query("query { shop { nonsense } }")
        with pytest.raises(ContractError, match="Syntax Error"):
            channel.client.query("query { shop { name }")


def test_bad_variables_are_a_rejected_item(channel: Any) -> None:
    with pytest.raises(RejectedItem, match="countryCode"):
        channel.client.mutate(
            "mutation($o: OrderCreateOrderInput!) { orderCreate(order: $o) { userErrors { message } } }",
            {"o": {"shippingAddress": {"countryCode": "XX"}}}, "orderCreate")


def test_paging_refuses_a_page_that_promises_more_without_a_cursor(channel: Any, monkeypatch: Any) -> None:
    answer = {"locations": {"nodes": [{"id": "1"}], "pageInfo": {"hasNextPage": True, "endCursor": None}}}
    monkeypatch.setattr(channel.client, "query", lambda document, variables=None: answer)
    with pytest.raises(ContractError, match="no new cursor"):
        list(channel.client.paginate("q", {}, ("locations",)))


def test_bulk_queries_nested_too_deep_are_refused(channel: Any) -> None:
    deep = "{ products { edges { node { id variants { edges { node { id inventoryItem { inventoryLevels { edges { node { id } } } } } } } } } } }"
    with pytest.raises(UserErrors, match="nesting depth"):
        list(channel.client.bulk_export(deep, poll_seconds=1, timeout_seconds=60))


def test_malformed_bodies_are_transient(make_sandbox: Any, make_channel: Any) -> None:
    from hub.errors import TransientError
    from hub.sandbox import Faults

    app = make_sandbox(faults=Faults(rate_malformed=1.0))
    with pytest.raises(TransientError, match="not JSON"):
        make_channel(app).test_connection()


def test_a_plain_429_with_retry_after_is_waited_out(make_sandbox: Any, make_channel: Any, vtime: Any) -> None:
    from hub.sandbox import Faults

    app = make_sandbox(faults=Faults(rate_429=0.5, retry_after=3, seed=11))
    channel = make_channel(app, {"catalogue_mode": "paged"})
    assert len(list(channel.list_products(None))) == 12
    assert app.injected["429"] > 0 and 3 in vtime.slept
