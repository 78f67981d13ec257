"""The sandbox itself: both keys, the envelope, paging limits, tier rate limits, windows, faults."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from plugins.starshipit.sandbox import API_KEY, DEVELOPER_KEY, PRODUCTION_KEY
from tests.plugins.starshipit.helpers import BASE_URL, FakeTime, control

ORDER = {"order_number": "S-1", "destination": {"name": "Jo", "street": "1 King St", "country": "Australia"},
         "items": [{"sku": "A", "quantity": 1, "weight": 0.5, "value": 10}]}


def raw(app: Any, *, api_key: str | None = API_KEY, subscription: str | None = PRODUCTION_KEY) -> httpx.Client:
    headers = {name: value for name, value in (("StarShipIT-Api-Key", api_key),
                                               ("Ocp-Apim-Subscription-Key", subscription)) if value}
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url=BASE_URL, headers=headers)


def test_a_missing_subscription_key_is_refused_by_the_gateway(sandbox: Any) -> None:
    response = raw(sandbox, subscription=None).get("/api/orders/unshipped")
    assert response.status_code == 401 and "missing subscription key" in response.json()["message"]


def test_an_unknown_subscription_key_is_refused(sandbox: Any) -> None:
    response = raw(sandbox, subscription="nope").get("/api/orders/unshipped")
    assert response.status_code == 401 and "invalid subscription key" in response.json()["message"]


def test_a_bad_api_key_gets_the_starshipit_envelope(sandbox: Any) -> None:
    response = raw(sandbox, api_key="wrong").get("/api/orders/unshipped")
    assert response.status_code == 401
    assert response.json() == {"success": False, "errors": [
        {"message": "Unauthorized", "details": "The StarShipIT-Api-Key header is missing or not valid"}]}


def test_create_get_update_delete(sandbox: Any) -> None:
    client = raw(sandbox)
    created = client.post("/api/orders", json={"order": ORDER}).json()
    assert created["success"] is True and isinstance(created["order"]["order_id"], int)
    order_id = created["order"]["order_id"]
    assert client.get("/api/orders", params={"order_number": "S-1"}).json()["order"]["order_id"] == order_id
    updated = client.put("/api/orders", json={"order": {"order_id": order_id, "reference": "changed"}}).json()
    assert updated["order"]["reference"] == "changed"
    assert client.delete("/api/orders/delete", params={"order_id": order_id}).json() == {"success": True}
    missing = client.get("/api/orders", params={"order_id": order_id})
    assert missing.status_code == 404 and missing.json()["errors"][0]["details"] == "Order not found"


def test_validation_errors_name_the_field(sandbox: Any) -> None:
    bad = {**ORDER, "order_number": "x" * 51, "destination": {"name": "Jo", "country": "Australia"}}
    body = raw(sandbox).post("/api/orders", json={"order": bad}).json()
    assert body["success"] is False
    assert "order_number" in body["errors"][0]["details"] and "destination.street" in body["errors"][0]["details"]


def test_printed_orders_take_no_edits_and_no_delete(sandbox: Any) -> None:
    client = raw(sandbox)
    order_id = client.post("/api/orders", json={"order": ORDER}).json()["order"]["order_id"]
    label = client.post("/api/orders/shipment", json={"order_id": order_id, "carrier": "StarTrack"}).json()
    assert label["success"] and label["tracking_numbers"][0].startswith("ST") and label["labels"]
    assert client.put("/api/orders", json={"order": {"order_id": order_id, "reference": "x"}}).status_code == 400
    assert client.delete("/api/orders/delete", params={"order_id": order_id}).json()["success"] is False


def test_import_takes_at_most_50(sandbox: Any) -> None:
    orders = [{**ORDER, "order_number": f"I-{n}"} for n in range(51)]
    response = raw(sandbox, subscription=PRODUCTION_KEY).post("/api/orders/import", json={"orders": orders})
    assert response.status_code == 400 and "1 to 50" in response.json()["errors"][0]["details"]


def test_lists_page_with_limit_up_to_250(sandbox: Any) -> None:
    client = raw(sandbox, subscription=PRODUCTION_KEY)
    for n in range(5):
        client.post("/api/orders", json={"order": {**ORDER, "order_number": f"P-{n}"}})
    page = client.get("/api/orders/unshipped", params={"limit": 2, "page": 3}).json()
    assert page["total_pages"] == 3 and [o["order_number"] for o in page["orders"]] == ["P-4"]
    assert client.get("/api/orders/unshipped", params={"limit": 251}).status_code == 400
    ids = client.get("/api/orders/unshipped", params={"ids_only": "true", "limit": 250}).json()
    assert len(ids["order_ids"]) == 5 and "orders" not in ids


def test_unfiltered_lists_cover_only_the_last_day(sandbox: Any, fake: FakeTime) -> None:
    client = raw(sandbox)
    client.post("/api/orders", json={"order": ORDER})
    fake.advance(25 * 3600)
    assert client.get("/api/orders/unshipped").json()["orders"] == []
    old = client.get("/api/orders/unshipped", params={"since_last_updated": "2020-01-01T00:00:00Z"}).json()
    assert [o["order_number"] for o in old["orders"]] == ["S-1"]


@pytest.mark.parametrize("key,rate", [(DEVELOPER_KEY, 2), (PRODUCTION_KEY, 20)])
def test_each_tier_is_rate_limited_with_retry_after(sandbox: Any, fake: FakeTime, key: str, rate: int) -> None:
    client = raw(sandbox, subscription=key)
    statuses = [client.get("/api/orders/unshipped").status_code for _ in range(rate + 1)]
    assert statuses == [200] * rate + [429]
    limited = client.get("/api/orders/unshipped")
    assert limited.headers["Retry-After"] == "1" and "Rate limit is exceeded" in limited.json()["message"]
    fake.advance(1.0)
    assert client.get("/api/orders/unshipped").status_code == 200


def test_fault_knobs_answer_in_the_envelope(sandbox: Any) -> None:
    with httpx.Client(transport=httpx.WSGITransport(app=sandbox), base_url=BASE_URL) as control_client:
        control_client.put("/_control/faults", json={"rate_5xx": 1.0})
    response = raw(sandbox).get("/api/orders/unshipped")
    assert response.status_code >= 500 and response.json()["success"] is False


def test_dispatch_control_ships_and_tracks(sandbox: Any) -> None:
    order_id = raw(sandbox).post("/api/orders", json={"order": ORDER}).json()["order"]["order_id"]
    shipped = control(sandbox, "dispatch", {"order_id": order_id, "carrier": "Fastways", "tracking_number": "AX1"}).json()
    assert shipped["status"] == "Printed" and shipped["packages"][0]["tracking_number"] == "AX1"
    track = raw(sandbox).get("/api/track", params={"tracking_number": "AX1"}).json()["results"]
    assert track["carrier_name"] == "Aramex" and track["tracking_status"] == "Dispatched"
    assert track["order_status"] == "Dispatched" and track["tracking_events"][-1]["status"] == "Dispatched"
    control(sandbox, "tracking", {"order_id": order_id, "tracking_status": "InTransit"})
    track = raw(sandbox).get("/api/track", params={"order_number": "S-1"}).json()["results"]
    assert track["tracking_status"] == "InTransit" and track["tracking_events"][-1]["status"] == "In Transit"


def test_control_orders_filters_by_status(make_sandbox: Any) -> None:
    app = make_sandbox(seed_orders=4)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=BASE_URL) as control_client:
        everything = control_client.get("/_control/orders").json()
        waiting = control_client.get("/_control/orders", params={"status": "Unshipped,Saved"}).json()
        printed = control_client.get("/_control/orders", params={"status": "Printed"}).json()
    assert len(everything) == 4
    assert sorted(o["status"] for o in waiting) == ["Unshipped", "Unshipped"]
    assert [o["status"] for o in printed] == ["Printed", "Printed"]


def test_seeded_sandbox_has_shipped_and_unshipped_orders(make_sandbox: Any) -> None:
    app = make_sandbox(seed_orders=4)
    statuses = sorted(s.order["status"] for s in app.state.orders.values())
    assert statuses == ["Printed", "Printed", "Unshipped", "Unshipped"]
    assert json.loads(json.dumps(app.state.orders[100002].order))["packages"][0]["tracking_number"]
