"""Flow "orders": a marketplace's orders -> the hub (exactly once) -> the order destination.

Top to bottom, for one MARKETPLACE account:

1. **Pull** ``pull_orders(since)`` where ``since`` is the cursor minus ``PULL_OVERLAP`` (marketplace
   order lists are not transactional: a late write lands behind a window already read).
2. **Store** the whole batch in one transaction: new orders are inserted (the database's unique
   ``(account, channel_order_id)`` decides a race between two workers, inside a savepoint, plus an
   ORDER_IMPORT binding), lines are matched to Variants by identical SKU (an unknown SKU puts the
   order in status ``error`` naming the SKU — never dropped), known orders take the marketplace's
   cancellations and returns. The cursor moves to the newest change seen, in the same transaction,
   so it never runs ahead of what was stored.
3. **Oversell check** for the SKUs just sold: more units waiting to be routed than the stock basis
   is a ``stock.oversell`` error event naming the orders.
4. **Stock push**: ``hub.flows.stock.push_stock_now`` gives every *other* marketplace the new
   quantities at once, not on its next schedule.
5. **Route** every order of the account still waiting (new ones, and any a previous run could not
   route) — a webhook-triggered run (``order_ids``) routes just the orders it pulled — in chunks of
   the largest target batch, each chunk through every target in turn — the destination
   (DESTINATION_ORDER binding), then the fulfilment account (FULFILMENT_ORDER) — after the
   ``channelhub_transform_order`` hooks. A channel with a batch import (``create_orders``) gets
   ``max_batch`` orders a call, others one ``create_order`` each. The binding is recorded only after
   the target accepted the order; a worker killed in between is harmless because ``create_order``
   looks the order number up first (the channel contract).
6. **Cancellations and returns follow the order**: a marketplace cancellation goes to each place the
   order reached (``cancel_order``), a return to the destination (``receive_return``), and orders
   cancelled at the destination (``pull_cancellations``) are cancelled on the marketplace. Where a
   channel lacks the hook, an event tells the admin exactly what to do by hand. A webhook run does
   only the first of these (for the orders it pulled); the scheduled run does the rest, reading the
   destinations' cancellations in another thread while step 1 pulls, and storing them here.

Orders of an account with Fulfilments off are *Third Party Managed*: imported with that status,
still routed to the destination (the brand sees the sale), never sent to the fulfilment account and
never written back to the marketplace (no cancellation, and the fulfilment flow skips them).

Plugin authors: the cursor needs each order's change time. Set ``Order.changed_at`` (or, for
older plugins, ``Order.raw["changed_at"]``); without it ``placed_at`` is used. See docs/flows-orders-fulfilment-reconcile.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer, selectinload

from hub import bindings, cursors
from hub import records as canonical
from hub.accounts import is_third_party_managed
from hub.channel import Channel, Role
from hub.connections import get_connector, has_role, open_channel
from hub.db import chunked, draw_ids
from hub.errors import AuthError, ChannelError, ConfigurationError, RateLimited, RejectedItem, TransientError
from hub.events import emit
from hub.flows import stock
from hub.flows.reset import reset_in_progress
from hub.jobs import FlowContext, register_flow
from hub.parallel import in_background
from hub.models import (
    AccountStatus,
    ChannelAccount,
    Order,
    OrderLine,
    OrderStatus,
    Return,
    Variant,
    utcnow,
)
from hub.plugins import get_plugin_manager
from hub.scheduling import interval_for

log = logging.getLogger("channelhub.flows.orders")

STREAM = "orders"
CANCELLATIONS_PREFIX = "cancellations:"  # + the destination's id: the cursor of its cancellations
# Re-read this much before the cursor on every pull; orders seen twice are recognised by their id.
PULL_OVERLAP = timedelta(minutes=10)
ACTIVE_STATUSES = (AccountStatus.TESTING, AccountStatus.LIVE)

CANCELLED_LINE = "cancelled"
RETURNED_LINE = "returned"
SENT_SHIPMENT = "sent"  # a Fulfilment row the marketplace accepted (hub.flows.fulfilment)
RETURN_REQUESTED, RETURN_RECEIVED, RETURN_BY_HAND = "requested", "received", "by_hand"  # Return.status
Cancellations = tuple[int, list[canonical.Order]]  # a destination account's id, the orders it reports cancelled


# -- the flow ------------------------------------------------------------------------------------


def run_orders(ctx: FlowContext) -> None:
    with ctx.db.session() as session:
        account = _account(session, ctx)
        reason = skip_reason(account)
        if reason:
            ctx.item(account.name, "skipped", reason)
            return
        since = cursors.read_time(session, account.id, STREAM, overlap=PULL_OVERLAP)
        channel = open_channel(account)
        account_id, organisation_id = account.id, account.organisation_id
        pulls = ctx.pull_is_due(interval_for(account, ctx.flow))
    targeted = [str(order_id) for order_id in ctx.params.get("order_ids") or []]
    cancellations: Future[list[Cancellations]] | None = None
    if not pulls:
        batch = StoredBatch()  # a prompt continuation routes what the yielding run left; its pull moved the cursor
    else:
        if not targeted:  # read beside the marketplace's pull: one round trip of a quiet poll's three
            cancellations = in_background(read_destination_cancellations(ctx, account_id), name="destination-cancellations")
        pulled = pull(ctx, channel, since, targeted)
        # A webhook's targeted pull says nothing about orders it did not name: the cursor stays put.
        batch = store_batch(ctx, account_id, pulled, move_cursor=not targeted)
    batch.report(ctx)
    oversold = check_oversell(ctx, account_id, batch.imported)
    push_stock(ctx, organisation_id, account_id, batch.stock_skus - oversold)
    # An oversold SKU goes to every marketplace, this one included: a cancelled order gave its
    # reservation back there, and a held one still counts as pending, so each must show 0 now.
    push_stock(ctx, organisation_id, None, oversold, force=True)
    # A webhook run is someone waiting for these orders: it routes just them and leaves the rest of
    # the account's backlog, returns and destination cancellations to the scheduled run.
    route_waiting(ctx, account_id, only=batch.touched if targeted else None)
    follow_cancellations(ctx, account_id, batch.cancelled)  # this pull's: the next pull will not see them
    if cancellations is not None:
        _store_cancellations_read_beside_pull(ctx, account_id, cancellations)
    if not targeted and not ctx.continues_later:  # a run that yielded leaves these scans to its continuation
        forward_returns(ctx, account_id)
        if cancellations is None:
            pull_destination_cancellations(ctx, account_id)


def skip_reason(account: ChannelAccount) -> str | None:
    """Why the orders flow must not run for this account now, or None."""
    if account.status not in ACTIVE_STATUSES:
        return f"{account.name} is {account.status.value}: orders are imported only in Testing or Live"
    if not account.orders_enabled:
        return f"Orders is off for {account.name}: turn it on to import orders"
    if not has_role(account, Role.MARKETPLACE):
        return f"{account.name} ({account.plugin}) is not a marketplace: it has no orders to import"
    if reset_in_progress(account):
        return f"a product reset of {account.name} is running: orders are imported when it finishes"
    return None


def pull(ctx: FlowContext, channel: Channel, since: datetime | None, order_ids: list[str]) -> list[canonical.Order]:
    """The orders a webhook named (when the channel can pull just those), else every order the
    marketplace changed since ``since``; a failure mid-way raises (nothing stored)."""
    if order_ids and channel.implements("pull_orders_by_id"):
        orders = list(channel.pull_orders_by_id(order_ids))
    else:
        orders = list(channel.pull_orders(since))
    ctx.add_api_calls(1)
    return orders


# -- storing a batch -----------------------------------------------------------------------------


@dataclass
class StoredBatch:
    imported: list[int] = field(default_factory=list)  # new order ids
    touched: list[int] = field(default_factory=list)  # ids of every order pulled, new or known
    cancelled: list[int] = field(default_factory=list)  # orders that became cancelled in this batch
    stock_skus: set[str] = field(default_factory=set)  # SKUs whose held units changed
    newest: datetime | None = None
    items: list[tuple[str, str, str, str | None]] = field(default_factory=list)

    def item(self, key: str, outcome: str, message: str, item_field: str | None = None) -> None:
        self.items.append((key, outcome, message, item_field))

    def seen(self, moment: datetime | None) -> None:
        if moment is not None and (self.newest is None or moment > self.newest):
            self.newest = moment

    def report(self, ctx: FlowContext) -> None:
        # Items are written only after the batch committed, so they never claim an import that rolled back.
        for key, outcome, message, item_field in self.items:
            ctx.item(key, outcome, message, item_field)


def store_batch(ctx: FlowContext, account_id: int, pulled: list[canonical.Order], *, move_cursor: bool = True) -> StoredBatch:
    """Import new orders, apply changes to known ones, and move the cursor — one transaction."""
    batch = StoredBatch()
    if not pulled:
        return batch  # a quiet account's poll: no transaction, no lock
    with ctx.db.session() as session:
        # Hold the account row: two workers storing batches of one account take turns, and on SQLite
        # this first write opens the transaction, so the savepoints below nest inside it.
        lock_row(session, ChannelAccount, account_id)
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        known = known_orders(session, account.id, [o.channel_order_id for o in pulled])
        # A pull re-reads a window of orders the hub mostly has as they are: only those it changed are loaded.
        changed = orders_by(session, account.id, Order.channel_order_id,
                            (o.channel_order_id for o in pulled
                             if o.channel_order_id in known and known[o.channel_order_id].may_change(o)),
                            with_=Order.lines)
        # A fixed order: two workers storing the same batch take row locks in the same sequence.
        new: dict[str, canonical.Order] = {}
        again: list[canonical.Order] = []  # pulled twice in one batch (a page shifted under the pull)
        for remote in sorted(pulled, key=lambda order: order.channel_order_id):
            stored = known.get(remote.channel_order_id)
            if stored is not None:
                batch.touched.append(stored.id)
                if remote.channel_order_id in changed:
                    _apply_changes(ctx, session, account, changed[remote.channel_order_id], remote, batch)
            elif remote.channel_order_id in new:
                again.append(remote)
            else:
                new[remote.channel_order_id] = remote
            batch.seen(changed_at(remote))
        variants = _variant_ids(session, account.organisation_id, {line.sku for o in new.values() for line in o.lines})
        _import_new(ctx, session, account, list(new.values()), variants, batch)
        for remote in again:
            row = _find_order(session, account.id, remote.channel_order_id)
            assert row is not None
            _apply_changes(ctx, session, account, row, remote, batch)
        if move_cursor and batch.newest is not None:
            advance_cursor(session, account.id, STREAM, batch.newest)
    return batch


@dataclass
class KnownOrder:
    """What a re-read order is compared with: its status and its lines' statuses per SKU."""

    id: int
    status: OrderStatus
    line_statuses: dict[str, set[str]] = field(default_factory=dict)

    def may_change(self, remote: canonical.Order) -> bool:
        """Whether ``_apply_changes`` could find anything to take from ``remote`` (it decides)."""
        if remote.status == "cancelled" and self.status != OrderStatus.CANCELLED:
            return True
        if remote.status == "returned" and self.status not in (OrderStatus.RETURNED, OrderStatus.CANCELLED):
            return True
        return any(line.status in (CANCELLED_LINE, RETURNED_LINE)
                   and any(status != line.status for status in self.line_statuses.get(line.sku, ()))
                   for line in remote.lines)


