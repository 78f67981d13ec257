"""Database fixtures: the same test runs on SQLite and on PostgreSQL.

Import the fixtures into a test module (``from tests.storage_fixtures import database, ...``).
``database`` is parametrised over both backends and migrated to head with ``hub.migrate``.

PostgreSQL isolation: every module (and every ``empty_database_url``) gets a schema of its own,
named at random, reached through ``search_path`` in the URL and dropped afterwards, so test runs of
several engineers on one server never see each other's rows. When the server is unreachable the
tests skip, except under ``CI=true`` where they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hub import migrate
from hub.db import Database
from hub.models import Organisation
from hub.secrets import CredentialBox
from tests.services import service_missing

POSTGRES_URL = os.environ.get("CHANNELHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@functools.cache
def _postgres_problem() -> str | None:
    """None when the test server answers; else why not. Asked once per test run."""
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any failure to connect means "not available" here
        return f"{type(error).__name__}: {error}".splitlines()[0]
    finally:
        engine.dispose()
    return None


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    service_missing(f"PostgreSQL at {make_url(POSTGRES_URL).render_as_string()} is not reachable ({problem})")


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections live in a fresh, empty schema that is dropped afterwards."""
    require_postgres()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            # A session leaked by a failing test must not hang the whole run on the drop.
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def database_url_for(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'channelhub.db'}"
    elif backend == "postgresql":
        with postgres_schema_url() as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}")


@pytest.fixture(scope="module", params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A database migrated to head, shared by the tests of one module (each makes its own organisation)."""
    with database_url_for(request.param, tmp_path_factory.mktemp(request.param)) as url:
        db = Database(url)
        try:
            migrate.upgrade(db.engine)
            yield db
        finally:
            db.dispose()


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with nothing in it, fresh for each test."""
    with database_url_for(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def organisation(database: Database) -> Organisation:
    """A committed organisation of its own, so tests sharing a database never collide."""
    slug = f"org-{uuid.uuid4().hex[:10]}"
    with database.session() as session:
        organisation = Organisation(name=f"Brand {slug}", slug=slug)
        session.add(organisation)
    return organisation


@pytest.fixture
def box() -> CredentialBox:
    return CredentialBox(Fernet.generate_key())
