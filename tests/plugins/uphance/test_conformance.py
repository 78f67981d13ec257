"""The conformance kit for the Uphance channel: source and order destination."""

from __future__ import annotations

import pytest

from hub.conformance import ChannelConformance, DestinationConformance, SourceConformance
from plugins.uphance import channelhub_register_channels
from plugins.uphance.channel import UphanceChannel
from tests.plugins.uphance.conftest import control, marketplace_order


class TestUphanceConformance(ChannelConformance, SourceConformance, DestinationConformance):
    channel_class = UphanceChannel

    @pytest.fixture
    def channel(self, make_channel):
        return make_channel()

    def conformance_order(self, channel):
        return marketplace_order("ICO-CONF-1")

    def conformance_ship(self, channel, order, external_id):
        app = channel.services.transport.app
        control(app, f"/_control/sales_orders/{external_id}/confirm")
        ticket = next(t for t in app.state.main.pick_tickets.values() if t["order_number"] == order.order_number)
        control(app, f"/_control/pick_tickets/{ticket['id']}/ship", carrier="australia_post",
                tracking_number="AP0001")


def test_the_plugin_registers_the_channel():
    registered = []
    channelhub_register_channels(registered.append)
    assert registered == [UphanceChannel]