def known_orders(session: Session, account_id: int, channel_order_ids: Iterable[str]) -> dict[str, KnownOrder]:
    """The account's orders among ``channel_order_ids``, as plain values: a chunk of ids a query."""
    found: dict[str, KnownOrder] = {}
    for chunk in chunked(list(dict.fromkeys(channel_order_ids))):
        rows = session.execute(
            select(Order.id, Order.channel_order_id, Order.status, OrderLine.sku, OrderLine.status)
            .outerjoin(OrderLine, OrderLine.order_id == Order.id)
            .where(Order.account_id == account_id, Order.channel_order_id.in_(chunk)))
        for order_id, channel_order_id, status, sku, line_status in rows:
            known = found.setdefault(channel_order_id, KnownOrder(order_id, status))
            if sku is not None:
                known.line_statuses.setdefault(sku, set()).add(line_status)
    return found


def orders_by(session: Session, account_id: int, column: Any, keys: Iterable[str], *, with_: Any) -> dict[str, Order]:
    """The account's orders whose ``column`` is among ``keys``, each with the relationship ``with_``.

    A scheduled pull re-reads a window of orders (or shipments) the hub mostly has already, so they
    are loaded a chunk at a time, not one by one.
    """
    found: dict[str, Order] = {}
    for chunk in chunked(list(dict.fromkeys(keys))):
        for order in session.scalars(select(Order).where(Order.account_id == account_id, column.in_(chunk))
                                     .options(selectinload(with_))):
            found[getattr(order, column.key)] = order
    return found


def _import_new(ctx: FlowContext, session: Session, account: ChannelAccount, remotes: list[canonical.Order],
                variants: dict[str, int], batch: StoredBatch) -> None:
    """Insert the orders the hub did not know, together: one savepoint and a few multi-row INSERTs
    (a savepoint and flush per order was a quarter of an orders run's CPU). The account row is held,
    so no other run imports them meanwhile; should an insert still collide, the batch goes again
    one order at a time and the rows already there stand."""
    if not remotes:
        return
    try:
        _insert_orders(ctx, session, account, remotes, variants, batch)
    except IntegrityError:
        for remote in remotes:
            _store_one(ctx, session, account, remote, variants, batch)


def _insert_orders(ctx: FlowContext, session: Session, account: ChannelAccount, remotes: list[canonical.Order],
                   variants: dict[str, int], batch: StoredBatch) -> None:
    """New order rows under one savepoint, then their bindings and announcements; a unique
    constraint that refuses one undoes them all and raises IntegrityError.

    The rows go in as plain INSERTs, not ORM objects: building and flushing an Order and its lines
    per new order was a third of storing a pull. Nothing in the batch's transaction reads them back
    as objects."""
    new = [_new_order(account, remote, variants) for remote in remotes]
    with session.begin_nested():
        _insert_order_rows(session, new)
    imported = bindings.NewBindings(session, account.id, bindings.ORDER_IMPORT)
    for remote, order in zip(remotes, new):
        imported.add(order.id, remote.channel_order_id)
        batch.touched.append(order.id)
        _announce_import(ctx, session, account, order, batch)
    imported.write()


def _insert_order_rows(session: Session, new: list[NewOrder]) -> None:
    orders, lines = Order.__table__, OrderLine.__table__
    ids = draw_ids(session, orders, len(new))
    if ids is not None:
        session.execute(insert(orders), [{**order.values, "id": i} for order, i in zip(new, ids, strict=True)])
    else:
        ids = list(session.execute(insert(orders).returning(orders.c.id, sort_by_parameter_order=True),
                                   [order.values for order in new]).scalars())
    for order, order_id in zip(new, ids, strict=True):
        order.id = order_id
    rows = [{**line, "order_id": order.id} for order in new for line in order.lines]
    if rows:
        session.execute(insert(lines), rows)


def _store_one(
    ctx: FlowContext, session: Session, account: ChannelAccount, remote: canonical.Order,
    variants: dict[str, int], batch: StoredBatch,
) -> None:
    existing = _find_order(session, account.id, remote.channel_order_id)
    if existing is None:
        try:
            _insert_orders(ctx, session, account, [remote], variants, batch)
            return
        except IntegrityError:
            # Another worker imported it between our look-up and our insert: theirs stands.
            existing = _find_order(session, account.id, remote.channel_order_id)
            if existing is None:
                raise
    batch.touched.append(existing.id)
    _apply_changes(ctx, session, account, existing, remote, batch)


@dataclass
class NewOrder:
    """An order about to be imported: its row's and its lines' column values, and (once inserted) its id."""

    values: dict[str, Any]
    lines: list[dict[str, Any]]
    id: int = 0

    @property
    def number(self) -> str:
        return self.values["order_number"]

    @property
    def status(self) -> OrderStatus:
        return self.values["status"]


def _new_order(account: ChannelAccount, remote: canonical.Order, variants: dict[str, int]) -> NewOrder:
    tpm = is_third_party_managed(account)
    lines = [
        {"sku": line.sku, "variant_id": variants.get(line.sku), "title": line.title, "quantity": line.quantity,
         "unit_price": line.unit_price, "channel_line_ids": [str(i) for i in line.channel_line_ids],
         "status": line.status or "open"}
        for line in remote.lines
    ]
    unmatched = sorted({line["sku"] for line in lines if line["variant_id"] is None})
    status = OrderStatus.THIRD_PARTY_MANAGED if tpm else OrderStatus.IMPORTED
    error = None
    if remote.status == "cancelled":
        status = OrderStatus.CANCELLED
    elif remote.status == "returned":
        status = OrderStatus.RETURNED
    elif unmatched:
        status, error = OrderStatus.ERROR, unmatched_message(unmatched)
    now = utcnow()
    return NewOrder(values={
        "organisation_id": account.organisation_id, "account_id": account.id, "channel_order_id": remote.channel_order_id,
        "order_number": remote.order_number, "status": status, "placed_at": _aware(remote.placed_at),
        "currency": remote.currency, "customer_name": remote.customer_name, "customer_email": remote.customer_email,
        "billing_address": _address_data(remote.billing_address), "shipping_address": _address_data(remote.shipping_address),
        "shipping_method": remote.shipping_method, "total": remote.total, "third_party_managed": tpm,
        "destination_account_id": None, "error": error, "raw": _json_safe(remote.raw), "created_at": now, "updated_at": now,
    }, lines=lines)


