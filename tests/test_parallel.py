"""hub.parallel.map_limited: a few remote calls at once, in order, stopping at the first failure."""

from __future__ import annotations

import threading
import time

import pytest

from hub.parallel import map_limited
from hub.testing import InFlight


def test_results_come_back_in_input_order_with_at_most_limit_in_flight() -> None:
    gauge = InFlight()

    def call(n: int) -> int:
        with gauge:
            time.sleep(0.02 * (5 - n % 5))  # later items finish first
            return n * n

    assert map_limited(call, range(12), 3) == [n * n for n in range(12)]
    assert gauge.most == 3


def test_limit_one_and_a_single_item_run_in_the_callers_thread() -> None:
    gauge = InFlight()

    def call(n: int) -> int:
        with gauge:
            return n

    assert map_limited(call, [1, 2, 3], 1) == [1, 2, 3]
    assert map_limited(call, [4], 8) == [4]
    assert gauge.threads == {threading.current_thread().name}
    assert map_limited(call, [], 4) == []


def test_a_failure_stops_calls_not_started_and_is_raised_after_those_in_flight_finish() -> None:
    started, finished = [], []
    lock = threading.Lock()

    def call(n: int) -> int:
        with lock:
            started.append(n)
        if n == 1:
            raise ValueError("item 1 failed")
        time.sleep(0.05)
        with lock:
            finished.append(n)
        return n

    with pytest.raises(ValueError, match="item 1 failed"):
        map_limited(call, range(20), 2)
    assert len(started) < 20  # the rest were never sent
    assert sorted(finished) == sorted(n for n in started if n != 1)  # nothing in flight was abandoned


def test_the_first_failure_in_input_order_is_the_one_raised() -> None:
    gate = threading.Barrier(2)

    def call(n: int) -> int:
        gate.wait(timeout=5)  # both fail together
        raise KeyError(n)

    with pytest.raises(KeyError) as raised:
        map_limited(call, [0, 1], 2)
    assert raised.value.args == (0,)


def test_a_callers_threads_are_kept_between_calls_and_stay_within_the_limit() -> None:
    gauge = InFlight()

    def call(n: int) -> str:
        with gauge:
            time.sleep(0.01)
            return threading.current_thread().name

    first = set(map_limited(call, range(6), 3, name="kept"))
    second = set(map_limited(call, range(6), 3, name="kept"))
    assert first == second and len(first) == 3  # the same three threads, no new ones
    assert gauge.most == 3
    assert len(set(map_limited(call, range(6), 2, name="kept"))) == 2  # a smaller limit is still a limit


def test_another_threads_calls_get_threads_of_their_own() -> None:
    def call(n: int) -> threading.Thread:
        time.sleep(0.01)
        return threading.current_thread()

    mine = set(map_limited(call, range(4), 2, name="own"))
    theirs: set[threading.Thread] = set()
    other = threading.Thread(target=lambda: theirs.update(map_limited(call, range(4), 2, name="own")))
    other.start()
    other.join(timeout=10)
    assert len(theirs) == 2 and not mine & theirs


def test_a_call_nested_in_a_pooled_call_does_not_wait_for_its_callers_pool() -> None:
    def inner(n: int) -> int:
        time.sleep(0.01)
        return n

    def outer(n: int) -> list[int]:
        return map_limited(inner, range(n, n + 3), 2, name="nest")

    assert map_limited(outer, [0, 10], 2, name="nest") == [[0, 1, 2], [10, 11, 12]]


def test_in_background_runs_beside_the_caller_and_keeps_the_outcome_for_it() -> None:
    from hub.parallel import in_background

    gate = threading.Event()
    future = in_background(lambda: (gate.wait(timeout=5), threading.current_thread())[1], name="beside")
    gate.set()  # the caller goes on while the call waits for it
    assert future.result(timeout=5) is not threading.current_thread()
    failed = in_background(lambda: 1 / 0, name="beside")
    assert isinstance(failed.exception(timeout=5), ZeroDivisionError)
