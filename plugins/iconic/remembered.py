"""Orders a process mapped lately, so a re-read window costs little when nothing in it changed.

Every scheduled pull re-reads the orders flow's overlap window (ten minutes of orders): on a busy
account that is hundreds of orders each poll, nearly all exactly as the last poll saw them. Their
order items were fetched again (a ``GET /v2/order-items`` per 100 orders) and every order was mapped
and checked again, which was most of the CPU of an orders run with nothing new.

An order The Iconic sends exactly as before — the whole record, with its ``updatedAt`` and
``statusList`` (item status -> count), which change when an item does — is the order the hub
already has: the record mapped from it then is handed out again, and its items are not fetched.
Anything different, in any field, is fetched and mapped afresh. The records handed out are shared,
so nothing may change them (the hub never changes a pulled record).

Kept per seller login (base URL and application id) and, for a test's injected transport, per
transport object (forgotten with it), like ``hub.tokens``; at most ``size`` orders in a process,
the least recently pulled forgotten first.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from hub.records import Order

REMEMBERED_ORDERS = 5_000  # about 12 kB each (an order of three items): 60 MB at most, a few busy accounts' windows


class RememberedOrders:
    def __init__(self, size: int = REMEMBERED_ORDERS) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._network: OrderedDict[Hashable, tuple[dict[str, Any], Order]] = OrderedDict()
        self._by_transport: weakref.WeakKeyDictionary[Any, OrderedDict[Hashable, tuple[dict[str, Any], Order]]] = (
            weakref.WeakKeyDictionary())

    def get(self, transport: Any, login: Hashable, order: dict[str, Any]) -> Order | None:
        """The record mapped from exactly this order before, or None."""
        key = (login, order.get("id"))
        with self._lock:
            table = self._table(transport)
            held = table.get(key)
            if held is None or held[0] != order:
                return None
            table.move_to_end(key)
            return held[1]

    def put(self, transport: Any, login: Hashable, order: dict[str, Any], record: Order) -> None:
        with self._lock:
            table = self._table(transport)
            table[(login, order.get("id"))] = (order, record)
            table.move_to_end((login, order.get("id")))
            while len(table) > self.size:
                table.popitem(last=False)

    def _table(self, transport: Any) -> OrderedDict[Hashable, tuple[dict[str, Any], Order]]:
        if transport is None:
            return self._network
        return self._by_transport.setdefault(transport, OrderedDict())


REMEMBERED = RememberedOrders()
