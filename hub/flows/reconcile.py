"""Flow "reconcile": make the marketplace show exactly what the account's label says, safely.

Top to bottom, for one MARKETPLACE account:

1. **Enumerate** every listing the channel shows (``list_listings()``). The enumeration is read to the
   end before anything is decided; if any page fails the run stops with a ``reconcile.incomplete``
   event and nothing is changed — a partial list would make every unseen listing look "missing" and
   every listing of the failed page look "not ours".
2. **Plan** against the labelled set (``hub.labels.select_variants``: labelled, active, not a duplicate
   SKU, inside the brand/season filters) and the LISTING bindings:

   - *remove*: shown, known to the hub (a catalogue SKU, or one the hub listed), but not selected;
   - *relist*: selected but not shown;
   - *stock drift*: shown with another quantity than the stock rule gives (``hub.flows.stock``);
   - *price drift*: shown with another price than the price field gives (``hub.flows.listings``).

   A shown SKU that is neither in the catalogue nor listed by the hub is *left alone*: it may belong
   to another tool, or be a mistyped SKU a product reset will match. A duplicate SKU is left alone
   too: it is a data problem to fix in the source, reported by the catalogue flow.
3. **Report** the plan (a ``reconcile.plan`` event, one item per SKU).
4. **Execute**, only in Live with the Reconciler on (in Testing, or with it off, the items say
   "dry run: would ..."): deactivate the listings to remove (``push_listings`` with
   ``active=False``), push the right price and quantity where they drifted, and mark the missing
   ones for the listings flow's next run. Removing more than the account's share
   (``RECONCILE_MAX_REMOVE_SHARE``, 10 %) of the shown listings needs an admin's confirmation:
   ``params={"confirm_removals": True, "actor": "<admin e-mail>"}``; otherwise the removals are refused
   with a ``reconcile.removals_refused`` event that says how to confirm (drift is still fixed).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from hub import defaults, labels
from hub.bindings import LISTING, bind, by_internals
from hub.channel import Channel, Role
from hub.connections import has_role, open_channel
from hub.db import chunked
from hub.errors import ConfigurationError, RejectedItem, ValidationError
from hub.events import emit
from hub.flows import stock
from hub.flows.listings import build_listing, listing_fingerprint, price_for
from hub.flows.reset import reset_in_progress
from hub.jobs import FlowContext, register_flow
from hub.models import AccountStatus, Binding, ChannelAccount, Role as UserRole, User, Variant, utcnow
from hub.records import ItemResult, Listing

log = logging.getLogger("channelhub.flows.reconcile")

MAX_REMOVE_SHARE_SETTING = "reconcile_max_remove_share"  # per-account override in ChannelAccount.settings
REPORT_LIMIT = 500  # SKUs per list in the plan event's data; the run's items hold every one
FOREIGN = "not in the catalogue and never listed by the hub: left alone (a product reset suggests near-miss SKUs)"


@dataclass
class Fix:
    """A drifted listing and the listing that corrects it."""

    variant_id: int
    sku: str
    listing: Listing  # what to push
    quantity: stock.Quantity
    shown: str  # what the channel shows, for the message
    wanted: str


@dataclass
class Plan:
    listed: int = 0
    remove: list[Listing] = field(default_factory=list)
    why_remove: dict[str, str] = field(default_factory=dict)
    relist: list[tuple[int, str]] = field(default_factory=list)  # (variant id, sku)
    stock: list[Fix] = field(default_factory=list)
    price: list[Fix] = field(default_factory=list)  # also carries the right quantity
    left_alone: dict[str, str] = field(default_factory=dict)  # sku -> why
    unbuildable: dict[str, str] = field(default_factory=dict)  # drift we cannot fix: sku -> why

    @property
    def remove_share(self) -> float:
        return len(self.remove) / self.listed if self.listed else 0.0

    def summary(self) -> str:
        return (f"{len(self.remove)} to remove, {len(self.relist)} to relist, {len(self.stock)} stock and "
                f"{len(self.price)} price drift(s), {len(self.left_alone)} left alone, of {self.listed} shown")


# -- the flow ------------------------------------------------------------------------------------


def run_reconcile(ctx: FlowContext) -> None:
    with ctx.db.session() as session:
        account = _account(session, ctx)
        reason = skip_reason(account)
        if reason:
            ctx.item(account.name, "skipped", reason)
            return
        channel = open_channel(account)
        account_id = account.id
        executing = account.status == AccountStatus.LIVE and account.reconciler_enabled
    shown = enumerate_listings(ctx, account_id, channel)
    with ctx.db.session() as session:
        account = _account(session, ctx)
        plan = make_plan(session, account, shown)
        refusal = removal_refusal(session, account, plan, ctx.params)
        report_plan(session, ctx, account, plan, executing, refusal)
    for sku, why in plan.left_alone.items():
        ctx.item(sku, "skipped", why)
    if not executing:
        report_dry_run(ctx, plan)
        return
    execute(ctx, account_id, channel, plan, refusal)


def skip_reason(account: ChannelAccount) -> str | None:
    if account.status not in (AccountStatus.TESTING, AccountStatus.LIVE):
        return f"{account.name} is {account.status.value}: the reconciler runs only in Testing (report) or Live"
    if not has_role(account, Role.MARKETPLACE):
        return f"{account.name} ({account.plugin}) is not a marketplace: it has no listings to reconcile"
    if account.label_id is None:
        return (f"{account.name} has no label, so nothing says what belongs on it: choose a label on the account "
                "page (nothing was removed)")
    if reset_in_progress(account):
        return f"a product reset of {account.name} is running: reconcile after it finishes"
    return None


def enumerate_listings(ctx: FlowContext, account_id: int, channel: Channel) -> dict[str, Listing]:
    """Every active listing the channel shows, by SKU. Raises (after saying so) if any page fails."""
    shown: dict[str, Listing] = {}
    try:
        for listing in channel.list_listings():
            if listing.active:
                shown[listing.sku] = listing
    except Exception as error:
        with ctx.db.session() as session:
            account = _account(session, ctx)
            emit(session, organisation_id=account.organisation_id, account_id=account_id, run_id=ctx.run_id,
                 kind="reconcile.incomplete", level="warning",
                 message=(f"Reading the listings of {account.name} failed after {len(shown)} ({error}); nothing was "
                          "changed. The reconciler acts only on a complete list; it tries again."),
                 data={"read": len(shown), "error": type(error).__name__})
        raise
    finally:
        ctx.add_api_calls(max(1, math.ceil(len(shown) / max(1, channel.limits.page_size))))
    return shown


# -- the plan ------------------------------------------------------------------------------------


def make_plan(session: Session, account: ChannelAccount, shown: dict[str, Listing]) -> Plan:
    plan = Plan(listed=len(shown))
    selection = labels.select_variants(session, account)
    wanted = {variant.sku: variant for variant in selection.variants}
    problems = {exclusion.variant.sku: exclusion.reason for exclusion in selection.problems}
    listing_bindings = by_internals(session, account.id, LISTING)
    hub_listed = {binding.external_id for binding in listing_bindings.values()}
    catalogue = _catalogue_variants(session, account.organisation_id, [sku for sku in shown if sku not in wanted])
    labelled = labels.labelled_variant_ids(session, account.label_id, [v.id for v in catalogue.values()])
    pending = stock.pending_units(session, account.organisation_id, [sku for sku in shown if sku in wanted])

    for sku, listing in sorted(shown.items()):
        if sku in wanted:
            _check_drift(plan, account, wanted[sku], listing, listing_bindings.get(str(wanted[sku].id)), pending)
        elif sku in problems:
            plan.left_alone[sku] = f"left alone: {problems[sku]}"
        elif sku in catalogue:
            exclusion = labels.exclusion_for(catalogue[sku], account, labelled=catalogue[sku].id in labelled)
            _remove(plan, listing, exclusion.reason if exclusion else "it is not selected for this account")
        elif sku in hub_listed or (listing.external_id and listing.external_id in hub_listed):
            _remove(plan, listing, "the hub listed it, and it is no longer in the catalogue")
        else:
            plan.left_alone[sku] = FOREIGN
    plan.relist = [(variant.id, sku) for sku, variant in sorted(wanted.items()) if sku not in shown]
    return plan


def _remove(plan: Plan, listing: Listing, reason: str) -> None:
    plan.remove.append(listing)
    plan.why_remove[listing.sku] = reason


def _check_drift(plan: Plan, account: ChannelAccount, variant: Variant, listing: Listing,
                 binding: Binding | None, pending: dict[str, int]) -> None:
    quantity = stock.quantity_for(variant, account, pending.get(variant.sku, 0))
    try:
        price, sale_price = price_for(variant, account.price_field)
    except RejectedItem as error:
        price, sale_price = None, None  # no price to compare with: the listings flow reports why
        plan.unbuildable[variant.sku] = str(error)
    price_drift = price is not None and (
        Decimal(listing.price) != price
        or (listing.sale_price is not None and sale_price is not None and Decimal(listing.sale_price) != sale_price)
    )
    stock_drift = listing.quantity != quantity.quantity
    if not (price_drift or stock_drift):
        return
    try:
        external_id = (binding.external_id if binding is not None else None) or listing.external_id
        fixed = build_listing(variant, account, quantity.quantity, external_id=external_id)
    except (RejectedItem, ValidationError) as error:
        plan.unbuildable[variant.sku] = f"drift found but the listing cannot be rebuilt: {error}"
        return
    if price_drift:
        plan.price.append(Fix(variant.id, variant.sku, fixed, quantity, shown=str(listing.price), wanted=str(fixed.price)))
    else:
        plan.stock.append(Fix(variant.id, variant.sku, fixed, quantity, shown=str(listing.quantity),
                              wanted=str(quantity.quantity)))


def _catalogue_variants(session: Session, organisation_id: int, skus: list[str]) -> dict[str, Variant]:
    found: dict[str, Variant] = {}
    for chunk in chunked(sorted(skus)):
        query = (select(Variant).where(Variant.organisation_id == organisation_id, Variant.sku.in_(chunk))
                 .options(selectinload(Variant.product)))
        found.update((variant.sku, variant) for variant in session.scalars(query))
    return found


# -- the removal guard ---------------------------------------------------------------------------


def max_remove_share(account: ChannelAccount) -> float:
    configured = (account.settings or {}).get(MAX_REMOVE_SHARE_SETTING)
    try:
        share = float(configured) if configured is not None else defaults.RECONCILE_MAX_REMOVE_SHARE
    except (TypeError, ValueError):
        share = defaults.RECONCILE_MAX_REMOVE_SHARE
    return min(max(share, 0.0), 1.0)


def removal_refusal(session: Session, account: ChannelAccount, plan: Plan, params: dict[str, Any]) -> str | None:
    """Why the planned removals may not go ahead, or None. Above the share, only an admin may confirm."""
    limit = max_remove_share(account)
    if not plan.remove or plan.remove_share <= limit:
        return None
    size = (f"{len(plan.remove)} of the {plan.listed} listings shown ({plan.remove_share:.0%}, more than the "
            f"{limit:.0%} allowed without confirmation)")
    if params.get("confirm_removals") is True:
        actor = str(params.get("actor") or "")
        if _is_admin(session, account.organisation_id, actor):
            return None
        return (f"Not removing {size}: the confirmation came from {actor or 'nobody named'}, who is not an admin of "
                "this organisation. An admin has to confirm the removals.")
    return (f"Not removing {size}. Check the plan in this run; if it is right, an admin runs the reconciler again "
            "with \"Confirm removals\" (params {\"confirm_removals\": true}). Stock and price drift were still fixed.")


def _is_admin(session: Session, organisation_id: int, email: str) -> bool:
    if not email:
        return False
    user = session.scalar(select(User).where(User.email == email.strip().lower(), User.organisation_id == organisation_id))
    return user is not None and user.active and user.role == UserRole.ADMIN


# -- reporting -----------------------------------------------------------------------------------


def report_plan(session: Session, ctx: FlowContext, account: ChannelAccount, plan: Plan, executing: bool,
                refusal: str | None) -> None:
    mode = "executing" if executing else (
        "dry run: the account is in Testing" if account.status == AccountStatus.TESTING
        else "dry run: the Reconciler is off")
    message = f"Reconcile plan for {account.name} ({mode}): {plan.summary()}"
    if refusal and not executing:
        message += f". In Live this would need an admin's confirmation: {refusal}"
    emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
         kind="reconcile.plan", message=message,
         data={
             "dry_run": not executing, "listed": plan.listed, "remove_share": round(plan.remove_share, 4),
             "remove": [{"sku": l.sku, "reason": plan.why_remove[l.sku]} for l in plan.remove][:REPORT_LIMIT],
             "relist": [sku for _, sku in plan.relist][:REPORT_LIMIT],
             "stock": [{"sku": f.sku, "shown": f.shown, "wanted": f.wanted} for f in plan.stock][:REPORT_LIMIT],
             "price": [{"sku": f.sku, "shown": f.shown, "wanted": f.wanted} for f in plan.price][:REPORT_LIMIT],
             "left_alone": sorted(plan.left_alone)[:REPORT_LIMIT],
         })
    if refusal and executing:
        emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
             kind="reconcile.removals_refused", level="warning", message=f"{account.name}: {refusal}",
             data={"remove": len(plan.remove), "listed": plan.listed, "limit": max_remove_share(account)})


def report_dry_run(ctx: FlowContext, plan: Plan) -> None:
    for listing in plan.remove:
        ctx.item(listing.sku, "skipped", "dry run: would remove")
    for _, sku in plan.relist:
        ctx.item(sku, "skipped", "dry run: would relist")
    for fix in plan.stock:
        ctx.item(fix.sku, "skipped", f"dry run: would set quantity {fix.shown} -> {fix.wanted}")
    for fix in plan.price:
        ctx.item(fix.sku, "skipped", f"dry run: would set price {fix.shown} -> {fix.wanted}")
    for sku, why in plan.unbuildable.items():
        ctx.item(sku, "rejected", why)


# -- executing -----------------------------------------------------------------------------------


def execute(ctx: FlowContext, account_id: int, channel: Channel, plan: Plan, refusal: str | None) -> None:
    if plan.remove and refusal is None:
        remove_listings(ctx, account_id, channel, plan)
    for listing in plan.remove if refusal is not None else []:
        ctx.item(listing.sku, "skipped", "not removed: the share of removals needs an admin's confirmation")
    fix_drift(ctx, account_id, channel, plan.price, channel.push_listings, "price")
    fix_drift(ctx, account_id, channel, plan.stock, channel.push_stock, "quantity")
    mark_for_relisting(ctx, account_id, plan)
    for sku, why in plan.unbuildable.items():
        ctx.item(sku, "rejected", why)


def remove_listings(ctx: FlowContext, account_id: int, channel: Channel, plan: Plan) -> None:
    """Deactivate the listings (``active=False``), in the channel's batches."""
    removed: list[str] = []
    for batch in channel.limits.batches(plan.remove):
        outgoing = [_deactivated(listing) for listing in batch]
        results = _by_key(channel.push_listings(outgoing))
        ctx.add_api_calls(1)
        with ctx.db.session() as session:
            account = _account(session, ctx)
            variants = _catalogue_variants(session, account.organisation_id, [listing.sku for listing in batch])
            for listing in batch:
                result = results.get(listing.sku)
                if result is None or not result.ok:
                    ctx.item(listing.sku, "failed" if result is None else "rejected",
                             result.message if result else "the channel gave no result; tried again next run")
                    continue
                removed.append(listing.sku)
                _forget_listing(session, account_id, variants.get(listing.sku))
                ctx.item(listing.sku, "ok", f"removed: {plan.why_remove[listing.sku]}")
    if removed:
        with ctx.db.session() as session:
            account = _account(session, ctx)
            emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
                 kind="reconcile.removed", message=f"{account.name}: {len(removed)} listing(s) removed",
                 data={"skus": removed[:REPORT_LIMIT], "count": len(removed)})


