"""Per-(account, flow) locks: two workers never run the same flow for the same account at once.

One interface, two implementations:

- ``LocalLocks``: a table of held keys inside this process, for the embedded runtime (its workers are
  threads of one process, so a set guarded by a mutex is the whole truth).
- ``RedisLocks``: a redis-py ``Lock`` per key with a random token and a timeout, for the fleet. A
  heartbeat thread extends it while the flow runs, so a long flow keeps it; a worker that dies
  without releasing it frees it after ``LOCK_TIMEOUT``. Release runs redis-py's compare-and-delete
  script, so a worker only ever deletes a lock that still carries its own token.

Acquiring never blocks: a job that finds its flow busy is deferred by the runtime, never queued
behind the running one inside a worker (that would tie up a worker doing nothing).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from redis import Redis
from redis.exceptions import LockError, LockNotOwnedError

from hub import defaults

log = logging.getLogger("channelhub.locks")


def lock_key(account_id: int | None, flow: str) -> str:
    """The name both implementations lock on; organisation-wide runs (no account) share one key."""
    return f"flow:{account_id if account_id is not None else '-'}:{flow}"


class FlowLock(Protocol):
    """A held-or-not lock on one (account, flow)."""

    key: str

    def acquire(self) -> bool:
        """Take the lock if it is free; False at once if somebody holds it."""

    def extend(self) -> bool:
        """Push the expiry out again; False if the lock was lost (expired and taken)."""

    def release(self) -> None:
        """Give the lock back if (and only if) this holder still owns it."""


class LockProvider(Protocol):
    def lock(self, account_id: int | None, flow: str) -> FlowLock: ...


# -- embedded ----------------------------------------------------------------


class LocalLocks:
    """The in-process lock table of the embedded runtime."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._guard = threading.Lock()

    def lock(self, account_id: int | None, flow: str) -> LocalFlowLock:
        return LocalFlowLock(self, lock_key(account_id, flow))

    def held(self) -> set[str]:
        with self._guard:
            return set(self._held)

    def _take(self, key: str) -> bool:
        with self._guard:
            if key in self._held:
                return False
            self._held.add(key)
            return True

    def _give(self, key: str) -> None:
        with self._guard:
            self._held.discard(key)


class LocalFlowLock:
    def __init__(self, table: LocalLocks, key: str) -> None:
        self._table = table
        self.key = key
        self._owned = False

    def acquire(self) -> bool:
        self._owned = self._table._take(self.key)
        return self._owned

    def extend(self) -> bool:
        # Nothing expires in-process: a thread that dies releases in its ``finally``.
        return self._owned

    def release(self) -> None:
        if self._owned:
            self._table._give(self.key)
            self._owned = False


# -- fleet -------------------------------------------------------------------


class RedisLocks:
    """Locks in Redis under ``<prefix>:flow:<account>:<flow>``, shared by every worker of the fleet."""

    def __init__(self, connection: Redis, prefix: str = defaults.QUEUE_PREFIX, *, timeout: float | None = None) -> None:
        self.connection = connection
        self.prefix = prefix
        self.timeout = float(timeout if timeout is not None else defaults.LOCK_TIMEOUT)

    def lock(self, account_id: int | None, flow: str) -> RedisFlowLock:
        return RedisFlowLock(self.connection, f"{self.prefix}:{lock_key(account_id, flow)}", self.timeout)


class RedisFlowLock:
    def __init__(self, connection: Redis, key: str, timeout: float) -> None:
        self.key = key
        self.timeout = timeout
        # thread_local=False: the heartbeat thread must see the token the job thread acquired with.
        self._lock = connection.lock(key, timeout=timeout, blocking=False, thread_local=False)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.lost = False

    def acquire(self) -> bool:
        if not self._lock.acquire(blocking=False):
            return False
        self._heartbeat = threading.Thread(target=self._beat, name=f"lock-heartbeat {self.key}", daemon=True)
        self._heartbeat.start()
        return True

    def extend(self) -> bool:
        try:
            self._lock.reacquire()  # resets the TTL to the full timeout, only while the token is ours
            return True
        except LockError:
            self.lost = True
            log.error("lock %s was lost while its flow ran (expired after %ss)", self.key, self.timeout)
            return False

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
        try:
            self._lock.release()
        except LockNotOwnedError:
            log.warning("lock %s had expired before its flow finished; another worker may own it now", self.key)
        except LockError:
            pass  # never acquired: nothing to give back

    def _beat(self) -> None:
        # A third of the timeout leaves two chances to extend before the lock could lapse.
        while not self._stop.wait(self.timeout / 3):
            if not self.extend():
                return
