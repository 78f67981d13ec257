"""The client: both keys, the envelope mapped onto hub errors, paging, and pacing per tier."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from hub.channel import AccountInfo, ChannelServices
from hub.errors import AuthError, ContractError, RateLimited, RejectedItem
from hub.ratelimit import RateLimiterRegistry
from hub.sandbox import Faults
from plugins.starshipit.client import PACING_HEADROOM, StarshipitClient
from plugins.starshipit.sandbox import API_KEY, DEVELOPER_KEY, PRODUCTION_KEY
from tests.plugins.starshipit.helpers import BASE_URL, FakeTime


def client_for(app_or_handler: Any, fake: FakeTime, *, tier: str = "developer", subscription: str = DEVELOPER_KEY,
               api_key: str = API_KEY) -> StarshipitClient:
    transport = (httpx.MockTransport(app_or_handler) if callable(app_or_handler) and not hasattr(app_or_handler, "state")
                 else httpx.WSGITransport(app=app_or_handler))
    services = ChannelServices(
        account=AccountInfo(id=2, organisation_id=1, name="c"), credentials={}, settings={}, transport=transport,
        sleep=fake.sleep, clock=fake.time,
        rate_limiter_registry=RateLimiterRegistry(clock=fake.monotonic, sleep=fake.sleep))
    return StarshipitClient(services, api_key=api_key, subscription_key=subscription, tier=tier, base_url=BASE_URL)


def test_every_call_carries_both_keys_and_json(fake: FakeTime) -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json={"orders": [], "total_pages": 0, "success": True})

    list(client_for(handler, fake, api_key="k-123456", subscription="s-654321").list_orders("shipped"))
    assert seen[0]["StarShipIT-Api-Key"] == "k-123456" and seen[0]["Ocp-Apim-Subscription-Key"] == "s-654321"
    assert seen[0]["Content-Type"] == "application/json"


def test_wrong_keys_are_auth_errors_with_the_gateway_or_envelope_message(sandbox: Any, fake: FakeTime) -> None:
    with pytest.raises(AuthError, match="invalid subscription key.*Settings > API"):
        client_for(sandbox, fake, subscription="nope").probe()
    with pytest.raises(AuthError, match="Unauthorized - The StarShipIT-Api-Key header is missing"):
        client_for(sandbox, fake, api_key="nope").probe()


@pytest.mark.parametrize("flag", ["success", "succeeded"])
def test_a_failed_envelope_is_a_rejected_item_with_message_and_details(fake: FakeTime, flag: str) -> None:
    body = {flag: False, "errors": [{"message": "Carrier error", "details": "Postcode 9999 is not serviced"}]}
    client = client_for(lambda request: httpx.Response(200, json=body), fake)
    with pytest.raises(RejectedItem, match="Carrier error - Postcode 9999 is not serviced"):
        client.update_order({"order_id": 1})


def test_succeeded_true_is_success(fake: FakeTime) -> None:
    client = client_for(lambda request: httpx.Response(200, json={"order": {"order_id": 5}, "succeeded": True}), fake)
    assert client.get_order(order_id="5") == {"order_id": 5}


def test_a_missing_order_is_none(sandbox: Any, fake: FakeTime) -> None:
    assert client_for(sandbox, fake).get_order(order_number="nope") is None
    assert client_for(sandbox, fake).track(order_number="nope") is None


def test_a_truncated_body_is_a_contract_error(make_sandbox: Any, fake: FakeTime) -> None:
    app = make_sandbox(faults=Faults(rate_malformed=1.0, seed=1))
    with pytest.raises(ContractError, match="not JSON"):
        client_for(app, fake).probe()


def test_a_list_without_total_pages_is_a_contract_error(fake: FakeTime) -> None:
    client = client_for(lambda request: httpx.Response(200, json={"orders": [], "success": True}), fake)
    with pytest.raises(ContractError, match="total_pages"):
        list(client.list_orders("shipped"))


def test_lists_page_250_at_a_time_to_the_end(make_sandbox: Any, fake: FakeTime) -> None:
    app = make_sandbox()
    for n in range(260):
        app.state.create({"order_number": f"L-{n}", "destination": {"name": "a", "street": "b", "country": "NZ"}})
    client = client_for(app, fake)
    numbers = [order["order_number"] for order in client.list_orders("unshipped")]
    assert numbers == [f"L-{n}" for n in range(260)]
    assert client.http.calls_by_path["/api/orders/unshipped"] == 2


@pytest.mark.parametrize("tier,key,rate", [("developer", DEVELOPER_KEY, 2), ("production", PRODUCTION_KEY, 20)])
def test_the_tier_paces_calls_so_the_sandbox_never_says_429(sandbox: Any, fake: FakeTime, tier: str, key: str,
                                                             rate: int) -> None:
    client = client_for(sandbox, fake, tier=tier, subscription=key)
    assert client.limits.requests_per_second == pytest.approx(rate * PACING_HEADROOM)
    for _ in range(30):
        client.probe()
    assert client.calls == 30  # no attempt was refused
    # never faster than the tier, and no slower than the headroom asks
    assert 29 / rate <= fake.elapsed == pytest.approx(29 / (rate * PACING_HEADROOM))


def test_a_production_rate_on_a_developer_key_is_slowed_by_429_retry_after(sandbox: Any, fake: FakeTime) -> None:
    client = client_for(sandbox, fake, tier="production", subscription=DEVELOPER_KEY)
    for _ in range(6):
        client.probe()
    assert client.calls > 6 and 1.0 in fake.sleeps  # the 429s were honoured, then every call passed


def test_429_forever_becomes_rate_limited_with_retry_after(make_sandbox: Any, fake: FakeTime) -> None:
    app = make_sandbox(faults=Faults(rate_429=1.0, retry_after=3, seed=1))
    with pytest.raises(RateLimited) as caught:
        client_for(app, fake).probe()
    assert caught.value.retry_after == 3


def test_keys_never_reach_the_logs(sandbox: Any, fake: FakeTime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    with pytest.raises(AuthError):
        client_for(sandbox, fake, subscription="secret-subscription-value").probe()
    assert "secret-subscription-value" not in caplog.text and API_KEY not in caplog.text


def test_import_reports_per_order(sandbox: Any, fake: FakeTime) -> None:
    good = {"order_number": "G-1", "destination": {"name": "a", "street": "b", "country": "Australia"}}
    bad = {"order_number": "B-1", "destination": {"name": "a", "country": "Australia"}}
    answer = client_for(sandbox, fake).import_orders([good, bad])
    assert [row["order_number"] for row in answer["orders"]] == ["G-1"]
    assert answer["errors"][0]["order_number"] == "B-1" and "destination.street" in answer["errors"][0]["details"]
    assert json.dumps(answer)  # plain data all the way down
