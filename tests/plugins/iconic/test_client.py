"""IconicClient against the sandbox: tokens, paging, error mapping and rate-limit pacing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hub.errors import AuthError, ConfigurationError, ContractError, RateLimited, RejectedItem, TransientError
from hub.testing import InFlight
from plugins.iconic.client import LIVE_URL, STAGING_URL, raise_mapped
from tests.plugins.iconic.conftest import FakeTime, calls, dress, place_order

TOKEN = "/oauth/client-credentials"


@pytest.fixture
def sandbox_settings() -> dict[str, Any]:
    return {"token_ttl": 120}


def test_one_token_serves_many_calls(channel, sandbox):
    for _ in range(3):
        channel.client.get("/v2/orders-shipment-providers")
    assert sandbox.state.token_requests == 1
    assert calls(sandbox, "GET", "/v2/orders-shipment-providers") == 3


def test_token_is_renewed_before_it_expires(channel, sandbox, fake: FakeTime):
    channel.client.get("/v2/category/tree")
    fake.advance(110)  # inside the token's last tenth: renew before the server would refuse it
    channel.client.get("/v2/category/tree")
    assert sandbox.state.token_requests == 2
    assert calls(sandbox, "GET", "/v2/category/tree") == 2  # no 401 was ever answered


def test_a_token_refused_early_is_renewed_once(channel, sandbox):
    channel.client.get("/v2/category/tree")
    sandbox.state.tokens.clear()  # revoked server-side
    assert channel.client.get("/v2/category/tree")
    assert sandbox.state.token_requests == 2
    assert calls(sandbox, "GET", "/v2/category/tree") == 3  # ok, 401, ok


def test_runs_in_one_process_share_the_accounts_token_until_it_runs_out(make_channel, sandbox, fake: FakeTime):
    network = httpx.WSGITransport(app=sandbox)  # one process's network: the runs' channels share it
    first, second = make_channel(transport=network), make_channel(transport=network)
    first.client.get("/v2/category/tree")
    second.client.get("/v2/category/tree")
    assert sandbox.state.token_requests == 1  # the second run did not start with a token round trip
    other_app = make_channel(transport=network, secret="another-secret-0000")
    with pytest.raises(AuthError):  # another application's credentials never borrow this token
        other_app.client.get("/v2/category/tree")
    fake.advance(110)  # inside the token's last tenth
    make_channel(transport=network).client.get("/v2/category/tree")
    assert sandbox.state.token_requests == 2  # renewed once
    assert calls(sandbox, "POST", TOKEN) == 3  # and the other application asked for its own


def test_a_shared_token_refused_with_401_is_replaced_once_for_every_run(make_channel, sandbox):
    network = httpx.WSGITransport(app=sandbox)
    first, second = make_channel(transport=network), make_channel(transport=network)
    first.client.get("/v2/category/tree")
    sandbox.state.tokens.clear()  # revoked server-side
    assert first.client.get("/v2/category/tree")  # 401, a fresh token, ok
    assert second.client.get("/v2/category/tree")  # takes the fresh one: no 401, no token request
    assert sandbox.state.token_requests == 2
    assert calls(sandbox, "GET", "/v2/category/tree") == 4


def test_a_sandbox_never_sees_a_token_another_sandbox_issued(make_channel, sandbox):
    make_channel().client.get("/v2/category/tree")
    make_channel().client.get("/v2/category/tree")  # a transport of its own: as if another sandbox
    assert sandbox.state.token_requests == 2


def test_token_request_uses_basic_auth_and_the_grant_type(sandbox):
    client = httpx.Client(transport=httpx.WSGITransport(app=sandbox), base_url="http://x")
    answer = client.post(TOKEN, auth=("sandbox-app", "sandbox-secret-0000"), data={"grant_type": "client_credentials"})
    assert answer.status_code == 200 and answer.json()["expires_in"] == 120
    wrong_grant = client.post(TOKEN, auth=("sandbox-app", "sandbox-secret-0000"), data={"grant_type": "password"})
    assert wrong_grant.status_code == 400


def test_bad_secret_is_an_auth_error_naming_the_place_to_fix_it(make_channel):
    channel = make_channel(secret="not-the-secret")
    with pytest.raises(AuthError, match="OAuth Applications"):
        channel.client.get("/v2/category/tree")


def test_a_token_that_keeps_being_refused_is_an_auth_error(channel, sandbox, monkeypatch):
    monkeypatch.setattr(sandbox.state, "check_bearer", _always_unauthorised)
    with pytest.raises(AuthError) as raised:
        channel.client.get("/v2/category/tree")
    assert raised.value.status == 401
    assert sandbox.state.token_requests == 2  # renewed exactly once


def _always_unauthorised(header: str | None) -> None:
    from plugins.iconic.sandbox import ApiError

    raise ApiError(401, "Unauthorized", "Access token has expired")


def test_paging_reads_to_the_end_by_total_count(channel, sandbox):
    brands = list(channel.client.paged("/v2/brands"))
    assert len(brands) == 1200 and len({b["id"] for b in brands}) == 1200
    assert calls(sandbox, "GET", "/v2/brands") == 12


def test_paging_takes_one_call_per_page_of_the_total(channel, sandbox):
    state = sandbox.state
    state.brands = state.brands[:150]
    assert len(list(channel.client.paged("/v2/brands"))) == 150
    assert calls(sandbox, "GET", "/v2/brands") == 2


def test_pages_after_the_first_can_be_read_several_at_a_time(channel, sandbox, monkeypatch):
    gauge = InFlight()
    monkeypatch.setattr(sandbox, "app", gauge.around(sandbox.app, only="/v2/brands", until=4, lead=1))
    brands = list(channel.client.paged("/v2/brands", in_flight=4))
    assert [b["id"] for b in brands] == [b["id"] for b in channel.client.paged("/v2/brands")]  # same order
    assert len({b["id"] for b in brands}) == 1200
    assert gauge.most == 4
    assert calls(sandbox, "GET", "/v2/brands") == 2 * 12


def fake_list(total: int, *, cap: int = 100, later_cap: int | None = None, grow_by: int = 0) -> Any:
    """A paged list's GET: pages of at most ``cap`` (``later_cap`` after the first); after the first
    page is read the list grows by ``grow_by``."""
    state = {"total": total, "offsets": []}

    def get(path: str, params: Any = None) -> Any:
        args = dict(params)
        offset = args["offset"]
        limit = min(args["limit"], cap if offset == 0 or later_cap is None else later_cap)
        state["offsets"].append(offset)
        body = {"items": [{"id": i} for i in range(offset, min(offset + limit, state["total"]))],
                "pagination": {"totalCount": state["total"]}}
        if offset == 0:
            state["total"] += grow_by
        return body

    return get, state


@pytest.mark.parametrize("total,cap,later_cap,grow_by,expected_calls", [
    (230, 100, None, 0, 3),    # full pages: offsets known from the first page's totalCount
    (230, 50, None, 0, 5),     # the server caps the page size: read one page after another, nothing skipped
    (230, 100, 50, 0, 5),      # ... or only pages after the first: from the short one on, one at a time
    (230, 100, None, 105, 4),  # the list grew while it was read: read on to its new end
    (100, 100, None, 0, 1),
])
def test_reading_pages_at_once_still_reads_each_item_once(channel, monkeypatch, total, cap, later_cap, grow_by,
                                                          expected_calls):
    get, state = fake_list(total, cap=cap, later_cap=later_cap, grow_by=grow_by)
    monkeypatch.setattr(channel.client, "get", get)
    ids = [item["id"] for item in channel.client.paged("/v2/brands", in_flight=4)]
    assert ids == list(range(total + grow_by))
    assert len(state["offsets"]) == expected_calls


@pytest.mark.parametrize("total,cap,expect,expected_calls", [
    (230, 100, 230, 3),  # as long as last time: the three pages at once, none wasted
    (250, 100, 230, 3),  # a little longer, same pages
    (350, 100, 150, 4),  # much longer: two pages at once, then the rest by the first page's totalCount
    (230, 100, 400, 4),  # shorter than expected: the page past the end comes back empty
    (230, 50, 230, 7),   # a server that caps pages: from the first short page, one page after another
    (0, 100, 230, 3),    # the list emptied
])
def test_an_expected_length_reads_its_pages_at_once_and_each_item_once(channel, monkeypatch, total, cap, expect,
                                                                     expected_calls):
    get, state = fake_list(total, cap=cap)
    monkeypatch.setattr(channel.client, "get", get)
    ids = [item["id"] for item in channel.client.paged("/v2/brands", in_flight=4, expect=expect)]
    assert ids == list(range(total))
    assert len(state["offsets"]) == expected_calls


def test_pages_of_an_expected_length_are_in_flight_together_from_the_start(channel, sandbox, monkeypatch):
    gauge = InFlight()
    monkeypatch.setattr(sandbox, "app", gauge.around(sandbox.app, only="/v2/brands", until=4))  # no lead
    brands = list(channel.client.paged("/v2/brands", in_flight=4, expect=1200))
    assert len({b["id"] for b in brands}) == 1200
    assert gauge.most == 4
    assert calls(sandbox, "GET", "/v2/brands") == 12


def test_a_failing_page_raises_instead_of_ending_the_list(channel, sandbox):
    pages = channel.client.paged("/v2/brands")
    first = [next(pages) for _ in range(100)]
    assert len(first) == 100
    sandbox.faults.update({"rate_5xx": 1.0})
    with pytest.raises(TransientError):
        list(pages)


# -- error mapping over the sandbox -------------------------------------------------------------


def test_400_validation_is_a_rejected_item_naming_the_field(channel):
    with pytest.raises(RejectedItem) as raised:
        channel.client.post("/v2/product-set", {"name": "X1", "sellerSku": "S", "brandId": 1,
                                                "primaryCategoryId": 11, "price": -1})
    assert raised.value.status == 400
    assert raised.value.field == "attributes.1"  # Gender is checked before price
    assert "Gender is mandatory" in str(raised.value)


def test_404_is_a_rejected_item(channel):
    with pytest.raises(RejectedItem) as raised:
        channel.client.get("/v2/orders/no-such-order")
    assert raised.value.status == 404 and raised.value.detail["title"] == "Not Found"


def test_409_duplicate_seller_sku_is_a_rejected_item(channel):
    channel.push_listings([dress("D-1")])
    body = {"name": "Again", "sellerSku": "D-1", "brandId": 1, "primaryCategoryId": 41, "price": 10}
    with pytest.raises(RejectedItem, match="already exists") as raised:
        channel.client.post("/v2/product-set", body)
    assert raised.value.status == 409 and raised.value.field == "sellerSku"


def test_422_mixed_order_batch_is_a_rejected_item(channel, control):
    channel.push_listings([dress("D-1", quantity=9)])
    first, second = place_order(control, ("D-1", 1)), place_order(control, ("D-1", 1))
    body = {"orderItems": [{"id": first["orderItemIds"][0]}, {"id": second["orderItemIds"][0]}],
            "deliveryType": "dropship", "shippingProvider": "Australia Post", "trackingNumber": "TRK1"}
    with pytest.raises(RejectedItem, match="same order") as raised:
        channel.client.post("/v2/orders/statuses/set-to-ready-to-ship", body)
    assert raised.value.status == 422


def test_server_errors_are_retried_then_transient(channel, sandbox, fake):
    channel.client.token()
    sandbox.faults.update({"rate_5xx": 1.0})
    with pytest.raises(TransientError):
        channel.client.get("/v2/category/tree")
    assert calls(sandbox, "GET", "/v2/category/tree") == 4  # the hub's retry policy, then give up


def test_a_truncated_body_is_transient(channel, sandbox):
    channel.client.token()
    sandbox.faults.update({"rate_malformed": 1.0})
    with pytest.raises(TransientError, match="not JSON"):
        channel.client.get("/v2/category/tree")


def test_a_list_without_pagination_is_a_contract_error(channel, monkeypatch):
    monkeypatch.setattr(channel.client, "get", lambda path, params=None: {"items": []})
    with pytest.raises(ContractError, match="totalCount"):
        list(channel.client.paged("/v2/brands"))


@pytest.mark.parametrize("status,error", [
    (400, RejectedItem), (401, AuthError), (403, AuthError), (404, RejectedItem), (409, RejectedItem),
    (422, RejectedItem), (429, RateLimited), (500, TransientError), (503, TransientError),
])
def test_every_general_error_status_maps_onto_the_hub_vocabulary(status, error):
    body = {"type": "about:blank", "title": "Problem", "status": status, "detail": "price: must be positive"}
    response = httpx.Response(status, json=body, headers={"Retry-After": "7"},
                              request=httpx.Request("GET", "https://x/v2/y"))
    with pytest.raises(error) as raised:
        raise_mapped(response)
    assert raised.value.status == status and raised.value.detail == body
    if error is RateLimited:
        assert raised.value.retry_after == 7
    if error is RejectedItem:
        assert raised.value.field == "price"


# -- rate limits --------------------------------------------------------------------------------


def test_429_retry_after_is_honoured_and_the_call_succeeds(channel, sandbox, fake):
    channel.client.token()
    sandbox.state.settings.quota = 3
    sandbox.state.settings.quota_window = 60
    for _ in range(5):
        channel.client.get("/v2/orders-failure-reasons")
    waits = [s for s in fake.sleeps if s >= 1]
    assert waits and all(w <= 60 for w in waits)  # slept the server's Retry-After, not a guess
    assert calls(sandbox, "GET", "/v2/orders-failure-reasons") > 5  # the refused attempts were replayed


def test_persistent_429_becomes_rate_limited_with_the_servers_wait(channel, sandbox):
    channel.client.token()
    sandbox.faults.update({"rate_429": 1.0, "retry_after": 2})
    with pytest.raises(RateLimited) as raised:
        channel.client.get("/v2/category/tree")
    assert raised.value.retry_after == 2


@pytest.mark.parametrize(("settings", "waited"), [
    ({}, (41 - 25) / 25),  # the default: 25/s (py-iconic-api's convention), a burst of one second's worth
    ({"requests_per_second": 10}, (41 - 10) / 10),  # the account's own setting
])
def test_the_token_bucket_paces_bursts_at_the_accounts_rate(make_channel, fake, settings, waited):
    channel = make_channel(settings)
    for _ in range(40):
        channel.client.get("/v2/orders-shipment-providers")
    # 40 calls + the token request: those beyond the burst waited for tokens on the fake clock.
    assert sum(fake.sleeps) == pytest.approx(waited, abs=0.1)


# -- hosts --------------------------------------------------------------------------------------


def test_hosts_follow_the_account(make_channel):
    assert make_channel(base_url=None, environment="production").base_url() == LIVE_URL
    assert make_channel(base_url=None, environment="production", settings={"connect_to_staging": True}).base_url() == STAGING_URL
    assert make_channel(base_url=None, environment="staging").base_url() == STAGING_URL
    assert make_channel(base_url="http://localhost:5001/").base_url() == "http://localhost:5001"
    with pytest.raises(ConfigurationError):
        make_channel(base_url=None, environment="sandbox").base_url()


def test_the_access_token_never_reaches_the_logs(channel, sandbox, caplog):
    caplog.set_level("DEBUG")
    channel.client.get("/v2/category/tree")
    token = next(iter(sandbox.state.tokens))
    assert token not in caplog.text and "sandbox-secret-0000" not in caplog.text
