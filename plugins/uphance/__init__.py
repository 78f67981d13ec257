"""The Uphance plugin: catalogue and stock master, and destination of marketplace orders."""

from __future__ import annotations

from typing import Any

from hub.hookspecs import hookimpl

from plugins.uphance.channel import UphanceChannel


@hookimpl
def channelhub_register_channels(register: Any) -> None:
    register(UphanceChannel)
