"""Flow "fulfilment": shipments from the order system or the fulfilment account -> the marketplace.

Top to bottom, for one MARKETPLACE account with Fulfilments on:

1. **Pull** ``pull_fulfilments(since)`` from each place that ships the account's orders: its
   destination account (Shopify, Uphance) and its fulfilment account (Starshipit), both at once.
   Each source has its own cursor on this account (``fulfilments:<source id>``), minus
   ``PULL_OVERLAP``. When one source's pull fails, the other's shipments are still stored and sent,
   and the failure is raised at the end of the run (which the runtime retries).
2. **Store** each shipment that belongs to one of this account's orders (matched by the marketplace
   order number; shipments of other channels' orders are not ours and are passed over) as a
   Fulfilment row, once (unique per order and shipment id); the order becomes ``fulfilled``. The
   cursor moves to the newest shipment seen, in the same transaction.
3. **Send** every stored shipment not yet accepted by the marketplace — new ones and those an earlier
   run could not send: check the tracking number (``hub.carrier_maps``), map the carrier through the
   account's CarrierMap, rebuild the canonical Order from the database (with its channel line ids)
   and call ``send_fulfilment`` — or, when the channel has ``send_fulfilments``, send them
   ``limits.max_batch`` at a time in one call (The Iconic then reads the batch's order items once).
   Acceptance records a FULFILMENT_SENT binding, so the shipment is never sent again, and the order
   becomes ``confirmed`` once every line is covered. A refusal stays unsent, is tried again on the
   next run, and notifies the admin (``fulfilment.failed``) once per distinct problem.

Orders imported as Third Party Managed are never written back, even after Fulfilments is turned on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from hub import bindings, carrier_maps, cursors
from hub import records as canonical
from hub.channel import Channel, Role
from hub.connections import get_connector, open_channel
from hub.db import chunked
from hub.errors import (AuthError, ChannelError, ConfigurationError, ContractError, RateLimited, TransientError,
                        ValidationError)
from hub.events import emit
from hub.flows.orders import (SENT_SHIPMENT, advance_cursor, canonical_order, lock_for_remote_call, lock_row,
                              settle_shipped)
from hub.jobs import FlowContext, register_flow
from hub.models import AccountStatus, CarrierMap, ChannelAccount, Fulfilment, Order, OrderStatus, utcnow
from hub.parallel import map_limited
from hub.scheduling import aware, interval_for

log = logging.getLogger("channelhub.flows.fulfilment")

STREAM_PREFIX = "fulfilments:"  # + the source account's id
PULL_OVERLAP = timedelta(minutes=10)
ACTIVE_STATUSES = (AccountStatus.TESTING, AccountStatus.LIVE)

PENDING, SENT, ERROR, SKIPPED = "pending", SENT_SHIPMENT, "error", "skipped"
CANCELLED_LINE = "cancelled"


@dataclass
class Source:
    account_id: int
    name: str
    channel: Channel | None
    since: datetime | None
    problem: str | None = None


# -- the flow ------------------------------------------------------------------------------------


def run_fulfilment(ctx: FlowContext) -> None:
    with ctx.db.session() as session:
        account = _account(session, ctx)
        reason = skip_reason(account)
        if reason:
            ctx.item(account.name, "skipped", reason)
            return
        sources = _sources(session, account)
        marketplace = open_channel(account)
        account_id = account.id
        pulls = ctx.pull_is_due(interval_for(account, ctx.flow))
    # A prompt continuation sends what its run stored. A source that failed is reported after the
    # others' shipments are stored and sent: one source being down holds back no other's.
    failure = pull_and_store(ctx, account_id, sources) if pulls else None
    send_unsent(ctx, account_id, marketplace)
    if failure is not None:
        raise failure


def pull_and_store(ctx: FlowContext, account_id: int, sources: list[Source]) -> Exception | None:
    """Pull every source at the same time (each waits on its own channel) and store what each gave;
    the first failure is returned, for the caller to raise once the rest is done."""
    ready = []
    for source in sources:
        if source.problem or source.channel is None:
            ctx.item(source.name, "skipped", source.problem or "cannot be opened")
        else:
            ready.append(source)

    def pull(source: Source) -> list[canonical.Fulfilment] | Exception:
        assert source.channel is not None
        try:
            return list(source.channel.pull_fulfilments(source.since))
        except Exception as error:  # noqa: BLE001 - raised below, after the other sources' shipments are stored
            return error

    failure: Exception | None = None
    for source, pulled in zip(ready, map_limited(pull, ready, len(ready), name="fulfilment-pull")):
        if isinstance(pulled, Exception):
            failure = failure or pulled
            continue
        ctx.add_api_calls(1)
        store_shipments(ctx, account_id, source, pulled)
    return failure


def skip_reason(account: ChannelAccount) -> str | None:
    if account.status not in ACTIVE_STATUSES:
        return f"{account.name} is {account.status.value}: shipments are written back only in Testing or Live"
    if not account.fulfilments_enabled:
        return (f"Fulfilments is off for {account.name}: its orders are Third Party Managed and nothing is "
                "written back to the marketplace")
    if not _has_role(account, Role.MARKETPLACE):
        return f"{account.name} ({account.plugin}) is not a marketplace: there is nothing to write shipments to"
    if account.destination_account_id is None and account.fulfilment_account_id is None:
        return f"{account.name} has no destination or fulfilment account to take shipments from; choose one on the account page"
    return None


def _sources(session: Session, account: ChannelAccount) -> list[Source]:
    found = []
    for source_id in dict.fromkeys(i for i in (account.destination_account_id, account.fulfilment_account_id) if i):
        source = session.get(ChannelAccount, source_id)
        if source is None:
            continue
        since = _read_since(session, account.id, source.id)
        if source.status not in ACTIVE_STATUSES:
            found.append(Source(source.id, source.name, None, since, f"{source.name} is {source.status.value}: "
                                "its shipments are read once it is active again"))
        elif not _has_role(source, Role.ORDER_DESTINATION, Role.FULFILMENT):
            found.append(Source(source.id, source.name, None, since, f"{source.name} ({source.plugin}) reports no shipments"))
        else:
            found.append(Source(source.id, source.name, open_channel(source), since))
    return found


def _read_since(session: Session, account_id: int, source_id: int) -> datetime | None:
    return cursors.read_time(session, account_id, STREAM_PREFIX + str(source_id), overlap=PULL_OVERLAP)


# -- storing shipments ---------------------------------------------------------------------------


def store_shipments(ctx: FlowContext, account_id: int, source: Source, shipments: list[canonical.Fulfilment]) -> None:
    """Record the shipments of this account's orders (once each) and move the source's cursor.

    A pull re-reads a window of shipments the hub mostly has, so their orders are read as plain
    values (id, status, the shipments stored): loading each as an object with its shipments was the
    largest part of a fulfilment run's CPU once the window held a few hundred.
    """
    if not shipments:
        return  # nothing shipped in the window: no transaction, no lock
    newest: datetime | None = None
    others = 0
    fresh: list[tuple[ShippedOrder, canonical.Fulfilment]] = []
    taken: set[tuple[int, str]] = set()
    with ctx.db.session() as session:
        lock_row(session, ChannelAccount, account_id)  # one batch per account at a time; opens SQLite's transaction
        orders = shipped_orders(session, account_id, (s.order_number for s in shipments))
        for shipment in shipments:
            if shipment.shipped_at is not None:
                shipped = _aware(shipment.shipped_at)
                newest = shipped if newest is None or shipped > newest else newest
            order = orders.get(shipment.order_number)
            if order is None:
                others += 1  # an order of another channel (or a web-shop order): not ours to write back
                continue
            key = (order.id, shipment_key(shipment))
            if key not in taken and key[1] not in order.shipments:  # a pull may list a shipment twice
                taken.add(key)
                fresh.append((order, shipment))
        _insert_rows(session, source, fresh)
        if newest is not None:
            advance_cursor(session, account_id, STREAM_PREFIX + str(source.account_id), newest)
    if others:
        log.info("%d shipment(s) from %s belong to no order of account %s", others, source.name, account_id)


@dataclass
class ShippedOrder:
    """What storing a shipment needs of its order."""

    id: int
    status: OrderStatus
    third_party_managed: bool
    shipments: set[str] = field(default_factory=set)  # the keys (``shipment_key``) of those stored


def shipped_orders(session: Session, account_id: int, order_numbers: Iterable[str]) -> dict[str, ShippedOrder]:
    """The account's orders among ``order_numbers`` with their stored shipments: a chunk a query."""
    found: dict[str, ShippedOrder] = {}
    for chunk in chunked(list(dict.fromkeys(order_numbers))):
        rows = session.execute(
            select(Order.id, Order.order_number, Order.status, Order.third_party_managed, Fulfilment.external_id)
            .outerjoin(Fulfilment, Fulfilment.order_id == Order.id)
            .where(Order.account_id == account_id, Order.order_number.in_(chunk))
            .order_by(Order.id))
        for order_id, number, status, third_party_managed, key in rows:
            order = found.get(number)
            if order is None or order.id != order_id:  # two orders with one number: the newest takes its shipments
                order = found[number] = ShippedOrder(order_id, status, third_party_managed)
            if key is not None:
                order.shipments.add(key)
    return found


