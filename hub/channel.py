"""The channel contract: what a plugin implements to connect one remote system to the hub.

A channel is a class. It declares who it is (``name``, ``title``), what it can do (``roles``), what
an admin must give it (``credentials_schema``, ``settings_schema`` — marshmallow schemas that drive
validation, the UI form and the API docs), how hard it may be pushed (``limits``), and implements the
channel hooks of its roles. The hub builds one instance per account and job, injecting services:
the account's decrypted credentials and settings, an HTTP client with retries and a rate limiter,
and a logger that redacts secrets.
"""

from __future__ import annotations

import enum
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import marshmallow
from marshmallow import Schema

from hub.errors import ConfigurationError, RejectedItem, ValidationError
from hub.records import Fulfilment, ItemResult, Listing, Order, Product, Return


class Role(str, enum.Enum):
    SOURCE = "source"  # catalogue and stock master
    MARKETPLACE = "marketplace"  # lists products, sells, sends orders
    ORDER_DESTINATION = "order_destination"  # receives marketplace orders
    FULFILMENT = "fulfilment"  # ships orders, reports carrier and tracking


@dataclass(frozen=True)
class Limits:
    """How hard the hub may push the remote API, from the channel's documentation."""

    max_batch: int = 100  # items per batch call (stock, price, listing updates)
    requests_per_second: float = 2.0  # the documented sustained rate
    burst: int = 10  # requests allowed back to back before the rate applies
    page_size: int = 100  # records per page when enumerating
    documented: str = ""  # where the numbers come from

    def batches(self, items: list[Any]) -> Iterator[list[Any]]:
        """Split ``items`` into batches of ``max_batch``: ceil(len / max_batch) calls, never one per item."""
        for start in range(0, len(items), self.max_batch):
            yield items[start : start + self.max_batch]


class EmptySchema(Schema):
    """For channels that need no credentials or settings."""


@dataclass
class AccountInfo:
    """What a channel may know about the account it serves (never the encrypted blob)."""

    id: int
    organisation_id: int
    name: str
    environment: str = "sandbox"
    base_url: str | None = None
    status: str = "setup"


@dataclass
class ChannelServices:
    """Hub services injected into a channel instance.

    ``transport`` replaces the network (tests pass ``httpx.WSGITransport(app=sandbox)``); ``sleep``
    and ``clock`` replace time so tests of Retry-After and token expiry never wait for real.
    """

    account: AccountInfo
    credentials: dict[str, Any]
    settings: dict[str, Any]
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("channelhub.channel"))
    transport: Any = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    rate_limiter_registry: Any = None  # hub.ratelimit.RateLimiterRegistry; None = the process-wide one

    def http_client(self, base_url: str, *, limits: Limits, secrets: Iterable[str] = (), **options: Any) -> Any:
        """A hub.http.HubHttpClient for this account: retries, Retry-After, rate limit, redacted logs.

        Every credential value is redacted from its logs, plus any ``secrets`` given (e.g. a token).
        """
        from hub.http import make_client

        return make_client(
            base_url=base_url,
            account_key=f"{self.account.organisation_id}:{self.account.id}:{base_url}",
            rate=limits.requests_per_second,
            burst=limits.burst,
            transport=self.transport,
            secrets=[*self.secret_values(), *secrets],
            logger=self.logger,
            sleep=self.sleep,
            wallclock=self.clock,
            registry=self.rate_limiter_registry,
            **options,
        )

    def secret_values(self) -> list[str]:
        return [str(value) for value in self.credentials.values() if isinstance(value, str) and len(value) >= 4]


@dataclass
class WebhookRequest:
    """An inbound webhook as the web layer received it, before anything trusts it.

    ``url_secret`` is the per-account secret carried in the callback URL, for channels whose
    callbacks are not signed (The Iconic, Uphance); ``body`` is the raw bytes a signature covers.
    """

    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)
    url_secret: str | None = None

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


@dataclass
class WebhookAction:
    """What a verified webhook asks the hub to do: run ``flow`` for the account with ``params``.

    ``delivery_id`` lets the hub drop a delivery it has already acted on (webhooks repeat).
    """

    flow: str
    params: dict[str, Any] = field(default_factory=dict)
    delivery_id: str | None = None


