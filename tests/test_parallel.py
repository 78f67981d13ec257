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
