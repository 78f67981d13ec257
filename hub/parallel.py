"""A few remote calls at once, for channels that cannot batch a write across records.

The Iconic's status writes take the items of one order per call and Shopify's ``orderCreate`` makes
one order, so a batch of shipments or orders is a row of independent requests: sent one after
another, each waits a full round trip. :func:`map_limited` sends up to ``limit`` of them at the same
time. The account's :class:`hub.ratelimit.TokenBucket` is shared by the threads, so the channel's
pace still holds; only the waiting overlaps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_own = threading.local()


def map_limited(call: Callable[[T], R], items: Iterable[T], limit: int, *, name: str = "channel-call") -> list[R]:
    """``[call(item) for item in items]``, with up to ``limit`` calls in flight; results in input order.

    When a call raises, no further call starts, the ones in flight finish, and the first exception
    (in input order among those that failed) is raised. With ``limit`` 1 or a single item the calls
    run in the caller's thread.
    """
    work = list(items)
    if limit <= 1 or len(work) <= 1:
        return [call(item) for item in work]
    pool = _pool(name, limit)
    futures: list[Future[R]] = [pool.submit(call, item) for item in work]
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    if pending and any(future.exception() is not None for future in done):
        for future in pending:
            future.cancel()  # not started yet: never sent
        wait(pending)
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
    return [future.result() for future in futures]


def in_background(call: Callable[[], R], *, name: str) -> Future[R]:
    """``call()`` in a thread of the caller's own while the caller goes on; the result (or the
    exception) waits in the future until the caller asks for it."""
    return _pool(name, 1).submit(call)


def _pool(name: str, limit: int) -> ThreadPoolExecutor:
    """The calling thread's own pool of ``limit`` threads for ``name``, kept between calls.

    A pool a call was a few thread starts per batch, and a thread start waits for the new thread to
    get the GIL: on a busy worker that was a noticeable share of a run. The pool is the caller's
    alone (a call nested in a pooled call runs in a pool thread, which has pools of its own), so
    one call's threads are never another's to wait for; the caller blocks while its pool works.
    Threads start only as calls need them, and leave when the caller's thread ends.
    """
    pools: dict[tuple[str, int], ThreadPoolExecutor] | None = getattr(_own, "pools", None)
    if pools is None:
        pools = _own.pools = {}
    pool = pools.get((name, limit))
    if pool is None:
        pool = pools[(name, limit)] = ThreadPoolExecutor(max_workers=limit, thread_name_prefix=name)
    return pool
