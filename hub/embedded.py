"""The embedded executor: an in-process worker pool and ticker, nothing to install.

Jobs wait in a heap ordered by when they may run, so delays, retry backoff and deferrals are one
mechanism. ``workers`` threads take due jobs off the heap and run ``hub.jobs.execute_run``; the
ticker thread calls ``enqueue_due`` (and promotes accounts whose Testing period is over) every
``TICK_SECONDS``. Locks are an in-process table: this process is the only executor of its database.

The queue lives in memory: runs still queued when the process stops are marked failed ("abandoned")
by the stale-run sweep after ``RUN_STALE_AFTER``, and the schedule enqueues them afresh.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hub import defaults
from hub.db import Database
from hub.jobs import Outcome, Verdict, clear_enqueuer, execute_run, lane_for, open_run, set_enqueuer
from hub.locks import LocalLocks
from hub.models import ChannelAccount
from hub.scheduling import enqueue_due, next_due, promote_accounts, run_tick_hooks

log = logging.getLogger("channelhub.embedded")


@dataclass(order=True)
class _Task:
    due: float  # time.monotonic() at which it may run
    seq: int  # FIFO among equally due tasks
    run_id: int = field(compare=False)
    params: dict[str, Any] = field(compare=False, default_factory=dict)
    retries_used: int = field(compare=False, default=0)


class EmbeddedRuntime:
    """Runs flows on threads of this process; ``start()`` it, ``stop()`` (or ``close()``) it."""

    def __init__(
        self,
        db: Database,
        workers: int = defaults.EMBEDDED_WORKERS,
        *,
        retries: int | None = None,
        retry_intervals: Sequence[float] | None = None,
        busy_delay: float | None = None,
        tick_seconds: float | None = None,
    ) -> None:
        self.db = db
        self.workers = max(1, workers)
        self.retries = defaults.JOB_RETRIES if retries is None else retries
        self.retry_intervals = list(defaults.JOB_RETRY_INTERVALS if retry_intervals is None else retry_intervals)
        self.busy_delay = defaults.LOCK_BUSY_DELAY if busy_delay is None else busy_delay
        self.tick_seconds = defaults.TICK_SECONDS if tick_seconds is None else tick_seconds
        self.locks = LocalLocks()
        self._heap: list[_Task] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._active = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._tick_guard = threading.Lock()

    # -- the Runtime API -----------------------------------------------------

    def enqueue(
        self,
        account_id: int,
        flow: str,
        *,
        trigger: str = "manual",
        params: dict[str, Any] | None = None,
        delay: float = 0,
    ) -> int:
        lane_for(flow)  # refuse an unknown flow before writing a run for it
        run_id, new = open_run(self.db, account_id, flow, trigger=trigger, params=params)
        if new:  # else a webhook's order ids joined a run already on the heap
            self._push(_Task(0.0, 0, run_id, dict(params or {})), delay)
        return run_id

    def enqueue_due(self, now: datetime | None = None) -> list[int]:
        # One tick at a time: two overlapping ticks could both see a flow as not yet pending.
        with self._tick_guard:
            return enqueue_due(self.db, self.enqueue, now)

    def next_due(self, account: ChannelAccount, flow: str) -> datetime:
        with self.db.session() as session:
            return next_due(session, account, flow)

    def start(self, *, ticker: bool = True) -> None:
        """Start the worker threads and (unless ``ticker=False``) the schedule ticker."""
        if self._threads:
            return
        self._stopping = False
        set_enqueuer(self.enqueue)  # flows in this process queue follow-up work here
        for number in range(self.workers):
            self._spawn(self._work, f"channelhub-worker-{number}")
        if ticker:
            self._spawn(self._tick_loop, "channelhub-ticker")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs, let running ones finish (up to ``timeout``), and join the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        clear_enqueuer(self.enqueue)

    close = stop

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no job is queued, waiting or running; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and self._active == 0, timeout)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._active

    # -- the pool ------------------------------------------------------------

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _push(self, task: _Task, delay: float) -> None:
        task.due = time.monotonic() + max(0.0, delay)
        task.seq = next(self._seq)
        with self._cond:
            heapq.heappush(self._heap, task)
            self._cond.notify_all()

    def _take(self) -> _Task | None:
        with self._cond:
            while not self._stopping:
                if self._heap:
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        self._active += 1
                        return heapq.heappop(self._heap)
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        while (task := self._take()) is not None:
            try:
                self._settle(task, self._execute(task))
            except Exception:
                log.exception("run %s crashed the embedded worker's bookkeeping", task.run_id)
            finally:
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()

    def _execute(self, task: _Task) -> Outcome:
        return execute_run(
            self.db,
            task.run_id,
            locks=self.locks,
            retries_left=self.retries - task.retries_used,
            busy_delay=self.busy_delay,
            params=task.params,
            others_waiting=self._others_waiting,
        )

    def _others_waiting(self) -> bool:
        """A task is due and every worker is busy: a long run should give its thread a turn."""
        with self._cond:
            return bool(self._heap) and self._heap[0].due <= time.monotonic() and self._active >= self.workers

    def _settle(self, task: _Task, outcome: Outcome) -> None:
        """Put the task back on the heap when the verdict asks for another go."""
        if outcome.verdict is Verdict.RETRY:
            delay = self._retry_interval(task.retries_used)
            task.retries_used += 1
            self._push(task, delay)
        elif outcome.verdict is Verdict.DEFER:
            self._push(task, outcome.delay)

    def _retry_interval(self, retries_used: int) -> float:
        # The same backoff table RQ's Retry walks: the n-th retry waits intervals[n] (last one repeats).
        if not self.retry_intervals:
            return 0.0
        return float(self.retry_intervals[min(retries_used, len(self.retry_intervals) - 1)])

    # -- the ticker ----------------------------------------------------------

    def _tick_loop(self) -> None:
        while True:
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, self.tick_seconds):
                    return
            self.tick()

    def tick(self) -> list[int]:
        """One scheduler pass: promote accounts due for Live, then enqueue due flows."""
        try:
            promote_accounts(self.db)
            run_tick_hooks(self.db)
            return self.enqueue_due()
        except Exception:  # the ticker must outlive a database hiccup
            log.exception("the embedded scheduler tick failed")
            return []
