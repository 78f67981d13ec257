"""The conformance kit: the tests every channel must pass, whoever wrote it.

A plugin's test module composes the classes for its channel's roles and provides a ``channel``
fixture (a fresh instance wired to a fresh sandbox) plus the few sandbox actions a role needs::

    from hub.conformance import ChannelConformance, MarketplaceConformance

    class TestIconicConformance(ChannelConformance, MarketplaceConformance):
        channel_class = IconicChannel

        @pytest.fixture
        def channel(self):
            return make_channel_against_a_fresh_sandbox()

        def conformance_listings(self, channel):
            return [Listing(...), ...]          # SKUs the sandbox can accept

        def conformance_place_order(self, channel):
            ...                                 # place an order in the sandbox; return its order number

``ChannelConformance.test_every_role_is_covered`` fails when a role's class is missing, so a channel
cannot pass by leaving a role untested.

Three more suites are opt-in, because they need more from the test class than the role suites do
(an HTTP call counter, the sandbox's fault knobs, a genuine webhook); ``channelhub plugin new``
composes all of them, and ``docs/plugin-kit.md`` lists what each checks:

- ``BatchingConformance``: pushes take ``ceil(n / limits.max_batch)`` calls, never one per SKU and
  never more than a batch per call; enumerations page to the end.
- ``ErrorConformance``: refused credentials, 429, 5xx, timeouts, dropped connections, malformed
  bodies and a refused item each come out as the right class of ``hub.errors``.
- ``WebhookConformance``: a genuine webhook is accepted, every forgery of it refused with AuthError.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, TypeVar

from hub.channel import Channel, Role, WebhookAction, WebhookRequest, check_channel_class
from hub.errors import AuthError, ChannelError, ContractError, RateLimited, RejectedItem, TransientError
from hub.http import is_sensitive_header
from hub.records import Fulfilment, ItemResult, Listing, Order, Product, validate_record

ROLE_SUITES: dict[Role, str] = {
    Role.SOURCE: "SourceConformance",
    Role.MARKETPLACE: "MarketplaceConformance",
    Role.ORDER_DESTINATION: "DestinationConformance",
    Role.FULFILMENT: "DestinationConformance",
}


class ChannelConformance:
    """What every channel, whatever its roles, must do."""

    channel_class: type[Channel]

    def test_class_meets_the_contract(self) -> None:
        check_channel_class(self.channel_class)
        assert self.channel_class.title, "a channel needs a human title for the UI"
        assert self.channel_class.limits.max_batch >= 1

    def test_every_role_is_covered(self) -> None:
        suites = {cls.__name__ for cls in type(self).__mro__}
        missing = {ROLE_SUITES[Role(role)] for role in self.channel_class.roles} - suites
        assert not missing, f"compose {', '.join(sorted(missing))} into this test class"

    def test_connection_reports_what_it_sees(self, channel: Channel) -> None:
        seen = channel.test_connection()
        assert isinstance(seen, dict) and seen, "test_connection must return what the account can see"

    def test_credentials_schema_requires_something(self) -> None:
        from hub.errors import ValidationError

        schema_fields = self.channel_class.credentials_schema().fields
        if any(field.required for field in schema_fields.values()):
            try:
                self.channel_class.validate_credentials({})
            except ValidationError as error:
                assert error.field in schema_fields
            else:
                raise AssertionError("empty credentials must be refused, naming the field")

    def test_secret_fields_name_credentials(self) -> None:
        # A misspelt secret field would be rendered back in full in the UI.
        schema_fields = self.channel_class.credentials_schema().fields
        unknown = [name for name in self.channel_class.secret_fields if name not in schema_fields]
        assert not unknown, f"secret_fields names {', '.join(unknown)}, which the credentials schema lacks"

    def test_limits_are_usable(self) -> None:
        limits = self.channel_class.limits
        assert limits.page_size >= 1, "limits.page_size must be at least 1"
        assert limits.requests_per_second > 0 and limits.burst >= 1, "the rate limiter needs a rate and a burst"


class SourceConformance:
    def test_list_products_yields_valid_products(self, channel: Channel) -> None:
        products = list(channel.list_products(None))
        assert products, "the sandbox's seed catalogue should yield products"
        for product in products:
            assert isinstance(product, Product)
            validate_record(product)
        skus = [variant.sku for product in products for variant in product.variants]
        assert skus, "products must carry their variants"

    def test_list_products_since_the_future_is_empty(self, channel: Channel) -> None:
        assert list(channel.list_products(datetime(2999, 1, 1, tzinfo=timezone.utc))) == []


class MarketplaceConformance:
    def conformance_listings(self, channel: Channel) -> list[Listing]:
        raise NotImplementedError("return listings the sandbox accepts")

    def conformance_place_order(self, channel: Channel) -> str:
        raise NotImplementedError("place an order in the sandbox and return its order number")

    def test_pushing_nothing_answers_nothing(self, channel: Channel) -> None:
        assert list(channel.push_listings([])) == [], "push_listings([]) must answer []"

    def test_push_listings_answers_once_per_sku(self, channel: Channel) -> None:
        listings = self.conformance_listings(channel)
        results = channel.push_listings(listings)
        assert all(isinstance(result, ItemResult) for result in results)
        assert sorted(result.key for result in results) == sorted(listing.sku for listing in listings)

    def test_listings_appear_in_the_enumeration(self, channel: Channel) -> None:
        listings = self.conformance_listings(channel)
        pushed = {r.key for r in channel.push_listings(listings) if r.ok}
        enumerated = {listing.sku for listing in channel.list_listings()}
        assert pushed <= enumerated

    def test_pulled_orders_are_valid(self, channel: Channel) -> None:
        number = self.conformance_place_order(channel)
        orders = list(channel.pull_orders(None))
        assert number in {order.order_number for order in orders}
        for order in orders:
            assert isinstance(order, Order)
            validate_record(order)

    def test_pulling_twice_yields_the_same_orders_once_each(self, channel: Channel) -> None:
        self.conformance_place_order(channel)
        first = [order.channel_order_id for order in channel.pull_orders(None)]
        second = [order.channel_order_id for order in channel.pull_orders(None)]
        assert len(first) == len(set(first)) and set(first) == set(second)


class DestinationConformance:
    def conformance_order(self, channel: Channel) -> Order:
        raise NotImplementedError("return a canonical order the sandbox can take (known SKUs)")

    def conformance_ship(self, channel: Channel, order: Order, external_id: str | None) -> None:
        raise NotImplementedError("ship the order in the sandbox with a carrier and tracking number")

    def test_create_order_is_idempotent(self, channel: Channel) -> None:
        order = self.conformance_order(channel)
        first = channel.create_order(order)
        second = channel.create_order(order)
        assert first.ok and second.ok, (first.message, second.message)
        assert first.external_id and first.external_id == second.external_id

    def test_create_order_answers_for_that_order(self, channel: Channel) -> None:
        order = self.conformance_order(channel)
        result = channel.create_order(order)
        assert isinstance(result, ItemResult)
        assert result.key == order.order_number, "an order's ItemResult is keyed by its order number"

    def test_shipments_come_back_with_tracking(self, channel: Channel) -> None:
        order = self.conformance_order(channel)
        created = channel.create_order(order)
        self.conformance_ship(channel, order, created.external_id)
        shipments: list[Any] = [f for f in channel.pull_fulfilments(None) if f.order_number == order.order_number]
        assert shipments, "the shipped order must come back from pull_fulfilments"
        for shipment in shipments:
            assert isinstance(shipment, Fulfilment)
            validate_record(shipment)
            assert shipment.carrier and shipment.tracking_number


# -- opt-in suites -------------------------------------------------------------------------------

E = TypeVar("E", bound=BaseException)

# Faults for the "occasional 429" check. FaultMiddleware draws one number per request from
# random.Random(seed); with this seed the very first request draws a 429 and no two requests in a row
# do for the next 500, so a client that waits out a single Retry-After always gets through.
# tests/test_testing_kit.py pins this property against hub.sandbox.
OCCASIONAL_429_SEED = 1793
OCCASIONAL_429 = {"rate_429": 0.1, "retry_after": 1.0, "seed": OCCASIONAL_429_SEED}
PERSISTENT_RETRY_AFTER = 2.0
# A header that signs a webhook's body (X-Shopify-Hmac-Sha256, X-Hub-Signature-256, X-Sig).
_SIGNATURE_HEADER = re.compile(r"(?i)signature|hmac|(?:^|-)sig(?:-|$)")


def _expect(expected: type[E], action: Callable[[], object], what: str) -> E:
    """Run ``action`` and return the ``expected`` error it raises; any other outcome fails, saying what happened."""
    try:
        action()
    except expected as error:
        return error
    except Exception as error:  # noqa: BLE001 - the wrong class is exactly what the suite reports
        raise AssertionError(f"{what}: expected {expected.__name__}, got {type(error).__name__}: {error}") from error
    raise AssertionError(f"{what}: expected {expected.__name__}, but the call succeeded")


def _require_fake_sleep(channel: Channel) -> None:
    # Retries back off for seconds; on real time each of these checks would stall the test run.
    assert channel.services.sleep is not time.sleep, (
        "build the channel's services with a fake sleep (hub.testing.make_services does) so retries do not wait"
    )


class BatchingConformance:
    """Opt-in, for MARKETPLACE channels: batches within ``limits``, enumerations to the last page.

    Needs ``conformance_http_calls(channel)`` (HTTP calls made so far: the client's ``.calls`` or the
    sandbox FaultMiddleware's ``.total_calls``), ``conformance_many_listings(channel, count)`` and
    ``conformance_place_order`` from MarketplaceConformance (a new order number on every call).
    """

    # HTTP calls one batch takes, for APIs that write listing, price and stock through separate
    # endpoints (or look SKUs up before writing). The floor stays ceil(n / max_batch) either way.
    conformance_calls_per_batch: int = 1
    conformance_stock_calls_per_batch: int = 1

    def conformance_http_calls(self, channel: Channel) -> int:
        raise NotImplementedError("return how many HTTP calls the channel has made so far")

    def conformance_many_listings(self, channel: Channel, count: int) -> list[Listing]:
        raise NotImplementedError("return `count` listings with distinct SKUs that the sandbox accepts")

    # MarketplaceConformance's hook, declared but not defined: a stub here could shadow the test
    # class's own implementation when a mixin holding it comes later in the bases.
    conformance_place_order: Callable[[Channel], str]

    def conformance_page_size(self, channel: Channel) -> int:
        """Records per page the channel asks for; override when it is not ``limits.page_size``."""
        return channel.limits.page_size

    def _counted(self, channel: Channel, action: Callable[[], Any]) -> tuple[Any, int]:
        before = self.conformance_http_calls(channel)
        outcome = action()
        return outcome, self.conformance_http_calls(channel) - before

    def _warm_up(self, channel: Channel) -> None:
        # One-off calls (a token, a category tree) are paid here, so only per-batch calls are counted.
        channel.test_connection()
        channel.push_listings(self.conformance_many_listings(channel, 1))

    def _assert_batched(self, listings: list[Listing], results: list[ItemResult], made: int, channel: Channel,
                        per_batch: int, hook: str) -> None:
        assert sorted(r.key for r in results) == sorted(item.sku for item in listings), f"{hook}: one ItemResult per SKU"
        refused = [f"{r.key}: {r.message}" for r in results if not r.ok]
        assert not refused, f"{hook} refused listings the sandbox should take: {refused[:3]}"
        batches = math.ceil(len(listings) / channel.limits.max_batch)
        assert made >= batches, (
            f"{hook} sent {len(listings)} listings in {made} call(s); limits.max_batch={channel.limits.max_batch} "
            f"needs at least {batches}"
        )
        assert made <= batches * per_batch, (
            f"{hook} made {made} calls for {batches} batch(es) of at most {channel.limits.max_batch}; "
            f"expected at most {batches * per_batch} (never one call per SKU)"
        )

    def test_push_listings_batches_within_limits(self, channel: Channel) -> None:
        # Counted on an update of listings already there: the design's rule is about what changed, and
        # some marketplaces create products one parent at a time (The Iconic's product sets).
        self._warm_up(channel)
        listings = self.conformance_many_listings(channel, 2 * channel.limits.max_batch + 1)
        channel.push_listings(listings)
        repriced = [replace(listing, price=listing.price + 1, quantity=listing.quantity + 1) for listing in listings]
        results, made = self._counted(channel, lambda: list(channel.push_listings(repriced)))
        self._assert_batched(repriced, results, made, channel, self.conformance_calls_per_batch, "push_listings")

    def test_push_stock_batches_within_limits(self, channel: Channel) -> None:
        self._warm_up(channel)
        listings = self.conformance_many_listings(channel, 2 * channel.limits.max_batch + 1)
        channel.push_listings(listings)
        restocked = [replace(listing, quantity=listing.quantity + 1) for listing in listings]
        results, made = self._counted(channel, lambda: list(channel.push_stock(restocked)))
        self._assert_batched(restocked, results, made, channel, self.conformance_stock_calls_per_batch, "push_stock")

    def test_pushing_nothing_calls_nothing(self, channel: Channel) -> None:
        self._warm_up(channel)
        results, made = self._counted(channel, lambda: list(channel.push_listings([])) + list(channel.push_stock([])))
        assert results == [] and made == 0, f"an empty push must answer [] without calling the API (made {made})"

    def test_listing_enumeration_pages_to_the_end(self, channel: Channel) -> None:
        page = self.conformance_page_size(channel)
        listings = self.conformance_many_listings(channel, 2 * page + 1)
        channel.push_listings(listings)
        # Completeness only: the unit of a page (SKU, product set) is the API's choice.
        found = [listing.sku for listing in channel.list_listings()]
        missing = {listing.sku for listing in listings} - set(found)
        assert not missing, f"list_listings stopped early: {len(missing)} pushed SKUs never came back"
        assert len(found) == len(set(found)), "list_listings yielded a SKU twice"

    def test_order_pull_pages_to_the_end(self, channel: Channel) -> None:
        page = self.conformance_page_size(channel)
        numbers = [self.conformance_place_order(channel) for _ in range(page + 1)]
        assert len(set(numbers)) == len(numbers), "conformance_place_order must place a new order on every call"
        pulled, made = self._counted(channel, lambda: list(channel.pull_orders(None)))
        missing = set(numbers) - {order.order_number for order in pulled}
        assert not missing, f"pull_orders stopped early: {len(missing)} placed orders never came back"
        ids = [order.channel_order_id for order in pulled]
        assert len(ids) == len(set(ids)), "pull_orders yielded an order twice"
        assert made >= 2, f"{len(numbers)} orders at {page} a page take 2 pages; pull_orders made {made} call(s)"


class ErrorConformance:
    """Opt-in, any role: the remote's failures come out as the right ``hub.errors`` class.

    Drives the sandbox's fault knobs (``hub.sandbox.Faults``) through ``conformance_set_faults``; the
    channel's services must use a fake sleep so retries and Retry-After waits take no real time.
    """

    def conformance_set_faults(self, channel: Channel, **knobs: float) -> None:
        raise NotImplementedError("apply these hub.sandbox.Faults knobs to the channel's sandbox "
                                  "(hub.testing.set_faults(app, **knobs))")

    def conformance_http_calls(self, channel: Channel) -> int:
        raise NotImplementedError("return how many HTTP calls the channel has made so far")

    def conformance_bad_credentials(self, channel: Channel) -> Channel:
        raise NotImplementedError("return a channel on the same sandbox whose (well-formed) credentials it refuses")

    def conformance_rejected(self, channel: Channel) -> Listing | Order:
        raise NotImplementedError("return a Listing (marketplace) or Order (destination) the sandbox refuses")

    conformance_listings: Callable[[Channel], list[Listing]]  # MarketplaceConformance's, for marketplaces

    def conformance_read(self, channel: Channel) -> Any:
        """A read-only call that makes at least one request, materialised so it can be compared."""
        if Role.MARKETPLACE in channel.roles:
            return list(channel.list_listings())
        if Role.SOURCE in channel.roles:
            return list(channel.list_products(None))
        if channel.roles & {Role.ORDER_DESTINATION, Role.FULFILMENT}:
            return list(channel.pull_fulfilments(None))
        return channel.test_connection()

    def _counted_failure(self, channel: Channel, expected: type[E], what: str) -> tuple[E, int]:
        before = self.conformance_http_calls(channel)
        error = _expect(expected, lambda: self.conformance_read(channel), what)
        return error, self.conformance_http_calls(channel) - before

    def _faulted(self, channel: Channel, **knobs: float) -> None:
        _require_fake_sleep(channel)
        channel.test_connection()  # tokens and caches are fetched before anything fails
        self.conformance_set_faults(channel, **knobs)

    def test_refused_credentials_raise_auth_error_without_retrying(self, channel: Channel) -> None:
        bad = self.conformance_bad_credentials(channel)
        before = self.conformance_http_calls(bad)
        _expect(AuthError, bad.test_connection, "test_connection with refused credentials")
        made = self.conformance_http_calls(bad) - before
        assert made == 1, f"refused credentials are final: expected 1 call, the channel made {made}"

    def test_persistent_rate_limiting_raises_rate_limited(self, channel: Channel) -> None:
        self._faulted(channel, rate_429=1.0, retry_after=PERSISTENT_RETRY_AFTER)
        error, _ = self._counted_failure(channel, RateLimited, "a read while every request gets 429")
        assert error.retry_after >= PERSISTENT_RETRY_AFTER, (
            f"RateLimited.retry_after={error.retry_after}: defer at least as long as Retry-After asks"
        )

    def test_occasional_rate_limiting_is_waited_out_or_deferred(self, channel: Channel) -> None:
        self._faulted(channel, seed=OCCASIONAL_429_SEED + 1)  # any other seed, so the next one reseeds
        expected = self.conformance_read(channel)
        self.conformance_set_faults(channel, **OCCASIONAL_429)
        try:
            again = self.conformance_read(channel)
        except RateLimited as error:  # deferring is allowed; anything but RateLimited is not
            assert error.retry_after >= OCCASIONAL_429["retry_after"], "defer at least as long as Retry-After asks"
            return
        assert again == expected, "after waiting out a 429 the read must answer as it did without one"

    def test_server_errors_raise_transient_error_after_retries(self, channel: Channel) -> None:
        self._faulted(channel, rate_5xx=1.0)
        _, made = self._counted_failure(channel, TransientError, "a read while every request gets a 5xx")
        assert made >= 2, f"a read is safe to replay: retry it before giving up (made {made} call)"

    def test_timeouts_raise_transient_error_after_retries(self, channel: Channel) -> None:
        self._faulted(channel, rate_timeout=1.0)
        _, made = self._counted_failure(channel, TransientError, "a read while every request times out")
        assert made >= 2, f"a read is safe to replay: retry it before giving up (made {made} call)"

    def test_dropped_connections_raise_transient_error(self, channel: Channel) -> None:
        self._faulted(channel, rate_drop=1.0)
        self._counted_failure(channel, TransientError, "a read while every connection drops")

    def test_malformed_bodies_raise_a_channel_error(self, channel: Channel) -> None:
        self._faulted(channel, rate_malformed=1.0)
        error, _ = self._counted_failure(channel, ChannelError, "a read while every body is truncated")
        assert isinstance(error, (ContractError, TransientError)), (
            f"a truncated body is a ContractError (or TransientError), not {type(error).__name__}"
        )

    def test_a_refused_item_is_reported_and_the_rest_flow(self, channel: Channel) -> None:
        bad = self.conformance_rejected(channel)
        if isinstance(bad, Order):
            self._assert_order_refused(channel, bad)
            return
        assert isinstance(bad, Listing), "conformance_rejected returns a Listing or an Order"
        good = self.conformance_listings(channel)
        results = {result.key: result for result in channel.push_listings([*good, bad])}
        assert set(results) == {listing.sku for listing in [*good, bad]}, "one ItemResult per SKU, refused ones too"
        assert not results[bad.sku].ok and results[bad.sku].message, "the refused SKU needs ok=False and a reason"
        assert all(results[listing.sku].ok for listing in good), "one refused SKU must not stop the others"

    @staticmethod
    def _assert_order_refused(channel: Channel, bad: Order) -> None:
        try:
            result = channel.create_order(bad)
        except RejectedItem as error:
            assert str(error), "a RejectedItem needs a reason the admin can act on"
            return
        assert isinstance(result, ItemResult) and not result.ok and result.message, (
            "a refused order is ItemResult.rejected(...) with a reason, or RejectedItem"
        )


def forged_webhooks(genuine: WebhookRequest) -> list[tuple[str, WebhookRequest]]:
    """Forgeries of a genuine webhook: a wrong URL secret, each credential header altered, the body
    altered under a signature. Each is labelled with what was forged."""
    forged: list[tuple[str, WebhookRequest]] = []
    if genuine.url_secret:
        forged.append(("wrong URL secret", replace(genuine, url_secret=_altered(genuine.url_secret))))
    for name, value in genuine.headers.items():
        if _is_credential_header(name):
            headers = {**genuine.headers, name: _altered(value)}
            forged.append((f"altered {name} header", replace(genuine, headers=headers)))
    if any(_SIGNATURE_HEADER.search(name) for name in genuine.headers):
        forged.append(("body altered after signing", replace(genuine, body=_altered_body(genuine.body))))
    return forged


def without_credentials(genuine: WebhookRequest) -> WebhookRequest:
    """The webhook with its URL secret and every credential header removed."""
    headers = {name: value for name, value in genuine.headers.items() if not _is_credential_header(name)}
    return replace(genuine, headers=headers, url_secret=None)


def _is_credential_header(name: str) -> bool:
    """Authorization, a token, key or secret (as hub.http redacts them), or a signature."""
    return is_sensitive_header(name) or bool(_SIGNATURE_HEADER.search(name))


def _altered(value: str) -> str:
    # Same length, last character changed: a forger's near miss, not an obviously empty value.
    if not value:
        return "forged"
    return value[:-1] + ("1" if value[-1] != "1" else "2")


def _altered_body(body: bytes) -> bytes:
    # Keep a JSON body valid, so a channel that parses before verifying still has to refuse it.
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body + b" "
    if isinstance(payload, dict):
        return json.dumps({**payload, "forged": True}).encode()
    return body + b" "


class WebhookConformance:
    """Opt-in, any role with webhooks: a genuine webhook is accepted, forgeries refused with AuthError."""

    def conformance_webhook(self, channel: Channel) -> WebhookRequest:
        raise NotImplementedError("return a genuine webhook, signed (or carrying the URL secret) as the remote sends it")

    def test_a_genuine_webhook_asks_for_a_flow(self, channel: Channel) -> None:
        from hub.defaults import FLOW_LANES
        from hub.jobs import registered_flows

        action = channel.verify_webhook(self.conformance_webhook(channel))
        assert isinstance(action, WebhookAction), "a genuine webhook must turn into a WebhookAction"
        assert action.flow in FLOW_LANES or action.flow in registered_flows(), f"no flow named {action.flow!r}"

    def test_forged_webhooks_are_refused(self, channel: Channel) -> None:
        forged = forged_webhooks(self.conformance_webhook(channel))
        assert forged, "the sample webhook carries no URL secret and no credential header: nothing authenticates it"
        for what, request in forged:
            _expect(AuthError, lambda request=request: channel.verify_webhook(request), f"a webhook with {what}")

    def test_a_webhook_without_credentials_is_refused(self, channel: Channel) -> None:
        bare = without_credentials(self.conformance_webhook(channel))
        _expect(AuthError, lambda: channel.verify_webhook(bare), "a webhook without any credentials")


OPT_IN_SUITES = (BatchingConformance, ErrorConformance, WebhookConformance)
