"""The database: one engine per URL, short sessions, and migrations.

SQLite (the embedded default) gets WAL and a busy timeout so the web process and the in-process
workers can share the file; PostgreSQL is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import orjson
from sqlalchemy import Engine, Table, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from hub import defaults
from hub.models import Base

T = TypeVar("T")


def chunked(items: Sequence[T], size: int = defaults.SQL_IN_CHUNK) -> Iterator[list[T]]:
    """``items`` in slices for ``IN (...)`` clauses, so one query never carries an unbounded list."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def draw_ids(session: Session, table: Table, count: int) -> list[int] | None:
    """``count`` ids from ``table``'s id sequence (PostgreSQL), one round trip; None elsewhere.

    Rows whose ids are known go in as one executemany of a short statement, which psycopg sends
    pipelined and keeps parsed; rows that need ``RETURNING id`` go as a multi-row INSERT whose text
    psycopg parses again for every batch (too long for its statement cache).
    """
    if count <= 0 or session.get_bind().dialect.name != "postgresql":
        return None
    drawn = session.execute(text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"),
                            {"table": table.name, "count": count})
    return list(drawn.scalars())


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def create_all(self) -> None:
        """Create the tables straight from the models (tests); operators use ``channelhub db upgrade``."""
        Base.metadata.create_all(self.engine)

    def drop_all(self) -> None:
        Base.metadata.drop_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"


def make_engine(url: str, *, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        _ensure_parent_dir(url)
        engine = create_engine(url, echo=echo, json_deserializer=orjson.loads,
                               connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # orjson reads the JSON columns (orders' addresses and lines, runs' counts): the standard
    # library's parser was most of the cost of loading a batch of orders.
    return create_engine(url, echo=echo, pool_pre_ping=True, json_deserializer=orjson.loads)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _ensure_parent_dir(url: str) -> None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
