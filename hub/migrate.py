"""Schema migrations, configured in code so no alembic.ini has to sit next to the database.

Every function takes the database as a URL or an Engine (tests pass an Engine whose connections
carry a private PostgreSQL ``search_path``). The revision scripts live in ``hub/migrations`` and
ship inside the package.

``check()`` is the guard against drift: it is True only when the database is at the head revision
*and* Alembic's autogenerate comparison finds no difference between the models and the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from hub.db import make_engine
from hub.models import Base

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

DatabaseTarget = str | Engine


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged scripts; ``connection`` is handed to env.py."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(database: DatabaseTarget, revision: str = "head") -> None:
    """Migrate forward to ``revision`` (default: the newest). Safe to run from several processes."""
    with _migration_connection(database) as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(database: DatabaseTarget, revision: str) -> None:
    """Migrate back to ``revision`` (``"base"`` empties the database, ``"-1"`` steps back one)."""
    with _migration_connection(database) as connection:
        command.downgrade(alembic_config(connection), revision)


def stamp(database: DatabaseTarget, revision: str = "head") -> None:
    """Record ``revision`` as applied without running it (for a schema made by ``create_all``)."""
    with _migration_connection(database) as connection:
        command.stamp(alembic_config(connection), revision)


def current(database: DatabaseTarget) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    with _connect(database) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def heads() -> tuple[str, ...]:
    """The newest revision(s) the packaged scripts define (one, unless history branched)."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def is_up_to_date(database: DatabaseTarget) -> bool:
    return current(database) in heads()


def drift(database: DatabaseTarget) -> list[Any]:
    """Differences between the models and the database schema, as Alembic autogenerate sees them.

    An empty list means a new migration would be empty. Items are Alembic diff tuples such as
    ``("add_column", None, "orders", Column(...))``, meant for error messages and logs.
    """
    with _connect(database) as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def check(database: DatabaseTarget) -> bool:
    """True when the database is at the head revision and matches the models exactly."""
    return is_up_to_date(database) and not drift(database)


@contextmanager
def _connect(database: DatabaseTarget) -> Iterator[Connection]:
    engine = make_engine(database) if isinstance(database, str) else database
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        if isinstance(database, str):  # only dispose of an engine this module made
            engine.dispose()


@contextmanager
def _migration_connection(database: DatabaseTarget) -> Iterator[Connection]:
    """A connection holding the migration lock, so that a fleet starting at once migrates once."""
    with _connect(database) as connection:
        if connection.dialect.name != "postgresql":
            # SQLite takes its own write lock for the DDL; there is no fleet on SQLite.
            yield connection
            return
        # Session-level advisory lock keyed by schema: concurrent test runs in other schemas
        # don't wait for each other, two hub processes on the same schema do.
        key = text("SELECT hashtext('channelhub.migrate:' || current_schema())")
        lock_id = connection.execute(key).scalar_one()
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
        connection.commit()
        try:
            yield connection
        finally:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
            connection.commit()