def _new_row(source: Source, order: ShippedOrder, shipment: canonical.Fulfilment) -> dict[str, Any]:
    return {
        "order_id": order.id, "source_account_id": source.account_id, "external_id": shipment_key(shipment),
        "carrier": shipment.carrier or "", "service": shipment.service, "tracking_number": shipment.tracking_number or "",
        "tracking_url": shipment.tracking_url, "shipped_at": _aware(shipment.shipped_at),
        "lines": [{"sku": line.sku, "quantity": line.quantity, "channel_line_ids": [str(i) for i in line.channel_line_ids]}
                  for line in shipment.lines],
        "status": SKIPPED if order.third_party_managed else PENDING,
        "error": "Third Party Managed: never written back to the marketplace" if order.third_party_managed else None,
    }


def _insert_rows(session: Session, source: Source, fresh: list[tuple[ShippedOrder, canonical.Fulfilment]]) -> None:
    """Insert the new shipments as one statement (no objects: nothing reads them back in this
    transaction); if one was stored meanwhile (a concurrent run), each on its own, so the others still
    go in. Their orders become fulfilled."""
    if not fresh:
        return
    table = Fulfilment.__table__
    try:
        with session.begin_nested():
            session.execute(insert(table), [_new_row(source, order, shipment) for order, shipment in fresh])
        stored = [order for order, _ in fresh]
    except IntegrityError:
        stored = [order for order, shipment in fresh if _insert_one(session, _new_row(source, order, shipment))]
    _mark_fulfilled(session, [order.id for order in stored if order.status in (OrderStatus.IMPORTED, OrderStatus.ROUTED)])


