"""The worker pool (``channelhub worker --processes N``) against real Redis and PostgreSQL.

- SIGTERM while a slow job runs: the job finishes (its run is ``ok``), the pool exits 0.
- A worker killed with SIGKILL is restarted, and the pool still works jobs afterwards.

Without Redis or PostgreSQL the tests skip, except with ``CI=true``, where they fail
(``tests.runtime_fixtures.unavailable``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

import tests.runtime_flows  # noqa: F401 - the test process enqueues rt-* flows by name
from hub.db import Database
from hub.fleet import FleetRuntime
from hub.models import AccountStatus, RunStatus
from hub.workerpool import WorkerPool
from tests.runtime_fixtures import (  # noqa: F401 - pg_url, pg_db, redis_conn, prefix are fixtures
    REPO_ROOT,
    get_run,
    make_account,
    pg_db,
    pg_url,
    prefix,
    redis_conn,
    subprocess_env,
    wait_for_runs,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

POOL_CODE = (
    "import sys, logging, tests.runtime_flows\n"
    "logging.basicConfig(level=logging.INFO)\n"
    "from hub.config import load_config\n"
    "from hub.workerpool import run_worker_pool\n"
    "sys.exit(run_worker_pool(load_config(), int(sys.argv[2]), lanes=['stock'], prefix=sys.argv[1],\n"
    "                         logging_level='WARNING', restart_delay=0.2, fork=sys.argv[3] == 'fork'))\n"
)


def children_of(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def wait_until(predicate, timeout: float, what: str, log: Path | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    output = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{output}")


class Pool:
    def __init__(self, pg_url: str, prefix: str, processes: int, log: Path, fork: bool = False) -> None:
        self.log = log
        handle = open(log, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-c", POOL_CODE, prefix, str(processes), "fork" if fork else "in-worker"], cwd=REPO_ROOT,
            env=subprocess_env(pg_url), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes = processes

    def workers(self) -> set[int]:
        return children_of(self.process.pid)

    def kill_everything(self) -> None:
        """Clean-up whatever happened: the workers (own process groups) and the pool."""
        for pid in self.workers():
            for sig in (signal.SIGKILL,):
                try:
                    os.killpg(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


@pytest.fixture
def pool_factory(pg_url: str, prefix: str, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[Pool] = []

    def start(processes: int, fork: bool = False) -> Pool:
        pool = Pool(pg_url, prefix, processes, tmp_path / f"pool-{len(started)}.log", fork)
        started.append(pool)
        wait_until(lambda: len(pool.workers()) == processes, 15, f"{processes} workers", pool.log)
        return pool

    yield start
    for pool in started:
        pool.kill_everything()


@pytest.fixture
def runtime(pg_db: Database, redis_conn: Redis, prefix: str) -> FleetRuntime:
    return FleetRuntime(pg_db, connection=redis_conn, prefix=prefix, retries=0)


def test_sigterm_lets_the_job_in_flight_finish_and_the_pool_exits_0(
    pool_factory, runtime: FleetRuntime, pg_db: Database, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    pool = pool_factory(2)
    account = make_account(pg_db, AccountStatus.SETUP)
    log = tmp_path / "sleepy.log"
    run_id = runtime.enqueue(account, "rt-sleepy", params={"sleep": 3, "log": str(log)})
    wait_until(lambda: get_run(pg_db, run_id).status is RunStatus.RUNNING, 15, "the slow job to start", pool.log)
    time.sleep(0.3)  # well inside the 3 s job
    pool.process.send_signal(signal.SIGTERM)
    code = pool.process.wait(20)
    assert code == 0, pool.log.read_text(errors="replace")[-3000:]
    run = get_run(pg_db, run_id)
    assert run.status is RunStatus.OK, (run.status, run.error)
    assert log.exists() and len(log.read_text().splitlines()) == 1  # it ran to its end, once
    assert not pool.workers()


def test_a_killed_worker_is_restarted_and_the_pool_keeps_working(
    pool_factory, runtime: FleetRuntime, pg_db: Database, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    pool = pool_factory(2)
    before = pool.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    def replaced() -> set[int] | None:
        workers = pool.workers()
        return workers if len(workers) == 2 and victim not in workers else None

    after = wait_until(replaced, 15, "the killed worker to be replaced", pool.log)
    assert len(after - before) == 1
    account = make_account(pg_db, AccountStatus.SETUP)
    runs = [runtime.enqueue(account, "rt-items", params={"items": [["A-1", "ok"]]}) for _ in range(2)]
    # rt-items runs on the catalog lane: this pool works only "stock", so give it a stock-lane job too.
    log = tmp_path / "sleepy.log"
    runs.append(runtime.enqueue(account, "rt-sleepy", params={"sleep": 0.1, "log": str(log)}))
    [finished] = wait_for_runs(pg_db, runs[2:], timeout=15, describe=lambda: pool.log.read_text(errors="replace"))
    assert finished.status is RunStatus.OK
    assert get_run(pg_db, runs[0]).status is RunStatus.QUEUED  # another lane's job is left alone
    pool.process.send_signal(signal.SIGTERM)
    assert pool.process.wait(20) == 0, pool.log.read_text(errors="replace")[-3000:]
    assert "died unexpectedly" in pool.log.read_text(errors="replace")


@pytest.mark.parametrize("fork", [False, True], ids=["jobs-in-the-worker", "a-work-horse-per-job"])
def test_jobs_run_in_the_worker_process_unless_it_forks_a_work_horse_per_job(
    pool_factory, runtime: FleetRuntime, pg_db: Database, tmp_path: Path, fork: bool  # type: ignore[no-untyped-def]
) -> None:
    pool = pool_factory(1, fork)
    [worker] = pool.workers()
    account = make_account(pg_db, AccountStatus.SETUP)
    log = tmp_path / "sleepy.log"
    runs = [runtime.enqueue(account, "rt-sleepy", params={"sleep": 0.05, "log": str(log)}) for _ in range(3)]
    finished = wait_for_runs(pg_db, runs, timeout=20, describe=lambda: pool.log.read_text(errors="replace"))
    assert all(run.status is RunStatus.OK for run in finished)
    pids = [int(line.split()[-1]) for line in log.read_text().splitlines()]
    assert len(pids) == 3
    if fork:
        assert worker not in pids and len(set(pids)) == 3  # a fresh work horse each time
    else:
        assert pids == [worker] * 3  # one process, its connections and caches kept between jobs
    pool.process.send_signal(signal.SIGTERM)
    assert pool.process.wait(20) == 0, pool.log.read_text(errors="replace")[-3000:]


def _fresh_worker_process(code: str, instance: Path) -> dict:
    """What ``code`` prints last (JSON), run in a new interpreter as a worker would start: nothing of
    this test process (imports, configured mappers, frozen objects) carries over."""
    env = {**os.environ, "CHANNELHUB_INSTANCE": str(instance), "CHANNELHUB_DATABASE_URL": "sqlite://",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("CHANNELHUB_PLUGINS", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_worker_keeps_what_it_loaded_out_of_the_garbage_collectors_full_collections(tmp_path: Path) -> None:
    # A full collection walked every module, mapper and plugin object of the worker, with its threads stopped.
    code = (
        "import gc, json, weakref\n"
        "from hub.fleet import load_before_fork\n"
        "class Node: pass\n"
        "def cycle():\n"
        "    node = Node(); node.me = node\n"
        "    return weakref.ref(node)\n"
        "before, garbage = gc.get_freeze_count(), cycle()\n"
        "load_before_fork()\n"
        "frozen, later = gc.get_freeze_count(), cycle()\n"
        "gc.collect()\n"
        "print(json.dumps({'before': before, 'frozen': frozen, 'garbage_kept': garbage() is not None,\n"
        "                  'later_kept': later() is not None}))\n"
    )
    seen = _fresh_worker_process(code, tmp_path)
    assert seen["before"] == 0 and seen["frozen"] > 50_000  # the start-up objects, out of every full collection
    assert not seen["garbage_kept"]  # start-up garbage was collected first, not frozen with the rest
    assert not seen["later_kept"]  # what jobs make is collected as before


def test_bad_arguments_are_refused_before_anything_starts(tmp_path: Path) -> None:
    from hub.config import Config
    from hub.errors import ConfigurationError

    config = Config(instance_dir=tmp_path, database_url="sqlite://", redis_url="redis://127.0.0.1:6379/9")
    with pytest.raises(ConfigurationError, match="at least 1"):
        WorkerPool(config, 0)
    with pytest.raises(ConfigurationError, match="unknown lane"):
        WorkerPool(config, 2, lanes=["nope"])


def test_a_worker_loads_what_every_job_needs_before_it_forks_work_horses(tmp_path: Path) -> None:
    # A work horse is forked per job: whatever the worker has not imported or configured yet, every job does again.
    code = (
        "import json, sys\n"
        "from hub.fleet import load_before_fork\n"
        "watched = ['plugins.iconic.channel', 'plugins.shopify.channel', 'plugins.starshipit.channel',\n"
        "           'plugins.uphance.channel', 'httpcore', 'hub.flows.orders', 'hub.flows.fulfilment']\n"
        "from hub.models import Order\n"
        "before = [name for name in watched if name in sys.modules] + (['mappers'] if Order.__mapper__.configured else [])\n"
        "load_before_fork()\n"
        "missing = [name for name in watched if name not in sys.modules] + ([] if Order.__mapper__.configured else ['mappers'])\n"
        "print(json.dumps({'before': before, 'missing': missing}))\n"
    )
    seen = _fresh_worker_process(code, tmp_path)
    assert seen["before"] == [], "importing hub.fleet already loads these; the test would prove nothing"
    assert seen["missing"] == []
