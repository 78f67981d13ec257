"""Per-account token buckets: the hub's politeness limit on outbound API calls.

Every channel account gets one :class:`TokenBucket`, shared by every HTTP client built for that
account in this process (see :class:`RateLimiterRegistry`). A caller takes a token before each
request; when the remote answers 429 with ``Retry-After``, the client calls
:meth:`TokenBucket.pause_until` so every other caller of the same account stops too, instead of each
one finding out by hitting the wall again.

Scope, deliberately simple: the bucket lives in one process. In a fleet each worker process (and,
with ``channelhub worker --fork``, each job's work horse) holds its own copy, so N workers together may send
up to N times the configured rate. The bucket is a politeness limit that smooths our own bursts; the
real guard is the remote's 429 + ``Retry-After``, which the HTTP client always honours.

Clock and sleep are injectable so tests run on virtual time and never sleep for real.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# Floating-point refill can leave a bucket a hair short of a whole token after sleeping exactly the
# computed deficit; without this slack acquire() would spin through microscopic extra sleeps.
_EPSILON = 1e-9

# Every live bucket and registry, so a forked child can replace locks a parent thread held at fork.
_HOLDS_LOCKS: weakref.WeakSet[TokenBucket | RateLimiterRegistry | SleepDrivenClock] = weakref.WeakSet()


class TokenBucket:
    """A thread-safe token bucket: ``rate`` tokens per second, holding at most ``capacity``.

    The bucket starts full, so a fresh account may burst ``capacity`` calls at once.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive finite number, got {rate!r}")
        if not (capacity > 0 and math.isfinite(capacity)):
            raise ValueError(f"capacity must be a positive finite number, got {capacity!r}")
        self._rate = float(rate)
        self._capacity = float(capacity)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self._capacity
        self._updated = clock()
        self._paused_until = -math.inf
        _HOLDS_LOCKS.add(self)

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        return self._capacity

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def available(self) -> float:
        """Tokens that could be taken right now (0 while paused)."""
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return 0.0
            self._refill(now)
            return self._tokens

    @property
    def paused_until(self) -> float | None:
        """The clock reading the current pause ends at, or None if not paused."""
        with self._lock:
            return self._paused_until if self._clock() < self._paused_until else None

    def acquire(self, tokens: float = 1.0) -> float:
        """Take ``tokens``, sleeping until they are available; return the seconds slept."""
        self._check_request(tokens)
        waited = 0.0
        while True:
            with self._lock:
                delay = self._delay_for(tokens, self._clock())
                if delay <= 0:
                    self._tokens -= tokens
                    return waited
            # Sleep outside the lock so other callers can see the pause and compute their own wait.
            self._sleep(delay)
            waited += delay

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if available right now; never sleeps."""
        self._check_request(tokens)
        with self._lock:
            if self._delay_for(tokens, self._clock()) > 0:
                return False
            self._tokens -= tokens
            return True

    def penalise(self, seconds: float) -> None:
        """Stop every caller for ``seconds`` from now (a 429's ``Retry-After``)."""
        self.pause_until(self._clock() + max(0.0, seconds))

    def pause_until(self, deadline: float) -> None:
        """Stop every caller until ``deadline`` (a reading of this bucket's clock).

        Pauses only ever extend. The bucket holds exactly one token and does not refill while
        paused: the remote just said we were too fast, so when the pause ends one caller (the one
        that was refused) may retry at once and the rest resume at ``rate``, not in a burst that
        earns another 429.
        """
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(1.0, self._capacity)
            self._paused_until = max(self._paused_until, deadline)
            self._updated = max(self._updated, self._paused_until)

    def _check_request(self, tokens: float) -> None:
        if not tokens > 0:
            raise ValueError(f"tokens must be positive, got {tokens!r}")
        if tokens > self._capacity:
            # It could never be satisfied; fail loudly instead of blocking forever.
            raise ValueError(f"cannot take {tokens} tokens from a bucket of capacity {self._capacity}")

    def _delay_for(self, tokens: float, now: float) -> float:
        """Seconds until ``tokens`` are available; 0 if they are. Caller holds the lock."""
        if now < self._paused_until:
            return self._paused_until - now
        self._refill(now)
        deficit = tokens - self._tokens
        # A clock reading epoch-sized seconds cannot move by less than one ulp, so a smaller deficit
        # would never refill however often we slept: treat it as no deficit at all.
        slack = max(_EPSILON, 4 * math.ulp(now) * self._rate)
        return 0.0 if deficit <= slack else deficit / self._rate

    def _refill(self, now: float) -> None:
        # `_updated` may lie in the future during a pause; no tokens accrue until it is reached.
        if now > self._updated:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now

    def _reset_lock_after_fork(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self._rate}, capacity={self._capacity})"