def _insert_one(session: Session, row: dict[str, Any]) -> bool:
    try:
        with session.begin_nested():
            session.execute(insert(Fulfilment.__table__), row)
    except IntegrityError:  # a concurrent run stored it first
        return False
    return True


def _mark_fulfilled(session: Session, order_ids: list[int]) -> None:
    orders = Order.__table__
    for chunk in chunked(order_ids):
        session.execute(update(orders).where(orders.c.id.in_(chunk),
                                             orders.c.status.in_((OrderStatus.IMPORTED, OrderStatus.ROUTED)))
                        .values(status=OrderStatus.FULFILLED))


def shipment_key(shipment: canonical.Fulfilment) -> str:
    """How a shipment is known: the source's shipment id, else its tracking number."""
    return str(shipment.external_id or shipment.tracking_number or "").strip()[:200]


# -- sending -------------------------------------------------------------------------------------


def send_unsent(ctx: FlowContext, account_id: int, channel: Channel) -> None:
    """Send every stored shipment of the account the marketplace has not accepted yet.

    A channel with ``send_fulfilments`` gets them ``limits.max_batch`` at a time; others one by one.
    """
    with ctx.db.session() as session:
        waiting = list(session.scalars(
            select(Fulfilment.id).join(Order, Order.id == Fulfilment.order_id)
            .where(Order.account_id == account_id, Order.third_party_managed.is_(False),
                   Fulfilment.status.in_((PENDING, ERROR)))
            .order_by(Fulfilment.id)))
    if type(channel).implements("send_fulfilments"):
        done = 0
        for batch in channel.limits.batches(waiting):
            send_batch(ctx, account_id, batch, channel)
            done += len(batch)
            ctx.progress(done, len(waiting))
            if _yielded(ctx, done, waiting):
                return
        return
    for done, fulfilment_id in enumerate(waiting, start=1):
        send_one(ctx, account_id, fulfilment_id, channel)
        ctx.progress(done, len(waiting))
        if _yielded(ctx, done, waiting):
            return


