"""The hub as one object: configuration, database, credential box, plugins and runtime.

The CLI, the web app and the demo each build one with ``open_hub()``; library code below them takes
what it needs as arguments instead, so it stays testable without a process-wide hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from hub.config import Config, load_config
from hub.db import Database
from hub.plugins import ChannelhubPluginManager, get_plugin_manager
from hub.secrets import CredentialBox, load_or_create_key


@dataclass
class Hub:
    config: Config
    db: Database
    _runtime: object | None = field(default=None, repr=False)

    @cached_property
    def box(self) -> CredentialBox:
        return CredentialBox(load_or_create_key(self.config))

    @property
    def pm(self) -> ChannelhubPluginManager:
        return get_plugin_manager()

    @property
    def runtime(self):  # type: ignore[no-untyped-def]
        """The embedded pool or the RQ fleet, per configuration (created on first use, not started)."""
        if self._runtime is None:
            from hub.runtime import make_runtime

            self._runtime = make_runtime(self.config, self.db)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()  # type: ignore[attr-defined]
        self.db.dispose()


def open_hub(config: Config | None = None, *, migrate: bool | None = None) -> Hub:
    """A Hub for this process. The embedded SQLite database is migrated on open (nothing to run by
    hand on a laptop); a fleet's PostgreSQL is migrated by the operator with ``channelhub db upgrade``
    so that many processes starting at once never race to migrate it."""
    config = config or load_config()
    db = Database(config.database_url)
    if migrate if migrate is not None else db.is_sqlite:
        from hub.migrate import upgrade

        upgrade(db.engine)
    return Hub(config=config, db=db)
