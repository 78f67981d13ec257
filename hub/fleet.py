"""The fleet executor: RQ on Redis, any number of workers on any number of machines.

- Queues per lane, ``<prefix>-orders``, ``-stock``, ``-catalog``, ``-reconcile``; workers listen in
  that order, so an order never waits behind a catalogue import. Each lane has an ``-urgent`` twin
  for webhook runs, which a worker of the lane takes before the lane's scheduled work, oldest first.
- A job is ``run_flow_job(run_id)``: the run id is its only argument. Non-secret extras ride in
  ``job.meta`` (the flow's params, the lock prefix, the busy delay); progress is published there too.
- ``TransientError`` is re-raised, and RQ's ``Retry(max=JOB_RETRIES, interval=JOB_RETRY_INTERVALS)``
  given at enqueue retries it. A deferral (rate limited, flow busy) *returns* ``rq.Retry``: RQ
  reschedules the same job after the delay and counts it apart from the exception retries, so a
  deferral spends none of them. RQ schedules in whole seconds, so a sub-second deferral (a webhook
  run finding its flow busy, ``WEBHOOK_BUSY_DELAY``) is waited out in the work horse instead, for at
  most ``FLEET_INLINE_DEFER_SECONDS``, before it falls back to RQ.
- Every other outcome returns normally: the SyncRun row, not RQ's job status, says whether the sync
  worked (RQ's failed registry holds only exhausted retries and crashes).
- ``channelhub scheduler`` is RQ's ``CronScheduler`` with one entry, ``tick``, every
  ``SCHEDULER_TICK_SECONDS`` on the orders lane: per-account schedules live in the database, so one
  entry fans out through ``enqueue_due`` rather than one cron entry per account.

A worker runs its jobs in its own process, one after another (``defaults.WORKER_FORKS_PER_JOB``;
``channelhub worker --fork`` gives RQ's work horse per job instead). It builds its ``Database`` from
``CHANNELHUB_DATABASE_URL`` once, lazily; a forked work horse drops the inherited connection pool
and opens its own.

Recovery (every tick, :meth:`FleetRuntime.recover`): a worker killed mid-run, the worker that ran
RQ's scheduler killed, or a Redis that restarted without its data must not stall an account's flow
until ``RUN_STALE_AFTER``. The tick fails a running run whose flow lock lapsed (its work horse is
gone; the lock lives ``FLOW_LOCK_TIMEOUT`` without its heartbeat), fails a pending run whose job RQ
finished with, queues again a pending run whose job Redis no longer holds (or holds in no queue or
registry: a worker took it and died before starting it; or RQ started it but the run never
became running), and moves retries and
deferrals overdue by ``RESCUE_OVERDUE_AFTER`` onto their queues itself. The schedule then queues a
fresh run where one was failed. Doubt is resolved towards running again: the database (bindings,
unique order keys), never Redis, makes a second run harmless.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Retry, SimpleWorker, Worker, get_current_job
from rq.cron import CronScheduler
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select
from sqlalchemy.orm import configure_mappers

from hub import defaults
from hub.config import Config, load_config
from hub.connections import get_connector
from hub.db import Database
from hub.errors import ConfigurationError, TransientError
from hub.events import emit
from hub.http import load_transport
from hub.jobs import (
    PENDING,
    WEBHOOK,
    Outcome,
    ProgressSink,
    Verdict,
    WaitingProbe,
    execute_run,
    fail_run,
    lane_for,
    load_builtin_flows,
    open_run,
    set_enqueuer,
)
from hub.locks import RedisLocks, lock_key
from hub.memory import freeze_startup_objects
from hub.models import ChannelAccount, RunStatus, SyncRun, utcnow
from hub.scheduling import (
    aware,
    enqueue_due,
    next_due,
    promote_accounts,
    run_tick_hooks,
)

log = logging.getLogger("channelhub.fleet")

# A flow's Redis lock lives this long without its heartbeat (which extends it every third of this
# while the flow runs), so the lock of a work horse that was killed frees itself within seconds,
# not after the 15 minutes of defaults.LOCK_TIMEOUT. A lock lost to a stalled heartbeat is harmless:
# the database, not the lock, keeps a second run of the flow from duplicating anything.
FLOW_LOCK_TIMEOUT = 15
# A retry or deferral this overdue has no live RQ scheduler moving it (the worker running it died):
# the tick moves it onto its queue.
RESCUE_OVERDUE_AFTER = 10
# A pending run whose job Redis has not known for this long (Redis restarted without its data), or
# that no queue or registry holds (a worker killed between taking it off its queue and starting it),
# is queued again; the delay covers the moments between writing a run, queueing and starting its job.
LOST_JOB_GRACE = 30
# RQ's maintenance (abandoned jobs, a dead scheduler's lock) runs this often per worker; RQ's own
# default is 10 minutes.
WORKER_MAINTENANCE_SECONDS = 30


URGENT_SUFFIX = "-urgent"


def queue_name(lane: str, prefix: str = defaults.QUEUE_PREFIX, *, urgent: bool = False) -> str:
    """A lane's queue; its ``urgent`` twin holds webhook runs, which workers take first, in order."""
    return f"{prefix}-{lane}{URGENT_SUFFIX if urgent else ''}"


