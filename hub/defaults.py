"""Every tunable of the hub in one place, each with the reason for its value.

Environment variables (see ``hub.config``) override the ones marked so.
"""

from __future__ import annotations

# -- storage ---------------------------------------------------------------
INSTANCE_DIR = "instance"  # relative to the working directory; CHANNELHUB_INSTANCE overrides
SQLITE_FILENAME = "channelhub.db"
SECRET_KEY_FILENAME = "secret.key"

# -- account lifecycle -----------------------------------------------------
# Uphance's Iconic app and IDA Connect both run a month of "testing" before go-live.
TESTING_DAYS = 30

# -- schedules (seconds) per flow -----------------------------------------
FLOW_INTERVALS = {
    "catalog": 60 * 60,
    "listings": 60 * 60,
    "stock": 5 * 60,
    "orders": 5 * 60,
    "fulfilment": 5 * 60,
    "reconcile": 24 * 60 * 60,
}

# -- runtime ---------------------------------------------------------------
# Queues per lane, so a slow catalogue import never delays an order.
LANES = ("orders", "stock", "catalog", "reconcile")
FLOW_LANES = {
    "orders": "orders",
    "fulfilment": "orders",
    "stock": "stock",
    "listings": "catalog",
    "catalog": "catalog",
    "reset": "catalog",
    "reconcile": "reconcile",
}
JOB_RETRIES = 5
JOB_RETRY_INTERVALS = [10, 30, 60, 300, 900]  # seconds; backoff between retries of a TransientError
JOB_TIMEOUT = 30 * 60
LOCK_TIMEOUT = 15 * 60  # a crashed worker's lock frees itself after this
LOCK_WAIT = 0  # a job that finds its flow busy is deferred, not queued behind it
EMBEDDED_WORKERS = 2
TICK_SECONDS = 5.0

# -- reconciler ------------------------------------------------------------
RECONCILE_MAX_REMOVE_SHARE = 0.10

# -- runtime, continued (hub.jobs, hub.embedded, hub.fleet) ----------------
# RQ queues are "<prefix>-<lane>"; lock and tick keys in Redis start with "<prefix>:". Two hubs can
# share one Redis by using different prefixes.
QUEUE_PREFIX = "channelhub"
# A job whose (account, flow) is running elsewhere waits this long and tries again: short, because
# the running flow may end any moment, and the busy check costs one Redis round trip.
LOCK_BUSY_DELAY = 5.0
# A webhook-triggered run that finds its flow busy tries again this soon: it is someone waiting for
# one order (placement -> destination p95 <= 2 s), and coalescing keeps it to one such run per
# account and flow, so the short poll costs little.
WEBHOOK_BUSY_DELAY = 0.5
# A webhook-triggered orders run still waiting (queued or deferred, never started) takes the order ids
# of later webhooks instead of a run each; past this many ids a new run starts (one pull stays small).
WEBHOOK_COALESCE_MAX_IDS = 100
# RQ schedules deferrals in whole seconds (and its scheduler polls once a second), so a deferral
# shorter than a second is waited out inside the work horse instead, for at most this long in all,
# before it falls back to RQ's scheduler.
FLEET_INLINE_DEFER_SECONDS = 2.0
# Deferrals (rate limits, busy locks) RQ grants one job before failing it; they spend no retry.
# 1000 x 5 s covers a lock held for the whole LOCK_TIMEOUT several times over.
JOB_MAX_DEFERRALS = 1000
# A run still queued or running this long after it was queued belongs to a worker that died: it is
# marked failed and stops blocking its schedule. Twice JOB_TIMEOUT, since no live job runs longer.
RUN_STALE_AFTER = 2 * JOB_TIMEOUT
# How often `channelhub scheduler` enqueues the fan-out tick. Each tick is an RQ job (a fork on a
# worker), so this is coarser than the embedded TICK_SECONDS; the shortest flow interval is minutes.
SCHEDULER_TICK_SECONDS = 15
# A flow may report progress per item; the run row and RQ job meta are written at most this often.
PROGRESS_FLUSH_SECONDS = 1.0
# Item outcomes are written in batches of this many rows, not one transaction per SKU.
ITEM_FLUSH_BATCH = 200
# A flow handing over many outcomes at once (RunRecorder.items: a catalogue import's, after its commit)
# writes them this many rows per flush: each flush is a transaction and a run-row update.
ITEM_BULK_BATCH = 5000
# A run that has worked this long stops at its next safe point (after a batch) when other runs wait
# for a worker, and a continuation goes to the back of the queue: a 250-shipment write-back at 50 ms
# a request no longer holds a worker for 25 s while other accounts' runs, or a webhook, wait.
RUN_SLICE_SECONDS = 5.0
# How long RQ keeps a finished job's result; the SyncRun row is the lasting record.
JOB_RESULT_TTL = 24 * 60 * 60

# Keys per `IN (...)` when a flow loads rows by a list of ids: well inside SQLite's bound-parameter
# limit (999 on old builds) and small enough for PostgreSQL to plan quickly.
SQL_IN_CHUNK = 500

# A sandbox served on loopback (demo, benchmarks, chaos runs) closes a kept-alive connection that
# has been idle this long, as a real API's front end would; the hub's pool then opens a new one.
LOOPBACK_IDLE_SECONDS = 120.0

# Where a worker runs its jobs. False: in the worker process itself, one after another (a prefork
# pool, as Celery runs tasks): the database and HTTP connections, the token buckets and the ORM's
# compiled statements outlive the job, and `channelhub worker --processes N` restarts a worker that
# dies. True: RQ's forking worker, a work horse per job, so a crash or a leak stays in that job;
# measured in the order-flow bench at 4 workers, a fifth more hub CPU and a tenth less throughput.
WORKER_FORKS_PER_JOB = False
