"""Flow "listings": the account's labelled products -> canonical listings -> the marketplace.

Top to bottom: select the variants the account lists (``hub.labels.select_variants``) -> check the
attributes every marketplace needs, per SKU, before anything is sent -> build the canonical Listing
(price per ``account.price_field``, quantity per the stock rule of ``hub.flows.stock``) -> let
``channelhub_transform_listing`` plugins change it -> fingerprint it and keep only what changed since
the last push, plus listings not sent for ``REASSERT_AFTER`` -> ``push_listings`` in batches of the
channel's ``max_batch`` -> record each result on the LISTING binding.

Decisions (docs/flows-catalogue-listings-stock.md):

- The fingerprint covers everything but the quantity: stock has its own flow on a 5-minute cadence
  and would otherwise make every listing "changed" every hour. A listing that is sent carries the
  current quantity anyway, and that quantity is recorded and explained like a stock push.
- Unchanged listings are re-sent when their binding's ``last_sent_at`` is older than
  ``REASSERT_AFTER`` (24 h; ``account.schedules["listings_reassert"]`` or ``params["reassert_after"]``
  in seconds), so an edit made on the marketplace by hand does not stand for ever.
- A rejection (by the checks here or by the channel) is recorded per SKU; a ``listing.rejected``
  event summarises them when the set of rejections changes, so an unchanged problem does not
  notify the admin every hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from hub import labels
from hub.bindings import LISTING, bind, by_internals, fingerprint, record_error
from hub.connections import open_channel
from hub.errors import ConfigurationError, RejectedItem, ValidationError
from hub.flows import stock
from hub.flows.reset import reset_in_progress
from hub.jobs import FlowContext, register_flow
from hub.models import Binding, ChannelAccount, Variant, utcnow
from hub.notify import report_rejections
from hub.plugins import get_plugin_manager
from hub.records import ItemResult, Listing, dump, validate_record
from hub.scheduling import aware

REASSERT_AFTER = timedelta(hours=24)

# (field, how the admin calls it): checked per SKU before anything is sent.
REQUIRED_ATTRIBUTES = (
    ("title", "title"),
    ("category", "category"),
    ("barcode", "barcode (EAN)"),
    ("gender", "gender"),
    ("description", "description"),
    ("variation", "variation (size or colour)"),
)
PRICE_FIELDS = {"msrp": "price_msrp", "wholesale": "price_wholesale", "retail": "price_retail", "sale": "price_sale"}
NOT_FINGERPRINTED = ("quantity", "external_id")


# -- the mapping: catalogue variant -> canonical listing ------------------------------------------------


def missing_attributes(variant: Variant) -> list[tuple[str, str]]:
    """The required attributes ``variant`` lacks, as (field, label) pairs, in REQUIRED_ATTRIBUTES order."""
    product = variant.product
    present = {
        "title": product.title,
        "category": product.category,
        "barcode": variant.barcode,
        "gender": product.gender,
        "description": product.description,
        "variation": variant.size or variant.colour,
    }
    return [(name, label) for name, label in REQUIRED_ATTRIBUTES if not (present[name] or "").strip()]


def price_for(variant: Variant, price_field: str) -> tuple[Decimal, Decimal | None]:
    """The listing's price and sale price under the account's price field.

    ``sale`` means "the sale price when there is one, else retail". Otherwise a sale price below the
    price goes along as ``sale_price`` (a marketplace shows it struck through); one at or above the
    price is left out, as marketplaces refuse it.
    """
    column = PRICE_FIELDS.get(price_field)
    if column is None:
        raise ConfigurationError(f"price field must be one of {', '.join(PRICE_FIELDS)}, not {price_field!r}")
    if price_field == "sale":
        price = variant.price_sale if variant.price_sale is not None else variant.price_retail
        label = "sale or retail price"
    else:
        price = getattr(variant, column)
        label = f"{price_field} price"
    if price is None:
        raise RejectedItem(f"missing {label}", key=variant.sku, field="price")
    if price <= 0:
        raise RejectedItem(f"the {label} is {price}: a listing needs a price above zero", key=variant.sku, field="price")
    sale = variant.price_sale
    if price_field == "sale" or sale is None or not (0 < sale < price):
        sale = None
    return Decimal(price), sale


def build_listing(variant: Variant, account: ChannelAccount, quantity: int, *, external_id: str | None = None) -> Listing:
    """The canonical Listing of ``variant`` for ``account``, after the transform_listing plugins."""
    product = variant.product
    price, sale_price = price_for(variant, account.price_field)
    listing = Listing(
        sku=variant.sku,
        parent_sku=product.parent_sku,
        title=product.title,
        price=price,
        quantity=quantity,
        description=product.description,
        brand=product.brand,
        category=product.category,
        gender=product.gender,
        barcode=variant.barcode,
        size=variant.size,
        colour=variant.colour,
        sale_price=sale_price,
        images=list(product.images or []),
        attributes={**(product.attributes or {}), **(variant.attributes or {})},
        active=True,
        external_id=external_id,
    )
    return transform_listing(listing, account)


def transform_listing(listing: Listing, account: ChannelAccount) -> Listing:
    """Run the ``channelhub_transform_listing`` plugins in turn, each seeing the previous one's result."""
    caller = get_plugin_manager().hook.channelhub_transform_listing
    for impl in reversed(caller.get_hookimpls()):  # pluggy's own order: the last registered runs first
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            continue
        arguments = {"listing": listing, "account": account}
        result = impl.function(**{name: arguments[name] for name in impl.argnames})
        if result is None:
            continue
        if not isinstance(result, Listing):
            raise RejectedItem(f"plugin {impl.plugin_name!r} turned the listing into a {type(result).__name__}",
                               key=listing.sku, field="plugin")
        listing = result
    return listing


