"""Shopify (GraphQL Admin API 2026-07): catalogue and stock master, destination of marketplace orders."""

from hub.hookspecs import hookimpl

from .channel import ShopifyChannel


@hookimpl
def channelhub_register_channels(register):  # type: ignore[no-untyped-def]
    register(ShopifyChannel)
