"""Flow "stock": the quantity each listed SKU should show on a marketplace, pushed when it changes.

The stock rule, per SKU and marketplace account::

    quantity = max(0, basis - units in pending orders - reserve)

- **basis**: ``account.inventory_basis`` (available / available_from_stock / on_hand) summed over
  ``account.warehouses`` (every location when the list is empty), as the last catalogue import saw it;
- **pending orders**: units of the SKU in orders the hub imported from any marketplace of the
  organisation that the order system has not accepted yet (status ``imported`` or ``error`` — a
  refused or held order is still a sale — not Third Party Managed). The source has not seen those
  sales yet, so without this the hub would offer the same unit twice. When the destination that
  accepts an order is the SKU's catalogue source, the orders flow takes the units out of the basis
  at that moment (the source just did the same), until the next catalogue import brings its figure;
- **reserve**: ``account.reserve_stock``, a buffer against the lag between a sale and the next push.

Plugins may then change the number (``channelhub_adjust_quantity``; several plugins: the lowest
wins, the safe choice against overselling). Every pushed number is explained in the audit log
("3 = 5 available - 1 pending order unit - 1 reserve").

Top to bottom: select the account's listed variants -> compute each quantity -> keep those that
differ from the last pushed one (a ``stock`` binding per variant holds it) -> ``push_stock`` in
batches of the channel's ``max_batch`` -> record each result and explain it.

A variant that is listed but leaves the selection (deactivated, label removed, duplicate SKU) gets
0 pushed once, so it cannot be sold while nobody keeps its stock; taking the listing down is the
reconciler's job. ``params={"skus": [...]}`` limits a run to those SKUs: :func:`push_stock_now`
uses it when an order arrives, so every other marketplace hears of the sale at once.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import String, and_, cast, func, select
from sqlalchemy.orm import Session, aliased, selectinload

from hub import labels
from hub.bindings import LISTING, bind, by_internals, record_error
from hub.channel import Role
from hub.connections import has_role, open_channel
from hub.db import Database, chunked
from hub.errors import ConfigurationError, NotFound, RejectedItem, ValidationError
from hub.events import emit
from hub.flows.reset import reset_in_progress
from hub.jobs import FlowContext, Verdict, create_run, enqueuer, execute_run, fail_run, register_flow
from hub.locks import LocalLocks
from hub.models import (AccountStatus, Binding, ChannelAccount, Event, LabelAssignment, Order, OrderLine, OrderStatus,
                        Organisation, Product, StockLevel, Variant, utcnow)
from hub.notify import report_rejections
from hub.plugins import get_plugin_manager
from hub.records import Listing

STOCK = "stock"  # binding kind: the quantity last pushed to (account, variant), kept in ``fingerprint``
BASES = {"available": "available", "available_from_stock": "available from stock", "on_hand": "on hand"}
CLAMP_NOTE = "(never below 0)"
OVERSELL_REPEAT_AFTER = timedelta(days=1)  # an unchanged oversell is reported again after this

# push_stock_now runs the flow inline when no runtime enqueue is given; these locks keep two inline
# pushes for one account from interleaving. A busy lock is retried briefly, then left to the schedule.
_INLINE_LOCKS = LocalLocks()
INLINE_BUSY_DELAY = 0.25
INLINE_BUSY_TRIES = 20


# -- the stock rule (pure) ---------------------------------------------------------------------


def compute_quantity(
    basis_by_location: Mapping[str, Mapping[str, int]],
    warehouses: Iterable[str],
    basis: str,
    pending_units: int,
    reserve: int,
) -> tuple[int, list[str]]:
    """The stock rule and its explanation, as parts of "quantity = parts".

    ``basis_by_location`` maps a location to its levels (``{"available": 5, "on_hand": 7, ...}``);
    ``warehouses`` limits the sum to those locations (empty: all). Returns the quantity and parts
    such as ``["5 available (SYD 3 + MEL 2)", "- 1 pending order unit", "- 1 reserve"]``; zero terms
    are left out, and ``"(never below 0)"`` is added when the floor applied.
    """
    if basis not in BASES:
        raise ConfigurationError(f"inventory basis must be one of {', '.join(BASES)}, not {basis!r}")
    locations = list(warehouses) or sorted(basis_by_location)
    counted = [(location, int(basis_by_location[location].get(basis) or 0))
               for location in locations if location in basis_by_location]
    total = sum(amount for _, amount in counted)
    pending_units, reserve = max(0, int(pending_units)), max(0, int(reserve))
    first = f"{total} {BASES[basis]}"
    if len(counted) > 1:
        first += " (" + " + ".join(f"{location} {amount}" for location, amount in counted) + ")"
    parts = [first]
    if pending_units:
        parts.append(f"- {pending_units} pending order unit{'' if pending_units == 1 else 's'}")
    if reserve:
        parts.append(f"- {reserve} reserve")
    raw = total - pending_units - reserve
    if raw < 0:
        parts.append(CLAMP_NOTE)
    return max(0, raw), parts


def explain(quantity: int, parts: list[str]) -> str:
    """"3 = 5 available - 1 pending order unit - 1 reserve"."""
    return f"{quantity} = {' '.join(parts)}"


@dataclass
class Quantity:
    """The number to push for one variant, and why."""

    quantity: int  # what is pushed, after plugins
    rule_quantity: int  # what the stock rule said
    parts: list[str]
    notes: list[str] = field(default_factory=list)  # what plugins said
    basis_total: int = 0
    pending: int = 0
    reserve: int = 0

    @property
    def oversold_by(self) -> int:
        """Units sold beyond the basis (reserve aside): orders the source cannot fill as things stand."""
        return max(0, self.pending - self.basis_total)

    @property
    def text(self) -> str:
        rule = explain(self.rule_quantity, self.parts)
        if not self.notes and self.quantity == self.rule_quantity:
            return rule
        notes = "; ".join(self.notes) or "changed by a plugin"
        return f"{self.quantity} after plugins ({rule}; {notes})"


def quantity_for(variant: Variant, account: ChannelAccount, pending: int) -> Quantity:
    """The stock rule for ``variant`` on ``account``, then the ``channelhub_adjust_quantity`` hooks."""
    levels = {
        level.location: {"available": level.available, "available_from_stock": level.available_from_stock,
                         "on_hand": level.on_hand}
        for level in variant.stock_levels
    }
    reserve = max(0, account.reserve_stock or 0)
    rule_quantity, parts = compute_quantity(levels, account.warehouses or [], account.inventory_basis, pending, reserve)
    locations = account.warehouses or list(levels)
    basis_total = sum(int(levels[loc].get(account.inventory_basis) or 0) for loc in locations if loc in levels)
    notes: list[str] = []
    answers = get_plugin_manager().hook.channelhub_adjust_quantity(
        variant=variant, account=account, quantity=rule_quantity, explanation=notes
    )
    adjusted = [int(answer) for answer in answers if answer is not None]
    final = max(0, min(adjusted)) if adjusted else rule_quantity
    return Quantity(quantity=final, rule_quantity=rule_quantity, parts=parts, notes=notes,
                    basis_total=basis_total, pending=max(0, pending), reserve=reserve)


# Orders whose units are sold but not yet in the order system: imported ones, and ones in error (a
# destination refused them, or the oversell policy holds them: the marketplace sold the units all
# the same). Once the destination accepts an order (``destination_account_id``) it is no longer
# pending: the destination took the units out of its stock, and when it is the SKU's catalogue source
# the orders flow takes them out of the hub's copy of that stock too (``orders.mirror_sale``).
PENDING_STATUSES = (OrderStatus.IMPORTED, OrderStatus.ERROR)


def _pending_filter() -> tuple[Any, ...]:
    return (Order.status.in_(PENDING_STATUSES), Order.third_party_managed.is_(False),
            Order.destination_account_id.is_(None), OrderLine.status != "cancelled")


def pending_units(session: Session, organisation_id: int, skus: Iterable[str]) -> dict[str, int]:
    """Units per SKU in orders sold but not yet in the order system, across the organisation's marketplaces."""
    found: dict[str, int] = {}
    for chunk in chunked(sorted(set(skus))):
        rows = session.execute(
            select(OrderLine.sku, func.sum(OrderLine.quantity))
            .join(Order, Order.id == OrderLine.order_id)
            .where(Order.organisation_id == organisation_id, *_pending_filter(), OrderLine.sku.in_(chunk))
            .group_by(OrderLine.sku)
        )
        found.update((sku, int(units or 0)) for sku, units in rows)
    return found


