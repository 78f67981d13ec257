"""Token bucket and registry: refill math, pauses and thread safety, all on virtual time."""

from __future__ import annotations

import threading

import pytest

from hub.ratelimit import RateLimiterRegistry, TokenBucket, default_registry


class FakeTime:
    """A monotonic clock that only moves when someone sleeps (or a test advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def bucket_of(fake: FakeTime, rate: float = 2.0, capacity: float = 5.0) -> TokenBucket:
    return TokenBucket(rate, capacity, clock=fake.clock, sleep=fake.sleep)


def test_starts_full_and_allows_a_burst_of_capacity(fake: FakeTime) -> None:
    bucket = bucket_of(fake)
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    assert fake.sleeps == []


def test_refills_at_rate_and_caps_at_capacity(fake: FakeTime) -> None:
    bucket = bucket_of(fake, rate=2.0, capacity=5.0)
    for _ in range(5):
        bucket.try_acquire()
    fake.advance(0.25)
    assert bucket.available == pytest.approx(0.5)
    assert not bucket.try_acquire()
    fake.advance(0.25)
    assert bucket.try_acquire()
    fake.advance(60.0)
    assert bucket.available == pytest.approx(5.0)


def test_acquire_sleeps_exactly_the_deficit_and_returns_it(fake: FakeTime) -> None:
    bucket = bucket_of(fake, rate=4.0, capacity=2.0)
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.25)
    assert bucket.acquire(2.0) == pytest.approx(0.5)
    assert fake.sleeps == pytest.approx([0.25, 0.5])


def test_sustained_rate_matches_configuration(fake: FakeTime) -> None:
    bucket = bucket_of(fake, rate=10.0, capacity=3.0)
    start = fake.clock()
    for _ in range(103):
        bucket.acquire()
    # 3 from the initial burst, then 100 at 10/s.
    assert fake.clock() - start == pytest.approx(10.0)


def test_fractional_tokens(fake: FakeTime) -> None:
    bucket = bucket_of(fake, rate=1.0, capacity=1.0)
    assert bucket.try_acquire(0.5)
    assert bucket.try_acquire(0.5)
    assert not bucket.try_acquire(0.5)


@pytest.mark.parametrize("rate, capacity", [(0, 1), (-1, 1), (1, 0), (float("inf"), 1), (1, float("nan"))])
def test_rejects_bad_configuration(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, capacity)


def test_rejects_requests_that_could_never_be_met(fake: FakeTime) -> None:
    bucket = bucket_of(fake, capacity=2.0)
    with pytest.raises(ValueError):
        bucket.acquire(3.0)
    with pytest.raises(ValueError):
        bucket.try_acquire(0)


def test_penalise_stops_every_caller_until_the_deadline(fake: FakeTime) -> None:
    bucket = bucket_of(fake, rate=2.0, capacity=5.0)
    bucket.penalise(30.0)
    assert bucket.paused_until == pytest.approx(fake.clock() + 30.0)
    assert not bucket.try_acquire()
    assert bucket.available == 0.0
    fake.advance(29.9)
    assert not bucket.try_acquire()
    assert bucket.acquire() == pytest.approx(0.1)
    assert bucket.paused_until is None


def test_after_a_pause_callers_resume_at_rate_not_in_a_burst(fake: FakeTime) -> None:
    bucket = bucket_of(fake, rate=2.0, capacity=5.0)
    bucket.penalise(10.0)
    fake.advance(10.0)
    assert bucket.try_acquire()  # the one retry goes at once
    assert not bucket.try_acquire()  # nothing accrued during the pause
    assert bucket.acquire() == pytest.approx(0.5)


def test_pauses_only_extend(fake: FakeTime) -> None:
    bucket = bucket_of(fake)
    now = fake.clock()
    bucket.pause_until(now + 20.0)
    bucket.pause_until(now + 5.0)
    assert bucket.paused_until == pytest.approx(now + 20.0)
    assert bucket.acquire() == pytest.approx(20.0)


def test_an_empty_bucket_paused_still_lets_the_refused_caller_retry_at_the_deadline(fake: FakeTime) -> None:
    bucket = bucket_of(fake, rate=1.0, capacity=3.0)
    bucket.acquire(3.0)
    bucket.penalise(2.0)
    assert bucket.acquire() == pytest.approx(2.0)  # the pause was the wait; no extra refill time
    assert bucket.acquire() == pytest.approx(1.0)  # everyone after it goes at the rate
    assert fake.sleeps == pytest.approx([2.0, 1.0])


def test_try_acquire_never_hands_out_more_than_it_has_under_contention(fake: FakeTime) -> None:
    bucket = bucket_of(fake, rate=1.0, capacity=50.0)  # the clock is frozen: no refill at all
    granted: list[int] = []
    start = threading.Barrier(16)

    def hammer() -> None:
        start.wait()
        granted.append(sum(bucket.try_acquire() for _ in range(500)))

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(granted) == 50


def test_blocking_acquire_from_many_threads_never_exceeds_capacity_plus_refill(fake: FakeTime) -> None:
    rate, capacity = 5.0, 4.0
    bucket = bucket_of(fake, rate=rate, capacity=capacity)
    t0 = fake.clock()
    grant_times: list[float] = []
    record = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(10):
            bucket.acquire()
            with record:
                grant_times.append(fake.clock())  # read after the grant: never earlier than it

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(grant_times) == 80
    for granted_so_far, moment in enumerate(sorted(grant_times), start=1):
        assert granted_so_far <= capacity + rate * (moment - t0) + 1e-6


def test_registry_returns_one_bucket_per_key(fake: FakeTime) -> None:
    registry = RateLimiterRegistry(clock=fake.clock, sleep=fake.sleep)
    first = registry.bucket("shopify:1", rate=2.0, capacity=40.0)
    assert registry.bucket("shopify:1", rate=99.0, capacity=99.0) is first
    assert first.rate == 2.0 and first.capacity == 40.0  # the first configuration wins
    assert registry.bucket("shopify:2", rate=2.0, capacity=40.0) is not first
    assert "shopify:1" in registry and len(registry) == 2
    assert registry.get("nope") is None
    registry.discard("shopify:1")
    assert registry.bucket("shopify:1", rate=1.0, capacity=1.0) is not first


def test_registry_buckets_use_the_registry_clock(fake: FakeTime) -> None:
    registry = RateLimiterRegistry(clock=fake.clock, sleep=fake.sleep)
    bucket = registry.bucket("iconic:7", rate=1.0, capacity=1.0)
    bucket.acquire()
    assert bucket.acquire() == pytest.approx(1.0)
    assert fake.sleeps == pytest.approx([1.0])


def test_registry_creates_one_bucket_when_threads_race() -> None:
    registry = RateLimiterRegistry()
    seen: list[TokenBucket] = []
    start = threading.Barrier(12)

    def fetch() -> None:
        start.wait()
        seen.append(registry.bucket("uphance:3", rate=2.0, capacity=2.0))

    threads = [threading.Thread(target=fetch) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(seen) == 12 and all(bucket is seen[0] for bucket in seen)


def test_default_registry_is_process_wide() -> None:
    assert default_registry() is default_registry()


def test_a_clock_reading_epoch_seconds_never_spins_forever():
    # time.time()-sized readings have a coarse ulp; a deficit smaller than it can never refill.
    now = [1.7e9]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate=2.0, capacity=1.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(50):
        bucket.acquire()
    assert len(sleeps) < 100 and 20 <= sum(sleeps) <= 30
