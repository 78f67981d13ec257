"""``/webhooks/<account_id>/<secret>``: inbound channel webhooks.

The raw request goes to the account's channel (``verify_webhook``), which authenticates it (a
signature over the raw body, or the secret in the URL) and names a targeted flow. The hub answers at
once (202) and queues that flow; the work happens in a job, so a slow channel never makes the
sender time out and retry. A delivery id seen before is answered 200 and dropped: the database
(a ``webhook_delivery`` binding, unique per account, inserted and committed before anything is
queued) decides, so two web processes agree, even on a repeat that arrives mid-insert. Webhook runs
of the orders flow coalesce per account (``hub.jobs.open_run``), so a burst is a few runs, not one
per delivery.
A refused signature gets 401 and a ``webhook.rejected`` event the admin sees in the audit log; a
repeated delivery a ``webhook.duplicate`` event.
"""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from hub.channel import WebhookRequest
from hub.errors import AuthError, ChannelhubError
from hub.events import emit
from hub.models import Binding, ChannelAccount, utcnow
from web import services
from web.access import PUBLIC, allow, db

log = logging.getLogger("channelhub.web.webhooks")

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

DELIVERY = "webhook_delivery"


@bp.route("/<int:account_id>/<secret>", methods=["POST"])
@allow(PUBLIC)  # the channel authenticates the request itself
def receive(account_id: int, secret: str):  # type: ignore[no-untyped-def]
    session = db()
    account = session.get(ChannelAccount, account_id)
    if account is None or services.channel_class(account.plugin) is None:
        return jsonify(error="unknown account"), 404
    webhook = WebhookRequest(headers=dict(request.headers), body=request.get_data(cache=True),
                             query=request.args.to_dict(), url_secret=secret)
    try:
        action = services.connector().open(account).verify_webhook(webhook)
    except AuthError as error:
        _rejected(account, str(error))
        return jsonify(error="webhook not authenticated"), 401
    except NotImplementedError:
        return jsonify(error="this channel does not accept webhooks"), 404
    except ChannelhubError as error:
        return jsonify(error=f"webhook not understood: {error}"), 400
    if action is None:
        return jsonify(status="ignored"), 200
    if action.delivery_id and not _first_delivery(account, action.delivery_id):
        _duplicate(account, action.delivery_id)
        return jsonify(status="duplicate", delivery_id=action.delivery_id), 200
    session.commit()
    try:
        run_id = services.enqueue(account_id, action.flow, trigger="webhook", params=action.params)
    except Exception:
        if action.delivery_id:  # nothing was queued: the sender's retry must not be taken for a duplicate
            _forget_delivery(account_id, action.delivery_id)
        raise
    return jsonify(status="queued", run_id=run_id), 202


def _first_delivery(account: ChannelAccount, delivery_id: str) -> bool:
    """Record the delivery and commit it; False when it was recorded before, by this or another process.

    Insert first, never look first: a repeat arriving while the first delivery's insert is still in
    flight blocks on the unique (account, kind, external id) and fails once that commits.
    """
    session = db()
    session.add(Binding(account_id=account.id, kind=DELIVERY, internal_id=delivery_id, external_id=delivery_id,
                        last_sent_at=utcnow()))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def _forget_delivery(account_id: int, delivery_id: str) -> None:
    session = db()
    session.rollback()
    session.execute(delete(Binding).where(Binding.account_id == account_id, Binding.kind == DELIVERY,
                                          Binding.external_id == delivery_id))
    session.commit()


def _duplicate(account: ChannelAccount, delivery_id: str) -> None:
    """A replayed delivery is dropped (200, so the sender stops retrying) and recorded."""
    session = db()
    emit(session, organisation_id=account.organisation_id, account_id=account.id, kind="webhook.duplicate",
         actor="webhook", message=f"{account.name}: webhook delivery {delivery_id!r} was received before; dropped",
         data={"remote_addr": request.remote_addr, "delivery_id": delivery_id})
    session.commit()


def _rejected(account: ChannelAccount, reason: str) -> None:
    session = db()
    session.rollback()
    emit(session, organisation_id=account.organisation_id, account_id=account.id, kind="webhook.rejected",
         level="warning", actor="webhook", message=f"{account.name}: webhook refused ({reason})",
         data={"remote_addr": request.remote_addr, "reason": reason})
    session.commit()
