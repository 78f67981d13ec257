"""Writing to the append-only audit log and telling plugins about it.

Every notable thing the hub does (an account transition, a pushed quantity and why, a rejected SKU)
becomes an Event row and is broadcast through the ``channelhub_event`` hook.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from hub.db import draw_ids
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


# A flow's batch emits one event per order or SKU. Left to itself the ORM writes them as one
# multi-row ``INSERT ... RETURNING id`` that psycopg parses anew every time (about 5 % of a worker's
# CPU in the order-flow benchmark). Numbered first, they go as one cached, pipelined executemany and
# keep their ids after the flush as before.
@sa_event.listens_for(Session, "before_flush")
def _number_new_events(session: Session, flush_context: object, instances: object) -> None:
    new = [obj for obj in session.new if isinstance(obj, Event) and obj.id is None]
    if len(new) < 2:
        return  # one event: the ORM's INSERT ... RETURNING is a single round trip as well
    ids = draw_ids(session, Event.__table__, len(new))
    if ids is None:
        return  # no sequence to draw from (SQLite): the ORM numbers them as it inserts
    for event, event_id in zip(new, ids, strict=True):
        event.id = event_id