def pending_units_all(session: Session, organisation_id: int) -> dict[str, int]:
    """:func:`pending_units` for every SKU at once: one grouped query instead of one per 500 SKUs
    (a whole-catalogue stock run; orders waiting to be routed are few, whatever the catalogue size)."""
    rows = session.execute(
        select(OrderLine.sku, func.sum(OrderLine.quantity))
        .join(Order, Order.id == OrderLine.order_id)
        .where(Order.organisation_id == organisation_id, *_pending_filter())
        .group_by(OrderLine.sku)
    )
    return {sku: int(units or 0) for sku, units in rows}


# -- the flow ---------------------------------------------------------------------------------------


def is_marketplace(account: ChannelAccount) -> bool:
    """Scheduling filter: listings and stock run only for accounts whose channel is a MARKETPLACE."""
    return has_role(account, Role.MARKETPLACE)


def marketplace_account(session: Session, ctx: FlowContext) -> ChannelAccount:
    """The run's account, refusing one that cannot list (not a marketplace, or no label chosen)."""
    account = session.get(ChannelAccount, ctx.account_id) if ctx.account_id is not None else None
    if account is None:
        raise NotFound(f"the {ctx.flow} flow needs a channel account (got {ctx.account_id})")
    if not is_marketplace(account):
        raise ConfigurationError(f"{account.name} ({account.plugin}) is not a marketplace: it has no listings")
    if account.label_id is None:
        # Refused rather than "nothing selected": an empty selection would withdraw every listing.
        raise ConfigurationError(
            f"{account.name} has no label: choose the label of the products it lists on the account's settings page"
        )
    return account


