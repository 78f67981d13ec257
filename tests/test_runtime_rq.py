"""The fleet runtime on real Redis and PostgreSQL, with real ``run_worker`` processes.

Two worker processes serve the whole module (their own queue prefix and database schema); every
test uses its own accounts, all in Setup, so no schedule ever touches them. Retry intervals are
cut to a second (RQ's scheduler works in whole seconds).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job

import tests.runtime_flows  # noqa: F401 - the test process enqueues rt-* flows by name
from hub import fleet, jobs, scheduling
from hub.db import Database
from hub.fleet import FleetRuntime, job_id_for, queue_name
from hub.locks import RedisLocks
from hub.models import AccountStatus, RunStatus, SyncRun
from hub.runtime import make_runtime
from tests.runtime_fixtures import (  # noqa: F401 - pg_url, pg_db, redis_conn, prefix are fixtures
    REDIS_URL,
    WORKER_CODE,
    SCHEDULER_CODE,
    Processes,
    add_run,
    fresh_prefix,
    get_run,
    make_account,
    overlaps,
    pg_db,
    pg_url,
    prefix,
    purge_prefix,
    read_intervals,
    redis_conn,
    run_events,
    run_items,
    wait_for_runs,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture(scope="module")
def workers(pg_url: str, prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    processes = Processes(tmp_path_factory.mktemp("workers"))
    for _ in range(2):
        processes.start(WORKER_CODE, prefix, database_url=pg_url)
    yield processes
    processes.stop_all()


@pytest.fixture
def runtime(pg_db: Database, redis_conn: Redis, prefix: str, workers: Processes) -> Iterator[FleetRuntime]:
    rt = FleetRuntime(pg_db, connection=redis_conn, prefix=prefix, retry_intervals=[1, 1], busy_delay=1)
    yield rt


def account(db: Database) -> int:
    return make_account(db, AccountStatus.SETUP)


def test_job_runs_on_a_worker_and_publishes_progress(
    runtime: FleetRuntime, pg_db: Database, workers: Processes
) -> None:
    run_id = runtime.enqueue(account(pg_db), "rt-progress")
    job = runtime.job(run_id)
    assert job is not None and list(job.args) == [run_id] and not job.kwargs  # the run id, and nothing else, travels
    assert job.origin == queue_name("catalog", runtime.prefix)
    assert get_run(pg_db, run_id).job_id == job.id == job_id_for(run_id, runtime.prefix)

    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and get_run(pg_db, run_id).status not in (RunStatus.OK, RunStatus.FAILED):
        progress = job.get_meta(refresh=True).get("progress")
        if progress:
            seen.add((progress["done"], progress["total"]))
        time.sleep(0.05)

    [run] = wait_for_runs(pg_db, [run_id], 5, workers.output)
    assert (run.status, run.counts, run.progress_done, run.progress_total) == (RunStatus.OK, {"ok": 3}, 3, 3)
    assert (1, 3) in seen  # watched it part-way through
    assert job.get_meta(refresh=True)["progress"] == {"done": 3, "total": 3}
    assert run_items(pg_db, run_id) == [("step-1", "ok"), ("step-2", "ok"), ("step-3", "ok")]


def test_racing_workers_never_overlap_one_account_and_flow(
    runtime: FleetRuntime, pg_db: Database, workers: Processes, tmp_path: Path
) -> None:
    log = tmp_path / "intervals"
    first, second = account(pg_db), account(pg_db)
    params = {"log": str(log), "sleep": 0.4}
    runs = [runtime.enqueue(acct, "rt-sleepy", params=params) for acct in (first, first, first, second, second)]
    finished = wait_for_runs(pg_db, runs, 45, workers.output)

    assert [run.status for run in finished] == [RunStatus.OK] * 5
    assert all(run.attempt == 1 for run in finished)  # waiting for the lock spent no retry
    intervals = read_intervals(log)
    assert sorted(run for _, run, _, _ in intervals) == sorted(runs)  # every one ran, once
    by_account = {
        acct: [(start, end) for owner, _, start, end in intervals if owner == acct] for acct in (first, second)
    }
    for acct, spans in by_account.items():
        assert not any(overlaps(a, b) for a, b in itertools.combinations(spans, 2)), (acct, spans)
    assert any(overlaps(a, b) for a in by_account[first] for b in by_account[second])  # in parallel across accounts
    # Some jobs did find their flow busy and were deferred by RQ rather than run alongside.
    deferred = [Job.fetch(job_id_for(run, runtime.prefix), connection=runtime.redis).number_of_retries for run in runs]
    assert any(deferred)


def test_transient_error_is_retried_by_rq(runtime: FleetRuntime, pg_db: Database, workers: Processes) -> None:
    run_id = runtime.enqueue(account(pg_db), "rt-flaky", params={"succeed_on": 2})
    [run] = wait_for_runs(pg_db, [run_id], 20, workers.output)
    assert (run.status, run.attempt, run.counts, run.error) == (RunStatus.OK, 2, {"ok": 1}, None)
    job = runtime.job(run_id)
    assert job is not None and job.retries_left == runtime.retries - 1  # RQ's own Retry did it


def test_auth_error_is_not_retried(runtime: FleetRuntime, pg_db: Database, workers: Processes) -> None:
    acct = account(pg_db)
    run_id = runtime.enqueue(acct, "rt-auth")
    [run] = wait_for_runs(pg_db, [run_id], 20, workers.output)
    assert (run.status, run.attempt) == (RunStatus.FAILED, 1)
    assert "credentials" in (run.error or "")
    [event] = run_events(pg_db, run_id)
    assert (event.kind, event.level, event.account_id) == ("flow.auth_failed", "error", acct)
    job = runtime.job(run_id)
    assert job is not None and job.retries_left == runtime.retries  # no retry spent
    assert job.return_value() == {"run_id": run_id, "status": "failed"}


def test_rate_limited_is_deferred_without_a_retry(
    pg_db: Database, redis_conn: Redis, prefix: str, workers: Processes, tmp_path: Path
) -> None:
    rt = FleetRuntime(pg_db, connection=redis_conn, prefix=prefix, retries=0)  # a spent retry would fail it
    params = {"marker": str(tmp_path / "limited"), "retry_after": 1}
    run_id = rt.enqueue(account(pg_db), "rt-ratelimited", params=params)
    [run] = wait_for_runs(pg_db, [run_id], 20, workers.output)
    assert (run.status, run.attempt, run.counts) == (RunStatus.OK, 1, {"ok": 1})


def test_delayed_enqueue_waits(runtime: FleetRuntime, pg_db: Database, workers: Processes) -> None:
    started = datetime.now(timezone.utc)
    run_id = runtime.enqueue(account(pg_db), "rt-items", params={"items": [["A-1", "ok"]]}, delay=2)
    [run] = wait_for_runs(pg_db, [run_id], 20, workers.output)
    assert run.status is RunStatus.OK
    # RQ's scheduled-job registry keeps whole seconds, so "in 2 s" may come up to a second early.
    assert run.started_at is not None and run.started_at - started >= timedelta(seconds=1)


# -- webhook runs ------------------------------------------------------------------


def test_webhook_runs_go_ahead_of_the_scheduled_work_in_their_lane_oldest_first(pg_db: Database,
                                                                                redis_conn: Redis) -> None:
    prefix = fresh_prefix()  # lanes no worker listens to: the queues keep their order
    try:
        rt = FleetRuntime(pg_db, connection=redis_conn, prefix=prefix)
        scheduled = [rt.enqueue(account(pg_db), "rt-items", trigger="schedule", params={"items": []}) for _ in range(2)]
        # Webhooks of different accounts (one account's would join its waiting run), arriving in turn.
        hooked = [rt.enqueue(account(pg_db), "rt-items", trigger="webhook", params={"items": []}) for _ in range(3)]

        lane = jobs.lane_for("rt-items")
        names = fleet.worker_queue_names([lane], prefix)
        assert names == [queue_name(lane, prefix, urgent=True), queue_name(lane, prefix)]
        queues = [Queue(name, connection=redis_conn) for name in names]
        taken = []
        while (found := Queue.dequeue_any(queues, None, connection=redis_conn)) is not None:
            taken.append(found[0].id)  # what a worker of the lane takes, in order
        assert taken == [job_id_for(run_id, prefix) for run_id in (*hooked, *scheduled)]
    finally:
        purge_prefix(redis_conn, prefix)


def _wait_for_status(db: Database, run_id: int, status: RunStatus, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while get_run(db, run_id).status is not status:
        assert time.monotonic() < deadline, f"run {run_id} never became {status.value}"
        time.sleep(0.02)


def test_a_webhook_run_finding_its_flow_busy_starts_within_a_second_of_it_freeing(
    runtime: FleetRuntime, pg_db: Database, redis_conn: Redis, workers: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "COALESCED_FLOWS", ("rt-items",))
    acct = account(pg_db)
    busy = RedisLocks(redis_conn, runtime.prefix, timeout=30).lock(acct, "rt-items")
    assert busy.acquire()
    try:
        params = {"items": [["A-1", "ok"]]}
        run_id = runtime.enqueue(acct, "rt-items", trigger="webhook", params={**params, "order_ids": ["1"]})
        _wait_for_status(pg_db, run_id, RunStatus.DEFERRED)
        # Waiting for the lock, it has not started: the next webhook of the account joins it.
        assert runtime.enqueue(acct, "rt-items", trigger="webhook", params={**params, "order_ids": ["2"]}) == run_id
        time.sleep(0.3)
    finally:
        released = datetime.now(timezone.utc)
        busy.release()
    [run] = wait_for_runs(pg_db, [run_id], 10, workers.output)
    assert run.status is RunStatus.OK and run.params["order_ids"] == ["1", "2"]
    assert run.started_at is not None and run.started_at - released < timedelta(seconds=1.5)  # not RQ's whole seconds
    job = runtime.job(run_id)
    assert job is not None and not job.number_of_retries  # waited in the work horse, not RQ's 1 s scheduler


# -- the scheduler ---------------------------------------------------------------


def test_tick_enqueues_due_flows_once(
    pg_db: Database, pg_url: str, redis_conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    tick_prefix = fresh_prefix()  # no worker listens here: the runs stay queued for inspection
    monkeypatch.setenv("CHANNELHUB_DATABASE_URL", pg_url)
    monkeypatch.setenv("CHANNELHUB_REDIS_URL", REDIS_URL)
    monkeypatch.setattr(scheduling, "registered_flows", dict)  # toggles only: no plugin-based filters
    fleet.reset_worker_database()
    try:
        acct = make_account(pg_db, AccountStatus.LIVE, orders_enabled=True)
        add_run(pg_db, acct, "catalog", RunStatus.OK, datetime.now(timezone.utc))  # just ran: not due
        run_ids = fleet.tick(tick_prefix)
        with pg_db.session() as session:
            runs = [session.get(SyncRun, run_id) for run_id in run_ids]
            mine = [(run.flow, run.trigger) for run in runs if run is not None and run.account_id == acct]
        assert mine == [("orders", "schedule")]
        orders_queue = Queue(queue_name("orders", tick_prefix), connection=redis_conn)
        assert set(orders_queue.job_ids) >= {job_id_for(run_id, tick_prefix) for run_id in run_ids}
        assert fleet.tick(tick_prefix) == []  # still pending: not enqueued twice
    finally:
        fleet.reset_worker_database()
        purge_prefix(redis_conn, tick_prefix)


def test_scheduler_process_puts_the_tick_on_the_orders_lane(
    pg_url: str, redis_conn: Redis, tmp_path: Path
) -> None:
    tick_prefix = fresh_prefix()
    processes = Processes(tmp_path)
    try:
        processes.start(SCHEDULER_CODE, tick_prefix, "1", database_url=pg_url)
        orders_queue = Queue(queue_name("orders", tick_prefix), connection=redis_conn)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not orders_queue.job_ids:
            time.sleep(0.1)
        jobs = orders_queue.jobs
        assert jobs, processes.output()
        assert jobs[0].func_name == "hub.fleet.tick" and jobs[0].kwargs == {"prefix": tick_prefix}
    finally:
        processes.stop_all()
        purge_prefix(redis_conn, tick_prefix)


def test_make_runtime_is_the_fleet_with_redis(pg_db: Database, tmp_path: Path) -> None:
    from hub.config import load_config

    config = load_config({"CHANNELHUB_INSTANCE": str(tmp_path), "CHANNELHUB_REDIS_URL": REDIS_URL})
    rt = make_runtime(config, pg_db)
    assert isinstance(rt, FleetRuntime)
    rt.close()


def test_a_job_sees_whether_other_jobs_wait_in_its_lane(redis_conn: Redis, prefix: str) -> None:
    # A queue no test worker listens to, so what is put on it stays there.
    lane = Queue(f"{prefix}-probe", connection=redis_conn)
    running = Job.create(print, connection=redis_conn, origin=lane.name)
    waiting = fleet._queue_waiting(running)
    assert waiting is not None and waiting() is False
    urgent = Queue(f"{prefix}-probe{fleet.URGENT_SUFFIX}", connection=redis_conn)
    try:
        lane.enqueue(print, "next")
        assert waiting() is True
        lane.empty()
        urgent.enqueue(print, "a webhook run")  # the lane's urgent twin counts too
        assert waiting() is True
    finally:
        lane.empty()
        urgent.empty()
    assert fleet._queue_waiting(None) is None
