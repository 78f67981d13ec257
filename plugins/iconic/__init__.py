"""The Iconic marketplace plugin (Seller Center API v2): registers IconicChannel with the hub."""

from __future__ import annotations

from typing import Any

from hub.hookspecs import hookimpl


@hookimpl
def channelhub_register_channels(register: Any) -> None:
    from plugins.iconic.channel import IconicChannel

    register(IconicChannel)
