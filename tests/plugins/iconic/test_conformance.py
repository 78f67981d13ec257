"""The Iconic channel passes the hub's channel contract (conformance kit)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from hub.channel import Channel, WebhookRequest
from hub.conformance import ChannelConformance, ErrorConformance, MarketplaceConformance, WebhookConformance
from hub.records import Listing
from plugins.iconic.channel import IconicChannel
from tests.plugins.iconic.conftest import BASE_URL, WEBHOOK_SECRET, dress, place_order


class TestIconicConformance(ChannelConformance, MarketplaceConformance, ErrorConformance, WebhookConformance):
    channel_class = IconicChannel

    @pytest.fixture
    def channel(self, make_channel: Any, sandbox: Any) -> IconicChannel:
        self._sandbox, self._make_channel = sandbox, make_channel
        self._control = httpx.Client(transport=httpx.WSGITransport(app=sandbox), base_url=BASE_URL)
        return make_channel()

    def conformance_set_faults(self, channel: Channel, **knobs: float) -> None:
        self._sandbox.faults.update(knobs)

    def conformance_http_calls(self, channel: Channel) -> int:
        return self._sandbox.total_calls

    def conformance_bad_credentials(self, channel: Channel) -> Channel:
        return self._make_channel(secret="well-formed-but-wrong-secret")

    def conformance_rejected(self, channel: Channel) -> Listing:
        return dress("CONF-NO-GENDER", "CONF-X", gender="")

    def conformance_webhook(self, channel: Channel) -> WebhookRequest:
        body = json.dumps({"event": "onOrderCreated", "payload": {"OrderId": 1001, "OrderNr": "300001001"}})
        return WebhookRequest(headers={"Content-Type": "application/json"}, body=body.encode(),
                              url_secret=WEBHOOK_SECRET)

    def conformance_listings(self, channel: Channel) -> list[Listing]:
        return [dress("CONF-8", "CONF", size="8"), dress("CONF-10", "CONF", size="10"),
                dress("CONF-TEE", "CONF-T", size="M", category="Men > T-Shirts", gender="Men")]

    def conformance_place_order(self, channel: Channel) -> str:
        channel.push_listings(self.conformance_listings(channel))
        return place_order(self._control, ("CONF-8", 2), ("CONF-TEE", 1))["number"]


def test_the_plugin_registers_its_channel() -> None:
    from plugins import iconic

    registered: list[type] = []
    iconic.channelhub_register_channels(registered.append)
    assert registered == [IconicChannel]
    assert IconicChannel.fulfilment_mandatory and IconicChannel.limits.max_batch == 100
