"""``FleetRuntime.recover``, run by every scheduler tick: what dead workers and a Redis that lost its
data leave behind is failed (so the schedule runs the flow again) or queued again — within seconds,
not after ``RUN_STALE_AFTER``. Real Redis (DB 10) and PostgreSQL; no worker process is needed."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from rq.job import Job, JobStatus

from hub.db import Database
from hub.fleet import (
    FLOW_LOCK_TIMEOUT,
    LOST_JOB_GRACE,
    RESCUE_OVERDUE_AFTER,
    FleetRuntime,
    job_id_for,
)
from hub.locks import lock_key
from hub.models import Event, RunStatus, SyncRun, utcnow
from tests.chaos.harness import purge_prefix
from tests.runtime_fixtures import make_account


@pytest.fixture
def fleet(pg_url, chaos_redis):  # type: ignore[no-untyped-def]
    db = Database(pg_url)
    runtime = FleetRuntime(db, connection=chaos_redis, prefix=f"chaos-rec-{time.time_ns()}", retries=2,
                           retry_intervals=[1])
    yield runtime
    purge_prefix(chaos_redis, runtime.prefix)
    db.dispose()


def _run(fleet: FleetRuntime, status: RunStatus, *, age: float, started: bool = False) -> tuple[int, int]:
    account_id = make_account(fleet.db)
    run_id = fleet.enqueue(account_id, "orders")
    with fleet.db.session() as session:
        run = session.get(SyncRun, run_id)
        run.status = status
        run.queued_at = utcnow() - timedelta(seconds=age)
        if started:
            run.started_at = utcnow() - timedelta(seconds=age)
    return account_id, run_id


def _status(fleet: FleetRuntime, run_id: int) -> SyncRun:
    with fleet.db.session() as session:
        return session.get(SyncRun, run_id)


def test_a_running_run_whose_flow_lock_lapsed_is_failed_so_the_schedule_runs_it_again(fleet) -> None:
    _, dead = _run(fleet, RunStatus.RUNNING, age=FLOW_LOCK_TIMEOUT, started=True)
    _, alive = _run(fleet, RunStatus.RUNNING, age=FLOW_LOCK_TIMEOUT, started=True)
    alive_account = _status(fleet, alive).account_id
    fleet.redis.set(f"{fleet.prefix}:{lock_key(alive_account, 'orders')}", "token", px=FLOW_LOCK_TIMEOUT * 1000)

    found = fleet.recover()

    assert found["failed"] == [dead]
    run = _status(fleet, dead)
    assert run.status is RunStatus.FAILED and run.error.startswith("abandoned: the worker running it stopped")
    assert _status(fleet, alive).status is RunStatus.RUNNING  # its lock is alive: left alone
    with fleet.db.session() as session:
        [event] = session.query(Event).filter(Event.run_id == dead, Event.kind == "flow.failed").all()
        assert event.data["error"] == "WorkerLost"
    assert dead not in fleet.recover()["failed"]  # failed once


def test_a_queued_run_whose_job_redis_lost_is_queued_again_with_its_params(fleet) -> None:
    account_id = make_account(fleet.db)
    run_id = fleet.enqueue(account_id, "stock", params={"skus": ["TEE-1"]})
    Job.fetch(job_id_for(run_id, fleet.prefix), connection=fleet.redis).delete()  # Redis restarted: gone
    young = fleet.recover()
    assert run_id not in young["requeued"]  # a run just written may not have its job yet
    with fleet.db.session() as session:
        session.get(SyncRun, run_id).queued_at = utcnow() - timedelta(seconds=LOST_JOB_GRACE + 1)

    found = fleet.recover()

    assert found["requeued"] == [run_id]
    job = Job.fetch(job_id_for(run_id, fleet.prefix), connection=fleet.redis)
    assert job.meta["params"] == {"skus": ["TEE-1"]} and job.origin == f"{fleet.prefix}-stock"
    assert _status(fleet, run_id).status is RunStatus.QUEUED
    assert fleet.recover()["requeued"] == []  # its job exists again


def test_a_pending_run_whose_job_rq_gave_up_on_is_failed(fleet) -> None:
    _, run_id = _run(fleet, RunStatus.QUEUED, age=LOST_JOB_GRACE + 1)
    job = Job.fetch(job_id_for(run_id, fleet.prefix), connection=fleet.redis)
    job.set_status("failed")

    assert fleet.recover()["failed"] == [run_id]
    assert "its job ended failed in RQ" in _status(fleet, run_id).error


def test_retries_long_overdue_are_moved_onto_their_queue_when_no_rq_scheduler_runs(fleet) -> None:
    account_id = make_account(fleet.db)
    run_id = fleet.enqueue(account_id, "orders", delay=1)  # a deferral, waiting in RQ's scheduled registry
    queue = fleet.queues["orders"]
    registry = queue.scheduled_job_registry
    job_id = job_id_for(run_id, fleet.prefix)
    assert job_id in registry.get_job_ids() and job_id not in queue.job_ids
    assert fleet.recover()["moved"] == []  # due in a second: RQ's scheduler's business

    registry.schedule(Job.fetch(job_id, connection=fleet.redis), utcnow() - timedelta(seconds=RESCUE_OVERDUE_AFTER + 5))
    found = fleet.recover()

    assert found["moved"] == [job_id]
    assert job_id in queue.job_ids and job_id not in registry.get_job_ids()


def test_a_job_a_killed_worker_took_off_its_queue_is_queued_again(fleet) -> None:
    """The worker took the job off the queue and was SIGKILLed before RQ recorded it as started:
    no queue or registry holds it, its status still says queued, and nothing in RQ would run it."""
    account_id = make_account(fleet.db)
    run_id = fleet.enqueue(account_id, "orders")
    job_id = job_id_for(run_id, fleet.prefix)
    queue = fleet.queues["orders"]
    fleet.redis.lrem(queue.key, 0, job_id)  # what the dead worker's BLMOVE did
    with fleet.db.session() as session:
        session.get(SyncRun, run_id).queued_at = utcnow() - timedelta(seconds=LOST_JOB_GRACE + 1)
    assert fleet.recover()["requeued"] == []  # enqueued a moment ago: a live worker may be starting it
    job = Job.fetch(job_id, connection=fleet.redis)
    job.enqueued_at = utcnow() - timedelta(seconds=LOST_JOB_GRACE + 1)
    job.save()

    assert fleet.recover()["requeued"] == [run_id]
    assert job_id in queue.job_ids


def test_a_job_rq_started_for_a_worker_killed_before_the_run_began_is_queued_again(fleet) -> None:
    """RQ recorded the job as started (its worker's started registry holds it) and the worker was
    killed before the run became running: RQ would give up on the job only after its timeout."""
    account_id = make_account(fleet.db)
    run_id = fleet.enqueue(account_id, "orders")
    job_id = job_id_for(run_id, fleet.prefix)
    queue = fleet.queues["orders"]
    fleet.redis.lrem(queue.key, 0, job_id)
    job = Job.fetch(job_id, connection=fleet.redis)
    job.set_status(JobStatus.STARTED)
    job.started_at = utcnow()
    job.save()
    fleet.redis.zadd(queue.started_job_registry.key, {job_id: time.time() + 600})  # the dead worker's entry
    with fleet.db.session() as session:
        session.get(SyncRun, run_id).queued_at = utcnow() - timedelta(seconds=LOST_JOB_GRACE + 1)
    assert fleet.recover()["requeued"] == []  # started a moment ago: a live worker is beginning the run
    job.started_at = utcnow() - timedelta(seconds=LOST_JOB_GRACE + 1)
    job.save()

    assert fleet.recover()["requeued"] == [run_id]
    assert job_id in queue.job_ids