def unmatched_message(skus: list[str]) -> str:
    named = ", ".join(repr(sku) for sku in skus)
    noun = "SKU" if len(skus) == 1 else "SKUs"
    return (f"{noun} {named} match no catalogue variant: add {'it' if len(skus) == 1 else 'them'} to the catalogue "
            "(or correct the SKU on the marketplace); the order is routed on the next run after that")


def _announce_import(ctx: FlowContext, session: Session, account: ChannelAccount, order: NewOrder,
                     batch: StoredBatch) -> None:
    batch.imported.append(order.id)
    number, status, error = order.number, order.status, order.values["error"]
    about = {"order_id": order.id, "order_number": number}
    if status == OrderStatus.ERROR:
        _event(session, ctx, account, "order.unmatched", f"Order {number} from {account.name}: {error}", "error",
               **about, skus=sorted(line["sku"] for line in order.lines if line["variant_id"] is None))
        batch.item(number, "rejected", error or "", "sku")
    elif status in (OrderStatus.CANCELLED, OrderStatus.RETURNED):
        _event(session, ctx, account, "order.imported",
               f"Order {number} from {account.name} imported already {status.value}; nothing to route", **about)
        batch.item(number, "skipped", f"already {status.value} on the marketplace")
        return
    else:
        how = " as Third Party Managed (Fulfilments is off)" if order.values["third_party_managed"] else ""
        _event(session, ctx, account, "order.imported", f"Order {number} imported from {account.name}{how}", **about)
        batch.item(number, "ok", f"imported{how}")
    batch.stock_skus.update(line["sku"] for line in order.lines if line["variant_id"] is not None)


def _apply_changes(
    ctx: FlowContext, session: Session, account: ChannelAccount, row: Order, remote: canonical.Order, batch: StoredBatch
) -> None:
    """A known order pulled again: take its cancellation or return; anything else changes nothing."""
    number = row.order_number
    if remote.status == "cancelled" and row.status != OrderStatus.CANCELLED:
        row.status, row.error = OrderStatus.CANCELLED, None
        for line in row.lines:
            line.status = CANCELLED_LINE
        batch.cancelled.append(row.id)
        batch.stock_skus.update(line.sku for line in row.lines)
        _event(session, ctx, account, "order.cancelled", f"Order {number} was cancelled on {account.name}", order=row)
        batch.item(number, "ok", "cancelled on the marketplace")
        return
    if remote.status == "returned" and row.status not in (OrderStatus.RETURNED, OrderStatus.CANCELLED):
        row.status = OrderStatus.RETURNED
        _record_returns(session, row, row.lines, remote)
        _event(session, ctx, account, "order.returned", f"Order {number} was returned on {account.name}", order=row)
        batch.item(number, "ok", "returned on the marketplace")
        return
    _apply_line_changes(ctx, session, account, row, remote, batch)


def _apply_line_changes(
    ctx: FlowContext, session: Session, account: ChannelAccount, row: Order, remote: canonical.Order, batch: StoredBatch
) -> None:
    """Part of an order cancelled or returned (The Iconic changes status per item)."""
    stored = {line.sku: line for line in row.lines}
    changed: dict[str, list[OrderLine]] = defaultdict(list)
    for line in remote.lines:
        mine = stored.get(line.sku)
        if mine is not None and line.status in (CANCELLED_LINE, RETURNED_LINE) and mine.status != line.status:
            mine.status = line.status
            changed[line.status].append(mine)
    if changed.get(RETURNED_LINE):
        _record_returns(session, row, changed[RETURNED_LINE], remote)
    for status, lines in changed.items():
        skus = ", ".join(line.sku for line in lines)
        # A returned line goes to the destination with its Return; part of an order cancelled has no
        # hook anywhere (cancel_order cancels whole orders), so the admin adjusts it.
        advice = f"; adjust the order in {_destination_name(session, row)} by hand" if status == CANCELLED_LINE else ""
        _event(session, ctx, account, f"order.line_{status}", f"Order {row.order_number}: {skus} {status} on {account.name}{advice}",
               "warning" if advice else "info", order=row, skus=[line.sku for line in lines])
        batch.item(row.order_number, "ok", f"{skus} {status} on the marketplace")
    batch.stock_skus.update(line.sku for line in changed.get(CANCELLED_LINE, []))


def _record_returns(session: Session, row: Order, lines: Iterable[OrderLine], remote: canonical.Order) -> None:
    """One Return per returned line, keyed so a return pulled again is not recorded twice."""
    reason = str((remote.raw or {}).get("return_reason", "")) if isinstance(remote.raw, dict) else ""
    for line in lines:
        key = f"{row.channel_order_id}:{line.sku}:{','.join(line.channel_line_ids) or line.quantity}"
        exists = session.scalar(select(Return.id).where(Return.order_id == row.id, Return.external_id == key))
        if exists is None:
            _insert_once(session, Return(
                order_id=row.id, external_id=key, reason=reason[:500], status=RETURN_REQUESTED,
                lines=[{"sku": line.sku, "quantity": line.quantity, "channel_line_ids": list(line.channel_line_ids)}],
            ))


# -- oversell and stock --------------------------------------------------------------------------


def check_oversell(ctx: FlowContext, account_id: int, order_ids: list[int]) -> set[str]:
    """An error event per SKU of the new orders that has more units waiting than the stock basis,
    then the oversell policy; returns the oversold SKUs.

    The marketplace already sold them; the admin has to find stock or cancel, so say which orders.
    "Waiting" is the stock rule's own notion (``hub.flows.stock.pending_units``), so this check and
    the quantities pushed never disagree. Units already held by the policy are known: a SKU whose
    excess they cover is not reported again. The SKU's row is held while deciding, so two runs (two
    marketplaces selling the last unit at once) decide one after the other, each seeing the other's
    orders. Only the SKUs a first look without locks finds oversold are decided so: that look comes
    after this run's orders committed, so of two runs racing for the last unit the later one sees
    both runs' orders (a run's own lock never showed it more than that).
    """
    oversold: set[str] = set()
    if not order_ids:
        return oversold
    for variant_id in _oversold_at_a_glance(ctx, account_id, order_ids):
        with ctx.db.session() as session:
            lock_row(session, Variant, variant_id)
            account = session.get(ChannelAccount, account_id)
            variant = session.get(Variant, variant_id)
            assert account is not None and variant is not None
            excess = _unhandled_excess(session, account, variant)
            if excess is None:
                continue
            oversold.add(variant.sku)
            if excess <= 0:
                continue  # held orders cover it already: reported when they were held
            quantity = stock.quantity_for(variant, account, stock.pending_units(session, account.organisation_id,
                                                                                [variant.sku]).get(variant.sku, 0))
            numbers = waiting_orders(session, account.organisation_id, variant.sku)
            message = (f"SKU {variant.sku} is oversold: {quantity.pending} unit(s) in order(s) {', '.join(numbers)} "
                       f"wait for the order system but only {quantity.basis_total} are in stock "
                       f"({account.inventory_basis}). Find stock in the source, or cancel an order on {account.name}.")
            _event(session, ctx, account, "stock.oversell", message, "error", sku=variant.sku, orders=numbers,
                   units=quantity.pending, basis=quantity.basis_total)
            apply_oversell_policy(ctx, session, variant, excess)
    return oversold


def _oversold_at_a_glance(ctx: FlowContext, account_id: int, order_ids: list[int]) -> list[int]:
    """Ids of the variants of these orders whose pending units exceed the stock basis, by a few
    queries for the whole batch: most runs oversell nothing, and a transaction per SKU cost a fifth
    of an orders run's CPU."""
    with ctx.db.session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        variant_ids = set(session.scalars(select(OrderLine.variant_id).where(
            OrderLine.order_id.in_(order_ids), OrderLine.variant_id.is_not(None), OrderLine.status != CANCELLED_LINE)))
        variants = stock.variants_by_id(session, variant_ids)
        pending = stock.pending_units(session, account.organisation_id, {v.sku for v in variants.values()})
        return sorted(variant.id for variant in variants.values()
                      if stock.quantity_for(variant, account, pending.get(variant.sku, 0)).oversold_by > 0)


