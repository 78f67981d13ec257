"""Flow "reset" (product reset): re-match every SKU the marketplace shows against the catalogue.

An admin starts it (it is never scheduled) after a bulk SKU change, or when a marketplace shows
listings the hub does not seem to know. Top to bottom:

1. **Pause** the account's order and stock flows: a marker goes into ``account.settings`` (with the
   flow toggles as they were, for the record) and is committed at once. The orders and stock flows
   call :func:`reset_in_progress` first and skip while it is set. The toggles themselves are *not*
   switched off: a worker killed mid-reset would otherwise leave them off; a marker older than
   ``RUN_STALE_AFTER`` is ignored instead, so a dead reset can never pause an account for good.
   ``hub.accounts.pause`` is not used because it changes the account's status (and the testing clock).
2. **Enumerate** the channel's listings (``list_listings()``, complete or raises).
3. **Match** each listed SKU to the catalogue by identical SKU and re-link it: the account's LISTING
   binding of that variant now points at the listing the channel shows (so the stock flow pushes to
   it). List the unmatched SKUs with near-miss suggestions (``hub.matching``: case, spaces,
   underscores vs dashes). Labelled SKUs the channel does not show lose what the hub remembered
   sending, so the next listings run lists them again.
4. **Resume**: the marker is removed (also when the reset fails), and a ``reset.finished`` event
   carries the unmatched SKUs and their suggestions in its data.

The reset changes nothing on the channel; it only re-links the hub's LISTING bindings.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import bindings, defaults, labels
from hub.channel import Role
from hub.connections import has_role, open_channel
from hub.errors import ConfigurationError
from hub.events import emit
from hub.jobs import FlowContext, register_flow
from hub.matching import NearMissIndex
from hub.models import AccountStatus, ChannelAccount, Variant, utcnow
from hub.records import Listing

log = logging.getLogger("channelhub.flows.reset")

RESET_SETTING = "product_reset"  # the marker's key in ChannelAccount.settings
# A marker older than this belongs to a reset whose worker died: it no longer pauses anything.
STALE_AFTER = timedelta(seconds=defaults.RUN_STALE_AFTER)
TOGGLES = ("listings_enabled", "reconciler_enabled", "orders_enabled", "fulfilments_enabled")
REPORT_LIMIT = 500  # SKUs listed in an event's data; the run's items hold every one


def reset_in_progress(account: ChannelAccount, now: datetime | None = None) -> bool:
    """True while a product reset of ``account`` runs: the orders and stock flows must skip.

    Pure: reads only ``account.settings``, so any flow can call it on the account it loaded.
    """
    marker = (account.settings or {}).get(RESET_SETTING)
    if not isinstance(marker, dict):
        return False
    started = _parse_time(marker.get("started_at"))
    if started is None:
        return False
    return (now or datetime.now(timezone.utc)) - started < STALE_AFTER


# -- the flow ------------------------------------------------------------------------------------


def run_reset(ctx: FlowContext) -> None:
    with ctx.db.session() as session:
        account = _account(session, ctx)
        reason = _skip_reason(account)
        if reason:
            ctx.item(account.name, "skipped", reason)
            return
        channel = open_channel(account)
        toggles = begin(session, ctx, account)
    try:
        listed = {listing.sku: listing for listing in channel.list_listings() if listing.active}
        ctx.add_api_calls(1)
        report = match(ctx, listed)
    except BaseException as error:
        finish(ctx, toggles, None, error)
        raise
    finish(ctx, toggles, report, None)


def _skip_reason(account: ChannelAccount) -> str | None:
    if account.status not in (AccountStatus.TESTING, AccountStatus.LIVE):
        return f"{account.name} is {account.status.value}: a product reset runs only in Testing or Live"
    if not has_role(account, Role.MARKETPLACE):
        return f"{account.name} ({account.plugin}) is not a marketplace: it has no listings to re-match"
    return None


def begin(session: Session, ctx: FlowContext, account: ChannelAccount) -> dict[str, bool]:
    """Set the marker (committed with this session, before anything else happens) and say so."""
    toggles = {name: bool(getattr(account, name)) for name in TOGGLES}
    marker = {"run_id": ctx.run_id, "started_at": utcnow().isoformat(), "toggles": toggles}
    account.settings = {**(account.settings or {}), RESET_SETTING: marker}
    paused = [name.removesuffix("_enabled") for name in ("orders_enabled", "listings_enabled") if toggles[name]]
    what = f"{' and '.join(paused)} paused" if paused else "nothing was running"
    emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
         kind="reset.started", message=f"Product reset of {account.name} started: {what} until it finishes",
         data={"toggles": toggles})
    return toggles


# -- matching ------------------------------------------------------------------------------------


def match(ctx: FlowContext, listed: dict[str, Listing]) -> dict[str, Any]:
    """Compare the listed SKUs with the catalogue, re-link the matches, record one item per listed SKU."""
    with ctx.db.session() as session:
        account = _account(session, ctx)
        catalogue = {variant.sku: variant for variant in session.scalars(
            select(Variant).where(Variant.organisation_id == account.organisation_id))}
        labelled = _labelled_skus(session, account)
        index = NearMissIndex(catalogue)
        unmatched: list[dict[str, Any]] = []
        for sku in sorted(listed):
            variant = catalogue.get(sku)
            if variant is not None:
                relink(session, account.id, variant.id, listed[sku].external_id or sku)
                note = " (the source holds this SKU twice: it stays out of sync until that is fixed)" if variant.duplicate else ""
                ctx.item(sku, "ok", f"matched{note}")
                continue
            suggestions = index.suggest(sku)
            unmatched.append({"sku": sku, "suggestions": suggestions})
            hint = f"did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else "and no catalogue SKU is close"
            ctx.item(sku, "rejected", f"listed on the channel but not in the catalogue; {hint}", "sku")
        not_listed = sorted(labelled - set(listed))
        forget_sent(session, account.id, [catalogue[sku].id for sku in not_listed])
    matched = len(listed) - len(unmatched)
    return {"listed": len(listed), "matched": matched, "unmatched": unmatched, "not_listed": not_listed}


def relink(session: Session, account_id: int, variant_id: int, external_id: str) -> None:
    """Point the variant's LISTING binding at the listing the channel shows.

    A binding of another variant that claims this listing is stale (a SKU moved between products in
    the source) and goes, so the listing belongs to exactly one variant.
    """
    claimed = bindings.by_external(session, account_id, bindings.LISTING, external_id)
    if claimed is not None and claimed.internal_id != str(variant_id):
        session.delete(claimed)
        session.flush()
    bindings.bind(session, account_id, bindings.LISTING, internal_id=variant_id, external_id=external_id)


def forget_sent(session: Session, account_id: int, variant_ids: list[int]) -> None:
    """Labelled variants the channel does not show: the listings flow sends them again on its next run."""
    for variant_id in variant_ids:
        binding = bindings.by_internal(session, account_id, bindings.LISTING, variant_id)
        if binding is not None:
            binding.fingerprint, binding.last_sent_at = None, None


def _labelled_skus(session: Session, account: ChannelAccount) -> set[str]:
    """SKUs the account should show: the listings flow's own selection (label, source, filters...)."""
    return {variant.sku for variant in labels.select_variants(session, account).variants}


