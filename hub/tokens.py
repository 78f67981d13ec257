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
from collections.abc import Hashable
from typing import Any


class TokenCache:
    """Tokens (or sessions) by login key, each with the moment (on the caller's clock) it stops being used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._network: dict[Hashable, tuple[Any, float]] = {}
        self._by_transport: weakref.WeakKeyDictionary[Any, dict[Hashable, tuple[Any, float]]] = weakref.WeakKeyDictionary()

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
        if transport is None:
            return self._network
        return self._by_transport.setdefault(transport, {})


TOKENS = TokenCache()