def worker_queue_names(lanes: Sequence[str], prefix: str = defaults.QUEUE_PREFIX) -> list[str]:
    """What a worker of ``lanes`` listens to, in order: each lane's urgent queue, then the lane."""
    return [queue_name(lane, prefix, urgent=urgent) for lane in lanes for urgent in (True, False)]


def job_id_for(run_id: int, prefix: str = defaults.QUEUE_PREFIX) -> str:
    # Derived from the run, so a run can never be on the queues twice under two ids.
    return f"{prefix}-run-{run_id}"


def _redis(url: str | None) -> Redis:
    if not url:
        raise ConfigurationError("the fleet needs CHANNELHUB_REDIS_URL (redis://host:6379/0)")
    return Redis.from_url(url)  # RQ stores pickles: no decode_responses


class FleetRuntime:
    """Enqueues runs onto RQ; the work happens in ``channelhub worker`` processes."""

    def __init__(
        self,
        db: Database,
        redis_url: str | None = None,
        *,
        connection: Redis | None = None,
        prefix: str = defaults.QUEUE_PREFIX,
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        busy_delay: float | None = None,
    ) -> None:
        self.db = db
        self.redis = connection if connection is not None else _redis(redis_url)
        self.prefix = prefix
        self.retries = defaults.JOB_RETRIES if retries is None else retries
        self.retry_intervals = list(defaults.JOB_RETRY_INTERVALS if retry_intervals is None else retry_intervals)
        self.busy_delay = defaults.LOCK_BUSY_DELAY if busy_delay is None else busy_delay
        self.queues = {lane: Queue(queue_name(lane, prefix), connection=self.redis) for lane in defaults.LANES}
        self.urgent_queues = {lane: Queue(queue_name(lane, prefix, urgent=True), connection=self.redis)
                              for lane in defaults.LANES}

    def enqueue(
        self,
        account_id: int,
        flow: str,
        *,
        trigger: str = "manual",
        params: dict[str, Any] | None = None,
        delay: float = 0,
    ) -> int:
        lane = lane_for(flow)  # refuse an unknown flow before writing a run for it
        run_id, new = open_run(self.db, account_id, flow, trigger=trigger, params=params,
                               job_id=lambda rid: job_id_for(rid, self.prefix))
        if not new:
            return run_id  # a webhook's order ids joined a run whose job is already queued
        try:
            # A webhook is a customer's order waiting to be imported: it goes ahead of scheduled work,
            # first come first served among webhooks (at the front of one queue, the newest would
            # overtake the older ones for as long as webhooks keep coming).
            self._submit(run_id, lane, flow, dict(params or {}), delay, urgent=trigger == WEBHOOK)
        except Exception as exc:
            fail_run(self.db, run_id, f"could not be queued: {exc}")
            raise
        return run_id

    def enqueue_due(self, now: datetime | None = None) -> list[int]:
        # One tick at a time across the fleet: overlapping ticks could both see a flow as not pending.
        # The tick's lock is a flow lock (heartbeat, FLOW_LOCK_TIMEOUT): a worker killed during a tick
        # must not stop the schedule for long.
        guard = RedisLocks(self.redis, self.prefix, timeout=FLOW_LOCK_TIMEOUT).lock(None, "tick")
        if not guard.acquire():
            log.info("another scheduler tick is running; skipping this one")
            return []
        try:
            try:
                self.recover()
            except Exception:  # recovery trouble must not stop the schedule
                log.exception("recovering lost runs failed; the schedule goes on")
            return enqueue_due(self.db, self.enqueue, now)
        finally:
            guard.release()

    def next_due(self, account: ChannelAccount, flow: str) -> datetime:
        with self.db.session() as session:
            return next_due(session, account, flow)

    def start(self) -> None:
        """Nothing to start: workers and the scheduler are their own processes."""

    def close(self) -> None:
        self.redis.close()

    def job(self, run_id: int) -> Job | None:
        """The RQ job of a run (for progress in ``job.meta``), while RQ still keeps it."""
        try:
            return Job.fetch(job_id_for(run_id, self.prefix), connection=self.redis)
        except Exception:
            return None

    # -- recovery ----------------------------------------------------------------

    def recover(self) -> dict[str, list[Any]]:
        """Unstick what dead workers or a Redis restart left behind (see the module docstring)."""
        moved = self._rescue_overdue()
        failed, requeued = self._reap_lost_runs()
        if moved or failed or requeued:
            log.warning("recovery: moved overdue jobs %s, failed runs %s, queued again %s", moved, failed, requeued)
        return {"moved": moved, "failed": failed, "requeued": requeued}

    def _rescue_overdue(self) -> list[str]:
        """Retries and deferrals long overdue: RQ's scheduler (inside a worker) is not running."""
        cutoff = int(time.time() - RESCUE_OVERDUE_AFTER)
        moved = []
        for queue in [*self.urgent_queues.values(), *self.queues.values()]:
            registry = queue.scheduled_job_registry
            for job_id in registry.get_jobs_to_schedule(cutoff):
                if not registry.remove(job_id):
                    continue  # a scheduler that came back moved it meanwhile
                try:
                    job = Job.fetch(job_id, connection=self.redis)
                except NoSuchJobError:
                    continue
                queue.enqueue_job(job)
                moved.append(job_id)
        return moved

    def _reap_lost_runs(self) -> tuple[list[int], list[int]]:
        """Fail runs nobody runs any more; queue again runs whose job Redis lost."""
        now = utcnow()
        failed: list[int] = []
        requeued: list[tuple[int, str, str, dict[str, Any], bool]] = []
        with self.db.session() as session:
            runs = session.scalars(select(SyncRun).where(SyncRun.status.in_(PENDING),
                                                         SyncRun.job_id.like(f"{self.prefix}-run-%")))
            for run in runs:
                reason = self._lost(run, now)
                if reason is None:
                    continue
                if reason == "requeue":
                    requeued.append((run.id, lane_for(run.flow), run.flow, dict(run.params or {}), run.trigger == WEBHOOK))
                    continue
                run.status, run.error, run.finished_at = RunStatus.FAILED, reason, now
                emit(session, organisation_id=run.organisation_id, account_id=run.account_id, run_id=run.id,
                     kind="flow.failed", level="warning", message=f"{run.flow} failed: {reason}",
                     data={"flow": run.flow, "attempt": run.attempt, "error": "WorkerLost"})
                failed.append(run.id)
        for run_id, lane, flow, params, urgent in requeued:
            self._submit(run_id, lane, flow, params, 0, urgent=urgent)
        return failed, [run_id for run_id, *_ in requeued]

    def _lost(self, run: SyncRun, now: datetime) -> str | None:
        """Why ``run`` will never finish by itself ("requeue" when its job vanished), else None."""
        if run.status == RunStatus.RUNNING:
            # A running flow holds its lock and its heartbeat extends it; no lock: the horse is gone.
            started = aware(run.started_at or run.queued_at)
            if now - started < timedelta(seconds=FLOW_LOCK_TIMEOUT / 3):
                return None
            if self.redis.exists(f"{self.prefix}:{lock_key(run.account_id, run.flow)}"):
                return None
            return "abandoned: the worker running it stopped (its flow lock lapsed); the schedule runs the flow again"
        queued = aware(run.queued_at)
        if now - queued < timedelta(seconds=LOST_JOB_GRACE):
            return None
        try:
            job = Job.fetch(run.job_id or "", connection=self.redis)
        except NoSuchJobError:
            return "requeue"  # Redis lost the job (restarted without persistence?): queue the run again
        status = job.get_status(refresh=False)
        if status in (JobStatus.FAILED, JobStatus.FINISHED, JobStatus.STOPPED, JobStatus.CANCELED):
            return f"abandoned: its job ended {status.value} in RQ without finishing the run (a worker died?)"
        return "requeue" if self._stranded(job, status, now) else None

    def _stranded(self, job: Job, status: JobStatus | None, now: datetime) -> bool:
        """A job no queue or registry holds any more (a worker took it off its queue and was killed
        before RQ recorded it as started), or one RQ recorded as started whose worker died before it
        marked the run running. Nothing in RQ would run it again in time."""
        queue = Queue(job.origin, connection=self.redis)
        grace = timedelta(seconds=LOST_JOB_GRACE)
        if status == JobStatus.QUEUED:
            since = job.enqueued_at
            held = self.redis.lpos(queue.key, job.id) is not None
        elif status == JobStatus.SCHEDULED:
            since = job.enqueued_at or job.created_at
            held = self.redis.zscore(queue.scheduled_job_registry.key, job.id) is not None
        elif status == JobStatus.STARTED:
            # The run is still pending: a live worker marks it running moments after RQ starts its
            # job, so a start older than the grace lost its worker in between (RQ would only give up
            # on the job once its timeout passes), whether or not a started registry still lists it.
            return job.started_at is not None and now - aware(job.started_at) > grace
        else:
            return False
        return not held and since is not None and now - aware(since) > grace

    def _submit(self, run_id: int, lane: str, flow: str, params: dict[str, Any], delay: float, *,
                urgent: bool = False) -> Job:
        options: dict[str, Any] = {
            "job_id": job_id_for(run_id, self.prefix),
            "job_timeout": defaults.JOB_TIMEOUT,
            "result_ttl": defaults.JOB_RESULT_TTL,
            "description": f"{flow} run {run_id}",
            "meta": {"prefix": self.prefix, "busy_delay": self.busy_delay, "params": params, "flow": flow},
        }
        if self.retries > 0:
            options["retry"] = Retry(max=self.retries, interval=list(self.retry_intervals) or [0])
        queue = (self.urgent_queues if urgent else self.queues)[lane]
        if delay > 0:
            return queue.enqueue_in(timedelta(seconds=delay), run_flow_job, args=(run_id,), **options)
        return queue.enqueue(run_flow_job, args=(run_id,), **options)