def _unhandled_excess(session: Session, account: ChannelAccount, variant: Variant) -> int | None:
    """None when ``variant`` is not oversold; else the units of its excess no held order covers yet."""
    pending = stock.pending_units(session, account.organisation_id, [variant.sku]).get(variant.sku, 0)
    quantity = stock.quantity_for(variant, account, pending)
    if quantity.oversold_by <= 0:
        return None
    held = sum(_units_of(order, variant.sku) for order in _competing(session, variant) if is_held(order))
    return quantity.oversold_by - held


def waiting_orders(session: Session, organisation_id: int, sku: str) -> list[str]:
    """Numbers of the orders whose units of ``sku`` count as pending in the stock rule."""
    return sorted(set(session.scalars(
        select(Order.order_number).join(OrderLine, OrderLine.order_id == Order.id).where(
            Order.organisation_id == organisation_id, Order.status.in_(stock.PENDING_STATUSES),
            Order.destination_account_id.is_(None), Order.third_party_managed.is_(False),
            OrderLine.status != CANCELLED_LINE, OrderLine.sku == sku))))


# -- the oversell policy -------------------------------------------------------------------------

OVERSELL_POLICIES = ("hold", "cancel")
DEFAULT_OVERSELL_POLICY = "hold"
DEFAULT_OVERSELL_CANCEL_REASON = "Out of stock"  # one of The Iconic's cancellation reasons
HELD = "Held: oversold"  # how a held order's error starts; routing passes held orders over


def oversell_policy(account: ChannelAccount) -> str:
    """The account setting ``oversell_policy``: "hold" (the default) or "cancel"."""
    value = str((account.settings or {}).get("oversell_policy") or DEFAULT_OVERSELL_POLICY).strip().lower()
    return value if value in OVERSELL_POLICIES else DEFAULT_OVERSELL_POLICY


def is_held(order: Order) -> bool:
    return order.status == OrderStatus.ERROR and (order.error or "").startswith(HELD)


def apply_oversell_policy(ctx: FlowContext, session: Session, variant: Variant, excess: int) -> None:
    """Take ``excess`` units of ``variant`` back from the newest orders the order system has not
    accepted yet, each by the policy of the marketplace account it was sold on:

    - ``hold``: the order stays in ``error`` ("Held: oversold ..."), is not routed, still holds its
      units (so every marketplace shows what is really left) and is released and routed by itself
      once the source has stock for it again; an ``order.held`` error event tells the admin.
    - ``cancel``: the order is cancelled on its marketplace (``cancel_order`` with the account's
      ``oversell_cancel_reason``, default "Out of stock"), and at any place it already reached;
      an ``order.oversell_cancelled`` warning says so. A marketplace that cannot cancel, or refuses,
      holds the order instead.

    An order the order system already accepted has the stock: the policy never takes it back.
    """
    candidates = [order for order in _competing(session, variant) if not is_held(order)]
    lock_for_remote_call(session, Order, [order.id for order in candidates])
    for order in candidates:
        if excess <= 0:
            return
        session.refresh(order)
        if order.status not in stock.PENDING_STATUSES or order.destination_account_id is not None or is_held(order):
            continue  # routed, cancelled or held by another run while we waited for it
        units = _units_of(order, variant.sku)
        if units <= 0:
            continue
        sold_on = session.get(ChannelAccount, order.account_id)
        assert sold_on is not None
        why = (f"SKU {variant.sku} is oversold: the units went to an earlier order (oversell policy "
               f"'{oversell_policy(sold_on)}' of {sold_on.name})")
        if oversell_policy(sold_on) == "cancel" and _cancel_oversold(ctx, session, sold_on, order, variant.sku, why):
            excess -= units
            continue
        _hold(ctx, session, sold_on, order, variant.sku, why)
        excess -= units


def _competing(session: Session, variant: Variant) -> list[Order]:
    """Orders that count as pending for ``variant``'s SKU, newest first (the later order loses)."""
    orders = session.scalars(
        select(Order).join(OrderLine, OrderLine.order_id == Order.id).where(
            Order.organisation_id == variant.organisation_id, Order.status.in_(stock.PENDING_STATUSES),
            Order.destination_account_id.is_(None), Order.third_party_managed.is_(False),
            OrderLine.status != CANCELLED_LINE, OrderLine.sku == variant.sku))
    unique = {order.id: order for order in orders}.values()
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(unique, key=lambda order: (_aware(order.placed_at) or epoch, order.id), reverse=True)


def _units_of(order: Order, sku: str) -> int:
    return sum(line.quantity for line in order.lines if line.sku == sku and line.status != CANCELLED_LINE)


def _hold(ctx: FlowContext, session: Session, sold_on: ChannelAccount, order: Order, sku: str, why: str) -> None:
    order.status = OrderStatus.ERROR
    order.error = (f"{HELD}: {why}. It is not sent to the order system: restock {sku} in the source (the order is "
                   f"routed by itself then) or cancel it on {sold_on.name}.")
    _event(session, ctx, sold_on, "order.held", f"Order {order.order_number} from {sold_on.name} is held: {why}. "
           f"Restock {sku} in the source (it is routed then) or cancel it on {sold_on.name}.", "error",
           order=order, sku=sku, policy="hold")
    ctx.item(order.order_number, "rejected", order.error, "sku")


def _cancel_oversold(ctx: FlowContext, session: Session, sold_on: ChannelAccount, order: Order, sku: str,
                     why: str) -> bool:
    """Cancel the order on its marketplace; False (and an event) when that did not happen."""
    reason = str((sold_on.settings or {}).get("oversell_cancel_reason") or DEFAULT_OVERSELL_CANCEL_REASON)
    refused = None
    if not _implements(sold_on, "cancel_order"):
        refused = f"{sold_on.name} cannot cancel orders through the hub"
    else:
        try:
            result = open_channel(sold_on).cancel_order(canonical_order(order), reason=reason)
        except ChannelError as error:
            result = canonical.ItemResult.rejected(order.order_number, str(error))
        finally:
            ctx.add_api_calls(1)
        if result is not None and not result.ok:
            refused = f"{sold_on.name} did not cancel it ({result.message})"
    if refused is not None:
        _event(session, ctx, sold_on, "order.cancel_failed",
               f"Order {order.order_number}: {why}, but {refused}; it is held instead", "error", order=order, sku=sku)
        return False
    order.status, order.error = OrderStatus.CANCELLED, None
    for line in order.lines:
        line.status = CANCELLED_LINE
    _event(session, ctx, sold_on, "order.oversell_cancelled",
           f"Order {order.order_number} was cancelled on {sold_on.name} ({reason}): {why}", "warning",
           order=order, sku=sku, reason=reason, policy="cancel")
    ctx.item(order.order_number, "ok", f"cancelled on {sold_on.name} ({reason}): {why}")
    for target_id in _reached(session, sold_on, order):  # an order in error may have reached one target
        target = session.get(ChannelAccount, target_id)
        if target is not None:
            cancel_at(ctx, session, sold_on, order, target, reason=f"cancelled on {sold_on.name}: {why}")
    return True


def _release_if_covered(ctx: FlowContext, session: Session, account: ChannelAccount, order: Order) -> bool:
    """A held order whose SKUs the source covers again is released (status imported); True if so."""
    for line in order.lines:
        if line.status == CANCELLED_LINE or line.variant_id is None:
            continue
        variant = session.get(Variant, line.variant_id)
        if variant is not None and _unhandled_excess(session, account, variant) is not None:
            return False  # still oversold (this order's own units count as pending)
    order.status, order.error = OrderStatus.IMPORTED, None
    _event(session, ctx, account, "order.released",
           f"Order {order.order_number}: the source has stock for it again; it is sent to the order system", order=order)
    return True


def push_stock(ctx: FlowContext, organisation_id: int, account_id: int | None, skus: set[str], *,
               force: bool = False) -> None:
    """Give every other marketplace (every one, with ``account_id`` None) the new quantities of ``skus``
    now (the stock flow does the work); ``force``: even where the hub's number did not change."""
    if not skus:
        return
    try:
        stock.push_stock_now(ctx.db, organisation_id, sorted(skus), exclude_account_id=account_id, force=force)
    except Exception as error:  # the orders are stored; a failed push must not undo or repeat them
        log.warning("pushing stock after an order import failed", exc_info=True)
        with ctx.db.session() as session:
            emit(session, organisation_id=organisation_id, account_id=account_id, run_id=ctx.run_id,
                 kind="stock.push_failed", level="warning",
                 message=(f"Could not push the new quantities of {len(skus)} SKU(s) to the other marketplaces at once "
                          f"({error}); the next scheduled stock run pushes them."),
                 data={"skus": sorted(skus)[:200], "error": type(error).__name__})