# Hooks a channel may implement; flows check ``implements`` before calling them.
OPTIONAL_HOOKS: tuple[str, ...] = (
    "create_orders", "cancel_order", "pull_cancellations", "pull_orders_by_id", "receive_return",
    "register_webhooks", "push_stock", "stock_session", "send_fulfilments",
)

# The hooks each role must implement; checked when a plugin registers its channel.
ROLE_HOOKS: dict[Role, tuple[str, ...]] = {
    Role.SOURCE: ("list_products",),
    Role.MARKETPLACE: ("push_listings", "pull_orders", "send_fulfilment", "list_listings"),
    Role.ORDER_DESTINATION: ("create_order", "pull_fulfilments"),
    Role.FULFILMENT: ("create_order", "pull_fulfilments"),
}


class Channel:
    """Base class of every channel. Subclass it, set the class attributes, implement your roles' hooks."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    roles: ClassVar[frozenset[Role]] = frozenset()
    credentials_schema: ClassVar[type[Schema]] = EmptySchema
    settings_schema: ClassVar[type[Schema]] = EmptySchema
    limits: ClassVar[Limits] = Limits()
    fulfilment_mandatory: ClassVar[bool] = False  # the marketplace requires tracking written back
    secret_fields: ClassVar[tuple[str, ...]] = ()  # credential fields never rendered back in full

    def __init__(self, services: ChannelServices) -> None:
        self.services = services
        self.account = services.account
        self.credentials = services.credentials
        self.settings = services.settings
        self.log = services.logger

    # -- validation -------------------------------------------------------

    @classmethod
    def validate_credentials(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Check credentials an admin entered; a ValidationError names each bad field."""
        return _load_with(cls.credentials_schema, data)

    @classmethod
    def validate_settings(cls, data: dict[str, Any]) -> dict[str, Any]:
        return _load_with(cls.settings_schema, data)

    @classmethod
    def has_role(cls, role: Role) -> bool:
        return role in cls.roles

    # -- hooks of every channel -------------------------------------------

    def test_connection(self) -> dict[str, Any]:
        """Authenticate and return what the account can see (shop name, locations, warehouses)."""
        raise NotImplementedError

    def verify_webhook(self, request: WebhookRequest) -> WebhookAction | None:
        """Authenticate an inbound webhook and say which targeted job it asks for (None: ignore it).

        Raise ``AuthError`` when the signature or URL secret is wrong; compare in constant time.
        """
        raise NotImplementedError

    # -- SOURCE -----------------------------------------------------------

    def list_products(self, since: datetime | None = None) -> Iterable[Product]:
        """Yield every Product (with Variants and stock per location) changed since ``since``.

        Pages to the end or raises; a partial enumeration must never look complete.
        """
        raise NotImplementedError

    # -- MARKETPLACE ------------------------------------------------------

    def push_listings(self, listings: list[Listing]) -> list[ItemResult]:
        """Create or update listings, price and quantity in batches of ``limits.max_batch``.

        Returns exactly one ItemResult per SKU given; a bad SKU never stops the others.
        """
        raise NotImplementedError

    def push_stock(self, listings: list[Listing]) -> list[ItemResult]:
        """Update quantity only. Defaults to ``push_listings``; override when the API has a cheaper call."""
        return self.push_listings(listings)

    def pull_orders(self, since: datetime | None = None) -> Iterable[Order]:
        """Yield Orders created or changed since ``since`` (new, cancelled, returned)."""
        raise NotImplementedError

    def send_fulfilment(self, order: Order, fulfilment: Fulfilment) -> ItemResult:
        """Write carrier and tracking (and status) for the fulfilment's lines. Idempotent."""
        raise NotImplementedError

    def list_listings(self) -> Iterable[Listing]:
        """A complete enumeration of what the marketplace shows; raise if any page fails."""
        raise NotImplementedError

    # -- ORDER_DESTINATION / FULFILMENT -----------------------------------

    def create_order(self, order: Order) -> ItemResult:
        """Create the order, first looking it up by its order number so a retry never duplicates it."""
        raise NotImplementedError

    def pull_fulfilments(self, since: datetime | None = None) -> Iterable[Fulfilment]:
        """Yield shipments (carrier, tracking, lines) made since ``since``."""
        raise NotImplementedError

    # -- optional hooks: the flows use them when a channel has them ------

    def create_orders(self, orders: list[Order]) -> list[ItemResult]:
        """Create many orders; one ItemResult per order. Override when the API has a batch import."""
        results = []
        for order in orders:
            try:
                results.append(self.create_order(order))
            except RejectedItem as error:
                results.append(ItemResult.rejected(order.order_number, str(error), field=error.field))
        return results

    def send_fulfilments(self, pairs: list[tuple[Order, Fulfilment]]) -> list[ItemResult]:
        """Write back many shipments (at most ``limits.max_batch``) in one go; one ItemResult per
        (order, fulfilment) pair, in input order. Override when the API lets shipments share requests
        (The Iconic reads the order items of the whole batch at once).

        A shipment the remote refuses is a rejected result and never stops the others; ``AuthError``
        and ``RateLimited`` still raise. Idempotent like ``send_fulfilment``. The default sends each.
        """
        results = []
        for order, fulfilment in pairs:
            try:
                results.append(self.send_fulfilment(order, fulfilment))
            except RejectedItem as error:
                results.append(ItemResult.rejected(order.order_number, str(error), field=error.field))
        return results

    def pull_orders_by_id(self, order_ids: list[str]) -> Iterable[Order]:
        """Yield just these orders (a webhook named them): a targeted pull that leaves the cursor alone."""
        raise NotImplementedError

    def cancel_order(self, order: Order, reason: str = "") -> ItemResult:
        """Cancel the order here (a marketplace cancels items; a destination deletes or voids it).

        Return a rejected ItemResult saying what the admin must do when it can no longer be
        cancelled (e.g. already shipped).
        """
        raise NotImplementedError

    def pull_cancellations(self, since: datetime | None = None) -> Iterable[Order]:
        """Yield orders the hub created here that were cancelled here since ``since``."""
        raise NotImplementedError

    def receive_return(self, ret: Return) -> ItemResult:
        """A marketplace return arrived: check the items back into stock here, once (idempotent)."""
        raise NotImplementedError

    def stock_session(self) -> AbstractContextManager[None]:
        """A context around one run's stock or listing pushes, for per-run caches (e.g. The Iconic's
        reserved units, read once per run rather than once per batch). The default does nothing."""
        return nullcontext()

    def register_webhooks(self, callback_url: str) -> list[str]:
        """Subscribe ``callback_url`` to the events this channel can push; return the topics."""
        raise NotImplementedError

    @classmethod
    def implements(cls, hook: str) -> bool:
        """True when this class overrides ``hook`` rather than inheriting the base's NotImplementedError."""
        return getattr(cls, hook, None) is not getattr(Channel, hook, None)


def check_channel_class(channel_class: Any) -> None:
    """Refuse a channel class that breaks the contract, saying what is wrong."""
    if not (isinstance(channel_class, type) and issubclass(channel_class, Channel)):
        raise ConfigurationError(f"{channel_class!r} is not a subclass of hub.channel.Channel")
    label = channel_class.__qualname__
    if not channel_class.name or not channel_class.name.isidentifier():
        raise ConfigurationError(f"channel {label} needs a `name` that is a plain identifier")
    if not channel_class.roles:
        raise ConfigurationError(f"channel {channel_class.name!r} declares no roles")
    for role in channel_class.roles:
        missing = [hook for hook in ROLE_HOOKS[Role(role)] if not channel_class.implements(hook)]
        if missing:
            raise ConfigurationError(
                f"channel {channel_class.name!r} has role {Role(role).value} but does not implement {', '.join(missing)}"
            )


def _load_with(schema_class: type[Schema], data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema_class().load(data or {})
    except marshmallow.ValidationError as error:
        messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        raise ValidationError(messages, field=next(iter(messages), None)) from None