# -- inside the worker ---------------------------------------------------------

_db_guard = threading.Lock()
_db: Database | None = None
_db_pid = 0


def worker_database(url: str | None = None) -> Database:
    """This process's Database, built on first use from ``url`` or ``CHANNELHUB_DATABASE_URL``."""
    global _db, _db_pid
    with _db_guard:
        if _db is None:
            _db = Database(url or load_config().database_url)
        elif _db_pid != os.getpid():
            # A forked work horse must not share the parent's sockets: forget them without closing.
            _db.engine.dispose(close=False)
        _db_pid = os.getpid()
        return _db


def reset_worker_database() -> None:
    """Forget the cached Database (tests that change CHANNELHUB_DATABASE_URL)."""
    global _db
    with _db_guard:
        if _db is not None:
            _db.dispose()
        _db = None


def run_flow_job(run_id: int) -> dict[str, Any] | Retry:
    """The RQ job: one attempt of SyncRun ``run_id``."""
    job = get_current_job()
    meta = dict(job.meta) if job is not None else {}
    connection = job.connection if job is not None else _redis(load_config().redis_url)
    prefix = meta.get("prefix", defaults.QUEUE_PREFIX)
    set_enqueuer(FleetRuntime(worker_database(), connection=connection, prefix=prefix).enqueue)
    locks = RedisLocks(connection, prefix, timeout=FLOW_LOCK_TIMEOUT)
    deadline = time.monotonic() + defaults.FLEET_INLINE_DEFER_SECONDS
    while True:
        outcome = execute_run(
            worker_database(),
            run_id,
            locks=locks,
            retries_left=(job.retries_left or 0) if job is not None else 0,
            busy_delay=meta.get("busy_delay"),
            params=meta.get("params"),
            on_progress=_progress_sink(job),
            others_waiting=_queue_waiting(job),
        )
        if not _wait_inline(outcome, deadline):
            return _answer(run_id, outcome)
        time.sleep(outcome.delay)