def _yielded(ctx: FlowContext, done: int, waiting: list[int]) -> bool:
    """Give the worker up after this batch when the run had its slice and others wait; the rest stay
    unsent and the continuation sends them."""
    if done < len(waiting) and ctx.time_to_yield():
        ctx.continue_later()
        return True
    return False


@dataclass
class Outgoing:
    """A checked shipment, ready for the marketplace."""

    row: Fulfilment
    order: Order
    channel_carrier: str
    record: canonical.Fulfilment


def send_one(ctx: FlowContext, account_id: int, fulfilment_id: int, channel: Channel) -> None:
    """Check, map and send one shipment; the row is locked so two workers never send it twice.

    AuthError and RateLimited propagate (the runtime stops or defers the run); the shipment stays
    unsent and goes out on a later run.
    """
    with ctx.db.session() as session:
        lock_for_remote_call(session, Fulfilment, [fulfilment_id])
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        outgoing = _prepare(ctx, session, account, fulfilment_id)
        if outgoing is None:
            return
        try:
            result = channel.send_fulfilment(canonical_order(outgoing.order), outgoing.record)
        except (AuthError, RateLimited):
            raise
        except ChannelError as error:
            result = _refusal(outgoing, error)
        finally:
            ctx.add_api_calls(1)
        accepted = bindings.NewBindings(session, account.id, bindings.FULFILMENT_SENT)  # _prepare saw none
        _record(ctx, session, account, outgoing, result, accepted)
        accepted.write()


def send_batch(ctx: FlowContext, account_id: int, fulfilment_ids: list[int], channel: Channel) -> None:
    """``send_one`` for up to ``limits.max_batch`` shipments in one ``send_fulfilments`` call.

    All the batch's rows are locked in one session, so a second worker waits and then finds them
    sent; rows that fail the checks are failed on their own and left out of the call.
    """
    with ctx.db.session() as session:
        lock_for_remote_call(session, Fulfilment, fulfilment_ids)
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        rows = _load_rows(session, fulfilment_ids)  # noqa: F841 - held: the identity map keeps weak references
        sent_before = set(bindings.by_internals(session, account.id, bindings.FULFILMENT_SENT, fulfilment_ids))
        carriers = _CarrierCache(session, account)
        taken: set[str] = set()  # line ids claimed by earlier shipments of the same order in this batch
        ready = [o for o in (_prepare(ctx, session, account, i, taken, sent_before, carriers) for i in fulfilment_ids)
                 if o is not None]
        if not ready:
            return
        pairs = [(canonical_order(outgoing.order), outgoing.record) for outgoing in ready]
        try:
            results = channel.send_fulfilments(pairs)
        except (AuthError, RateLimited):
            raise
        except ChannelError as error:
            results = [_refusal(outgoing, error) for outgoing in ready]
        finally:
            ctx.add_api_calls(1)
        if len(results) != len(ready):
            raise ContractError(f"send_fulfilments returned {len(results)} results for {len(ready)} shipments")
        accepted = bindings.NewBindings(session, account.id, bindings.FULFILMENT_SENT)  # _prepare saw none, under the lock
        for outgoing, result in zip(ready, results):
            _record(ctx, session, account, outgoing, result, accepted)
        accepted.write()