# -- routing -------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where an order goes: the destination (DESTINATION_ORDER) or the fulfilment account (FULFILMENT_ORDER)."""

    kind: str
    account_id: int
    name: str
    channel: Channel | None = None
    problem: str | None = None  # set when the target cannot take orders now (paused, wrong role...)

    @property
    def batch_size(self) -> int:
        # A channel with a batch import takes max_batch orders a call; without one each order is its
        # own call, so each is its own (short) transaction too.
        if self.channel is not None and type(self.channel).implements("create_orders"):
            return max(1, self.channel.limits.max_batch)
        return 1

    def applies_to(self, order: Order) -> bool:
        # Third Party Managed: shipped by someone else, never by our fulfilment account.
        return not (self.kind == bindings.FULFILMENT_ORDER and order.third_party_managed)


class StopRouting(Exception):
    """A target refused our credentials: no point trying the next orders."""


def route_waiting(ctx: FlowContext, account_id: int, *, only: Iterable[int] | None = None) -> None:
    """Route every order of the account that is waiting (new ones and those earlier runs could not
    route), or just those of ``only`` that are waiting.

    Pipelined: the orders go in chunks of the largest target batch, and each chunk goes through every
    target (the destination first, in batches of each target's size) and is marked ``routed`` before
    the next chunk starts, so under a burst the first orders reach the fulfilment account while later
    ones still wait for the destination, and API calls stay ``ceil(orders / max batch)`` per target.
    """
    with ctx.db.session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        query = select(Order.id).where(Order.account_id == account_id, *_routing_unfinished())
        if only is not None:
            query = query.where(Order.id.in_(sorted(set(only))))
        waiting = list(session.scalars(query.order_by(Order.id)))
        if not waiting:
            return
        targets = _targets(session, account)
    if not targets:
        ctx.item(account.name, "skipped",
                 f"{len(waiting)} order(s) wait: {account.name} has no destination account; choose one on the account page")
        return
    outgoing: dict[int, canonical.Order] = {}  # the transformed order, built once per run
    failed: set[int] = set()
    reached: set[int] = set()  # orders a target accepted in this run
    chunk = routing_chunk(targets)
    for first in range(0, len(waiting), chunk):
        orders = waiting[first:first + chunk]
        stop = _route_chunk(ctx, account_id, targets, orders, outgoing, failed, reached)
        finish_routing(ctx, account_id, orders, targets, failed, reached)
        if isinstance(stop, RateLimited):
            raise stop  # the runtime defers the run; what was routed stays routed
        if stop is not None:
            return
        if first + chunk < len(waiting) and ctx.time_to_yield():
            ctx.continue_later()  # the rest wait as imported; the continuation routes them
            return


def routing_chunk(targets: list[Target]) -> int:
    """How many orders go through every target before the next ones: the smallest batch a target
    takes, so each target still gets full batches and the last one (the warehouse) gets the first
    orders of a backlog after one such batch, not after the first target's largest batch (Shopify
    250, Starshipit 50: the warehouse started picking 250 orderCreates later)."""
    batched = [target.batch_size for target in targets if target.batch_size > 1]
    return min(batched) if batched else 1


def _route_chunk(ctx: FlowContext, account_id: int, targets: list[Target], order_ids: list[int],
                 outgoing: dict[int, canonical.Order], failed: set[int], reached: set[int]) -> BaseException | None:
    """Take ``order_ids`` through every target in turn; an order one target failed skips the later ones."""
    for target in targets:
        todo = [order_id for order_id in order_ids if order_id not in failed]
        for start in range(0, len(todo), target.batch_size):
            stop = route_batch(ctx, account_id, target, todo[start:start + target.batch_size], outgoing, failed, reached)
            if stop is not None:
                return stop
    return None


def route_batch(ctx: FlowContext, account_id: int, target: Target, order_ids: list[int],
                outgoing: dict[int, canonical.Order], failed: set[int], reached: set[int]) -> BaseException | None:
    """Hand a batch of orders to one target and record a binding for each it accepted.

    Returns what should stop the routing (a rate limit, refused credentials), else None.
    """
    with ctx.db.session() as session:
        lock_for_remote_call(session, Order, order_ids)
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        loaded = load_orders(session, order_ids, with_shipments=False)  # noqa: F841 - held: the identity map keeps weak references
        reached_before = set(bindings.by_internals(session, target.account_id, target.kind, order_ids))
        todo = _prepare_batch(ctx, session, account, target, order_ids, outgoing, failed, reached_before)
        if not todo:
            return None
        if target.problem or target.channel is None:
            return _batch_failed(ctx, session, account, todo, TransientError(target.problem or f"{target.name} is not available"), failed)
        try:
            results = _create(ctx, target, [outgoing[order.id] for order in todo])
        except RateLimited as error:
            return error
        except AuthError as error:
            refused = AuthError(f"{target.name} refused the hub's credentials ({error}): fix them on the {target.name} account page")
            return _batch_failed(ctx, session, account, todo, refused, failed)
        except ChannelError as error:
            return _batch_failed(ctx, session, account, todo, error, failed)
        variants = (stock.variants_by_id(session, [line.variant_id for order in todo for line in order.lines  # noqa: F841 - held
                                                   if line.variant_id is not None])
                    if target.kind == bindings.DESTINATION_ORDER else {})  # for mirror_sale
        accepted = bindings.NewBindings(session, target.account_id, target.kind)  # route_batch saw none, under the lock
        for order in todo:
            result = results.get(order.order_number)
            if result is None:
                _routing_failed(ctx, session, account, order, TransientError(f"{target.name} gave no answer for it"))
                failed.add(order.id)
            elif not result.ok:
                # A retryable refusal (e.g. the batch stopped before this order) says nothing against the order.
                refused = (TransientError(f"{target.name} did not take the order yet: {result.message}") if result.retryable
                           else RejectedItem(f"{target.name} refused the order: {result.message}", key=order.order_number,
                                             field=result.field))
                _routing_failed(ctx, session, account, order, refused)
                failed.add(order.id)
            else:
                record_route(session, order, target, result.external_id or order.order_number, accepted)
                reached.add(order.id)
        accepted.write()
    return None


def _prepare_batch(ctx: FlowContext, session: Session, account: ChannelAccount, target: Target, order_ids: list[int],
                   outgoing: dict[int, canonical.Order], failed: set[int], reached_before: set[str]) -> list[Order]:
    """The orders of the batch this target still has to receive, each with its outgoing form."""
    todo = []
    for order_id in order_ids:
        order = session.get(Order, order_id)
        if order is None or not _unfinished(order) or not target.applies_to(order):
            continue  # cancelled or routed by another worker meanwhile, or not for this target
        if str(order.id) in reached_before:
            continue  # reached on an earlier run
        if is_held(order) and not _release_if_covered(ctx, session, account, order):
            failed.add(order.id)  # held by the oversell policy: waits, quietly
            continue
        if not _rematch(ctx, session, account, order):
            failed.add(order.id)
            continue
        if order.id not in outgoing:
            try:
                outgoing[order.id] = _transform(destination_order(order, account), account)
            except HookFailed as error:
                _routing_failed(ctx, session, account, order, error)
                failed.add(order.id)
                continue
        todo.append(order)
    return todo


def _create(ctx: FlowContext, target: Target, orders: list[canonical.Order]) -> dict[str, canonical.ItemResult]:
    """``create_orders`` when the channel has a batch import, else ``create_order`` per order."""
    assert target.channel is not None
    if len(orders) > 1 and type(target.channel).implements("create_orders"):
        results = target.channel.create_orders(orders)
        ctx.add_api_calls(1)
    else:
        results = []
        for order in orders:
            try:
                results.append(target.channel.create_order(order))
            except RejectedItem as error:
                results.append(canonical.ItemResult.rejected(order.order_number, str(error), field=error.field))
            finally:
                ctx.add_api_calls(1)
    return {result.key: result for result in results}


def _batch_failed(ctx: FlowContext, session: Session, account: ChannelAccount, orders: list[Order],
                  error: Exception, failed: set[int]) -> BaseException | None:
    for order in orders:
        _routing_failed(ctx, session, account, order, error)
        failed.add(order.id)
    return StopRouting(str(error)) if isinstance(error, AuthError) else None