def _wait_inline(outcome: Outcome, deadline: float) -> bool:
    """A sub-second deferral (a webhook run finding its flow busy, a short Retry-After) is waited out
    here: RQ would round it up to whole seconds and its scheduler polls once a second, turning 0.5 s
    into 1-2 s."""
    return (outcome.verdict is Verdict.DEFER and 0 < outcome.delay < 1
            and time.monotonic() + outcome.delay <= deadline)


def _answer(run_id: int, outcome: Outcome) -> dict[str, Any] | Retry:
    """Turn the verdict into what RQ understands."""
    if isinstance(outcome.error, TransientError):
        raise outcome.error  # RQ's Retry on the job decides: retry after the backoff, or fail it
    if outcome.verdict is Verdict.DEFER:
        # RQ schedules whole seconds; never zero, which would requeue at once and spin.
        return Retry(max=defaults.JOB_MAX_DEFERRALS, interval=[max(1, math.ceil(outcome.delay))])
    return {"run_id": run_id, "status": outcome.status.value if outcome.status else "skipped"}


def _queue_waiting(job: Job | None) -> WaitingProbe | None:
    """Whether jobs wait in this job's lane (its queue and the urgent twin): two LLENs, asked only
    once a run had its slice."""
    if job is None:
        return None
    normal = job.origin.removesuffix(URGENT_SUFFIX)
    queues = [Queue(name, connection=job.connection) for name in (normal + URGENT_SUFFIX, normal)]
    return lambda: any(queue.count > 0 for queue in queues)


