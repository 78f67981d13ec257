"""Writing to the append-only audit log and telling plugins about it.

Every notable thing the hub does (an account transition, a pushed quantity and why, a rejected SKU)
becomes an Event row and is broadcast through the ``channelhub_event`` hook.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from hub.models import Event

log = logging.getLogger("channelhub.events")


def emit(
    session: Session,
    *,
    organisation_id: int,
    kind: str,
    message: str,
    level: str = "info",
    actor: str = "system",
    account_id: int | None = None,
    run_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    """Add an event to the session (it is written with the caller's transaction) and broadcast it.

    The event is pending until the session's next flush: flush it yourself if you need its id.
    """
    event = Event(
        organisation_id=organisation_id,
        account_id=account_id,
        run_id=run_id,
        kind=kind,
        level=level,
        actor=actor,
        message=message,
        data=data or {},
    )
    # Not flushed here: a flow emits one event per order or SKU, and the session writes them
    # together (one multi-row INSERT) when it next flushes or commits.
    session.add(event)
    _broadcast(event)
    return event


def _broadcast(event: Event) -> None:
    # Imported late: the plugin manager loads entry points, which must not happen at import time.
    from hub.plugins import get_plugin_manager

    try:
        get_plugin_manager().hook.channelhub_event(event=event)
    except Exception:  # a broken notifier must never undo the work it reports on
        log.exception("a channelhub_event hook failed for event %s", event.kind)