# -- resuming ------------------------------------------------------------------------------------


def finish(ctx: FlowContext, toggles: dict[str, bool], report: dict[str, Any] | None, error: BaseException | None) -> None:
    """Remove the marker (the paused flows run again) and report what the reset found."""
    with ctx.db.session() as session:
        account = _account(session, ctx)
        settings = dict(account.settings or {})
        marker = settings.pop(RESET_SETTING, None)
        if isinstance(marker, dict) and marker.get("run_id") not in (None, ctx.run_id):
            settings[RESET_SETTING] = marker  # a newer reset took over; its marker is not ours to remove
        account.settings = settings
        if report is None:
            emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
                 kind="reset.aborted", level="warning",
                 message=(f"Product reset of {account.name} stopped before it finished ({error}); nothing was changed "
                          "and orders and stock run again. Start the reset again."),
                 data={"toggles": toggles, "error": type(error).__name__ if error else None})
            return
        unmatched = report["unmatched"]
        helped = sum(1 for entry in unmatched if entry["suggestions"])
        message = (f"Product reset of {account.name} finished: {report['listed']} listed, {report['matched']} matched, "
                   f"{len(unmatched)} unmatched ({helped} with suggestions), {len(report['not_listed'])} labelled SKU(s) "
                   "not on the channel; orders and stock run again.")
        if unmatched:
            message += " Correct the unmatched SKUs on the channel or in the catalogue so they are identical."
        emit(session, organisation_id=account.organisation_id, account_id=account.id, run_id=ctx.run_id,
             kind="reset.finished", level="warning" if unmatched else "info", message=message,
             data={
                 "listed": report["listed"], "matched": report["matched"],
                 "unmatched": unmatched[:REPORT_LIMIT], "unmatched_count": len(unmatched),
                 "not_listed": report["not_listed"][:REPORT_LIMIT], "not_listed_count": len(report["not_listed"]),
                 "toggles": toggles,
             })


def _account(session: Session, ctx: FlowContext) -> ChannelAccount:
    account = session.get(ChannelAccount, ctx.account_id) if ctx.account_id is not None else None
    if account is None:
        raise ConfigurationError(f"the reset flow needs an existing account (got {ctx.account_id})")
    return account


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


register_flow("reset", run_reset)