def _prepare(ctx: FlowContext, session: Session, account: ChannelAccount, fulfilment_id: int,
             taken: set[str] | None = None, sent_before: set[str] | None = None,
             carriers: _CarrierCache | None = None) -> Outgoing | None:
    """The locked row as a shipment to send, or None when it is settled here (sent, cancelled, invalid).

    ``sent_before`` (the batch's ids with a FULFILMENT_SENT binding) and ``carriers`` spare a batch
    a lookup per shipment."""
    row = session.get(Fulfilment, fulfilment_id)
    assert row is not None
    order = row.order
    if row.status not in (PENDING, ERROR):
        return None  # another worker sent it while we waited
    if (str(row.id) in sent_before if sent_before is not None
            else bindings.by_internal(session, account.id, bindings.FULFILMENT_SENT, row.id) is not None):
        row.status, row.error = SENT, None  # sent before, the status update was lost: repair it
        return None
    if order.status == OrderStatus.CANCELLED:
        _failed(ctx, session, account, order, row, "the order was cancelled on the marketplace, so the shipment is "
                "not sent: check whether it really left the warehouse", "rejected")
        return None
    try:
        carrier_maps.validate_tracking(row.tracking_number)
        mapping = carriers.lookup(row.carrier) if carriers is not None else carrier_maps.lookup(session, account, row.carrier)
    except ValidationError as error:
        _failed(ctx, session, account, order, row, _first_message(error), "rejected", error.field)
        return None
    lines = lines_to_send(order, row, taken)
    record = canonical.Fulfilment(
        order_number=order.order_number, carrier=mapping.channel_carrier, tracking_number=row.tracking_number,
        lines=lines, service=row.service,
        tracking_url=carrier_maps.tracking_url(mapping, row.tracking_number, row.tracking_url),
        shipped_at=row.shipped_at, external_id=row.external_id,
    )
    return Outgoing(row, order, mapping.channel_carrier, record)


def _load_rows(session: Session, fulfilment_ids: list[int]) -> list[Fulfilment]:
    """The batch's shipments with their orders, order lines and the orders' other shipments."""
    loaded: list[Fulfilment] = []
    for chunk in chunked(fulfilment_ids):
        loaded.extend(session.scalars(select(Fulfilment).where(Fulfilment.id.in_(chunk)).options(
            selectinload(Fulfilment.order).selectinload(Order.lines),
            selectinload(Fulfilment.order).selectinload(Order.fulfilments))))
    return loaded


class _CarrierCache:
    """``carrier_maps.lookup`` once per carrier name in a batch (a batch's shipments share a few carriers)."""

    def __init__(self, session: Session, account: ChannelAccount) -> None:
        self.session, self.account = session, account
        self.found: dict[str, CarrierMap] = {}

    def lookup(self, carrier: str) -> CarrierMap:
        if carrier not in self.found:
            self.found[carrier] = carrier_maps.lookup(self.session, self.account, carrier)
        return self.found[carrier]


def _record(ctx: FlowContext, session: Session, account: ChannelAccount, outgoing: Outgoing,
            result: canonical.ItemResult, accepted: bindings.NewBindings) -> None:
    """Acceptance: binding, status, event and run item; a refusal: kept unsent and reported."""
    row, order = outgoing.row, outgoing.order
    if not result.ok:
        _failed(ctx, session, account, order, row, f"{account.name} refused it: {result.message}",
                "failed" if result.retryable else "rejected", result.field)
        return
    accepted.add(row.id, f"{order.channel_order_id}/{row.external_id}", sent_at=utcnow())
    row.status, row.error = SENT, None
    row.lines = [{"sku": line.sku, "quantity": line.quantity, "channel_line_ids": line.channel_line_ids}
                 for line in outgoing.record.lines]
    settle_shipped(order)
    emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
         kind="fulfilment.sent",
         message=f"Order {order.order_number}: {outgoing.channel_carrier} {row.tracking_number} sent to {account.name}",
         data={"order_id": order.id, "order_number": order.order_number, "carrier": row.carrier,
               "channel_carrier": outgoing.channel_carrier, "tracking_number": row.tracking_number})
    ctx.item(order.order_number, "ok", f"{outgoing.channel_carrier} {row.tracking_number} sent")


