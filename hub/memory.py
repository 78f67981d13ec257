"""What a long-lived process does with the objects it built while starting.

A worker imports the flows and the plugins, configures SQLAlchemy's mappers and builds httpx's
transport: about 120,000 objects in a fleet worker, which live as long as the process. Python's
cyclic garbage collector walks every one of them on each full collection; in the order-flow
benchmark a fleet worker made two full collections a run, 100-170 ms each, with all its threads
stopped (requests in flight included). :func:`freeze_startup_objects` collects once, then moves
what is left into the collector's permanent generation (``gc.freeze``): later full collections walk
only what jobs made (10-30 ms). A frozen object is still freed when its last reference goes; only a
reference cycle among frozen objects would be kept, and what a process builds to start lives as
long as it does.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect the start-up garbage, then exempt every object alive now from later collections.

    Call it once, when the process has loaded what it keeps (a worker before its first job, a web
    process before it serves); objects made afterwards are collected as usual."""
    gc.collect()
    gc.freeze()
