"""``channelhub web``: joins the command line through the ``channelhub_register_commands`` hook,
so the core's CLI knows nothing of the web app (it is registered as a built-in plugin)."""

from __future__ import annotations

from typing import Any

import click

from hub.hookspecs import hookimpl


@hookimpl
def channelhub_register_commands(cli: Any) -> None:
    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=int)
    def web(host: str, port: int) -> None:
        """Serve the admin UI, the REST API and the webhook endpoint."""
        from hub.cli import current_hub
        from hub.memory import freeze_startup_objects
        from web import serve

        hub = current_hub()
        freeze_startup_objects()
        if not hub.config.fleet:
            hub.runtime.start()  # embedded: this process also runs the jobs and the schedules
        click.echo(f"channelhub web on http://{host}:{port}/ (Ctrl-C stops)")
        try:
            serve(hub, host=host, port=port)
        finally:
            hub.close()