def _deactivated(listing: Listing) -> Listing:
    outgoing = copy.deepcopy(listing)
    outgoing.active = False
    outgoing.quantity = 0  # a listing the channel fails to deactivate must not stay sellable either
    return outgoing


def _forget_listing(session: Session, account_id: int, variant: Variant | None) -> None:
    """The listing is gone: clear what the hub last sent, so a relabelled variant is listed afresh."""
    if variant is None:
        return
    binding = by_internals(session, account_id, LISTING, [variant.id]).get(str(variant.id))
    if binding is not None:
        binding.fingerprint = None
        binding.last_sent_at = utcnow()


def fix_drift(ctx: FlowContext, account_id: int, channel: Channel, fixes: list[Fix], push: Any, what: str) -> None:
    """Push the corrected listings (``push_listings`` for price, ``push_stock`` for quantity) in batches."""
    for batch in channel.limits.batches(fixes):
        results = _by_key(push([fix.listing for fix in batch]))
        ctx.add_api_calls(1)
        with ctx.db.session() as session:
            account = _account(session, ctx)
            for fix in batch:
                result = results.get(fix.sku)
                if result is None or not result.ok:
                    ctx.item(fix.sku, "failed" if result is None else "rejected",
                             result.message if result else "the channel gave no result; tried again next run")
                    continue
                if what == "price":
                    bind(session, account.id, LISTING, internal_id=fix.variant_id,
                         external_id=result.external_id or fix.listing.external_id or fix.sku,
                         fingerprint=listing_fingerprint(fix.listing), sent_at=utcnow())
                stock.record_pushed(session, account, fix.variant_id, fix.sku, fix.quantity, run_id=ctx.run_id)
                ctx.item(fix.sku, "ok", f"{what} drift fixed: {fix.shown} -> {fix.wanted}")


def mark_for_relisting(ctx: FlowContext, account_id: int, plan: Plan) -> None:
    """Missing listings go back through the listings flow (it checks attributes and records the result)."""
    if not plan.relist:
        return
    with ctx.db.session() as session:
        known = by_internals(session, account_id, LISTING, [variant_id for variant_id, _ in plan.relist])
        for variant_id, sku in plan.relist:
            binding = known.get(str(variant_id))
            if binding is not None:
                # Not "unchanged" and due: the next listings run sends it again.
                binding.fingerprint, binding.last_sent_at = None, None
                ctx.item(sku, "ok", "missing on the channel: the next listings run lists it again")
            else:
                ctx.item(sku, "skipped", "not listed yet: the listings flow lists it (or reports why it cannot)")


def _by_key(results: list[ItemResult]) -> dict[str, ItemResult]:
    return {result.key: result for result in results}


def _account(session: Session, ctx: FlowContext) -> ChannelAccount:
    account = session.get(ChannelAccount, ctx.account_id) if ctx.account_id is not None else None
    if account is None:
        raise ConfigurationError(f"the reconcile flow needs an existing account (got {ctx.account_id})")
    return account


register_flow("reconcile", run_reconcile)
