"""Every hook a channelhub plugin can implement.

The docstrings here are the hook reference: ``docs/hooks.md`` is generated from them
(``channelhub docs hooks``); tests fail when a hook is undocumented, the page is stale, or no test
implements the hook (tests/test_hookdocs.py, tests/test_hooks.py).
Each docstring gives the hook's purpose, its arguments, what it returns and an example.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "channelhub"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def channelhub_register_channels(register: Any) -> None:
    """Register the channel classes this plugin provides.

    Call ``register(ChannelClass)`` once per :class:`hub.channel.Channel` subclass. The class's
    ``name`` must be unique across all loaded plugins.

    Example::

        @hookimpl
        def channelhub_register_channels(register):
            register(IconicChannel)
    """


@hookspec
def channelhub_transform_order(order: Any, account: Any) -> Any:
    """Change a canonical :class:`hub.records.Order` before it is routed to its destination.

    ``order`` is the Order about to be sent; ``account`` the marketplace ChannelAccount it came from.
    Return a new Order (or the same one changed) to use it, or ``None`` to leave it alone. Every
    plugin's implementation runs in turn, each seeing the previous one's result.

    Example (IDA-style: an extra line naming the channel)::

        @hookimpl
        def channelhub_transform_order(order, account):
            order.note = f"{order.note} via {account.name}".strip()
            return order
    """


@hookspec
def channelhub_transform_listing(listing: Any, account: Any) -> Any:
    """Change a canonical :class:`hub.records.Listing` before it is pushed to a marketplace.

    Return the changed Listing, or ``None`` to leave it alone. Runs after the hub has worked out
    price and quantity, before the fingerprint that decides whether anything changed.

    Example (a brand suffix on every title)::

        @hookimpl
        def channelhub_transform_listing(listing, account):
            listing.title = listing.title + " | Acme"
            return listing
    """


@hookspec
def channelhub_adjust_quantity(variant: Any, account: Any, quantity: int, explanation: list) -> int | None:
    """Change the quantity the hub is about to push for ``variant`` to ``account``.

    ``quantity`` is the number after the stock rule (basis - pending orders - reserve, never below
    zero). Return a new integer to replace it, or ``None`` to keep it; append a short human reason to
    ``explanation`` so the audit log can say why the pushed number is what it is. Negative results
    are clamped to zero by the hub.

    Example (never show more than 20 on a marketplace)::

        @hookimpl
        def channelhub_adjust_quantity(variant, account, quantity, explanation):
            if quantity > 20:
                explanation.append("capped at 20 by the cap plugin")
                return 20
    """


@hookspec
def channelhub_event(event: Any) -> None:
    """Observe an event written to the audit log (an :class:`hub.models.Event`).

    Called after the event is added to the database session. Use it for notifications, metrics or
    an external audit stream. An exception here is logged and never undoes the work reported on.

    Example (forward errors to a chat room)::

        @hookimpl
        def channelhub_event(event):
            if event.level == "error":
                post_to_chat(event.message)
    """


@hookspec
def channelhub_tick(db: Any, now: Any) -> None:
    """Do periodic housekeeping on every scheduler tick (embedded ticker or the fleet's scheduler).

    ``db`` is the hub's :class:`hub.db.Database`; ``now`` the tick's aware UTC datetime. Ticks come
    every few seconds, from one process at a time; keep the work short and idempotent, and queue
    anything long as a flow. An exception is logged and does not stop the tick.

    Example (send due notification digests)::

        @hookimpl
        def channelhub_tick(db, now):
            flush_due(db, now=now)
    """


@hookspec
def channelhub_register_routes(app: Any) -> None:
    """Add routes or blueprints to the Flask web app.

    Example::

        @hookimpl
        def channelhub_register_routes(app):
            app.register_blueprint(my_blueprint, url_prefix="/my-plugin")
    """


@hookspec
def channelhub_register_commands(cli: Any) -> None:
    """Add commands to the ``channelhub`` command-line interface (a click group).

    Example::

        @hookimpl
        def channelhub_register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hello")
    """