def load_orders(session: Session, order_ids: Iterable[int], *, with_shipments: bool = True) -> list[Order]:
    """The orders with their lines and (``with_shipments``) shipments, a few queries per
    ``SQL_IN_CHUNK`` ids, so that ``session.get`` and the relationships of a batch cost no round trip
    each. Hold the list: the session's identity map keeps only weak references.

    Routing never reads the marketplace's raw record (a destination gets a record of its own), and
    parsing it for every order of every batch, three times per batch, was the largest JSON cost of an
    orders run: it is loaded only if something asks for it. Sending a batch to a target never looks
    at shipments either; loading an empty collection for each order was a tenth of that step."""
    options = [defer(Order.raw), selectinload(Order.lines)]
    if with_shipments:
        options.append(selectinload(Order.fulfilments))
    loaded: list[Order] = []
    for chunk in chunked(sorted(set(order_ids))):
        loaded.extend(session.scalars(select(Order).where(Order.id.in_(chunk)).options(*options)))
    return loaded


def record_route(session: Session, order: Order, target: Target, external_id: str,
                 accepted: bindings.NewBindings) -> None:
    """The binding that says the target has the order (recorded only after it accepted the order)."""
    accepted.add(order.id, external_id, sent_at=utcnow())
    if target.kind == bindings.DESTINATION_ORDER:
        order.destination_account_id = target.account_id
        mirror_sale(session, order, target.account_id)


def mirror_sale(session: Session, order: Order, destination_id: int) -> None:
    """The destination took the order's units out of its stock as it accepted it; where it is also the
    SKU's catalogue source, take them out of the hub's copy of that stock too.

    Without this the order stops counting as pending (``stock.pending_units``) while the basis still
    holds its units until the next catalogue import, and every other marketplace is offered them
    again in between. The next import replaces these figures with the source's own.
    """
    for line in order.lines:
        if line.variant_id is None or line.status == CANCELLED_LINE:
            continue
        variant = session.get(Variant, line.variant_id)
        if variant is None or variant.product is None or variant.product.source_account_id != destination_id:
            continue
        left = line.quantity
        for level in sorted(variant.stock_levels, key=lambda level: (-(level.available or 0), level.location)):
            taken = min(left, max(0, level.available or 0))
            if taken:
                level.available = (level.available or 0) - taken
                level.available_from_stock = max(0, (level.available_from_stock or 0) - taken)
                left -= taken
            if not left:
                break


def finish_routing(ctx: FlowContext, account_id: int, order_ids: list[int], targets: list[Target], failed: set[int],
                   reached_now: set[int]) -> None:
    """Orders that reached every target they are for become ``routed`` (Third Party Managed ones keep
    that status); with only a fulfilment account, that account counts as where the order went."""
    with ctx.db.session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        loaded = load_orders(session, [order_id for order_id in order_ids if order_id not in failed])  # noqa: F841 - held
        bound = {(t.account_id, t.kind): set(bindings.by_internals(session, t.account_id, t.kind, order_ids)) for t in targets}
        for order_id in order_ids:
            order = session.get(Order, order_id)
            if order_id in failed or order is None:
                continue
            # A Third Party Managed order counts as routed once the destination has it, so it is
            # announced only by the run that got it there.
            if not (_unfinished(order) or (order.status == OrderStatus.THIRD_PARTY_MANAGED and order_id in reached_now)):
                continue
            wanted = [t for t in targets if t.applies_to(order)]
            reached = [t for t in wanted if str(order.id) in bound[(t.account_id, t.kind)]]
            if not wanted or len(reached) < len(wanted):
                continue
            if order.destination_account_id is None:
                order.destination_account_id = reached[0].account_id
            order.status = OrderStatus.THIRD_PARTY_MANAGED if order.third_party_managed else OrderStatus.ROUTED
            order.error = None
            settle_shipped(order)
            names = ", ".join(t.name for t in reached)
            _event(session, ctx, account, "order.routed", f"Order {order.order_number} from {account.name} sent to {names}",
                   order=order)
            ctx.item(order.order_number, "ok", f"routed to {names}")


def settle_shipped(order: Order) -> None:
    """Fulfilled while lines remain to ship; confirmed once accepted shipments cover every line.

    Called when a shipment is accepted and when routing finishes: a shipment can be accepted while
    the order is still in error at one of its targets (e.g. an answer lost), and the order must not
    be left ``routed`` once that is repaired.
    """
    if order.status not in (OrderStatus.IMPORTED, OrderStatus.ROUTED, OrderStatus.FULFILLED):
        return
    sent = [f for f in order.fulfilments if f.status == SENT_SHIPMENT]
    if not sent:
        return
    shipped: Counter[str] = Counter()
    for fulfilment in sent:
        for line in fulfilment.lines or []:
            shipped[line["sku"]] += int(line.get("quantity") or 0)
    covered = all(shipped[line.sku] >= line.quantity for line in order.lines if line.status != CANCELLED_LINE)
    order.status = OrderStatus.CONFIRMED if covered else OrderStatus.FULFILLED


def _routing_unfinished() -> tuple[Any, ...]:
    """Orders still to route: imported or in error (a target may be missing), or Third Party Managed
    ones the destination does not have yet (they keep that status once routed)."""
    return (or_(Order.status.in_((OrderStatus.IMPORTED, OrderStatus.ERROR)),
                (Order.status == OrderStatus.THIRD_PARTY_MANAGED) & Order.destination_account_id.is_(None)),)


def _unfinished(order: Order) -> bool:
    if order.status in (OrderStatus.IMPORTED, OrderStatus.ERROR):
        return True
    return order.status == OrderStatus.THIRD_PARTY_MANAGED and order.destination_account_id is None


def _targets(session: Session, account: ChannelAccount) -> list[Target]:
    found = []
    for kind, target_id in ((bindings.DESTINATION_ORDER, account.destination_account_id),
                            (bindings.FULFILMENT_ORDER, account.fulfilment_account_id)):
        target_account = session.get(ChannelAccount, target_id) if target_id is not None else None
        if target_account is None:
            continue
        target = Target(kind=kind, account_id=target_account.id, name=target_account.name)
        if target_account.status not in ACTIVE_STATUSES:
            target.problem = f"{target_account.name} is {target_account.status.value}: orders wait until it is active"
        elif not has_role(target_account, Role.ORDER_DESTINATION, Role.FULFILMENT):
            target.problem = f"{target_account.name} ({target_account.plugin}) cannot take orders: choose another destination"
        else:
            target.channel = open_channel(target_account)
        found.append(target)
    return found


def _routing_failed(ctx: FlowContext, session: Session, account: ChannelAccount, order: Order, error: Exception) -> None:
    """Record why the order did not reach a target; it is tried again on the next run."""
    transient = isinstance(error, (TransientError, AuthError))  # nothing wrong with the order itself
    message = str(error)
    if not transient:
        order.status = OrderStatus.ERROR
    if order.error != message:  # tell the admin once per distinct problem, not on every retry
        order.error = message
        _event(session, ctx, account, "order.route_failed",
               f"Order {order.order_number} from {account.name} was not routed: {message}. It is tried again on the next run.",
               "error", order=order)
    ctx.item(order.order_number, "failed" if transient else "rejected", message, getattr(error, "field", None))


def _rematch(ctx: FlowContext, session: Session, account: ChannelAccount, order: Order) -> bool:
    """Give lines without a variant another look (the admin may have fixed the catalogue). True: routable."""
    missing = [line for line in order.lines if line.variant_id is None]
    if not missing:
        return True
    variants = _variant_ids(session, order.organisation_id, {line.sku for line in missing})
    for line in missing:
        line.variant_id = variants.get(line.sku)
    still = sorted({line.sku for line in missing if line.variant_id is None})
    if still:
        # Reported (item and event) when it was imported; a quiet re-check keeps runs readable.
        order.status, order.error = OrderStatus.ERROR, unmatched_message(still)
        return False
    order.status = OrderStatus.THIRD_PARTY_MANAGED if order.third_party_managed else OrderStatus.IMPORTED
    order.error = None
    _event(session, ctx, account, "order.matched", f"Order {order.order_number}: every SKU now matches the catalogue", order=order)
    return True


# -- the order as the destination sees it --------------------------------------------------------


