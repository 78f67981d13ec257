"""The hub's conformance kit, run against the Starshipit channel and its sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from hub.channel import Channel
from hub.conformance import ChannelConformance, DestinationConformance
from hub.records import Order
from plugins.starshipit.channel import StarshipitChannel
from tests.plugins.starshipit.helpers import control, make_order


class TestStarshipitConformance(ChannelConformance, DestinationConformance):
    channel_class = StarshipitChannel

    @pytest.fixture
    def channel(self, sandbox: Any, make_channel: Any) -> StarshipitChannel:
        built = make_channel(sandbox, settings={"default_courier": {"carrier": "AusPost", "service_code": "7B05"}})
        built.sandbox = sandbox  # type: ignore[attr-defined]
        return built

    def conformance_order(self, channel: Channel) -> Order:
        return make_order("CONF-1001")

    def conformance_ship(self, channel: Channel, order: Order, external_id: str | None) -> None:
        control(channel.sandbox, "dispatch", {"order_id": external_id, "tracking_number": "33CONF0001"})  # type: ignore[attr-defined]
