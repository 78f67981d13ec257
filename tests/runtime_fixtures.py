"""Fixtures and helpers of the runtime tests (kept out of the shared conftest).

Integration tests talk to the real Redis and PostgreSQL. When one is unreachable the test is skipped
with the reason, except under ``CI=true``, where that is a failure: CI must never pass by skipping.
Every test run gets its own Redis key prefix and PostgreSQL schema, so concurrent runs never collide.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from hub import defaults
from hub.db import Database
from hub.fleet import queue_name
from hub.jobs import TERMINAL
from hub.models import AccountStatus, ChannelAccount, Event, Organisation, SyncRun, SyncRunItem
from tests.services import unavailable

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("CHANNELHUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CHANNELHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")


# -- databases ---------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'runtime.db'}")
    db.create_all()
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema with the hub's tables; the URL pins ``search_path`` to it."""
    schema = f"rt_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as error:  # noqa: BLE001 - any connection failure means "not reachable"
        admin.dispose()
        unavailable("PostgreSQL", error)
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    db = Database(rendered)
    db.create_all()
    db.dispose()
    try:
        yield rendered
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_db(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    yield db
    db.dispose()


# -- Redis -------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_conn() -> Iterator[Redis]:
    connection = Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except Exception as error:  # noqa: BLE001
        unavailable("Redis", error)
    yield connection
    connection.close()


def fresh_prefix() -> str:
    return f"chtest-{uuid.uuid4().hex[:10]}"


def purge_prefix(connection: Redis, prefix: str) -> None:
    """Delete every key this prefix created: queues and their jobs, registries, locks, cron entries."""
    for lane in defaults.LANES:
        for urgent in (True, False):
            Queue(queue_name(lane, prefix, urgent=urgent), connection=connection).delete(delete_jobs=True)
    connection.zrem("rq:cron_jobs", f"{prefix}-tick")
    keys = list(connection.scan_iter(match=f"*{prefix}*", count=500))
    for start in range(0, len(keys), 500):
        connection.delete(*keys[start : start + 500])


@pytest.fixture(scope="module")
def prefix(redis_conn: Redis) -> Iterator[str]:
    name = fresh_prefix()
    yield name
    purge_prefix(redis_conn, name)


# -- processes ---------------------------------------------------------------


def subprocess_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CHANNELHUB_DATABASE_URL"] = database_url
    env["CHANNELHUB_REDIS_URL"] = REDIS_URL
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


WORKER_CODE = (
    "import sys, tests.runtime_flows\n"
    "from hub.config import load_config\n"
    "from hub.fleet import run_worker\n"
    "run_worker(load_config(), prefix=sys.argv[1], logging_level='WARNING')\n"
)
SCHEDULER_CODE = (
    "import sys\n"
    "from hub.config import load_config\n"
    "from hub.fleet import run_scheduler\n"
    "run_scheduler(load_config(), prefix=sys.argv[1], interval=int(sys.argv[2]), name=sys.argv[1] + '-cron')\n"
)


class Processes:
    """Child processes a test started, each in its own session so it is stopped with its children."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, code: str, *args: str, database_url: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"proc-{len(self.started)}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=REPO_ROOT,
            env=subprocess_env(database_url),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def output(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-4000:] for path in sorted(self.logs.glob("proc-*.log")))

    def stop_all(self) -> None:
        for process in self.started:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.started:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
            # The worker's scheduler and work horses share the group; make sure none outlives it.
            _signal_group(process, signal.SIGKILL)
        self.started = []


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # the group id is the child's own pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


# -- domain helpers ------------------------------------------------------------


def make_account(db: Database, status: AccountStatus = AccountStatus.TESTING, **fields: Any) -> int:
    tag = uuid.uuid4().hex[:8]
    with db.session() as session:
        org = Organisation(name=f"Org {tag}", slug=f"org-{tag}")
        session.add(org)
        session.flush()
        account = ChannelAccount(
            organisation_id=org.id,
            name=fields.pop("name", f"acct-{tag}"),
            plugin=fields.pop("plugin", "iconic"),
            status=status,
            **fields,
        )
        session.add(account)
        session.flush()
        return account.id


def add_run(db: Database, account_id: int, flow: str, status: Any, queued_at: datetime, **fields: Any) -> int:
    with db.session() as session:
        account = session.get(ChannelAccount, account_id)
        assert account is not None
        run = SyncRun(
            organisation_id=account.organisation_id,
            account_id=account_id,
            flow=flow,
            status=status,
            queued_at=queued_at,
            **fields,
        )
        session.add(run)
        session.flush()
        return run.id


def get_run(db: Database, run_id: int) -> SyncRun:
    with db.session() as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        return run


def run_items(db: Database, run_id: int) -> list[tuple[str, str]]:
    with db.session() as session:
        rows = session.execute(
            select(SyncRunItem.key, SyncRunItem.outcome).where(SyncRunItem.run_id == run_id).order_by(SyncRunItem.id)
        )
        return [(key, outcome) for key, outcome in rows]


def run_events(db: Database, run_id: int) -> list[Event]:
    with db.session() as session:
        return list(session.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id)))


def wait_for_runs(db: Database, run_ids: list[int], timeout: float, describe: Callable[[], str] = str) -> list[SyncRun]:
    """Poll until every run is finished (ok / partial / failed)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [get_run(db, run_id) for run_id in run_ids]
        if all(run.status in TERMINAL for run in runs):
            return runs
        if time.monotonic() > deadline:
            states = {run.id: (run.status.value, run.attempt, run.error) for run in runs}
            pytest.fail(f"runs not finished after {timeout}s: {states}\n{describe()}")
        time.sleep(0.1)


def read_intervals(path: Path) -> list[tuple[int, int, float, float]]:
    """(account id, run id, start, end) lines written by the ``rt-sleepy`` flow."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        account, run, start, end, _pid = line.split()
        rows.append((int(account), int(run), float(start), float(end)))
    return rows


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)
