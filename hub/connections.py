"""Opening a channel for an account: the one place that decrypts credentials and wires hub services.

Flows never build channels themselves; they ask the process's ``Connector``, which knows the
credential key, the plugin manager, and any in-process transports (tests and the embedded demo
reach WSGI sandboxes through ``httpx.WSGITransport`` registered here by base URL).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.channel import AccountInfo, Channel, ChannelServices, Role
from hub.config import Config, load_config
from hub.errors import ConfigurationError
from hub.http import RedactingFilter
from hub.models import ChannelAccount
from hub.netpolicy import check_base_url
from hub.plugins import ChannelhubPluginManager, get_plugin_manager
from hub.secrets import CredentialBox, load_or_create_key

log = logging.getLogger("channelhub.connections")


@dataclass
class Connector:
    box: CredentialBox
    pm: ChannelhubPluginManager
    transports: dict[str, Any] = field(default_factory=dict)  # base URL (or plugin name) -> httpx transport
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time

    def channel_class(self, account: ChannelAccount) -> type[Channel]:
        return self.pm.channel_class(account.plugin)

    def open(self, account: ChannelAccount) -> Channel:
        """A channel instance for ``account`` with decrypted credentials and the hub's services.

        A non-sandbox account's base URL is checked again here, not only when saved: its name may
        have come to resolve to an internal address since (DNS rebinding).
        """
        channel_class = self.channel_class(account)
        if account.base_url:
            check_base_url(account.base_url, _value(account.environment))
        credentials = self.box.decrypt(account.credentials_encrypted) if account.credentials_encrypted else {}
        services = ChannelServices(
            account=account_info(account),
            credentials=credentials,
            settings=dict(account.settings or {}),
            logger=_channel_logger(account, credentials),
            transport=self._transport_for(account),
            sleep=self.sleep,
            clock=self.clock,
        )
        return channel_class(services)

    def register_transport(self, key: str, transport: Any) -> None:
        """Route an account's HTTP to ``transport`` when its base URL (or plugin name) is ``key``."""
        self.transports[key.rstrip("/")] = transport

    def _transport_for(self, account: ChannelAccount) -> Any:
        if account.base_url and account.base_url.rstrip("/") in self.transports:
            return self.transports[account.base_url.rstrip("/")]
        return self.transports.get(account.plugin)


def has_role(account: ChannelAccount, *roles: Role) -> bool:
    """True when the account's channel (if its plugin is loaded) has any of ``roles``."""
    try:
        channel_class = get_connector().channel_class(account)
    except ConfigurationError:
        return False
    return any(channel_class.has_role(role) for role in roles)


def _value(member: object) -> str:
    return str(getattr(member, "value", member))


def account_info(account: ChannelAccount) -> AccountInfo:
    return AccountInfo(
        id=account.id,
        organisation_id=account.organisation_id,
        name=account.name,
        environment=account.environment.value if hasattr(account.environment, "value") else str(account.environment),
        base_url=account.base_url,
        status=account.status.value if hasattr(account.status, "value") else str(account.status),
    )


def _channel_logger(account: ChannelAccount, credentials: dict[str, Any]) -> logging.Logger:
    logger = logging.getLogger(f"channelhub.channel.{account.plugin}.{account.id}")
    secrets = [str(v) for v in credentials.values() if isinstance(v, str) and len(v) >= 4]
    existing = next((f for f in logger.filters if isinstance(f, RedactingFilter)), None)
    if existing is None:
        logger.addFilter(RedactingFilter(secrets))
    else:
        existing.add_secrets(secrets)
    return logger


_lock = threading.Lock()
_current: Connector | None = None


def build_connector(config: Config | None = None) -> Connector:
    config = config or load_config()
    return Connector(box=CredentialBox(load_or_create_key(config)), pm=get_plugin_manager())


def get_connector() -> Connector:
    """The process-wide connector, built from the environment on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = build_connector()
        return _current


def set_connector(connector: Connector | None) -> None:
    """Replace (or with None, forget) the process-wide connector; tests and the demo use this."""
    global _current
    with _lock:
        _current = connector


def open_channel(account: ChannelAccount) -> Channel:
    """Shorthand flows use: the process connector opens the account's channel."""
    return get_connector().open(account)
