"""Bindings: the idempotency spine between the hub's records and each channel's ids.

A binding says "on this account, this kind of thing with this external id is our record X", unique
both ways. Flows ask before acting ("have we already created this order there?") and record after,
and the database's unique constraints, not a cache, decide a race between two workers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hub.db import chunked
from hub.models import Binding, utcnow

LISTING = "listing"
ORDER_IMPORT = "order_import"
DESTINATION_ORDER = "destination_order"
FULFILMENT_ORDER = "fulfilment_order"
FULFILMENT_SENT = "fulfilment_sent"
INSERT_ROWS = 100  # bindings per multi-row INSERT


def fingerprint(payload: Any) -> str:
    """A stable hash of what was sent, so an unchanged listing is not sent again."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def by_internal(session: Session, account_id: int, kind: str, internal_id: str | int) -> Binding | None:
    return session.scalar(select(Binding).where(
        Binding.account_id == account_id, Binding.kind == kind, Binding.internal_id == str(internal_id)))


def by_internals(
    session: Session, account_id: int, kind: str, internal_ids: Iterable[int | str] | None = None
) -> dict[str, Binding]:
    """The account's bindings of ``kind`` by internal id: all of them, or those of ``internal_ids``
    (one query per ``SQL_IN_CHUNK`` ids), for flows that ask about a whole batch of records."""
    query = select(Binding).where(Binding.account_id == account_id, Binding.kind == kind)
    if internal_ids is None:
        return {binding.internal_id: binding for binding in session.scalars(query)}
    found: dict[str, Binding] = {}
    for chunk in chunked(sorted({str(i) for i in internal_ids})):
        found.update((b.internal_id, b) for b in session.scalars(query.where(Binding.internal_id.in_(chunk))))
    return found


def by_external(session: Session, account_id: int, kind: str, external_id: str) -> Binding | None:
    return session.scalar(select(Binding).where(
        Binding.account_id == account_id, Binding.kind == kind, Binding.external_id == str(external_id)))


def bind(
    session: Session, account_id: int, kind: str, *, internal_id: str | int, external_id: str,
    fingerprint: str | None = None, sent_at: datetime | None = None,
) -> None:
    """Record (or refresh) the binding; if another worker bound it first, theirs stands unchanged.

    A lost race never rolls back the caller's transaction: the insert is ON CONFLICT DO NOTHING, one
    round trip where a savepoint around it took three (a binding is written for every order at
    every step).
    """
    existing = by_internal(session, account_id, kind, internal_id)
    if existing is not None:
        existing.external_id = str(external_id)
        existing.fingerprint = fingerprint if fingerprint is not None else existing.fingerprint
        existing.last_sent_at = sent_at or existing.last_sent_at
        existing.last_error = None
        return
    new = NewBindings(session, account_id, kind)
    new.add(internal_id, external_id, fingerprint=fingerprint, sent_at=sent_at)
    new.write()


class NewBindings:
    """Bindings a batch has just earned, written as one ``INSERT ... ON CONFLICT DO NOTHING``.

    For records the caller has just seen unbound (under their rows' lock): a batch of 100 orders or
    shipments then costs one round trip, not 100. Call ``write()`` before the session commits.
    """

    def __init__(self, session: Session, account_id: int, kind: str) -> None:
        self.session, self.account_id, self.kind = session, account_id, kind
        self.rows: list[dict[str, Any]] = []

    def add(self, internal_id: str | int, external_id: str, *, fingerprint: str | None = None,
            sent_at: datetime | None = None) -> None:
        now = utcnow()
        self.rows.append({"account_id": self.account_id, "kind": self.kind, "internal_id": str(internal_id),
                          "external_id": str(external_id), "fingerprint": fingerprint, "last_sent_at": sent_at,
                          "created_at": now, "updated_at": now})

    def write(self) -> None:
        # The rows go as parameters of one statement, not inlined by .values(): SQLAlchemy then compiles
        # it once per process (psycopg sends the rows pipelined, one round trip), where a statement
        # built with the rows inlined was compiled anew for every batch (a twelfth of a worker's CPU).
        statement = _insert(self.session).on_conflict_do_nothing()
        for start in range(0, len(self.rows), INSERT_ROWS):  # 8 parameters a row: within old SQLite's 999
            self.session.execute(statement, self.rows[start:start + INSERT_ROWS])
        self.rows = []


def _insert(session: Session) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (PostgreSQL and SQLite both do), on the table
    rather than the mapped class: the rows are plain values, and the ORM's bulk insert spent its time
    preparing objects it never made."""
    table = Binding.__table__
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)


def record_error(session: Session, account_id: int, kind: str, internal_id: str | int, message: str) -> None:
    binding = by_internal(session, account_id, kind, internal_id)
    if binding is not None:
        binding.last_error = message
        binding.updated_at = utcnow()
