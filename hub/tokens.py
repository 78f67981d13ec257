"""Access tokens shared by the channel clients of one process.

A worker runs job after job in one process (and the embedded runtime runs every job in one), so a
token one run fetched can serve the next run of the same account until it runs out, instead of each
run logging in again. A plugin keys its tokens by what identifies the login (base URL, application,
a hash of the secret: never the secret itself) and asks here before it fetches; after a 401 it
drops the token it used, so the next caller fetches a fresh one. What is kept is the plugin's to
choose: a bare token string (The Iconic), or a whole login session where one token carries more
(Uphance: its refresh token and the organisation selected for it).

Tokens fetched through an injected transport (a test's sandbox) are kept apart per transport
object and forgotten with it, so a token never reaches a sandbox that did not issue it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ByTransport(Generic[T]):
    """One ``T`` for the network (``transport`` None) and one per injected transport object,
    forgotten with it: what a channel keeps between runs of a process (a token, records it mapped)
    then never reaches a test's sandbox that did not give it. Not locked: its owner locks."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._network = make()
        self._by_transport: weakref.WeakKeyDictionary[Any, T] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        """How many transports have a ``T`` of their own (the network's not counted)."""
        return len(self._by_transport)

    def of(self, transport: Any) -> T:
        if transport is None:
            return self._network
        held = self._by_transport.get(transport)
        if held is None:
            held = self._by_transport[transport] = self._make()
        return held


class TokenCache:
    """Tokens (or sessions) by login key, each with the moment (on the caller's clock) it stops being used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: ByTransport[dict[Hashable, tuple[Any, float]]] = ByTransport(dict)

    def get(self, transport: Any, key: Hashable, now: float) -> tuple[Any, float] | None:
        with self._lock:
            held = self._table(transport).get(key)
        return held if held is not None and now < held[1] else None

    def put(self, transport: Any, key: Hashable, token: Any, expires_at: float) -> None:
        with self._lock:
            self._table(transport)[key] = (token, expires_at)

    def drop(self, transport: Any, key: Hashable, token: Any) -> None:
        """Forget ``token`` (refused with 401), unless another client has already replaced it."""
        with self._lock:
            table = self._table(transport)
            held = table.get(key)
            if held is not None and held[0] == token:
                del table[key]

    def _table(self, transport: Any) -> dict[Hashable, tuple[Any, float]]:
        return self._tables.of(transport)


TOKENS = TokenCache()
