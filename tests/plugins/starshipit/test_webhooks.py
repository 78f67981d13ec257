"""Tracking webhooks: signed by the sandbox, verified in constant time, de-duplicated, a hint to poll."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.channel import WebhookRequest
from hub.errors import AuthError, ContractError
from plugins.starshipit.sandbox import sign
from tests.plugins.starshipit.helpers import Webhooks, control, make_order

SECRET = "whsec-starshipit-test"
HOOK_URL = "https://hub.example/webhooks/starshipit/1"


@pytest.fixture
def signed_sandbox(make_sandbox: Any) -> Any:
    return make_sandbox(webhook_url=HOOK_URL, webhook_secret=SECRET)


def deliveries(webhooks: Webhooks) -> list[WebhookRequest]:
    return [WebhookRequest(headers=headers, body=body) for _, headers, body in webhooks.sent]


def ship(app: Any, channel: Any, number: str, **dispatch: Any) -> None:
    channel.create_order(make_order(number))
    control(app, "dispatch", {"order_number": number, **dispatch})


def test_a_dispatch_sends_a_signed_webhook_that_becomes_a_fulfilment_job(
        signed_sandbox: Any, make_channel: Any, webhooks: Webhooks) -> None:
    channel = make_channel(signed_sandbox, webhook_secret=SECRET)
    ship(signed_sandbox, channel, "W-1", carrier="AusPost", tracking_number="33W1")
    [(url, headers, body)] = webhooks.sent
    payload = json.loads(body)
    assert url == HOOK_URL and headers["X-Starshipit-Signature"] == sign(SECRET, body)
    assert payload["carrier_name"] == "Australia Post" and payload["tracking_status"] == "Dispatched"
    action = channel.verify_webhook(deliveries(webhooks)[0])
    assert action is not None and action.flow == "fulfilment"
    assert action.params == {"order_number": "W-1", "tracking_number": "33W1", "tracking_status": "Dispatched",
                             "carrier": "auspost"}
    assert action.delivery_id and action.delivery_id.startswith("starshipit:")


def test_the_same_snapshot_has_the_same_delivery_id_and_a_new_status_a_new_one(
        signed_sandbox: Any, make_channel: Any, webhooks: Webhooks) -> None:
    channel = make_channel(signed_sandbox, webhook_secret=SECRET)
    ship(signed_sandbox, channel, "W-2", carrier="Fastways")
    first = deliveries(webhooks)[0]
    repeat = WebhookRequest(headers=dict(first.headers), body=first.body)
    control(signed_sandbox, "tracking", {"order_number": "W-2", "tracking_status": "InTransit"})
    ids = [channel.verify_webhook(request).delivery_id for request in (first, repeat, deliveries(webhooks)[1])]
    assert ids[0] == ids[1] != ids[2]
    assert channel.verify_webhook(deliveries(webhooks)[1]).params["carrier"] == "aramex"


@pytest.mark.parametrize("tamper", ["body", "signature", "missing"])
def test_a_bad_or_missing_signature_is_refused(signed_sandbox: Any, make_channel: Any, webhooks: Webhooks,
                                               tamper: str) -> None:
    channel = make_channel(signed_sandbox, webhook_secret=SECRET)
    ship(signed_sandbox, channel, "W-3")
    request = deliveries(webhooks)[0]
    if tamper == "body":
        request = WebhookRequest(headers=request.headers, body=request.body.replace(b"W-3", b"W-9"))
    elif tamper == "signature":
        request = WebhookRequest(headers={**request.headers, "X-Starshipit-Signature": "0" * 64}, body=request.body)
    else:
        request = WebhookRequest(headers={"Content-Type": "application/json"}, body=request.body)
    with pytest.raises(AuthError, match="X-Starshipit-Signature"):
        channel.verify_webhook(request)


def test_the_signature_header_is_found_in_any_case(signed_sandbox: Any, make_channel: Any, webhooks: Webhooks) -> None:
    channel = make_channel(signed_sandbox, webhook_secret=SECRET)
    ship(signed_sandbox, channel, "W-4")
    request = deliveries(webhooks)[0]
    lowered = WebhookRequest(headers={k.lower(): v.upper() for k, v in request.headers.items()}, body=request.body)
    assert channel.verify_webhook(lowered) is not None


def test_without_a_secret_webhooks_are_unsigned_and_accepted(make_sandbox: Any, make_channel: Any,
                                                             webhooks: Webhooks) -> None:
    app = make_sandbox(webhook_url=HOOK_URL)
    channel = make_channel(app)
    ship(app, channel, "W-5", carrier="CouriersPlease")
    request = deliveries(webhooks)[0]
    assert "X-Starshipit-Signature" not in request.headers
    assert channel.verify_webhook(request).params["carrier"] == "couriersplease"


@pytest.mark.parametrize("body,match", [(b"{not json", "not JSON"), (b"[]", "JSON object"),
                                        (b'{"tracking_status": "Delivered"}', "order_number")])
def test_malformed_webhooks_are_contract_errors(sandbox: Any, make_channel: Any, body: bytes, match: str) -> None:
    channel = make_channel(sandbox, webhook_secret=SECRET)
    with pytest.raises(ContractError, match=match):
        channel.verify_webhook(WebhookRequest(headers={"X-Starshipit-Signature": sign(SECRET, body)}, body=body))


def test_the_webhook_hint_and_the_poll_agree(signed_sandbox: Any, make_channel: Any, webhooks: Webhooks) -> None:
    channel = make_channel(signed_sandbox, webhook_secret=SECRET)
    ship(signed_sandbox, channel, "W-6", carrier="StarTrack", tracking_number="STW6")
    action = channel.verify_webhook(deliveries(webhooks)[0])
    fulfilment = channel.pull_fulfilment(action.params["order_number"])
    polled = [f for f in channel.pull_fulfilments(None) if f.order_number == "W-6"]
    assert fulfilment is not None and polled == [fulfilment]
    assert (fulfilment.carrier, fulfilment.tracking_number) == (action.params["carrier"], "STW6")