def _refusal(outgoing: Outgoing, error: ChannelError) -> canonical.ItemResult:
    return canonical.ItemResult.rejected(outgoing.order.order_number, str(error), field=getattr(error, "field", None),
                                         retryable=isinstance(error, TransientError))


def lines_to_send(order: Order, row: Fulfilment, taken: set[str] | None = None) -> list[canonical.FulfilmentLine]:
    """The shipment's lines with the marketplace's line ids (The Iconic: one id per unit).

    A shipment without lines is the whole order. Lines without ids take the order line's ids that no
    earlier accepted shipment of the order used, nor any in ``taken``; the ids chosen are added to
    ``taken`` (a batch prepares several shipments of one order before any is accepted).
    """
    used = {str(line_id) for other in order.fulfilments if other.id != row.id and other.status == SENT
            for line in other.lines or [] for line_id in line.get("channel_line_ids") or []}
    if taken is not None:
        used |= taken
    shipped = row.lines or [{"sku": line.sku, "quantity": line.quantity} for line in order.lines
                            if line.status != CANCELLED_LINE]
    result = []
    for entry in shipped:
        ids = [str(i) for i in entry.get("channel_line_ids") or []]
        if not ids:
            order_line = next((line for line in order.lines if line.sku == entry["sku"]), None)
            free = [str(i) for i in (order_line.channel_line_ids if order_line else []) if str(i) not in used]
            ids = free[: int(entry["quantity"])]
        used.update(ids)
        if taken is not None:
            taken.update(ids)
        result.append(canonical.FulfilmentLine(sku=entry["sku"], quantity=int(entry["quantity"]), channel_line_ids=ids))
    return result


def _failed(ctx: FlowContext, session: Session, account: ChannelAccount, order: Order, row: Fulfilment,
            message: str, outcome: str, field: str | None = None) -> None:
    """Keep the shipment unsent (tried again next run); tell the admin once per distinct problem."""
    row.status = ERROR
    if row.error != message:
        row.error = message
        emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
             kind="fulfilment.failed", level="error",
             message=(f"Shipment {row.tracking_number or row.external_id} of order {order.order_number} was not sent to "
                      f"{account.name}: {message}. It is tried again on every run until it goes through."),
             data={"order_id": order.id, "order_number": order.order_number, "fulfilment_id": row.id,
                   "carrier": row.carrier, "tracking_number": row.tracking_number, "field": field})
    ctx.item(order.order_number, outcome, message, field)


# -- helpers -------------------------------------------------------------------------------------


def _first_message(error: ValidationError) -> str:
    messages: Any = error.messages
    if isinstance(messages, dict) and messages:
        first = next(iter(messages.values()))
        return str(first[0] if isinstance(first, list) and first else first)
    return str(error)


def _has_role(account: ChannelAccount, *roles: Role) -> bool:
    try:
        channel_class = get_connector().channel_class(account)
    except ConfigurationError:
        return False
    return any(channel_class.has_role(role) for role in roles)


def _account(session: Session, ctx: FlowContext) -> ChannelAccount:
    account = session.get(ChannelAccount, ctx.account_id) if ctx.account_id is not None else None
    if account is None:
        raise ConfigurationError(f"the fulfilment flow needs an existing account (got {ctx.account_id})")
    return account


def _aware(moment: datetime | None) -> datetime | None:
    return aware(moment) if moment is not None else None


register_flow("fulfilment", run_fulfilment)