@dataclass
class StockPush:
    variant: Variant
    quantity: Quantity
    listing: Listing | None = None
    withdrawn: str | None = None  # why a listed variant left the selection (0 is pushed)

    @property
    def sku(self) -> str:
        return self.variant.sku

    @property
    def text(self) -> str:
        if self.withdrawn is not None:
            return f"0 = withdrawn: {self.withdrawn}"
        return self.quantity.text


def run(ctx: FlowContext) -> None:
    with ctx.db.session() as session:
        account = marketplace_account(session, ctx)
        if reset_in_progress(account):
            ctx.item(account.name, "skipped", "a product reset is running: stock is pushed when it finishes")
            return
        plan = _plan(ctx, session, account, ctx.params.get("skus"), force=bool(ctx.params.get("force")))

    channel = open_channel(account)
    rejected: dict[str, str] = {}
    push_in_batches(ctx, channel, plan, channel.push_stock,
                    lambda session, batch, results: _record(session, ctx, account, batch, results, rejected))

    with ctx.db.session() as session:
        report_rejections(session, account, "stock.rejected", rejected, run_id=ctx.run_id,
                          what="stock update(s)", advice="Check the SKUs on the marketplace; they are pushed again next run.")


def push_in_batches(ctx: FlowContext, channel: Any, plan: list[Any], push: Callable[[list[Any]], list[Any]],
                    record: Callable[[Session, list[Any], list[Any]], None]) -> None:
    """Send the plan's ``.listing`` records ``max_batch`` at a time inside the channel's stock session
    (the stock and listings flows); each batch's results are recorded in a session of their own, so
    what was sent is kept even if a later batch fails."""
    done = 0
    ctx.progress(0, len(plan))
    with stock_session(channel):
        for batch in channel.limits.batches(plan):
            results = push([item.listing for item in batch])
            ctx.add_api_calls(1)
            with ctx.db.session() as session:
                record(session, batch, results)
            done += len(batch)
            ctx.progress(done, len(plan))


def stock_session(channel: Any) -> Any:
    """The channel's ``stock_session()`` context (per-run caches, e.g. The Iconic's reservations
    read once per run instead of once per batch), or a no-op for channels without one."""
    session = getattr(channel, "stock_session", None)
    return session() if callable(session) else nullcontext()


def _plan(ctx: FlowContext, session: Session, account: ChannelAccount, skus: list[str] | None, *, force: bool) -> list[StockPush]:
    """What to push: listed, selected variants whose quantity changed, and 0 for listed ones that left.

    Planned from columns (:func:`_plan_rows`): the stock rule is evaluated on one row per variant and
    ORM objects are loaded only for the SKUs that changed, so an unchanged catalogue costs a few
    microseconds per SKU. With ``channelhub_adjust_quantity`` plugins installed (they receive the
    Variant object) the whole selection is loaded instead (:func:`_plan_objects`).
    """
    if _adjusting_plugins() or len(set(account.warehouses or [])) != len(account.warehouses or []):
        return _plan_objects(ctx, session, account, skus, force=force)
    return _plan_rows(ctx, session, account, skus, force=force)