def canonical_order(order: Order, *, with_raw: bool = True) -> canonical.Order:
    """The stored order as a canonical record, as the marketplace sent it (with its line ids);
    ``with_raw=False`` leaves out the marketplace's raw record (a destination gets its own)."""
    return canonical.Order(
        channel_order_id=order.channel_order_id,
        order_number=order.order_number,
        lines=[
            canonical.OrderLine(sku=line.sku, quantity=line.quantity, unit_price=line.unit_price, title=line.title,
                                channel_line_ids=[str(i) for i in line.channel_line_ids or []], status=line.status)
            for line in order.lines
        ],
        shipping_address=_address(order.shipping_address) or canonical.Address(name="", line1="", city="", postcode="", country=""),
        placed_at=_aware(order.placed_at),
        status=_record_status(order.status),
        currency=order.currency,
        customer_name=order.customer_name,
        customer_email=order.customer_email,
        billing_address=_address(order.billing_address),
        shipping_method=order.shipping_method,
        total=order.total,
        raw=dict(order.raw or {}) if with_raw else {},
    )


def destination_order(order: Order, account: ChannelAccount) -> canonical.Order:
    """What the order system receives (IDA-style drop-ship): name = the marketplace order number,
    customer and billing = the marketplace, shipping = the end customer, a note naming the channel.

    The marketplace's billing address and e-mail come from the account settings ``billing_address``
    (an Address as a dict) and ``order_email`` when the admin set them.
    """
    outgoing = canonical_order(order, with_raw=False)
    marketplace = channel_title(account)
    settings = account.settings or {}
    outgoing.customer_name = marketplace
    outgoing.customer_email = str(settings.get("order_email", ""))
    outgoing.billing_address = _address(settings.get("billing_address")) if settings.get("billing_address") else None
    outgoing.note = f"{marketplace} order {order.order_number} (channel account {account.name})"
    outgoing.status = "new"
    outgoing.raw = {"marketplace": account.plugin, "marketplace_account": account.name,
                    "third_party_managed": order.third_party_managed}
    return outgoing


class HookFailed(Exception):
    """A plugin's channelhub_transform_order raised; the order waits rather than going out half-changed."""


def _transform(order: canonical.Order, account: ChannelAccount) -> canonical.Order:
    """Run every ``channelhub_transform_order`` in pluggy's call order, each seeing the previous result."""
    caller = get_plugin_manager().hook.channelhub_transform_order
    for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
        arguments = {"order": order, "account": account}
        try:
            changed = impl.function(*[arguments[name] for name in impl.argnames])
        except Exception as error:
            raise HookFailed(f"the channelhub_transform_order hook of plugin {impl.plugin_name!r} failed: {error}") from error
        if changed is not None:
            order = changed
    return order


# -- cancellations and returns -------------------------------------------------------------------


def follow_cancellations(ctx: FlowContext, account_id: int, order_ids: list[int]) -> None:
    """Marketplace cancellations: tell each place the order went to, or the admin where one cannot cancel."""
    for order_id in order_ids:
        with ctx.db.session() as session:
            account = session.get(ChannelAccount, account_id)
            order = session.get(Order, order_id)
            assert account is not None and order is not None
            for target_id in _reached(session, account, order):
                target = session.get(ChannelAccount, target_id)
                if target is not None:
                    cancel_at(ctx, session, account, order, target, reason=f"cancelled on {account.name}")


def pull_destination_cancellations(ctx: FlowContext, account_id: int) -> None:
    """Orders cancelled at the destination (``pull_cancellations``, when the channel has it) are
    cancelled here and on the marketplace — unless Third Party Managed (never written back)."""
    store_destination_cancellations(ctx, account_id, read_destination_cancellations(ctx, account_id)())


def read_destination_cancellations(ctx: FlowContext, account_id: int) -> Callable[[], list[Cancellations]]:
    """The channel reads of ``pull_destination_cancellations``, to run in another thread: the
    accounts and cursors are looked up now; the call only asks the channels."""
    with ctx.db.session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        sources = []
        for target_id in dict.fromkeys(i for i in (account.destination_account_id, account.fulfilment_account_id) if i):
            target = session.get(ChannelAccount, target_id)
            if target is None or target.status not in ACTIVE_STATUSES or not _implements(target, "pull_cancellations"):
                continue
            stream = CANCELLATIONS_PREFIX + str(target.id)
            sources.append((target.id, open_channel(target), cursors.read_time(session, account_id, stream, overlap=PULL_OVERLAP)))

    def read() -> list[Cancellations]:
        found = []
        for target_id, channel, since in sources:
            try:
                found.append((target_id, list(channel.pull_cancellations(since))))
            finally:
                ctx.add_api_calls(1)
        return found

    return read


def _store_cancellations_read_beside_pull(ctx: FlowContext, account_id: int,
                                         cancellations: Future[list[Cancellations]]) -> None:
    """What the read begun beside the pull found. A failed read fails the run here, after its orders
    were stored and routed, as the read at the end of a run always did; a run that yields leaves it
    to its continuation, which reads again."""
    if cancellations.exception() is not None and ctx.continues_later:
        return
    store_destination_cancellations(ctx, account_id, cancellations.result())


def store_destination_cancellations(ctx: FlowContext, account_id: int, read: list[Cancellations]) -> None:
    for target_id, cancelled in read:
        if not cancelled:
            continue  # the usual answer: nothing to store, no lock to take
        for order_id, where in _store_destination_cancellations(ctx, account_id, target_id, cancelled):
            _tell_the_others(ctx, account_id, order_id, where)


def _store_destination_cancellations(ctx: FlowContext, account_id: int, target_id: int,
                                     cancelled: list[canonical.Order]) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    newest: datetime | None = None
    with ctx.db.session() as session:
        lock_row(session, ChannelAccount, account_id)
        account = session.get(ChannelAccount, account_id)
        target = session.get(ChannelAccount, target_id)
        assert account is not None and target is not None
        for record in cancelled:
            moment = changed_at(record)
            newest = moment if moment is not None and (newest is None or moment > newest) else newest
            order = session.scalar(select(Order).where(Order.account_id == account_id,
                                                       Order.order_number == record.order_number))
            if order is None or order.status == OrderStatus.CANCELLED or target_id not in _reached(session, account, order):
                continue
            order.status, order.error = OrderStatus.CANCELLED, None
            for line in order.lines:
                line.status = CANCELLED_LINE
            _event(session, ctx, account, "order.cancelled", f"Order {order.order_number} was cancelled in {target.name}",
                   order=order, cancelled_in=target.name)
            ctx.item(order.order_number, "ok", f"cancelled in {target.name}")
            found.append((order.id, target_id))
        if newest is not None:
            advance_cursor(session, account_id, CANCELLATIONS_PREFIX + str(target_id), newest)
    return found


def _tell_the_others(ctx: FlowContext, account_id: int, order_id: int, cancelled_in: int) -> None:
    with ctx.db.session() as session:
        account = session.get(ChannelAccount, account_id)
        order = session.get(Order, order_id)
        where = session.get(ChannelAccount, cancelled_in)
        assert account is not None and order is not None and where is not None
        reason = f"cancelled in {where.name}"
        if not order.third_party_managed:
            cancel_at(ctx, session, account, order, account, reason=reason)  # the marketplace itself
        for target_id in _reached(session, account, order):
            other = session.get(ChannelAccount, target_id)
            if target_id != cancelled_in and other is not None:
                cancel_at(ctx, session, account, order, other, reason=reason)


def cancel_at(ctx: FlowContext, session: Session, account: ChannelAccount, order: Order, target: ChannelAccount,
              *, reason: str) -> None:
    """``cancel_order`` on ``target`` when its channel can; otherwise (or if refused) ask the admin."""
    number = order.order_number
    by_hand = f"cancel order {number} in {target.name} by hand"
    if not _implements(target, "cancel_order"):
        _event(session, ctx, account, "order.cancel_by_hand",
               f"Order {number} was {reason}; {target.name} cannot cancel orders through the hub: {by_hand}",
               "warning", order=order, target=target.name)
        return
    try:
        result = open_channel(target).cancel_order(canonical_order(order), reason=reason)
    except ChannelError as error:
        result = canonical.ItemResult.rejected(number, str(error))
    finally:
        ctx.add_api_calls(1)
    if result is None or result.ok:
        _event(session, ctx, account, "order.cancel_sent", f"Order {number} cancelled in {target.name}",
               order=order, target=target.name)
    else:
        _event(session, ctx, account, "order.cancel_failed",
               f"Order {number} was {reason} but {target.name} did not cancel it ({result.message}): {by_hand}",
               "error", order=order, target=target.name)


