"""Which flows are due for which accounts: the per-account schedules, decided from the database.

The schedules live in the database (``ChannelAccount.schedules``, falling back to
``FLOW_INTERVALS``), so the fleet's RQ cron scheduler runs a single fan-out entry (``hub.fleet.tick``)
that calls ``enqueue_due``; the embedded ticker calls the same function. A flow is due for an account
when the account is in Testing or Live, the flow's toggle is on, no run of it is pending, and its
interval has passed since the last run was *queued* (queued, not finished: a slow run must not push
every later run back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub import defaults
from hub.db import Database
from hub.jobs import PENDING, load_builtin_flows, registered_flows
from hub.models import AccountStatus, ChannelAccount, RunStatus, SyncRun

log = logging.getLogger("channelhub.scheduling")

# flow -> the account toggle that switches it on; None means always on while the account is active.
# stock follows listings (no listings, nothing to keep in stock); catalog is the SOURCE side, which
# has no toggle (a flow registered with ``applies=`` narrows it to the accounts it fits).
# reset is never scheduled: an admin starts it.
FLOW_TOGGLES: Mapping[str, str | None] = MappingProxyType(
    {
        "catalog": None,
        "listings": "listings_enabled",
        "stock": "listings_enabled",
        "orders": "orders_enabled",
        "fulfilment": "fulfilments_enabled",
        "reconcile": "reconciler_enabled",
    }
)
SCHEDULED_STATUSES = (AccountStatus.TESTING, AccountStatus.LIVE)

EnqueueFn = Callable[..., int]


def aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back naive; every stored timestamp is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def flow_enabled(account: ChannelAccount, flow: str) -> bool:
    if account.status not in SCHEDULED_STATUSES or flow not in FLOW_TOGGLES:
        return False
    toggle = FLOW_TOGGLES[flow]
    if toggle is not None and not getattr(account, toggle):
        return False
    spec = registered_flows().get(flow)
    return spec is None or spec.applies is None or bool(spec.applies(account))


def interval_for(account: ChannelAccount, flow: str) -> timedelta:
    """The account's own schedule for the flow, else the default; a bad value falls back too."""
    configured = (account.schedules or {}).get(flow)
    try:
        seconds = float(configured) if configured is not None else None
    except (TypeError, ValueError):
        seconds = None
    if seconds is None or seconds <= 0:
        seconds = float(defaults.FLOW_INTERVALS[flow])
    return timedelta(seconds=seconds)


def last_queued(session: Session, account_id: int, flow: str) -> datetime | None:
    latest = session.scalar(
        select(func.max(SyncRun.queued_at)).where(SyncRun.account_id == account_id, SyncRun.flow == flow)
    )
    return aware(latest) if latest is not None else None


def next_due(session: Session, account: ChannelAccount, flow: str) -> datetime:
    """When the flow is next due for the account; a time in the past means "due now".

    A flow that never ran has been due since the account became active.
    """
    latest = last_queued(session, account.id, flow)
    if latest is not None:
        return latest + interval_for(account, flow)
    since = account.testing_started_at or account.live_at or account.created_at
    return aware(since) if since is not None else datetime.now(timezone.utc)


def reap_stale_runs(session: Session, now: datetime) -> list[int]:
    """Fail pending runs no live worker can still be running, so they stop blocking their schedule."""
    cutoff = now - timedelta(seconds=defaults.RUN_STALE_AFTER)
    stale = [run for run in session.scalars(select(SyncRun).where(SyncRun.status.in_(PENDING))) if _is_stale(run, cutoff)]
    for run in stale:
        run.status = RunStatus.FAILED
        run.error = f"abandoned: no worker finished it within {defaults.RUN_STALE_AFTER}s (a worker stopped?)"
        run.finished_at = now
    if stale:
        log.warning("marked %d abandoned runs failed: %s", len(stale), [run.id for run in stale])
    return [run.id for run in stale]


def due_flows(session: Session, now: datetime) -> list[tuple[int, str]]:
    """(account id, flow) pairs to enqueue now."""
    load_builtin_flows()  # so flows registered with ``applies=`` filter this process's decisions too
    accounts = list(session.scalars(select(ChannelAccount).where(ChannelAccount.status.in_(SCHEDULED_STATUSES))))
    if not accounts:
        return []
    ids = [account.id for account in accounts]
    pending = _pending_pairs(session, ids)
    latest = _latest_queued(session, ids)
    due: list[tuple[int, str]] = []
    for account in accounts:
        for flow in FLOW_TOGGLES:
            key = (account.id, flow)
            if key in pending or not flow_enabled(account, flow):
                continue
            last = latest.get(key)
            if last is None or last + interval_for(account, flow) <= now:
                due.append(key)
    return due


def enqueue_due(db: Database, enqueue: EnqueueFn, now: datetime | None = None) -> list[int]:
    """Enqueue every due flow through ``enqueue`` (a runtime's); returns the new run ids."""
    moment = aware(now) if now is not None else datetime.now(timezone.utc)
    with db.session() as session:
        reap_stale_runs(session, moment)
        due = due_flows(session, moment)
    run_ids: list[int] = []
    for account_id, flow in due:
        try:
            run_ids.append(enqueue(account_id, flow, trigger="schedule"))
        except Exception:  # one account's trouble must not starve the others
            log.exception("could not enqueue %s for account %s", flow, account_id)
    return run_ids


def _pending_pairs(session: Session, account_ids: Iterable[int]) -> set[tuple[int, str]]:
    rows = session.execute(
        select(SyncRun.account_id, SyncRun.flow).where(
            SyncRun.status.in_(PENDING), SyncRun.account_id.in_(list(account_ids))
        )
    )
    return {(account_id, flow) for account_id, flow in rows}


def _latest_queued(session: Session, account_ids: Iterable[int]) -> dict[tuple[int, str], datetime]:
    rows = session.execute(
        select(SyncRun.account_id, SyncRun.flow, func.max(SyncRun.queued_at))
        .where(SyncRun.account_id.in_(list(account_ids)))
        .group_by(SyncRun.account_id, SyncRun.flow)
    )
    return {(account_id, flow): aware(latest) for account_id, flow, latest in rows if latest is not None}


def _is_stale(run: SyncRun, cutoff: datetime) -> bool:
    last_sign_of_life = run.started_at or run.queued_at
    return last_sign_of_life is not None and aware(last_sign_of_life) < cutoff


def run_tick_hooks(db: Database, now: datetime | None = None) -> None:
    """Give plugins their ``channelhub_tick`` (notification digests, housekeeping)."""
    from hub.plugins import get_plugin_manager

    moment = aware(now) if now is not None else datetime.now(timezone.utc)
    try:
        get_plugin_manager().hook.channelhub_tick(db=db, now=moment)
    except Exception:  # a plugin's housekeeping must not stop the syncs
        log.exception("a channelhub_tick hook failed")


def promote_accounts(db: Database, now: datetime | None = None) -> list[object]:
    """Move accounts whose Testing period has ended to Live, if ``hub.accounts`` offers it.

    Runs on the same tick as the schedules, so an operator starts no extra process for it.
    """
    try:
        from hub.accounts import promote_due_accounts
    except ImportError:
        return []
    moment = aware(now) if now is not None else datetime.now(timezone.utc)
    try:
        with db.session() as session:
            return list(promote_due_accounts(session, moment) or [])
    except Exception:  # promotion trouble must not stop the syncs
        log.exception("promoting accounts from Testing to Live failed")
        return []
