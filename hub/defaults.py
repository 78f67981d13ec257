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
