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

How many orders the last scheduled pull read is kept too: the next pull reads that many pages at
once instead of waiting for the first page to give the count (``IconicClient.paged(expect=)``).

Kept per seller login (base URL and application id) and, for a test's injected transport, per
transport object (forgotten with it: ``hub.tokens.ByTransport``, as the access tokens are); at most
``size`` orders in a process, the least recently pulled forgotten first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from hub.records import Order
from hub.tokens import ByTransport

REMEMBERED_ORDERS = 5_000  # about 12 kB each (an order of three items): 60 MB at most, a few busy accounts' windows


class _Memory:
    def __init__(self) -> None:
        self.orders: OrderedDict[Hashable, tuple[dict[str, Any], Order]] = OrderedDict()
        self.counts: dict[Hashable, int] = {}  # login -> how many orders its last window held


class RememberedOrders:
    def __init__(self, size: int = REMEMBERED_ORDERS) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._memories: ByTransport[_Memory] = ByTransport(_Memory)

    def get(self, transport: Any, login: Hashable, order: dict[str, Any]) -> Order | None:
        """The record mapped from exactly this order before, or None. An order without ``statusList``
        is never the same as before: whether The Iconic moves ``updatedAt`` when only an item
        changes is not documented, so without the item counts an item's change could go unseen."""
        if not isinstance(order.get("statusList"), dict):
            return None
        key = (login, order.get("id"))
        with self._lock:
            orders = self._memory(transport).orders
            held = orders.get(key)
            if held is None or held[0] != order:
                return None
            orders.move_to_end(key)
            return held[1]

    def put(self, transport: Any, login: Hashable, order: dict[str, Any], record: Order) -> None:
        key = (login, order.get("id"))
        with self._lock:
            orders = self._memory(transport).orders
            orders[key] = (order, record)
            orders.move_to_end(key)
            while len(orders) > self.size:
                orders.popitem(last=False)

    def window(self, transport: Any, login: Hashable) -> int | None:
        """How many orders the login's last scheduled pull read (its next is likely about as long)."""
        with self._lock:
            return self._memory(transport).counts.get(login)

    def set_window(self, transport: Any, login: Hashable, count: int) -> None:
        with self._lock:
            self._memory(transport).counts[login] = count

    def _memory(self, transport: Any) -> _Memory:
        return self._memories.of(transport)


REMEMBERED = RememberedOrders()