def _adjusting_plugins() -> bool:
    return bool(get_plugin_manager().hook.channelhub_adjust_quantity.get_hookimpls())


def _plan_objects(ctx: FlowContext, session: Session, account: ChannelAccount, skus: list[str] | None, *,
                  force: bool) -> list[StockPush]:
    selection = labels.select_variants(session, account, skus=skus)
    listed = by_internals(session, account.id, LISTING)
    pushed = by_internals(session, account.id, STOCK)
    pending = pending_units(session, account.organisation_id, (v.sku for v in selection.variants))
    plan = []
    for variant in selection.variants:
        if str(variant.id) not in listed:
            if skus is not None:
                ctx.item(variant.sku, "skipped", "not listed on this account yet: the listings flow lists it first")
            continue
        quantity = quantity_for(variant, account, pending.get(variant.sku, 0))
        if force or _changed(pushed.get(str(variant.id)), quantity.quantity):
            plan.append(StockPush(variant, quantity))
    selected = {str(variant.id) for variant in selection.variants}
    withdrawals = _withdrawals(session, account, selected, listed, pushed, skus)
    withdrawn = {push.sku for push in withdrawals}
    for exclusion in selection.problems:
        if exclusion.variant.sku not in withdrawn:  # a withdrawn one is reported once, as the withdrawal
            ctx.item(exclusion.variant.sku, "skipped", exclusion.reason)
    return _with_listings(ctx, account, plan + withdrawals, {key: b.external_id for key, b in listed.items()})


def _plan_rows(ctx: FlowContext, session: Session, account: ChannelAccount, skus: list[str] | None, *,
               force: bool) -> list[StockPush]:
    """:func:`_plan_objects` without building an ORM object per selected variant (same decisions)."""
    basis = account.inventory_basis
    if basis not in BASES:
        raise ConfigurationError(f"inventory basis must be one of {', '.join(BASES)}, not {basis!r}")
    rows = _selection_rows(session, account, skus)
    selected_rows = []
    problems: list[tuple[str, str]] = []
    plain = not (account.brand_filter or account.season_filter)
    for row in rows:
        (_, sku, duplicate, active, product_active, brand, season, source_id, *_) = row
        if plain and active and product_active and not duplicate and (
                account.source_account_id is None or source_id == account.source_account_id):
            selected_rows.append(row)  # the common case, decided without building a reason
            continue
        found = labels.exclusion_reason(
            account, sku=sku, duplicate=duplicate, labelled=True, source_account_id=source_id,
            product_active=product_active, variant_active=active, brand=brand, season=season)
        if found is None:
            selected_rows.append(row)
        elif found[1]:
            problems.append((sku, found[0]))
    pending = (pending_units_all(session, account.organisation_id) if skus is None
               else pending_units(session, account.organisation_id, (row[1] for row in selected_rows)))
    reserve = max(0, account.reserve_stock or 0)
    changed: list[tuple[int, str]] = []  # (variant id, listing external id)
    for variant_id, sku, _, _, _, _, _, _, total, external_id, pushed in selected_rows:
        if external_id is None:  # no listing binding
            if skus is not None:
                ctx.item(sku, "skipped", "not listed on this account yet: the listings flow lists it first")
            continue
        # The stock rule (compute_quantity) on the row's basis total, without building its explanation.
        quantity = int(total) - (max(0, pending[sku]) if sku in pending else 0) - reserve
        if force or pushed != str(max(0, quantity)):
            changed.append((variant_id, external_id))
    variants = variants_by_id(session, [variant_id for variant_id, _ in changed])
    plan = []
    for variant_id, _ in changed:  # already in SKU order
        variant = variants[variant_id]
        quantity = quantity_for(variant, account, pending.get(variant.sku, 0))  # the same number, with its reasons
        plan.append(StockPush(variant, quantity))
    external_ids = {str(variant_id): external_id for variant_id, external_id in changed}
    selected = {str(row[0]) for row in selected_rows}
    listed = {internal for internal in session.scalars(
        select(Binding.internal_id).where(Binding.account_id == account.id, Binding.kind == LISTING))}
    left = [internal for internal in listed - selected]
    withdrawals = _withdrawals(session, account, selected, by_internals(session, account.id, LISTING, left),
                               by_internals(session, account.id, STOCK, left), skus) if left else []
    external_ids.update((str(push.variant.id), push.variant.sku) for push in withdrawals)
    if withdrawals:
        listing = by_internals(session, account.id, LISTING, [push.variant.id for push in withdrawals])
        external_ids.update((key, binding.external_id) for key, binding in listing.items())
    withdrawn = {push.sku for push in withdrawals}
    for sku, reason in problems:
        if sku not in withdrawn:  # a withdrawn one is reported once, as the withdrawal
            ctx.item(sku, "skipped", reason)
    return _with_listings(ctx, account, plan + withdrawals, external_ids)