def forward_returns(ctx: FlowContext, account_id: int) -> None:
    """Each return of a routed order goes to its destination once (``receive_return``, which checks the
    items back into stock), or the admin is told to book it by hand."""
    with ctx.db.session() as session:
        waiting = list(session.scalars(
            select(Return.id).join(Order, Order.id == Return.order_id)
            .where(Order.account_id == account_id, Order.destination_account_id.is_not(None),
                   Return.status == RETURN_REQUESTED).order_by(Return.id)))
    for return_id in waiting:
        with ctx.db.session() as session:
            ret = session.get(Return, return_id)
            account = session.get(ChannelAccount, account_id)
            assert ret is not None and account is not None
            _forward_return(ctx, session, account, ret)


def _forward_return(ctx: FlowContext, session: Session, account: ChannelAccount, ret: Return) -> None:
    order = ret.order
    destination = session.get(ChannelAccount, order.destination_account_id)
    if destination is None:
        return
    skus = ", ".join(line["sku"] for line in ret.lines)
    if not _implements(destination, "receive_return"):
        ret.status = RETURN_BY_HAND
        _event(session, ctx, account, "order.return_by_hand",
               f"Order {order.order_number}: {skus} returned on {account.name}; {destination.name} cannot take returns "
               f"through the hub: book the return in {destination.name} by hand", "warning", order=order, skus=skus)
        return
    record = canonical.Return(
        order_number=order.order_number, external_id=ret.external_id, reason=ret.reason, status=ret.status,
        lines=[canonical.FulfilmentLine(sku=line["sku"], quantity=int(line["quantity"]),
                                        channel_line_ids=[str(i) for i in line.get("channel_line_ids") or []])
               for line in ret.lines])
    try:
        result = open_channel(destination).receive_return(record)
    except (TransientError, RateLimited) as error:
        ctx.item(order.order_number, "failed", f"return not yet booked in {destination.name} ({error}); tried again next run")
        return
    except ChannelError as error:
        result = canonical.ItemResult.rejected(order.order_number, str(error))
    finally:
        ctx.add_api_calls(1)
    if result.ok:
        ret.status = RETURN_RECEIVED
        _event(session, ctx, account, "order.return_received", f"Order {order.order_number}: return of {skus} booked in "
               f"{destination.name}", order=order, skus=skus)
        ctx.item(order.order_number, "ok", f"return of {skus} booked in {destination.name}")
    else:
        ret.status = RETURN_BY_HAND
        _event(session, ctx, account, "order.return_failed",
               f"Order {order.order_number}: {destination.name} did not take the return of {skus} ({result.message}): "
               f"book it in {destination.name} by hand", "error", order=order, skus=skus)
        ctx.item(order.order_number, "rejected", f"return refused by {destination.name}: {result.message}")


def _reached(session: Session, account: ChannelAccount, order: Order) -> list[int]:
    """The accounts (destination, fulfilment) that have this order, by their bindings."""
    reached = []
    for kind, target_id in ((bindings.DESTINATION_ORDER, account.destination_account_id),
                            (bindings.FULFILMENT_ORDER, account.fulfilment_account_id)):
        if target_id is not None and bindings.by_internal(session, target_id, kind, order.id) is not None:
            reached.append(target_id)
    return list(dict.fromkeys(reached))


# -- helpers shared with the fulfilment and reconcile flows ---------------------------------------


def lock_row(session: Session, model: Any, row_id: int) -> None:
    """Hold the row until the transaction ends, so a remote call and the record of it are one step.

    An UPDATE that changes nothing rather than SELECT ... FOR UPDATE: it locks the row on PostgreSQL
    and takes SQLite's write lock (opening the transaction there, so later savepoints nest), so the
    same code serialises two workers on both. ``updated_at`` is set to itself so it does not move.
    """
    values: dict[Any, Any] = {model.id: model.id}
    if hasattr(model, "updated_at"):
        values[model.updated_at] = model.updated_at
    session.execute(update(model).where(model.id == row_id).values(values).execution_options(synchronize_session=False))


def lock_for_remote_call(session: Session, model: Any, row_ids: Iterable[int]) -> None:
    """Hold rows while a remote call about them runs, so two workers never act on one at once.

    PostgreSQL: ``SELECT ... FOR UPDATE`` in id order (a second worker waits, then sees the binding
    the first recorded). SQLite: nothing — it has one write lock for the whole file, and holding it
    through a remote call (with retries and Retry-After) would stall every other writer past its busy
    timeout; there the runtime's per-(account, flow) lock keeps one worker per account, and the
    channel's own idempotency (``create_order`` looks the order up first) covers the rest.
    """
    ids = sorted(set(row_ids))
    if not ids or session.get_bind().dialect.name == "sqlite":
        return
    session.execute(select(model.id).where(model.id.in_(ids)).order_by(model.id).with_for_update())


def advance_cursor(session: Session, account_id: int, stream: str, moment: datetime) -> None:
    """Move the cursor forward to ``moment`` (never back: a concurrent run may have gone further)."""
    current = cursors.read_time(session, account_id, stream)
    if current is not None and current >= moment:
        return
    try:
        with session.begin_nested():
            cursors.write_time(session, account_id, stream, moment)
            session.flush()
    except IntegrityError:  # another worker created the cursor row first; move theirs if ours is newer
        current = cursors.read_time(session, account_id, stream)
        if current is None or current < moment:
            cursors.write_time(session, account_id, stream, moment)


def changed_at(order: canonical.Order) -> datetime | None:
    """When the marketplace last changed the order: ``changed_at`` if the channel gives it, else ``placed_at``."""
    value: object = order.changed_at
    if value is None and isinstance(order.raw, dict):
        value = order.raw.get("changed_at")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, datetime):
        value = order.placed_at
    return _aware(value)


def channel_title(account: ChannelAccount) -> str:
    """The marketplace's name as people know it ("The Iconic"), falling back to the account's name."""
    try:
        return get_connector().channel_class(account).title or account.name
    except ConfigurationError:
        return account.name


def _implements(account: ChannelAccount, hook: str) -> bool:
    """Whether the account's channel has the optional ``hook`` (``Channel.implements``)."""
    try:
        return get_connector().channel_class(account).implements(hook)
    except ConfigurationError:
        return False


def _account(session: Session, ctx: FlowContext) -> ChannelAccount:
    if ctx.account_id is None:
        raise ConfigurationError(f"the {ctx.flow} flow runs for one account; none was given")
    account = session.get(ChannelAccount, ctx.account_id)
    if account is None:
        raise ConfigurationError(f"channel account {ctx.account_id} no longer exists")
    return account


def _find_order(session: Session, account_id: int, channel_order_id: str) -> Order | None:
    return session.scalar(select(Order).where(Order.account_id == account_id, Order.channel_order_id == channel_order_id))


def _variant_ids(session: Session, organisation_id: int, skus: set[str]) -> dict[str, int]:
    if not skus:
        return {}
    rows = session.execute(select(Variant.sku, Variant.id).where(Variant.organisation_id == organisation_id,
                                                                Variant.sku.in_(sorted(skus))))
    return {sku: variant_id for sku, variant_id in rows}


def _destination_name(session: Session, order: Order) -> str:
    account = session.get(ChannelAccount, order.destination_account_id) if order.destination_account_id else None
    return account.name if account is not None else "the order system"


def _insert_once(session: Session, row: Any) -> None:
    """Insert a row a concurrent worker may insert too; the unique constraint keeps one."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        pass


def _event(session: Session, ctx: FlowContext, account: ChannelAccount, kind: str, message: str,
           level: str = "info", order: Order | None = None, **data: Any) -> None:
    if order is not None:
        data = {"order_id": order.id, "order_number": order.order_number, **data}
    emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
         kind=kind, level=level, message=message, data=data)


def _record_status(status: OrderStatus) -> str:
    return {OrderStatus.CANCELLED: "cancelled", OrderStatus.RETURNED: "returned",
            OrderStatus.FULFILLED: "shipped", OrderStatus.CONFIRMED: "shipped"}.get(status, "new")


def _address(data: Any) -> canonical.Address | None:
    if not isinstance(data, dict) or not data:
        return None
    known = {f.name for f in dataclasses.fields(canonical.Address)}
    values = {key: str(value) for key, value in data.items() if key in known and value is not None}
    for required in ("name", "line1", "city", "postcode", "country"):
        values.setdefault(required, "")
    return canonical.Address(**values)


def _address_data(address: canonical.Address | None) -> dict[str, Any]:
    return dataclasses.asdict(address) if address is not None else {}


def _json_safe(value: Any) -> Any:
    # Channels put what they like in ``raw`` (datetimes, decimals); the JSON column takes only JSON.
    return json.loads(json.dumps(value or {}, default=str))


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


register_flow("orders", run_orders)