def listing_fingerprint(listing: Listing) -> str:
    """What decides "changed": everything sent except the quantity (the stock flow's business)."""
    payload = {name: value for name, value in dump(listing).items() if name not in NOT_FINGERPRINTED}
    return fingerprint(payload)


# -- the flow -------------------------------------------------------------------------------------------


@dataclass
class ListingPush:
    variant_id: int
    sku: str
    listing: Listing
    fingerprint: str
    quantity: stock.Quantity


def run(ctx: FlowContext) -> None:
    rejected: dict[str, str] = {}  # sku -> why, from the checks here and from the channel
    with ctx.db.session() as session:
        account = stock.marketplace_account(session, ctx)
        if reset_in_progress(account):
            ctx.item(account.name, "skipped", "a product reset is running: listings are sent when it finishes")
            return
        plan = _plan(ctx, session, account, rejected)

    channel = open_channel(account)
    stock.push_in_batches(ctx, channel, plan, channel.push_listings,
                          lambda session, batch, results: _record(session, ctx, account, batch, results, rejected))

    with ctx.db.session() as session:
        report_rejections(session, account, "listing.rejected", rejected, run_id=ctx.run_id, what="listing(s)",
                          advice="Fix them in the source catalogue (or the rule that builds them); "
                                 "they are sent on the next listings run.")


def _plan(ctx: FlowContext, session: Session, account: ChannelAccount, rejected: dict[str, str]) -> list[ListingPush]:
    """The listings to send: the selection, checked and built, less those unchanged and not yet due."""
    force = bool(ctx.params.get("full") or ctx.params.get("force"))
    reassert_after = _reassert_after(account, ctx.params)
    now = utcnow()
    selection = labels.select_variants(session, account, skus=ctx.params.get("skus"))
    bindings = by_internals(session, account.id, LISTING)
    pending = stock.pending_units(session, account.organisation_id, (v.sku for v in selection.variants))
    for exclusion in selection.problems:
        ctx.item(exclusion.variant.sku, "skipped", exclusion.reason)
    plan = []
    for variant in selection.variants:
        binding = bindings.get(str(variant.id))
        push = _prepare(ctx, account, variant, binding, pending, rejected)
        if push is not None and (force or _needs_sending(push, binding, now, reassert_after)):
            plan.append(push)
    return plan


def _needs_sending(push: ListingPush, binding: Binding | None, now: datetime, reassert_after: timedelta) -> bool:
    """New, changed since the last push, or not sent for ``reassert_after`` (re-asserted)."""
    if binding is None or binding.fingerprint != push.fingerprint or binding.last_sent_at is None:
        return True
    return aware(binding.last_sent_at) + reassert_after <= now


def _reassert_after(account: ChannelAccount, params: dict[str, Any]) -> timedelta:
    configured = params.get("reassert_after", (account.schedules or {}).get("listings_reassert"))
    try:
        seconds = float(configured) if configured is not None else None
    except (TypeError, ValueError):
        seconds = None
    return timedelta(seconds=seconds) if seconds is not None and seconds >= 0 else REASSERT_AFTER


def _prepare(
    ctx: FlowContext,
    account: ChannelAccount,
    variant: Variant,
    binding: Binding | None,
    pending: dict[str, int],
    rejected: dict[str, str],
) -> ListingPush | None:
    """The listing to send for ``variant``, or None with the SKU reported as rejected."""
    missing = missing_attributes(variant)
    if missing:
        message = "missing " + ", ".join(label for _, label in missing)
        return _reject(ctx, variant.sku, message, missing[0][0], rejected)
    quantity = stock.quantity_for(variant, account, pending.get(variant.sku, 0))
    try:
        listing = build_listing(variant, account, quantity.quantity,
                                external_id=binding.external_id if binding is not None else None)
        validate_record(listing)  # a plugin may have broken what the checks above let through
    except (RejectedItem, ValidationError) as error:
        return _reject(ctx, variant.sku, str(error), getattr(error, "field", None), rejected)
    if listing.quantity != quantity.quantity:
        quantity.notes.append(f"set to {listing.quantity} by a transform_listing plugin")
        quantity.quantity = listing.quantity
    return ListingPush(variant.id, variant.sku, listing, listing_fingerprint(listing), quantity)


def _reject(ctx: FlowContext, sku: str, message: str, field: str | None, rejected: dict[str, str]) -> None:
    ctx.item(sku, "rejected", message, field)
    rejected[sku] = message
    return None


def _record(
    session: Session,
    ctx: FlowContext,
    account: ChannelAccount,
    batch: list[ListingPush],
    results: list[ItemResult],
    rejected: dict[str, str],
) -> None:
    answers = {result.key: result for result in results}
    sent_at = utcnow()
    for push in batch:
        result = answers.get(push.sku)
        if result is None:
            ctx.item(push.sku, "failed", "the channel gave no result for this SKU; it is sent again next run")
        elif result.ok:
            bind(session, account.id, LISTING, internal_id=push.variant_id, external_id=result.external_id or push.sku,
                 fingerprint=push.fingerprint, sent_at=sent_at)
            stock.record_pushed(session, account, push.variant_id, push.sku, push.quantity, run_id=ctx.run_id)
            ctx.item(push.sku, "ok", result.message)
        else:
            record_error(session, account.id, LISTING, push.variant_id, result.message)
            ctx.item(push.sku, "rejected", result.message, result.field)
            rejected[push.sku] = result.message


register_flow("listings", run, applies=stock.is_marketplace)