def _selection_rows(session: Session, account: ChannelAccount, skus: list[str] | None) -> list[tuple[Any, ...]]:
    """One tuple per labelled variant (``labels.select_variants``' query, as columns): id, sku,
    duplicate, active, product active, brand, season, source account, its basis total summed in the
    database over the account's warehouses (all locations when none; 0 without stock levels), its
    listing's external id (None: not listed) and the quantity last pushed (STOCK fingerprint)."""
    if account.label_id is None:
        return []
    column = getattr(StockLevel, account.inventory_basis)
    totals = select(StockLevel.variant_id, func.sum(column).label("total")).where(
        StockLevel.variant_id.in_(select(LabelAssignment.variant_id).where(LabelAssignment.label_id == account.label_id)))
    if account.warehouses:
        totals = totals.where(StockLevel.location.in_(list(account.warehouses)))
    totals = totals.group_by(StockLevel.variant_id).subquery()
    listing = aliased(Binding)
    pushed = aliased(Binding)
    internal = cast(Variant.id, String)
    query = (
        select(Variant.id, Variant.sku, Variant.duplicate, Variant.active, Product.active,
               Product.brand, Product.season, Product.source_account_id, func.coalesce(totals.c.total, 0),
               listing.external_id, pushed.fingerprint)
        .join(LabelAssignment, LabelAssignment.variant_id == Variant.id)
        .join(Product, Product.id == Variant.product_id)
        .outerjoin(totals, totals.c.variant_id == Variant.id)
        .outerjoin(listing, and_(listing.account_id == account.id, listing.kind == LISTING, listing.internal_id == internal))
        .outerjoin(pushed, and_(pushed.account_id == account.id, pushed.kind == STOCK, pushed.internal_id == internal))
        .where(LabelAssignment.label_id == account.label_id, Variant.organisation_id == account.organisation_id)
        .order_by(Variant.sku)
    )
    if account.source_account_id is not None:
        query = query.where(Product.source_account_id == account.source_account_id)
    if skus is None:
        return list(session.execute(query))
    wanted = sorted(set(skus))
    rows = [row for chunk in chunked(wanted) for row in session.execute(query.where(Variant.sku.in_(chunk)))]
    return sorted(rows, key=lambda row: row[1])


def _with_listings(ctx: FlowContext, account: ChannelAccount, plan: list[StockPush], external_ids: Mapping[str, str]) -> list[StockPush]:
    """Give each push its Listing record; ``push_stock`` takes listings, as channels without a
    stock-only call fall back to ``push_listings``. One that cannot be built is reported, not sent."""
    from hub.flows.listings import build_listing  # the listings flow builds on this module's stock rule

    ready = []
    for push in plan:
        external_id = external_ids[str(push.variant.id)]
        try:
            push.listing = build_listing(push.variant, account, push.quantity.quantity, external_id=external_id)
        except (RejectedItem, ValidationError) as error:
            ctx.item(push.sku, "rejected", f"stock not pushed: {error}", getattr(error, "field", None))
            continue
        ready.append(push)
    return ready


def _changed(binding: Any, quantity: int) -> bool:
    return binding is None or binding.fingerprint != str(quantity)


def _withdrawals(
    session: Session,
    account: ChannelAccount,
    selected: set[str],
    listed: Mapping[str, Any],
    pushed: Mapping[str, Any],
    skus: list[str] | None,
) -> list[StockPush]:
    """Listed variants that left the selection (``selected``: the variant ids still in it, as strings)
    and do not show 0 yet: 0 is pushed to each, once."""
    candidates = [int(internal) for internal in listed
                  if internal not in selected and internal.isdigit() and _changed(pushed.get(internal), 0)]
    variants = variants_by_id(session, candidates)
    if skus is not None:
        variants = {key: variant for key, variant in variants.items() if variant.sku in set(skus)}
    labelled = labels.labelled_variant_ids(session, account.label_id, variants)
    withdrawals = []
    for variant_id, variant in sorted(variants.items(), key=lambda item: item[1].sku):
        exclusion = labels.exclusion_for(variant, account, labelled=variant_id in labelled)
        reason = exclusion.reason if exclusion is not None else "no longer selected for this account"
        withdrawals.append(StockPush(variant, Quantity(0, 0, ["withdrawn"]), withdrawn=reason))
    return withdrawals