def _progress_sink(job: Job | None) -> ProgressSink | None:
    if job is None:
        return None

    def publish(done: int, total: int | None) -> None:
        job.meta["progress"] = {"done": done, "total": total}
        job.save_meta()

    return publish


def tick(prefix: str = defaults.QUEUE_PREFIX) -> list[int]:
    """The scheduler's single cron entry: promote accounts due for Live, enqueue every due flow."""
    job = get_current_job()
    connection = job.connection if job is not None else _redis(load_config().redis_url)
    db = worker_database()
    promote_accounts(db)
    run_tick_hooks(db)
    return FleetRuntime(db, connection=connection, prefix=prefix).enqueue_due()


# -- the processes -----------------------------------------------------------


def run_worker(
    config: Config,
    lanes: Sequence[str] | None = None,
    burst: bool = False,
    *,
    prefix: str = defaults.QUEUE_PREFIX,
    name: str | None = None,
    logging_level: str = "INFO",
    fork: bool = defaults.WORKER_FORKS_PER_JOB,
) -> bool:
    """``channelhub worker``: work the lanes' queues (all, orders first) until stopped.

    ``fork`` runs each job in a work horse of its own (RQ's ``Worker``); otherwise jobs run in this
    process (RQ's ``SimpleWorker``), keeping its connections, buckets and caches between jobs.

    Runs with RQ's scheduler, which moves retries and deferred jobs back onto their queues when due;
    any number of workers may run it, RQ elects one per queue.

    RQ's work loop quits on any error, a lost Redis connection included (Redis restarting); a worker
    that stops without being asked to waits until Redis answers again and starts over, so a fleet
    outlives a Redis restart without a supervisor's help. SIGTERM / SIGINT stop it as before.
    """
    chosen = _lanes(lanes)
    connection = _redis(config.redis_url)
    _check_database(worker_database(config.database_url))
    load_before_fork()
    queues = [Queue(name, connection=connection) for name in worker_queue_names(chosen, prefix)]
    restarts = 0
    while True:
        worker = (Worker if fork else SimpleWorker)(queues, connection=connection, name=_restart_name(name, restarts),
                                                    maintenance_interval=WORKER_MAINTENANCE_SECONDS)
        log.info("worker %s on %s", worker.name, ", ".join(queue.name for queue in queues))
        try:
            worked = worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)
        except (RedisConnectionError, RedisTimeoutError):  # raised by RQ's tear-down, Redis being gone
            worked = False
        asked = getattr(worker, "_shutdown_requested_date", None) is not None or getattr(worker, "_stop_requested", False)
        if burst or asked:
            return worked
        restarts += 1
        log.error("worker %s stopped by itself (Redis lost?); it starts again once Redis answers", worker.name)
        _wait_for_redis(connection)


