"""The runtime: one job API, two executors, chosen by configuration.

- ``EmbeddedRuntime`` (``hub.embedded``) when ``CHANNELHUB_REDIS_URL`` is unset: threads in this
  process run the jobs and a ticker enqueues due flows.
- ``FleetRuntime`` (``hub.fleet``) otherwise: jobs go to RQ queues per lane; ``channelhub worker``
  (``run_worker``) runs them and ``channelhub scheduler`` (``run_scheduler``) enqueues due flows.

Callers (web, CLI, flows that trigger other flows) use only the ``Runtime`` protocol below; flow
authors use ``register_flow`` and ``FlowContext`` (``hub.jobs``). See docs/runtime.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from hub.config import Config
from hub.db import Database
from hub.embedded import EmbeddedRuntime
from hub.fleet import FleetRuntime, run_flow_job, run_scheduler, run_worker, tick
from hub.jobs import FlowContext, FlowSpec, get_flow, register_flow, registered_flows, unregister_flow
from hub.models import ChannelAccount
from hub.scheduling import FLOW_TOGGLES

__all__ = [
    "FLOW_TOGGLES",
    "EmbeddedRuntime",
    "FleetRuntime",
    "FlowContext",
    "FlowSpec",
    "Runtime",
    "get_flow",
    "make_runtime",
    "register_flow",
    "registered_flows",
    "run_flow_job",
    "run_scheduler",
    "run_worker",
    "tick",
    "unregister_flow",
]


@runtime_checkable
class Runtime(Protocol):
    def enqueue(
        self,
        account_id: int,
        flow: str,
        *,
        trigger: str = "manual",
        params: dict[str, Any] | None = None,
        delay: float = 0,
    ) -> int:
        """Create the SyncRun (status queued) and queue its job; returns the run id."""

    def enqueue_due(self, now: datetime | None = None) -> list[int]:
        """Enqueue every enabled, due, not-yet-pending flow of every Testing/Live account."""

    def next_due(self, account: ChannelAccount, flow: str) -> datetime:
        """When ``flow`` is next due for ``account`` (in the past: due now)."""

    def start(self) -> None:
        """Begin executing (embedded: the pool and ticker; fleet: nothing, workers are separate)."""

    def close(self) -> None:
        """Stop executing and let go of connections."""


def make_runtime(config: Config, db: Database) -> Runtime:
    """The fleet when ``config.redis_url`` is set, else the embedded pool (not yet started)."""
    if config.redis_url:
        return FleetRuntime(db, config.redis_url)
    return EmbeddedRuntime(db)
