"""Helpers of the security tests: the built-in plugins next to the in-memory one, and event lookups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

import plugins.shopify
import plugins.starshipit
import plugins.uphance
from hub.app import Hub
from hub.models import Event, SyncRun
from hub.plugins import ChannelhubPluginManager, set_plugin_manager
from tests.memory_channel import MemoryPlugin

BUILT_IN = {"shopify": plugins.shopify, "uphance": plugins.uphance, "starshipit": plugins.starshipit}


def built_in_plugin_manager() -> Iterator[ChannelhubPluginManager]:
    """Body of a ``plugin_manager`` fixture override: memory plus the finished built-in channels."""
    pm = ChannelhubPluginManager()
    pm.register_plugin(MemoryPlugin(), "memory")
    for name, module in BUILT_IN.items():
        pm.register_plugin(module, name)
    set_plugin_manager(pm)
    yield pm
    set_plugin_manager(None)


def events(hub: Hub, kind: str, account_id: int | None = None) -> list[Event]:
    with hub.db.session() as session:
        query = select(Event).where(Event.kind == kind).order_by(Event.id)
        if account_id is not None:
            query = query.where(Event.account_id == account_id)
        return list(session.scalars(query))


def webhook_runs(hub: Hub, account_id: int) -> list[tuple[int, str, Any]]:
    with hub.db.session() as session:
        runs = session.scalars(select(SyncRun).where(SyncRun.account_id == account_id, SyncRun.trigger == "webhook"))
        return [(run.id, run.flow, run.status.value) for run in runs]
