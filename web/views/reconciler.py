"""The reconciler's plan (from the latest reconcile run) and the admin's confirmation of removals.

The plan is read from the run the reconcile flow recorded: each item is one listing, its ``field``
the planned action (remove, relist, fix_stock, fix_price...), its outcome ``skipped`` while only
planned. A run that stopped because removals exceed the safety share says so in an event whose
data carries ``needs_confirmation: true`` (or in the run's error); the admin then confirms here,
which queues ``reconcile`` with ``{"confirm_removals": true}``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from hub import defaults
from hub.models import ChannelAccount, Event, SyncRun, SyncRunItem
from web import services
from web.access import actor, allow, db, org_id, owned

bp = Blueprint("reconciler", __name__, url_prefix="/reconciler")

EXAMPLES = 5


def plan_of(run: SyncRun | None) -> dict[str, Any]:
    """Counts and a few examples per planned action, and whether the admin must confirm."""
    if run is None:
        return {"actions": {}, "events": [], "needs_confirmation": False}
    actions: dict[str, dict[str, Any]] = defaultdict(lambda: {"count": 0, "examples": []})
    for item in db().scalars(select(SyncRunItem).where(SyncRunItem.run_id == run.id).order_by(SyncRunItem.id)):
        entry = actions[item.field or item.outcome]
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append(item)
    events = list(db().scalars(select(Event).where(Event.run_id == run.id).order_by(Event.id)))
    needs = any((e.data or {}).get("needs_confirmation") for e in events) or "confirm" in (run.error or "").lower()
    return {"actions": dict(actions), "events": events, "needs_confirmation": needs}


@bp.route("")
@allow("viewer")
def index():  # type: ignore[no-untyped-def]
    sections = []
    for account in services.accounts_of(db(), org_id()):
        run = services.latest_run(db(), account.id, "reconcile")
        sections.append((account, run, plan_of(run)))
    return render_template("reconciler.html", sections=sections, share=defaults.RECONCILE_MAX_REMOVE_SHARE)


@bp.route("/<int:account_id>/plan", methods=["POST"])
@allow("operator")
def plan(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    db().commit()
    run_id = services.enqueue(account.id, "reconcile")
    flash(f"Reconcile of {account.name} queued (run {run_id}).", "ok")
    return redirect(url_for("reconciler.index"))


@bp.route("/<int:account_id>/confirm", methods=["POST"])
@allow("admin")
def confirm(account_id: int):  # type: ignore[no-untyped-def]
    account = owned(ChannelAccount, account_id)
    if request.form.get("confirm") != "yes":
        flash("Tick the box to confirm the removals.", "error")
        return redirect(url_for("reconciler.index"))
    from hub.events import emit

    emit(db(), organisation_id=account.organisation_id, account_id=account.id, kind="reconcile.removals_confirmed",
         actor=actor(), message=f"{account.name}: removals beyond the safety share confirmed")
    db().commit()
    run_id = services.enqueue(account.id, "reconcile", params={"confirm_removals": True})
    flash(f"Reconcile of {account.name} queued with removals confirmed (run {run_id}).", "ok")
    return redirect(url_for("reconciler.index"))