def load_before_fork() -> None:
    """Import and build, once in the worker, what every job needs, so each job (or forked work horse)
    finds it done: the flow registry, the plugins with their channel classes (a plugin imports its
    channel module in ``channelhub_register_channels``), the TLS context, httpx's transport and the
    ORM's configured mappers (SQLAlchemy configures them on a process's first query). Done per job
    instead, they were about a fifth of the workers' CPU in the order flow. Then all of it is kept out
    of the garbage collector's full collections (``hub.memory.freeze_startup_objects``)."""
    load_builtin_flows()
    get_connector().pm.load_channels()
    load_transport()
    configure_mappers()
    freeze_startup_objects()


def run_scheduler(
    config: Config,
    *,
    prefix: str = defaults.QUEUE_PREFIX,
    interval: int | None = None,
    name: str = "",
) -> None:
    """``channelhub scheduler``: RQ's cron scheduler with the one fan-out entry, until stopped.

    Run one; a second is harmless (ticks take a Redis lock and skip flows already pending). When the
    connection to Redis is lost (Redis restarting), it waits until Redis answers and starts over:
    a Redis that lost its data lost the cron entry too, and it is registered again.
    """
    every = int(interval or defaults.SCHEDULER_TICK_SECONDS)
    connection = _redis(config.redis_url)
    while True:
        scheduler = CronScheduler(connection=connection, name=name)
        scheduler.register(
            tick,
            queue_name(defaults.LANES[0], prefix),  # the orders lane: every deployment works it, first
            kwargs={"prefix": prefix},
            interval=every,
            job_timeout=300,
            result_ttl=600,
            ttl=max(60, 4 * every),  # a tick nobody ran in time is dropped; the next one does its work
            name=f"{prefix}-tick",
        )
        try:
            scheduler.start()  # returns when stopped (SIGTERM, SIGINT)
            return
        except (RedisConnectionError, RedisTimeoutError) as error:
            log.error("scheduler lost Redis (%s); it starts again once Redis answers", error)
            _wait_for_redis(connection)


def _restart_name(name: str | None, restarts: int) -> str | None:
    # A worker's name must be unique among live workers; a restarted one whose death Redis could not
    # record takes a new one.
    return name if not name or not restarts else f"{name}.{restarts}"


def _wait_for_redis(connection: Redis) -> None:
    """Block until Redis answers (backing off up to 30 s). Default signal handlers meanwhile: the
    stopped worker's would talk to Redis, and SIGTERM must simply end a process that is only waiting."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    delay = 1.0
    while True:
        try:
            connection.ping()
            return
        except (RedisConnectionError, RedisTimeoutError):
            time.sleep(delay)
            delay = min(30.0, delay * 2)


def _check_database(db: Database) -> None:
    # Fail at start-up, not on the first job, when the database is unreachable; then drop the
    # connection so work horses forked later inherit none.
    with db.engine.connect():
        pass
    db.engine.dispose()


def _lanes(lanes: Sequence[str] | None) -> list[str]:
    if not lanes:
        return list(defaults.LANES)
    unknown = sorted(set(lanes) - set(defaults.LANES))
    if unknown:
        raise ConfigurationError(f"unknown lane(s) {', '.join(unknown)}; lanes are {', '.join(defaults.LANES)}")
    return [lane for lane in defaults.LANES if lane in lanes]  # always orders first
