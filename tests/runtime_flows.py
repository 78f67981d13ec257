"""Flows the runtime tests register. A real module, so RQ worker processes can import it too.

State that must survive across attempts and processes (how often a flow was called, when it ran)
goes to files named in ``ctx.params``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hub.errors import AuthError, RateLimited, TransientError
from hub.jobs import FlowContext, register_flow


def _append(path: str, line: str) -> None:
    # O_APPEND writes of one short line are atomic between processes.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def _called(ctx: FlowContext) -> None:
    if "calls" in ctx.params:
        _append(ctx.params["calls"], f"{ctx.run_id} {ctx.attempt} {time.time():.6f}")


def items(ctx: FlowContext) -> None:
    """Records ``params["items"]`` ([[key, outcome], ...]) with progress and one API call each."""
    _called(ctx)
    entries = ctx.params.get("items", [])
    for done, (key, outcome) in enumerate(entries, start=1):
        ctx.item(key, outcome, message=f"{key} was {outcome}", field="sku" if outcome == "rejected" else None)
        ctx.add_api_calls(1)
        ctx.progress(done, len(entries))


def boom(ctx: FlowContext) -> None:
    _called(ctx)
    ctx.item("A-1", "ok")
    raise ValueError("boom: the flow has a bug")


def flaky(ctx: FlowContext) -> None:
    """Raises TransientError until attempt ``params["succeed_on"]``."""
    _called(ctx)
    if ctx.attempt < int(ctx.params.get("succeed_on", 2)):
        raise TransientError("503 from the channel")
    ctx.item("A-1", "ok")


def auth(ctx: FlowContext) -> None:
    _called(ctx)
    raise AuthError("401: invalid client credentials")


def rate_limited(ctx: FlowContext) -> None:
    """Rate limited the first time (a marker file remembers), fine the second."""
    _called(ctx)
    marker = Path(ctx.params["marker"])
    if not marker.exists():
        marker.write_text("limited")
        raise RateLimited("429 Too Many Requests", retry_after=float(ctx.params.get("retry_after", 0.2)))
    ctx.item("A-1", "ok")


def sleepy(ctx: FlowContext) -> None:
    """Holds the flow for ``params["sleep"]`` seconds and logs the interval it ran in."""
    started = time.time()
    time.sleep(float(ctx.params.get("sleep", 0.3)))
    finished = time.time()
    _append(ctx.params["log"], f"{ctx.account_id} {ctx.run_id} {started:.6f} {finished:.6f} {os.getpid()}")
    ctx.item(str(ctx.run_id), "ok")


def progress(ctx: FlowContext) -> None:
    """Three steps; lingers after the first so an observer can see the partial progress."""
    total = 3
    for done in range(1, total + 1):
        ctx.progress(done, total)
        ctx.item(f"step-{done}", "ok")
        time.sleep(float(ctx.params.get("linger", 1.2)) if done == 1 else 0.05)


def source_only(ctx: FlowContext) -> None:
    ctx.item("catalogue", "ok")


def sliced(ctx: FlowContext) -> None:
    """Works through ``params["count"]`` steps, one item each, remembering in ``params["done"]`` (a
    file) how far it got; yields at every step once ``time_to_yield`` says so, as real flows do
    between batches."""
    _called(ctx)
    done_file = Path(ctx.params["done"])
    done = int(done_file.read_text()) if done_file.exists() else 0
    while done < int(ctx.params["count"]):
        done += 1
        done_file.write_text(str(done))
        ctx.item(f"step-{done}", "ok")
        if done < int(ctx.params["count"]) and ctx.time_to_yield():
            ctx.continue_later()
            return


register_flow("rt-items", items, lane="catalog")
register_flow("rt-boom", boom, lane="catalog")
register_flow("rt-flaky", flaky, lane="orders")
register_flow("rt-auth", auth, lane="orders")
register_flow("rt-ratelimited", rate_limited, lane="stock")
register_flow("rt-sleepy", sleepy, lane="stock")
register_flow("rt-progress", progress, lane="catalog")
register_flow("rt-sliced", sliced, lane="orders")
register_flow("rt-source", source_only, lane="catalog", applies=lambda account: account.plugin == "src")
