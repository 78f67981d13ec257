"""Syncs and jobs: runs with live progress while they run, their per-item outcomes after, retry."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import func, select

from hub.jobs import PENDING
from hub.models import ChannelAccount, RunStatus, SyncRun, SyncRunItem
from web import services
from web.access import allow, db, org_id, owned

bp = Blueprint("runs", __name__, url_prefix="/runs")

PAGE = 50
ITEMS_PAGE = 200


def run_json(run: SyncRun) -> dict[str, Any]:
    """What the progress bars poll: small, so polling every 2 s costs nothing."""
    return {"id": run.id, "status": run.status.value, "done": run.progress_done or 0, "total": run.progress_total,
            "counts": run.counts or {}, "error": run.error, "finished": run.status.value not in {s.value for s in PENDING}}


@bp.route("")
@allow("viewer")
def index():  # type: ignore[no-untyped-def]
    query = select(SyncRun).where(SyncRun.organisation_id == org_id())
    account_id, flow, status = request.args.get("account_id", type=int), request.args.get("flow", ""), request.args.get("status", "")
    if account_id:
        query = query.where(SyncRun.account_id == account_id)
    if flow:
        query = query.where(SyncRun.flow == flow)
    if status == "pending":
        query = query.where(SyncRun.status.in_(PENDING))
    elif status in {s.value for s in RunStatus}:
        query = query.where(SyncRun.status == RunStatus(status))
    page = max(1, request.args.get("page", 1, type=int))
    runs = db().scalars(query.order_by(SyncRun.id.desc()).offset((page - 1) * PAGE).limit(PAGE)).all()
    names = {a.id: a.name for a in services.accounts_of(db(), org_id())}
    return render_template("runs/index.html", runs=runs, names=names, page=page, page_size=PAGE,
                           statuses=[s.value for s in RunStatus], args=request.args)


@bp.route("/<int:run_id>")
@allow("viewer")
def show(run_id: int):  # type: ignore[no-untyped-def]
    run = owned(SyncRun, run_id)
    outcome = request.args.get("outcome", "")
    items_query = select(SyncRunItem).where(SyncRunItem.run_id == run.id)
    if outcome:
        items_query = items_query.where(SyncRunItem.outcome == outcome)
    items = db().scalars(items_query.order_by(SyncRunItem.id).limit(ITEMS_PAGE)).all()
    item_total = db().scalar(select(func.count()).select_from(items_query.subquery()))
    account = db().get(ChannelAccount, run.account_id) if run.account_id else None
    return render_template("runs/show.html", run=run, items=items, item_total=item_total, account=account,
                           outcome=outcome, progress=run_json(run))


@bp.route("/progress.json")
@allow("viewer")
def progress():  # type: ignore[no-untyped-def]
    """Progress of several runs at once (``?ids=1,2,3``), for the pages that show live bars."""
    ids = [int(part) for part in request.args.get("ids", "").split(",") if part.strip().isdigit()][:100]
    if not ids:
        return jsonify(runs=[])
    runs = db().scalars(select(SyncRun).where(SyncRun.organisation_id == org_id(), SyncRun.id.in_(ids))).all()
    return jsonify(runs=[run_json(run) for run in runs])


# An admin's confirmation belongs to the run it was given for; a retry asks again rather than reuse it.
CONFIRMATIONS = ("confirm_removals", "actor")


def retry_params(params: dict) -> dict:
    """The failed run's params, so a retried targeted run (one order, some SKUs) does the same work."""
    return {key: value for key, value in params.items() if key not in CONFIRMATIONS}


@bp.route("/<int:run_id>/retry", methods=["POST"])
@allow("operator")
def retry(run_id: int):  # type: ignore[no-untyped-def]
    run = owned(SyncRun, run_id)
    if run.account_id is None:
        abort(409, description="the run's account was deleted; nothing to retry")
    if run.status in PENDING:
        flash(f"Run {run.id} is still {run.status.value}; it will run by itself.", "info")
        return redirect(url_for("runs.show", run_id=run.id))
    params = retry_params(run.params or {})
    db().commit()
    new_id = services.enqueue(run.account_id, run.flow, trigger="manual", params=params)
    flash(f"{run.flow} queued again (run {new_id}).", "ok")
    return redirect(url_for("runs.show", run_id=new_id))
