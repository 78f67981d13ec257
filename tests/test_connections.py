"""Opening a channel: credentials decrypted, services injected, the base URL checked at connect time."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from hub.connections import Connector, has_role
from hub.channel import Role
from hub.errors import ValidationError
from hub.models import ChannelAccount, Environment
from hub.plugins import ChannelhubPluginManager
from hub.secrets import CredentialBox
from tests.memory_channel import MemoryChannel, MemoryPlugin


@pytest.fixture
def connector() -> Connector:
    pm = ChannelhubPluginManager()
    pm.register_plugin(MemoryPlugin(), "memory")
    return Connector(box=CredentialBox(Fernet.generate_key()), pm=pm)


def account(connector: Connector, **columns) -> ChannelAccount:
    defaults = dict(id=7, organisation_id=1, name="Mem", plugin="memory", environment=Environment.SANDBOX,
                    settings={"remote": "connections"},
                    credentials_encrypted=connector.box.encrypt({"token": "tok-secret-123"}))
    return ChannelAccount(**{**defaults, **columns})


def test_the_channel_gets_decrypted_credentials_and_settings(connector):
    channel = connector.open(account(connector))
    assert isinstance(channel, MemoryChannel)
    assert channel.credentials == {"token": "tok-secret-123"}
    assert channel.settings == {"remote": "connections"} and channel.account.id == 7


def test_a_sandbox_account_may_use_loopback(connector):
    assert connector.open(account(connector, base_url="http://127.0.0.1:8101"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8101", "https://10.0.0.5/api", "https://localhost/"])
def test_a_production_account_pointing_inwards_is_refused_at_connect_time(connector, url):
    with pytest.raises(ValidationError) as caught:
        connector.open(account(connector, environment=Environment.PRODUCTION, base_url=url))
    assert caught.value.field == "base_url"


def test_registered_transports_are_found_by_base_url_then_plugin(connector):
    by_url, by_plugin = object(), object()
    connector.register_transport("http://127.0.0.1:9/", by_url)
    connector.register_transport("memory", by_plugin)
    assert connector.open(account(connector, base_url="http://127.0.0.1:9")).services.transport is by_url
    assert connector.open(account(connector)).services.transport is by_plugin


def test_has_role_is_false_for_an_unloaded_plugin(connector, monkeypatch):
    import hub.connections

    monkeypatch.setattr(hub.connections, "get_connector", lambda: connector)
    assert has_role(account(connector), Role.MARKETPLACE)
    assert not has_role(account(connector, plugin="gone"), Role.MARKETPLACE)