def _record(
    session: Session,
    ctx: FlowContext,
    account: ChannelAccount,
    batch: list[StockPush],
    results: list[Any],
    rejected: dict[str, str],
) -> None:
    answers = {result.key: result for result in results}
    # One query for the batch's bindings rather than two per SKU; and the organisation held in the
    # session's (weak) identity map, so the event hooks' look-up of it does not reload it per event.
    known = by_internals(session, account.id, STOCK, [push.variant.id for push in batch])
    organisation = session.get(Organisation, account.organisation_id)  # noqa: F841 - kept alive on purpose
    for push in batch:
        result = answers.get(push.sku)
        if result is None:
            ctx.item(push.sku, "failed", "the channel gave no result for this SKU; it is pushed again next run")
        elif result.ok:
            record_pushed(session, account, push.variant.id, push.sku, push.quantity, run_id=ctx.run_id, text=push.text,
                          binding=known.get(str(push.variant.id)))
            ctx.item(push.sku, "ok", push.text)
        else:
            record_error(session, account.id, LISTING, push.variant.id, f"stock update refused: {result.message}")
            ctx.item(push.sku, "rejected", result.message, result.field)
            rejected[push.sku] = result.message


_LOOK_IT_UP = object()


def record_pushed(
    session: Session,
    account: ChannelAccount,
    variant_id: int,
    sku: str,
    quantity: Quantity,
    *,
    run_id: int | None,
    text: str | None = None,
    binding: Any = _LOOK_IT_UP,
) -> bool:
    """Remember the quantity a marketplace now shows and explain it in the audit log.

    Returns False (and writes nothing) when it already showed that quantity. Used by this flow and
    by the listings flow, whose listings carry a quantity too. ``binding``: the variant's STOCK
    binding (or None) when the caller fetched a batch of them; looked up here otherwise.
    """
    if binding is _LOOK_IT_UP:
        binding = by_internals(session, account.id, STOCK, [variant_id]).get(str(variant_id))
    if binding is not None and binding.fingerprint == str(quantity.quantity):
        return False
    previous = int(binding.fingerprint) if binding is not None and (binding.fingerprint or "").isdigit() else None
    if binding is not None:  # what bind() does to an existing binding, without looking it up again
        binding.external_id, binding.fingerprint = sku, str(quantity.quantity)
        binding.last_sent_at, binding.last_error = utcnow(), None
    else:
        bind(session, account.id, STOCK, internal_id=variant_id, external_id=sku,
             fingerprint=str(quantity.quantity), sent_at=utcnow())
    text = text or quantity.text
    emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=run_id,
         kind="stock.pushed", message=f"{sku}: {account.name} now shows {quantity.quantity} ({text})",
         data={"sku": sku, "quantity": quantity.quantity, "explanation": text,
               "previous": previous,
               "basis": account.inventory_basis, "basis_total": quantity.basis_total,
               "pending": quantity.pending, "reserve": quantity.reserve})
    if quantity.oversold_by and not _oversell_known(session, account.organisation_id, sku, quantity):
        emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=run_id,
             kind="stock.oversell", level="error",
             message=(f"{sku} is oversold by {quantity.oversold_by}: {quantity.pending} unit(s) in orders not yet routed, "
                      f"{quantity.basis_total} {BASES.get(account.inventory_basis, account.inventory_basis)}. "
                      "Restock it in the source or cancel an order; it shows 0 until then."),
             data={"sku": sku, "oversold_by": quantity.oversold_by, "pending": quantity.pending,
                   "basis_total": quantity.basis_total})
    return True


