"""Built-in plugin: ``channelhub demo``, the whole product on one machine.

The demo is the one piece that knows the built-in channels (it starts their sandboxes and wires
accounts between them), so it lives with the plugins and joins the command line through the
``channelhub_register_commands`` hook rather than the core knowing it.
"""

from __future__ import annotations

from typing import Any

import click

from hub.hookspecs import hookimpl


@hookimpl
def channelhub_register_commands(cli: Any) -> None:
    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=int, help="The admin UI's port.")
    @click.option("--sandbox-port", default=8101, show_default=True, type=int,
                  help="First of four ports for the Iconic, Shopify, Uphance and Starshipit sandboxes.")
    @click.option("--skus", default=1000, show_default=True, type=click.IntRange(min=30), help="Catalogue size.")
    @click.option("--orders-per-minute", default=6.0, show_default=True, type=click.FloatRange(min=0),
                  help="Marketplace orders the simulator places (0: none).")
    def demo(host: str, port: int, sandbox_port: int, skus: int, orders_per_minute: float) -> None:
        """The whole product on this machine: four sandboxes, a seeded catalogue, accounts in Testing,
        orders flowing and shipping, and the admin UI. Ctrl-C stops it; instance/ keeps the hub's state."""
        from hub.cli import current_hub
        from plugins.demo.runner import run_demo

        hub = current_hub()
        try:
            run_demo(hub, host=host, port=port, skus=skus, orders_per_minute=orders_per_minute,
                     sandbox_port=sandbox_port, out=click.echo)
        finally:
            hub.close()
