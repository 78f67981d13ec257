"""Cursors: where each (account, stream) got to, so the next pull starts there (minus an overlap)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.models import Cursor


def read(session: Session, account_id: int, stream: str) -> str | None:
    cursor = session.scalar(select(Cursor).where(Cursor.account_id == account_id, Cursor.stream == stream))
    return cursor.value if cursor else None


def write(session: Session, account_id: int, stream: str, value: str) -> None:
    cursor = session.scalar(select(Cursor).where(Cursor.account_id == account_id, Cursor.stream == stream))
    if cursor is None:
        session.add(Cursor(account_id=account_id, stream=stream, value=value))
    else:
        cursor.value = value


def read_time(session: Session, account_id: int, stream: str, *, overlap: timedelta = timedelta(0)) -> datetime | None:
    """The stream's last time minus ``overlap``: pulls re-read a window so a late write is not missed."""
    value = read(session, account_id, stream)
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment - overlap


def write_time(session: Session, account_id: int, stream: str, moment: datetime) -> None:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    write(session, account_id, stream, moment.isoformat())