def _oversell_known(session: Session, organisation_id: int, sku: str, quantity: Quantity) -> bool:
    """Whether the same oversell (same units waiting, same basis) was reported in the last day.

    The orders flow reports an oversell when the order arrives, and every marketplace's stock push
    meets the same numbers: one event per state of the SKU, not one per account and run.
    """
    recent = session.scalars(select(Event.data).where(
        Event.organisation_id == organisation_id, Event.kind == "stock.oversell",
        Event.created_at >= utcnow() - OVERSELL_REPEAT_AFTER))
    for data in recent:
        data = data or {}
        if data.get("sku") != sku:
            continue
        if (data.get("pending", data.get("units")), data.get("basis_total", data.get("basis"))) == (
                quantity.pending, quantity.basis_total):
            return True
    return False


# -- pushing at once when an order arrives -----------------------------------------------------------


def push_stock_now(
    db: Database,
    organisation_id: int,
    skus: Iterable[str],
    exclude_account_id: int | None = None,
    *,
    enqueue: Callable[..., int] | None = None,
    force: bool = False,
) -> list[int]:
    """Push ``skus`` to every other Testing/Live marketplace account that lists any of them, now.

    Call it after the transaction that imported the order has committed (the pending units must be
    visible, and on SQLite an open write transaction would block the push). ``exclude_account_id``
    is the marketplace the order came from: it already knows. With ``enqueue`` (a runtime's
    ``enqueue``) the pushes are queued on the stock lane; without it they run here, one targeted
    stock run per account. ``force`` pushes the quantities even where they did not change (the
    marketplace's own figure moved: an order cancelled there gave its reservation back). Returns the
    run ids.
    """
    wanted = sorted({sku for sku in skus if sku})
    if not wanted:
        return []
    with db.session() as session:
        targets = _accounts_listing(session, organisation_id, wanted, exclude_account_id)
    params: dict[str, Any] = {"skus": wanted, "force": True} if force else {"skus": wanted}
    enqueue = enqueue or enqueuer()
    if enqueue is not None:
        return [enqueue(account_id, "stock", trigger="event", params=params) for account_id in targets]
    return [_run_inline(db, account_id, params) for account_id in targets]


def _accounts_listing(session: Session, organisation_id: int, skus: list[str], exclude: int | None) -> list[int]:
    variant_ids = [str(vid) for chunk in chunked(skus) for vid in session.scalars(
        select(Variant.id).where(Variant.organisation_id == organisation_id, Variant.sku.in_(chunk)))]
    accounts = [
        account for account in session.scalars(
            select(ChannelAccount).where(
                ChannelAccount.organisation_id == organisation_id,
                ChannelAccount.status.in_((AccountStatus.TESTING, AccountStatus.LIVE)),
                ChannelAccount.listings_enabled.is_(True),
            ).order_by(ChannelAccount.id)
        )
        if account.id != exclude and is_marketplace(account)
    ]
    if not accounts or not variant_ids:
        return []
    listing: set[int] = set()
    for chunk in chunked(variant_ids):
        listing.update(session.scalars(
            select(Binding.account_id).where(
                Binding.kind == LISTING,
                Binding.account_id.in_([account.id for account in accounts]),
                Binding.internal_id.in_(chunk),
            ).distinct()
        ))
    return [account.id for account in accounts if account.id in listing]


def _run_inline(db: Database, account_id: int, params: dict[str, Any]) -> int:
    run_id = create_run(db, account_id, "stock", trigger="event")
    for _ in range(INLINE_BUSY_TRIES):
        outcome = execute_run(db, run_id, locks=_INLINE_LOCKS, retries_left=0,
                              busy_delay=INLINE_BUSY_DELAY, params=params)
        if outcome.verdict is not Verdict.DEFER or outcome.delay > INLINE_BUSY_DELAY:
            break
        time.sleep(outcome.delay)
    if outcome.verdict is Verdict.DEFER:
        fail_run(db, run_id, "could not push at once (the channel asked to wait, or another push was running); "
                             "the next scheduled stock run pushes these SKUs")
    return run_id


# -- helpers ----------------------------------------------------------------------------------------


def variants_by_id(session: Session, ids: Iterable[int]) -> dict[int, Variant]:
    """Variants with their product and stock levels, a query per ``SQL_IN_CHUNK`` ids."""
    found: dict[int, Variant] = {}
    for chunk in chunked(sorted(set(ids))):
        query = (
            select(Variant)
            .where(Variant.id.in_(chunk))
            .options(selectinload(Variant.product), selectinload(Variant.stock_levels))
        )
        found.update((variant.id, variant) for variant in session.scalars(query))
    return found


register_flow("stock", run, applies=is_marketplace)
