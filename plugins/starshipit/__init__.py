"""Starshipit: marketplace orders go in for fulfilment; carrier and tracking come back."""

from __future__ import annotations

from typing import Any

from hub.hookspecs import hookimpl
from plugins.starshipit.channel import StarshipitChannel


@hookimpl
def channelhub_register_channels(register: Any) -> None:
    register(StarshipitChannel)
