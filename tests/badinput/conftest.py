"""The web tests' world (two organisations, users of every role, the in-memory channel) reused here."""

from tests.web.conftest import (  # noqa: F401 - fixtures
    app,
    app_without_csrf,
    database_url,
    hub,
    plugin_manager,
    signed_in,
    world,
)