class RateLimiterRegistry:
    """Hands out one :class:`TokenBucket` per account key, the same one every time.

    The first caller's ``rate`` and ``capacity`` win: an account's limit is a property of its
    channel, so later callers asking with other numbers are served the existing bucket rather than
    silently splitting the account's budget in two.
    """

    def __init__(self, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[Hashable, TokenBucket] = {}
        _HOLDS_LOCKS.add(self)

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def sleep(self) -> Sleep:
        return self._sleep

    def bucket(self, key: Hashable, *, rate: float, capacity: float) -> TokenBucket:
        """The bucket for ``key``, created with ``rate``/``capacity`` if it does not exist yet."""
        with self._lock:
            found = self._buckets.get(key)
            if found is None:
                found = TokenBucket(rate, capacity, clock=self._clock, sleep=self._sleep)
                self._buckets[key] = found
            return found

    def get(self, key: Hashable) -> TokenBucket | None:
        with self._lock:
            return self._buckets.get(key)

    def discard(self, key: Hashable) -> None:
        """Forget ``key``'s bucket (e.g. after the account's limits changed)."""
        with self._lock:
            self._buckets.pop(key, None)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._buckets

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def _reset_lock_after_fork(self) -> None:
        self._lock = threading.Lock()


_DEFAULT_REGISTRY = RateLimiterRegistry()


def default_registry() -> RateLimiterRegistry:
    """The process-wide registry the HTTP client factory uses unless given another."""
    return _DEFAULT_REGISTRY


class SleepDrivenClock:
    """Monotonic time for code whose sleep is faked: the real clock plus everything slept through it.

    A bucket on the real clock with a fake sleep would either sleep for real or, on a frozen fake
    clock, wait forever. On this clock every (fake) sleep moves time by exactly what was asked.
    """

    def __init__(self, sleep: Sleep) -> None:
        self._inner_sleep = sleep
        self._slept = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.monotonic() + self._slept

    def sleep(self, seconds: float) -> None:
        self._inner_sleep(seconds)
        with self._lock:
            self._slept += seconds

    def _reset_lock_after_fork(self) -> None:
        self._lock = threading.Lock()


def registry_for_sleep(sleep: Sleep) -> RateLimiterRegistry:
    """The registry for callers that inject ``sleep`` but no registry (tests, a demo's fake time).

    Its buckets run on a :class:`SleepDrivenClock` over ``sleep``; the same ``sleep`` always gets
    the same registry, so clients built with one fake still share their per-account buckets.
    """
    if sleep is time.sleep:
        return _DEFAULT_REGISTRY
    try:
        return _registry_for_fake_sleep(sleep)
    except TypeError:  # an unhashable callable: no sharing, but still no real sleeping
        return _new_fake_sleep_registry(sleep)


@functools.lru_cache(maxsize=128)
def _registry_for_fake_sleep(sleep: Sleep) -> RateLimiterRegistry:
    return _new_fake_sleep_registry(sleep)


def _new_fake_sleep_registry(sleep: Sleep) -> RateLimiterRegistry:
    clock = SleepDrivenClock(sleep)
    _HOLDS_LOCKS.add(clock)
    return RateLimiterRegistry(clock=clock, sleep=clock.sleep)


def _after_fork_in_child() -> None:
    # A thread of the parent may have held a lock at the moment of fork; in the child that thread
    # no longer exists and would never release it.
    for holder in list(_HOLDS_LOCKS):
        holder._reset_lock_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
