"""``channelhub worker --processes N``: N RQ workers (``hub.fleet.run_worker``) under one supervisor.

One command per machine instead of N service units: the supervisor starts N worker processes on
the same lanes, forwards SIGTERM / SIGINT to them, and restarts one that dies unexpectedly.

- **Graceful drain.** The first SIGTERM or SIGINT is forwarded once to every worker: RQ's *warm
  shutdown* — a worker finishes the job in flight, takes no new one and exits. The supervisor waits
  for all of them and exits 0. Nothing is lost: a job not yet started stays on its queue, and a job
  in flight completes. A second signal is forwarded too: RQ's *cold shutdown* (the job in flight is
  killed; RQ moves it to the failed registry and the run is abandoned, then re-queued by the
  schedule after ``RUN_STALE_AFTER`` — the same as a machine losing power).
- **Own process groups.** Each worker runs in its own process group, so a Ctrl-C in a terminal (a
  SIGINT to the whole foreground group) reaches only the supervisor, which forwards it once. Were
  the workers in the terminal's group they would get it twice (direct + forwarded) and RQ would
  treat the second as a cold shutdown.
- **Restarts.** A worker that exits while the pool is not stopping (killed by the OOM killer, a
  crash, a stray signal) is restarted after ``restart_delay``, doubled while it keeps dying within
  ``STABLE_AFTER`` seconds of its start (capped at ``MAX_RESTART_DELAY``). RQ's own heartbeat
  and abandoned-job handling recover the job a killed worker held.
- **Jobs in the worker.** By default a worker runs its jobs in its own process, one after another,
  like a prefork pool (Celery's model): connections, token buckets and compiled statements outlive
  a job. ``fork=True`` (``--fork``) gives each job a work horse of its own (RQ's ``Worker``), so a
  job that crashes or leaks takes only itself down, at about a fifth more CPU per job.
- **Burst.** With ``burst=True`` each worker exits when the queues are empty; a worker that exits 0
  is finished, not restarted, and the pool returns when all are.

Workers are forked from the supervisor, which opens no database or Redis connection itself, so
nothing is shared across the fork.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from hub import defaults
from hub.config import Config
from hub.errors import ConfigurationError

log = logging.getLogger("channelhub.workerpool")

STABLE_AFTER = 30.0  # a worker that ran this long before dying is restarted after the base delay again
MAX_RESTART_DELAY = 60.0
DRAIN_POLL = 0.2


def _worker_main(config: Config, lanes: Sequence[str] | None, burst: bool, prefix: str, logging_level: str,
                 fork: bool) -> None:
    """A pool member: its own process group, default signal handlers (RQ installs its own), one worker."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from hub.fleet import run_worker

    run_worker(config, lanes, burst, prefix=prefix, logging_level=logging_level, fork=fork)


@dataclass
class _Slot:
    index: int
    process: Any = None
    started: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None
    done: bool = False  # burst mode: finished its work
    restarts: int = 0


@dataclass
class WorkerPool:
    """The supervisor; :func:`run_worker_pool` is the entry point."""

    config: Config
    processes: int
    lanes: Sequence[str] | None = None
    burst: bool = False
    prefix: str = defaults.QUEUE_PREFIX
    logging_level: str = "INFO"
    restart_delay: float = 1.0
    fork: bool = defaults.WORKER_FORKS_PER_JOB  # a work horse per job (RQ's Worker), else jobs run in the worker
    slots: list[_Slot] = field(default_factory=list)
    stopping: int = 0  # signals received (1: warm shutdown, 2+: cold)

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ConfigurationError(f"--processes must be at least 1, not {self.processes}")
        from hub.fleet import _lanes

        _lanes(self.lanes)  # refuse unknown lanes before starting anything
        self._context = multiprocessing.get_context("fork")
        self.slots = [_Slot(index) for index in range(self.processes)]

    # -- signals --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping += 1
        kind = "warm" if self.stopping == 1 else "cold"
        log.warning("worker pool: %s received, %s shutdown of %d worker(s)", signal.Signals(signum).name, kind,
                    len(self.alive()))
        for process in self.alive():
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass

    # -- the loop -------------------------------------------------------------------------------

    def alive(self) -> list[Any]:
        return [slot.process for slot in self.slots if slot.process is not None and slot.process.is_alive()]

    def pids(self) -> list[int]:
        return [process.pid for process in self.alive()]

    def _start(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=_worker_main, name=f"channelhub-worker-{slot.index}",
            args=(self.config, list(self.lanes) if self.lanes else None, self.burst, self.prefix, self.logging_level,
                  self.fork))
        process.start()
        slot.process, slot.started, slot.restart_at = process, time.monotonic(), None
        log.info("worker pool: worker %d started (pid %d)", slot.index, process.pid)

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        failures = 0
        try:
            for slot in self.slots:
                self._start(slot)
            while True:
                now = time.monotonic()
                for slot in self.slots:
                    process = slot.process
                    if process is None or process.is_alive() or slot.done or slot.restart_at is not None:
                        continue
                    process.join()
                    code = process.exitcode
                    if self.stopping:
                        slot.done = True
                        if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                            failures += 1
                            log.error("worker pool: worker %d (pid %d) ended with %s while draining",
                                      slot.index, process.pid, code)
                        continue
                    if self.burst and code == 0:
                        slot.done = True
                        continue
                    ran = now - slot.started
                    slot.delay = self.restart_delay if ran >= STABLE_AFTER or not slot.delay \
                        else min(MAX_RESTART_DELAY, slot.delay * 2)
                    slot.restart_at = now + slot.delay
                    log.error("worker pool: worker %d (pid %d) died unexpectedly (exit %s) after %.1fs; "
                              "restarting it in %.1fs", slot.index, process.pid, code, ran, slot.delay)
                for slot in self.slots:
                    if slot.restart_at is not None and not self.stopping and now >= slot.restart_at:
                        slot.restarts += 1
                        self._start(slot)
                    elif slot.restart_at is not None and self.stopping:
                        slot.restart_at, slot.done = None, True
                if all(slot.done for slot in self.slots):
                    return 1 if failures else 0
                sentinels = [slot.process.sentinel for slot in self.slots
                             if slot.process is not None and slot.process.is_alive()]
                pending = [slot.restart_at - now for slot in self.slots if slot.restart_at is not None]
                timeout = max(0.0, min([DRAIN_POLL * 5, *pending]))
                if sentinels:
                    wait(sentinels, timeout=timeout)
                else:
                    time.sleep(timeout or DRAIN_POLL)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_worker_pool(
    config: Config,
    processes: int,
    lanes: Sequence[str] | None = None,
    burst: bool = False,
    *,
    prefix: str = defaults.QUEUE_PREFIX,
    logging_level: str = "INFO",
    restart_delay: float = 1.0,
    fork: bool = defaults.WORKER_FORKS_PER_JOB,
) -> int:
    """Run ``processes`` RQ workers on ``lanes`` until SIGTERM/SIGINT (or, with ``burst``, until the
    queues are empty); returns the exit code: 0 after a graceful drain, 1 if a worker failed while
    draining. With ``processes == 1`` this is still a supervisor (restarts, one forwarded signal)."""
    if not config.redis_url:
        raise ConfigurationError("the fleet needs CHANNELHUB_REDIS_URL (redis://host:6379/0)")
    pool = WorkerPool(config, processes, lanes, burst, prefix=prefix, logging_level=logging_level,
                      restart_delay=restart_delay, fork=fork)
    return pool.run()
