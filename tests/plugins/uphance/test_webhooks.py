"""verify_webhook: unsigned Uphance webhooks, trusted by the secret in the callback URL, de-duplicated."""

from __future__ import annotations

import json

import pytest

from hub.channel import WebhookRequest
from hub.errors import AuthError, ContractError, ValidationError
from plugins.uphance.channel import UphanceChannel
from plugins.uphance.sandbox import DEFAULT_EMAIL, DEFAULT_PASSWORD
from tests.plugins.uphance.conftest import SETTINGS, WEBHOOK_SECRET, control, marketplace_order

WITHOUT_SECRET = {"email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD}


def request_for(payload, secret=WEBHOOK_SECRET):
    return WebhookRequest(headers={"Content-Type": "application/json"}, body=json.dumps(payload).encode(),
                          url_secret=secret)


def shipped_webhooks(make_sandbox, make_channel, repeat=1):
    app = make_sandbox(webhook_repeat=repeat)
    channel = make_channel(app, payment_term="PIA")
    created = channel.create_order(marketplace_order())
    ticket = next(iter(app.state.main.pick_tickets.values()))
    control(app, f"/_control/pick_tickets/{ticket['id']}/ship", carrier="australia_post", tracking_number="AP1")
    return channel, app.state.webhooks, created


def test_a_shipped_pick_ticket_asks_for_the_fulfilment_flow(make_sandbox, make_channel):
    channel, webhooks, _ = shipped_webhooks(make_sandbox, make_channel)
    actions = [channel.verify_webhook(request_for(payload)) for payload in webhooks]
    shipped = [action for action in actions if action is not None]
    assert [payload["event"] for payload in webhooks] == ["pick_ticket_create", "pick_ticket_update", "pick_ticket_update"]
    assert len(shipped) == 1  # creation and the tracking update are not shipments yet
    ticket = webhooks[-1]["pick_ticket"]
    assert shipped[0].flow == "fulfilment"
    assert shipped[0].params == {"order_number": "ICO-1001", "pick_ticket_id": ticket["id"]}
    assert shipped[0].delivery_id == f"pick_ticket:{ticket['id']}:{ticket['updated_at']}"


def test_a_repeated_delivery_carries_the_same_delivery_id(make_sandbox, make_channel):
    channel, webhooks, _ = shipped_webhooks(make_sandbox, make_channel, repeat=2)
    ids = [action.delivery_id for action in map(channel.verify_webhook, map(request_for, webhooks)) if action]
    assert len(ids) == 2 and len(set(ids)) == 1  # the hub drops the second by delivery_id


def test_a_wrong_or_missing_url_secret_is_refused(channel):
    payload = {"event": "pick_ticket_update", "pick_ticket": {"id": 1, "status": "shipped"}}
    with pytest.raises(AuthError, match="URL secret does not match"):
        channel.verify_webhook(request_for(payload, secret="guess"))
    with pytest.raises(AuthError, match="URL secret does not match"):
        channel.verify_webhook(request_for(payload, secret=None))


def test_the_secret_may_come_as_the_secret_query_parameter(channel):
    payload = {"event": "product_update", "product": {"id": 1001, "updated_at": "2026-05-01T00:00:00.000Z"}}
    request = WebhookRequest(headers={}, body=json.dumps(payload).encode(), query={"secret": WEBHOOK_SECRET})
    action = channel.verify_webhook(request)
    assert action.flow == "catalog" and action.params == {"product_id": 1001}


def test_an_account_without_a_webhook_secret_trusts_no_webhook(make_channel):
    with pytest.raises(AuthError, match="no webhook_secret is set"):
        make_channel(credentials=WITHOUT_SECRET).verify_webhook(request_for({"event": "x"}))


def test_the_webhook_secret_is_a_masked_credential_not_a_setting():
    assert "webhook_secret" in UphanceChannel.credentials_schema().fields and "webhook_secret" in UphanceChannel.secret_fields
    assert "webhook_secret" not in UphanceChannel.settings_schema().fields
    assert UphanceChannel.validate_credentials(WITHOUT_SECRET)["webhook_secret"] is None
    with pytest.raises(ValidationError, match="webhook_secret"):
        UphanceChannel.validate_credentials({**WITHOUT_SECRET, "webhook_secret": "short"})
    # an account saved before the move still loads: the old plain copy is accepted and left out
    assert "webhook_secret" not in UphanceChannel.validate_settings({**SETTINGS, "webhook_secret": WEBHOOK_SECRET})


def test_an_account_saved_before_the_move_still_verifies_with_its_settings_secret(make_channel):
    legacy = make_channel(credentials=WITHOUT_SECRET, webhook_secret=WEBHOOK_SECRET)
    payload = {"event": "product_update", "product": {"id": 1001, "updated_at": "2026-05-01T00:00:00.000Z"}}
    assert legacy.verify_webhook(request_for(payload)).flow == "catalog"
    with pytest.raises(AuthError, match="URL secret does not match"):
        legacy.verify_webhook(request_for(payload, secret="guess"))
    assert any("webhook_secret is kept in the settings" in p for p in legacy.test_connection()["problems"])
    assert not any("webhook_secret" in p for p in make_channel().test_connection()["problems"])


def test_the_credentials_secret_wins_over_an_old_settings_copy(make_channel):
    channel = make_channel(webhook_secret="old-settings-copy-0123456789")
    payload = {"event": "product_update", "product": {"id": 1001, "updated_at": "2026-05-01T00:00:00.000Z"}}
    assert channel.verify_webhook(request_for(payload)) is not None
    with pytest.raises(AuthError, match="URL secret does not match"):
        channel.verify_webhook(request_for(payload, secret="old-settings-copy-0123456789"))


def test_other_events_are_ignored_and_bad_bodies_named(channel):
    assert channel.verify_webhook(request_for({"event": "invoice_create", "invoice": {"id": 5}})) is None
    with pytest.raises(ContractError, match="not JSON"):
        channel.verify_webhook(WebhookRequest(headers={}, body=b"{nope", url_secret=WEBHOOK_SECRET))
    with pytest.raises(ContractError, match="carries no 'pick_ticket' object"):
        channel.verify_webhook(request_for({"event": "pick_ticket_update"}))


def test_an_unacknowledged_webhook_is_retried_by_the_sandbox(make_sandbox, make_channel):
    answers = iter([False, True, True, True, True])
    received = []

    def receiver(payload):
        received.append(payload)
        return next(answers)

    app = make_sandbox(deliver=receiver)
    make_channel(app, payment_term="PIA").create_order(marketplace_order())  # raises a pick ticket: one event
    assert len(app.state.undelivered) == 1
    assert control(app, "/_control/webhooks/retry") == {"delivered": 1, "undelivered": 0}
    assert received[0] == received[1] and received[0]["event"] == "pick_ticket_create"
