"""Built-in plugin: copy every audit event to the ``channelhub.audit`` logger.

It is registered through the ``channelhub`` entry-point group like any third-party plugin, so the
event hook is exercised on every run and operators get events in their log pipeline for free.
"""

from __future__ import annotations

import logging
from typing import Any

from hub.hookspecs import hookimpl

log = logging.getLogger("channelhub.audit")

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@hookimpl
def channelhub_event(event: Any) -> None:
    log.log(
        _LEVELS.get(event.level, logging.INFO),
        "%s [%s] %s",
        event.kind,
        event.actor,
        event.message,
        extra={"organisation_id": event.organisation_id, "account_id": event.account_id},
    )
