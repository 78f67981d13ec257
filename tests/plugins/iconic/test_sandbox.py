"""The sandbox keeps The Iconic's rules, so the client is tested against something honest."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from plugins.iconic.sandbox import DEFAULT_APPLICATION_ID, DEFAULT_APPLICATION_SECRET, create_app
from tests.plugins.iconic.conftest import FakeTime


@pytest.fixture
def world() -> tuple[Any, httpx.Client, FakeTime]:
    fake = FakeTime()
    app = create_app(clock=fake.time, token_ttl=60)
    client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://sandbox")
    token = client.post("/oauth/client-credentials", auth=(DEFAULT_APPLICATION_ID, DEFAULT_APPLICATION_SECRET),
                        data={"grant_type": "client_credentials"}).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return app, client, fake


def _listed(client: httpx.Client, sku: str = "D-1", quantity: int = 5) -> dict[str, Any]:
    created = client.post("/v2/product-set", json={"name": "Dress", "sellerSku": sku, "brandId": 1,
                                                   "primaryCategoryId": 11, "price": 100,
                                                   "attributes": {"1": 100, "2": "Black"}})
    assert created.status_code == 201, created.text
    product = created.json()["products"][0]
    assert client.put("/v2/stock/product", json=[{"productId": product["id"], "quantity": quantity}]).json() == []
    return product


def _order(client: httpx.Client, sku: str = "D-1", quantity: int = 2) -> dict[str, Any]:
    return client.post("/_control/orders", json={"items": [{"sku": sku, "quantity": quantity}]}).json()


def test_tokens_expire(world):
    app, client, fake = world
    assert client.get("/v2/category/tree").status_code == 200
    fake.advance(61)
    answer = client.get("/v2/category/tree")
    assert answer.status_code == 401 and answer.json()["detail"] == "Access token has expired"


def test_errors_use_the_general_error_shape(world):
    _, client, _ = world
    answer = client.get("/v2/brands")
    assert answer.status_code == 400
    assert set(answer.json()) == {"type", "title", "status", "detail"} and answer.json()["status"] == 400


def test_one_item_per_unit_and_reservations(world):
    app, client, _ = world
    product = _listed(client)
    order = _order(client)
    assert order["itemCount"] == 2 and len(order["orderItemIds"]) == 2
    stock = client.get(f"/v2/stock/product/{product['id']}").json()
    assert (stock["quantity"], stock["reservedStock"], stock["available"]) == (5, 2, 3)
    over = client.post("/_control/orders", json={"items": [{"sku": "D-1", "quantity": 4}]})
    assert over.status_code == 409


def test_the_wrong_item_key_is_silently_no_items(world):
    app, client, _ = world
    _listed(client)
    order = _order(client)
    body = {"orderItems": [{"orderItemId": i} for i in order["orderItemIds"]], "deliveryType": "dropship",
            "shippingProvider": "Aramex", "trackingNumber": "T1"}
    answer = client.post("/v2/orders/statuses/set-to-ready-to-ship", json=body)
    assert answer.status_code == 200 and answer.json() == {"orderItemIds": []}
    assert {i["status"] for i in app.state.order_items(order["id"])} == {"pending"}


def test_the_status_machine_refuses_skipped_steps_and_ships_stock_out(world):
    app, client, _ = world
    product = _listed(client)
    order = _order(client, quantity=1)
    ids = order["orderItemIds"]
    skipped = client.post("/v2/orders/statuses/set-to-shipped", json={"orderItemIds": ids})
    assert skipped.status_code == 400 and skipped.json()["title"] == "Status Transition is not allowed"
    client.post("/v2/orders/statuses/set-to-ready-to-ship", json={
        "orderItems": [{"id": ids[0]}], "deliveryType": "dropship", "shippingProvider": "Aramex", "trackingNumber": "T"})
    assert client.post("/v2/orders/statuses/set-to-shipped", json={"orderItemIds": ids}).status_code == 200
    assert client.post("/v2/orders/statuses/set-to-delivered", json={"orderItemIds": ids}).status_code == 200
    stock = client.get(f"/v2/stock/product/{product['id']}").json()
    assert (stock["quantity"], stock["reservedStock"]) == (4, 0)
    assert client.post(f"/_control/orders/{order['id']}/request-return").status_code == 200
    rejected = client.post("/v2/orders/statuses/set-to-return-rejected", json={"orderItemIds": ids, "reason": "Item used"})
    assert rejected.status_code == 200 and app.state.items[ids[0]]["status"] == "return_rejected"


def test_order_items_filter_by_order_ids_and_numbers(world):
    _, client, _ = world
    _listed(client, quantity=10)
    first, second, third = _order(client), _order(client, quantity=1), _order(client)

    def item_ids(params: list[tuple[str, Any]]) -> list[int]:
        answer = client.get("/v2/order-items", params=[*params, ("limit", 100), ("offset", 0)])
        assert answer.status_code == 200, answer.text
        return sorted(item["id"] for item in answer.json()["items"])

    assert item_ids([("orderIds[]", first["id"]), ("orderIds[]", third["id"])]) == sorted(
        first["orderItemIds"] + third["orderItemIds"])
    assert item_ids([("orderNumbers[]", second["number"])]) == second["orderItemIds"]
    assert item_ids([("orderNumbers[]", second["number"]), ("orderIds[]", first["id"])]) == []  # filters combine
    assert item_ids([("orderNumbers[]", "no-such-order")]) == []


@pytest.mark.parametrize("action", ["set-to-ready-to-ship", "set-to-shipped"])
def test_a_status_write_mixing_two_orders_is_refused_with_422(world, action):
    app, client, _ = world
    _listed(client)
    ids = [_order(client, quantity=1)["orderItemIds"][0], _order(client, quantity=1)["orderItemIds"][0]]
    body: dict[str, Any] = {"orderItemIds": ids}
    if action == "set-to-ready-to-ship":
        body = {"orderItems": [{"id": i} for i in ids], "deliveryType": "dropship", "shippingProvider": "Aramex",
                "trackingNumber": "T1"}
    answer = client.post(f"/v2/orders/statuses/{action}", json=body)
    assert answer.status_code == 422 and "same order" in answer.json()["detail"]
    assert {app.state.items[i]["status"] for i in ids} == {"pending"}


def test_cancelling_needs_a_known_reason(world):
    _, client, _ = world
    _listed(client)
    ids = _order(client)["orderItemIds"]
    bad = client.post("/v2/orders/statuses/set-to-cancelled", json={"orderItemIds": ids, "reason": "Whatever"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("reason:")
    good = client.post("/v2/orders/statuses/set-to-cancelled", json={"orderItemIds": ids, "reason": "Out of stock"})
    assert good.json() == {"orderItemIds": ids}


def test_stock_writes_are_capped_at_100_rows_and_answer_with_rejections(world):
    _, client, _ = world
    product = _listed(client)
    too_many = client.put("/v2/stock/product", json=[{"productId": product["id"], "quantity": 1}] * 101)
    assert too_many.status_code == 400
    rejected = client.put("/v2/stock/product", json=[{"productId": product["id"], "quantity": -1},
                                                    {"productId": 999999, "quantity": 1}]).json()
    assert [r["message"] for r in rejected] == ["Negative value is not allowed", "product 999999 does not exist"]


def test_a_partial_price_update_wipes_the_sale(world):
    _, client, _ = world
    product = _listed(client)
    client.put(f"/v2/product/{product['id']}/prices/AU", json={"price": 100, "salePrice": 80})
    after = client.put(f"/v2/product/{product['id']}/prices/AU", json={"price": 110}).json()
    assert after["price"] == 110 and after["salePrice"] is None


def test_429_with_retry_after_at_the_configured_quota(world):
    app, client, fake = world
    app.state.settings.quota, app.state.settings.quota_window = 2, 30
    assert [client.get("/v2/category/tree").status_code for _ in range(3)] == [200, 200, 429]
    limited = client.get("/v2/category/tree")
    assert limited.headers["Retry-After"] == "30" and limited.json()["status"] == 429
    fake.advance(30)
    assert client.get("/v2/category/tree").status_code == 200


def test_the_control_api_changes_settings_and_refuses_unknown_ones(world):
    app, client, _ = world
    assert client.put("/_control/settings", json={"approval_delay": 5}).json()["approval_delay"] == 5
    assert client.put("/_control/settings", json={"nonsense": 1}).status_code == 400
